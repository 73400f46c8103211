//! `vfio-hal info DEV`: everything the device and its container report.
//!
//! A part that fails (a region the device refuses to describe, a feature
//! probe the kernel rejects) is shown as an error in its row; the rest is
//! still printed.

use serde_json::{json, Value};
use vfio_hal::device::DeviceKind;
use vfio_hal::migration::{MigrationFlags, MigrationState};
use vfio_hal::prelude::*;
use vfio_hal::{IommuInfo, IrqInfo, RegionInfo};
use vfio_hal_facade::host::{Bus, MdevType};
use vfio_hal_facade::Opened;

use crate::describe::{self, capabilities_text, capability_json};
use crate::output::say;
use crate::table::{hex, names, size, Table};
use crate::{CliError, Ctx};

/// PCI identity from config space.
struct PciIdentity {
    vendor: u16,
    device: u16,
    revision: u8,
    class: u32,
    caps: Vec<(u8, u8)>,
}

fn pci_identity(opened: &Opened) -> vfio_hal::Result<PciIdentity> {
    let d = &opened.device;
    Ok(PciIdentity {
        vendor: d.vendor_id()?,
        device: d.device_id()?,
        revision: d.revision()?,
        class: d.class_code()?,
        caps: d
            .capabilities()?
            .into_iter()
            .map(|c| (c.id, c.offset))
            .collect(),
    })
}

fn error_json(e: &vfio_hal::Error) -> Value {
    json!({"error": e.to_string(), "kind": format!("{:?}", e.kind()), "errno": e.errno()})
}

fn region_json(pci: bool, index: u32, r: &vfio_hal::Result<RegionInfo>) -> Value {
    let name = describe::region_name(pci, index);
    match r {
        Ok(i) => json!({
            "index": index,
            "name": name,
            "size": i.size,
            "offset": i.offset,
            "flags": i.flags,
            "flag_names": describe::region_flags(i.flags),
            "caps": i.caps.iter().map(capability_json).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"index": index, "name": name, "error": error_json(e)}),
    }
}

fn irq_json(pci: bool, index: u32, r: &vfio_hal::Result<IrqInfo>) -> Value {
    let name = describe::irq_name(pci, index);
    match r {
        Ok(i) => json!({
            "index": index,
            "name": name,
            "count": i.count,
            "flags": i.flags,
            "flag_names": describe::irq_flags(i.flags),
        }),
        Err(e) => json!({"index": index, "name": name, "error": error_json(e)}),
    }
}

fn iommu_json(r: &vfio_hal::Result<IommuInfo>) -> Value {
    match r {
        Ok(i) => json!({
            "page_sizes": i.page_sizes,
            "page_size_names": describe::page_sizes(i.page_sizes),
            "iova_ranges": i.iova_ranges.iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
            "dma_avail": i.dma_avail,
            "caps": i.caps.iter().map(capability_json).collect::<Vec<_>>(),
        }),
        Err(e) => error_json(e),
    }
}

/// The mediated device's type and parent, when the device is one (sysfs
/// says; VFIO itself describes an mdev as the bus it emulates).
fn mdev_type(ctx: &Ctx, opened: &Opened) -> Option<MdevType> {
    match ctx.host.device(&opened.name).ok()?.bus {
        Bus::Mdev(t) => Some(t),
        Bus::Pci => None,
    }
}

fn mdev_text(t: &MdevType) -> String {
    match &t.name {
        Some(name) => format!("type {} ({name}), parent {}", t.id, t.parent),
        None => format!("type {}, parent {}", t.id, t.parent),
    }
}

/// The device's migration features and state; `NotSupported` without a
/// migration driver.
fn migration(opened: &Opened) -> vfio_hal::Result<(MigrationFlags, MigrationState)> {
    let flags = opened.device.migration_flags()?;
    Ok((flags, opened.device.migration_state()?))
}

