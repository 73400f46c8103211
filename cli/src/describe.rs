//! Names for VFIO's numbers: flags, region and irq indices, capabilities,
//! device features — as text for tables and as JSON for scripts.

use serde_json::{json, Value};
use vfio_hal::caps::Capability;
use vfio_hal::device::{feature, flags as device_flags};
use vfio_hal::irq::flags as irq_flags;
use vfio_hal::region::flags as region_flags;
use vfio_hal_facade::host::MdevType;

use crate::table::hex;

fn flag_names(value: u32, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|&(_, name)| name)
        .collect()
}

/// `VFIO_DEVICE_FLAGS_*` names.
pub fn device_flags(value: u32) -> Vec<&'static str> {
    flag_names(
        value,
        &[
            (device_flags::RESET, "RESET"),
            (device_flags::PCI, "PCI"),
            (device_flags::PLATFORM, "PLATFORM"),
            (device_flags::AMBA, "AMBA"),
            (device_flags::CCW, "CCW"),
            (device_flags::AP, "AP"),
            (device_flags::FSL_MC, "FSL_MC"),
            (device_flags::CAPS, "CAPS"),
            (device_flags::CDX, "CDX"),
        ],
    )
}

/// `VFIO_REGION_INFO_FLAG_*` names.
pub fn region_flags(value: u32) -> Vec<&'static str> {
    flag_names(
        value,
        &[
            (region_flags::READ, "READ"),
            (region_flags::WRITE, "WRITE"),
            (region_flags::MMAP, "MMAP"),
            (region_flags::CAPS, "CAPS"),
        ],
    )
}

/// `VFIO_IRQ_INFO_*` names.
pub fn irq_flags(value: u32) -> Vec<&'static str> {
    flag_names(
        value,
        &[
            (irq_flags::EVENTFD, "EVENTFD"),
            (irq_flags::MASKABLE, "MASKABLE"),
            (irq_flags::AUTOMASKED, "AUTOMASKED"),
            (irq_flags::NORESIZE, "NORESIZE"),
        ],
    )
}

/// vfio-pci's name for region `index` (`BAR0`, `CONFIG`, …).
pub fn region_name(pci: bool, index: u32) -> String {
    match (pci, index) {
        (true, 0..=5) => format!("BAR{index}"),
        (true, 6) => "ROM".to_owned(),
        (true, 7) => "CONFIG".to_owned(),
        (true, 8) => "VGA".to_owned(),
        _ => format!("region{index}"),
    }
}

/// The region index for a name (`bar0`…`bar5`, `rom`, `config`, `vga`,
/// `region9`) or a number.
pub fn parse_region(text: &str) -> Result<u32, String> {
    let t = text.to_ascii_lowercase();
    let named = match t.as_str() {
        "rom" => Some(6),
        "config" | "cfg" => Some(7),
        "vga" => Some(8),
        _ => None,
    };
    if let Some(i) = named {
        return Ok(i);
    }
    let digits = t
        .strip_prefix("bar")
        .filter(|d| matches!(d.parse::<u32>(), Ok(0..=5)))
        .or_else(|| t.strip_prefix("region"))
        .unwrap_or(&t);
    crate::parse_u64(digits)
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            format!("`{text}` is not a region: use bar0..bar5, rom, config, vga or an index")
        })
}

/// vfio-pci's name for irq index `index`.
pub fn irq_name(pci: bool, index: u32) -> String {
    match (pci, index) {
        (true, 0) => "INTx".to_owned(),
        (true, 1) => "MSI".to_owned(),
        (true, 2) => "MSI-X".to_owned(),
        (true, 3) => "ERR".to_owned(),
        (true, 4) => "REQ".to_owned(),
        _ => format!("irq{index}"),
    }
}

/// The device features `info` probes, by number and name.
pub const FEATURES: [(u32, &str); 10] = [
    (feature::MIGRATION, "MIGRATION"),
    (feature::MIG_DEVICE_STATE, "MIG_DEVICE_STATE"),
    (feature::LOW_POWER_ENTRY, "LOW_POWER_ENTRY"),
    (
        feature::LOW_POWER_ENTRY_WITH_WAKEUP,
        "LOW_POWER_ENTRY_WITH_WAKEUP",
    ),
    (feature::LOW_POWER_EXIT, "LOW_POWER_EXIT"),
    (feature::DMA_LOGGING_START, "DMA_LOGGING_START"),
    (feature::DMA_LOGGING_STOP, "DMA_LOGGING_STOP"),
    (feature::DMA_LOGGING_REPORT, "DMA_LOGGING_REPORT"),
    (feature::MIG_DATA_SIZE, "MIG_DATA_SIZE"),
    (feature::BUS_MASTER, "BUS_MASTER"),
];

/// The name of a standard PCI capability id.
pub fn pci_cap_name(id: u8) -> &'static str {
    match id {
        0x01 => "power-management",
        0x05 => "MSI",
        0x09 => "vendor-specific",
        0x0d => "bridge-subsystem-id",
        0x10 => "PCI-Express",
        0x11 => "MSI-X",
        0x12 => "SATA",
        0x13 => "advanced-features",
        _ => "other",
    }
}

/// A page-size bitmap as sizes: `4K 2M 1G`.
pub fn page_sizes(bitmap: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| bitmap & (1u64 << bit) != 0)
        .map(|bit| match bit {
            0..=9 => format!("{}", 1u64 << bit),
            10..=19 => format!("{}K", 1u64 << (bit - 10)),
            20..=29 => format!("{}M", 1u64 << (bit - 20)),
            30..=39 => format!("{}G", 1u64 << (bit - 30)),
            _ => format!("{}T", 1u64 << (bit - 40)),
        })
        .collect()
}