/// Runs `info`.
pub fn run(ctx: &Ctx, dev: Option<&str>) -> Result<(), CliError> {
    let opened = ctx.open(dev)?;
    let mdev = mdev_type(ctx, &opened);
    let migration = migration(&opened);
    let info = opened.device.info().clone();
    let pci = info.kind() == DeviceKind::Pci;
    let identity = pci.then(|| pci_identity(&opened));
    let regions: Vec<(u32, vfio_hal::Result<RegionInfo>)> = (0..info.num_regions)
        .map(|i| (i, opened.device.region(i).map(|r| r.info().clone())))
        .collect();
    let irqs: Vec<(u32, vfio_hal::Result<IrqInfo>)> = (0..info.num_irqs)
        .map(|i| (i, opened.device.irq(i).map(|q| q.info())))
        .collect();
    let iommu = opened.container.iommu_info();
    let features: Vec<(u32, &str, vfio_hal::Result<vfio_hal::FeatureSupport>)> = describe::FEATURES
        .iter()
        .map(|&(n, name)| (n, name, opened.device.probe_feature(n)))
        .collect();

    if ctx.json {
        let value = json!({
            "device": {
                "name": opened.name,
                "backend": opened.backend.name(),
                "reason": opened.reason,
                "kind": format!("{:?}", info.kind()),
                "flags": info.flags,
                "flag_names": describe::device_flags(info.flags),
                "num_regions": info.num_regions,
                "num_irqs": info.num_irqs,
                "caps": info.caps.iter().map(capability_json).collect::<Vec<_>>(),
                "mdev": mdev.as_ref().map(describe::mdev_json),
            },
            "migration": match &migration {
                Ok((flags, state)) => json!({
                    "flags": flags.bits(),
                    "flag_names": format!("{flags:?}"),
                    "state": format!("{state:?}"),
                }),
                Err(e) => error_json(e),
            },
            "pci": identity.as_ref().map(|r| match r {
                Ok(p) => json!({
                    "vendor": p.vendor,
                    "device": p.device,
                    "revision": p.revision,
                    "class": p.class,
                    "capabilities": p.caps.iter().map(|&(id, offset)| json!({
                        "id": id, "offset": offset, "name": describe::pci_cap_name(id),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => error_json(e),
            }),
            "iommu": iommu_json(&iommu),
            "regions": regions.iter().map(|(i, r)| region_json(pci, *i, r)).collect::<Vec<_>>(),
            "irqs": irqs.iter().map(|(i, r)| irq_json(pci, *i, r)).collect::<Vec<_>>(),
            "features": features.iter().map(|(n, name, r)| match r {
                Ok(s) => json!({"feature": n, "name": name, "get": s.get, "set": s.set}),
                Err(e) => json!({"feature": n, "name": name, "error": error_json(e)}),
            }).collect::<Vec<_>>(),
        });
        return ctx.print_json(&value);
    }

    let mut t = Table::new(&["DEVICE", ""]);
    t.row(vec!["name".into(), opened.name.clone()]);
    t.row(vec![
        "backend".into(),
        format!("{}: {}", opened.backend, opened.reason),
    ]);
    t.row(vec![
        "kind".into(),
        format!(
            "{:?}, flags {} {}",
            info.kind(),
            hex(u64::from(info.flags)),
            names(&describe::device_flags(info.flags))
        ),
    ]);
    if let Some(m) = &mdev {
        t.row(vec!["mediated device".into(), mdev_text(m)]);
    }
    t.row(vec![
        "migration".into(),
        match &migration {
            Ok((flags, state)) => format!("{flags:?}, state {state:?}"),
            Err(e) if e.kind() == vfio_hal::ErrorKind::NotSupported => "none".into(),
            Err(e) => format!("error: {e}"),
        },
    ]);
    t.row(vec![
        "regions / irqs".into(),
        format!("{} / {}", info.num_regions, info.num_irqs),
    ]);
    if !info.caps.is_empty() {
        t.row(vec!["capabilities".into(), capabilities_text(&info.caps)]);
    }
    match &identity {
        Some(Ok(p)) => {
            t.row(vec![
                "pci id".into(),
                format!(
                    "{:04x}:{:04x} rev {:#04x} class {:06x}",
                    p.vendor, p.device, p.revision, p.class
                ),
            ]);
            let caps: Vec<String> = p
                .caps
                .iter()
                .map(|&(id, off)| format!("{}@{off:#04x}", describe::pci_cap_name(id)))
                .collect();
            t.row(vec![
                "pci capabilities".into(),
                if caps.is_empty() {
                    "-".into()
                } else {
                    caps.join(" ")
                },
            ]);
        }
        Some(Err(e)) => {
            t.row(vec!["pci id".into(), format!("error: {e}")]);
        }
        None => {}
    }
    match &iommu {
        Ok(i) => {
            t.row(vec![
                "iommu page sizes".into(),
                describe::page_sizes_text(i.page_sizes),
            ]);
            t.row(vec![
                "iommu iova ranges".into(),
                i.iova_ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ]);
            if let Some(avail) = i.dma_avail {
                t.row(vec!["iommu dma avail".into(), avail.to_string()]);
            }
        }
        Err(e) => {
            t.row(vec!["iommu".into(), format!("error: {e}")]);
        }
    }
    say!("{}\n", t.render())?;

    let mut t = Table::new(&["REGION", "NAME", "SIZE", "OFFSET", "FLAGS", "CAPABILITIES"]);
    for (i, r) in &regions {
        let name = describe::region_name(pci, *i);
        match r {
            Ok(r) => t.row(vec![
                i.to_string(),
                name,
                size(r.size),
                hex(r.offset),
                names(&describe::region_flags(r.flags)),
                capabilities_text(&r.caps),
            ]),
            Err(e) => t.row(vec![i.to_string(), name, format!("error: {e}")]),
        };
    }
    say!("{}\n", t.render())?;

    let mut t = Table::new(&["IRQ", "NAME", "COUNT", "FLAGS"]);
    for (i, r) in &irqs {
        let name = describe::irq_name(pci, *i);
        match r {
            Ok(q) => t.row(vec![
                i.to_string(),
                name,
                q.count.to_string(),
                names(&describe::irq_flags(q.flags)),
            ]),
            Err(e) => t.row(vec![i.to_string(), name, format!("error: {e}")]),
        };
    }
    say!("{}\n", t.render())?;

    let mut t = Table::new(&["FEATURE", "NAME", "GET", "SET"]);
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    for (n, name, r) in &features {
        match r {
            Ok(s) => t.row(vec![
                n.to_string(),
                (*name).to_owned(),
                yes(s.get),
                yes(s.set),
            ]),
            Err(e) => t.row(vec![
                n.to_string(),
                (*name).to_owned(),
                format!("error: {e}"),
            ]),
        };
    }
    say!("{}", t.render())
}