/// Page sizes as table text: every size, or the smallest and "and up"
/// where the bitmap holds every power of two from it on (iommufd's IOAS
/// reports its granule that way).
pub fn page_sizes_text(bitmap: u64) -> String {
    let smallest = bitmap & bitmap.wrapping_neg();
    if smallest != 0 && bitmap == !(smallest - 1) && bitmap.count_ones() > 4 {
        format!("{} and up", page_sizes(smallest).join(""))
    } else {
        page_sizes(bitmap).join(" ")
    }
}

/// One capability as table text.
pub fn capability_text(cap: &Capability) -> String {
    match cap {
        Capability::SparseMmap(areas) => format!(
            "sparse-mmap[{}]",
            areas
                .iter()
                .map(|a| format!("{}+{}", hex(a.offset), hex(a.size)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Capability::RegionType { ty, subtype } => {
            format!(
                "type {}:{}{}",
                hex(u64::from(*ty)),
                hex(u64::from(*subtype)),
                region_type_name(*ty, *subtype)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )
        }
        Capability::MsixMappable => "msix-mappable".to_owned(),
        Capability::IovaRanges(r) => format!(
            "iova-ranges[{}]",
            r.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Capability::Migration { pgsize_bitmap, .. } => {
            format!("migration(dirty pages {})", page_sizes_text(*pgsize_bitmap))
        }
        Capability::DmaAvail { avail } => format!("dma-avail {avail}"),
        Capability::PciAtomicComp { flags } => {
            format!("pci-atomic-comp {}", hex(u64::from(*flags)))
        }
        Capability::Unknown { id, version, data } => {
            format!("unknown(id {id} v{version}, {} bytes)", data.len())
        }
        other => format!("{other:?}"),
    }
}

/// Names for the region types vfio-pci and its variant drivers report.
fn region_type_name(ty: u32, subtype: u32) -> Option<&'static str> {
    const PCI_VENDOR_TYPE: u32 = 1 << 31;
    match (ty, subtype) {
        (t, _) if t & PCI_VENDOR_TYPE != 0 && t & 0xffff == 0x8086 => Some("Intel IGD"),
        (t, _) if t & PCI_VENDOR_TYPE != 0 && t & 0xffff == 0x10de => Some("NVIDIA"),
        (t, _) if t & PCI_VENDOR_TYPE != 0 => Some("PCI vendor"),
        (1, _) => Some("graphics"),
        (2, _) => Some("CCW"),
        (3, _) => Some("migration (deprecated)"),
        _ => None,
    }
}

/// One capability as JSON: `{"type": …, …}`.
pub fn capability_json(cap: &Capability) -> Value {
    match cap {
        Capability::SparseMmap(areas) => json!({
            "type": "sparse-mmap",
            "areas": areas.iter().map(|a| json!({"offset": a.offset, "size": a.size})).collect::<Vec<_>>(),
        }),
        Capability::RegionType { ty, subtype } => {
            json!({"type": "region-type", "region_type": ty, "subtype": subtype})
        }
        Capability::MsixMappable => json!({"type": "msix-mappable"}),
        Capability::IovaRanges(r) => json!({
            "type": "iova-ranges",
            "ranges": r.iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
        }),
        Capability::Migration {
            flags,
            pgsize_bitmap,
            max_dirty_bitmap_size,
        } => json!({
            "type": "migration",
            "flags": flags,
            "pgsize_bitmap": pgsize_bitmap,
            "max_dirty_bitmap_size": max_dirty_bitmap_size,
        }),
        Capability::DmaAvail { avail } => json!({"type": "dma-avail", "avail": avail}),
        Capability::PciAtomicComp { flags } => json!({"type": "pci-atomic-comp", "flags": flags}),
        Capability::Unknown { id, version, data } => {
            json!({"type": "unknown", "id": id, "version": version, "len": data.len()})
        }
        other => json!({"type": "other", "debug": format!("{other:?}")}),
    }
}

/// A list of capabilities as table text (`-` for none).
pub fn capabilities_text(caps: &[Capability]) -> String {
    if caps.is_empty() {
        "-".to_owned()
    } else {
        caps.iter()
            .map(capability_text)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A mediated device's type and parent, as `list` and `info` print them.
pub fn mdev_json(t: &MdevType) -> Value {
    json!({"type": t.id, "type_name": t.name, "parent": t.parent})
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::caps::SparseArea;

    #[test]
    fn regions_parse_by_name_and_number() {
        assert_eq!(parse_region("bar0"), Ok(0));
        assert_eq!(parse_region("BAR5"), Ok(5));
        assert_eq!(parse_region("config"), Ok(7));
        assert_eq!(parse_region("9"), Ok(9));
        assert_eq!(parse_region("region9"), Ok(9));
        assert_eq!(parse_region("0x2"), Ok(2));
        assert!(parse_region("bar6").is_err());
        assert!(parse_region("rom2").is_err());
    }

    #[test]
    fn capabilities_read_as_text_and_json() {
        let cap = Capability::SparseMmap(vec![SparseArea {
            offset: 0,
            size: 0x4000,
        }]);
        assert_eq!(capability_text(&cap), "sparse-mmap[0x0+0x4000]");
        assert_eq!(capability_json(&cap)["areas"][0]["size"], 0x4000);
        assert_eq!(page_sizes(0x4020_1000), vec!["4K", "2M", "1G"]);
        assert_eq!(page_sizes_text(0x4020_1000), "4K 2M 1G");
        assert_eq!(page_sizes_text(!0xfff), "4K and up");
        assert_eq!(page_sizes_text(0xf000), "4K 8K 16K 32K");
        assert_eq!(
            flag_names(0x3, &[(1, "A"), (2, "B"), (4, "C")]),
            vec!["A", "B"]
        );
    }
}
