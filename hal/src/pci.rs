//! vfio-pci conventions and PCI config-space helpers over any [`Device`].

use crate::caps::ParseError;
use crate::device::Device;
use crate::error::{Buffer, Error, Result, Target};
use crate::region::{Region, RegionExt};

/// vfio-pci region indices.
pub mod region {
    /// BAR 0 (BARs 1–5 follow as 1–5).
    pub const BAR0: u32 = 0;
    /// BAR 5.
    pub const BAR5: u32 = 5;
    /// Expansion ROM.
    pub const ROM: u32 = 6;
    /// Config space.
    pub const CONFIG: u32 = 7;
    /// Legacy VGA ranges.
    pub const VGA: u32 = 8;
}

/// vfio-pci places region `i` at file offset `i << 40`.
pub const OFFSET_SHIFT: u32 = 40;

/// The device-file offset vfio-pci uses for region `index`.
pub const fn region_offset(index: u32) -> u64 {
    (index as u64) << OFFSET_SHIFT
}

/// The region index a vfio-pci device-file offset falls in.
pub const fn offset_to_index(offset: u64) -> u32 {
    (offset >> OFFSET_SHIFT) as u32
}

/// The offset within its region of a vfio-pci device-file offset.
pub const fn offset_in_region(offset: u64) -> u64 {
    offset & ((1u64 << OFFSET_SHIFT) - 1)
}

/// Config-space register offsets used by the helpers.
pub mod cfg {
    /// Vendor id (u16).
    pub const VENDOR_ID: u64 = 0x00;
    /// Device id (u16).
    pub const DEVICE_ID: u64 = 0x02;
    /// Command (u16).
    pub const COMMAND: u64 = 0x04;
    /// Status (u16).
    pub const STATUS: u64 = 0x06;
    /// Revision id (u8).
    pub const REVISION: u64 = 0x08;
    /// Class code (3 bytes at 0x09).
    pub const CLASS: u64 = 0x09;
    /// Header type (u8).
    pub const HEADER_TYPE: u64 = 0x0e;
    /// BAR 0 (u32; BARs at 0x10 + 4 * n).
    pub const BAR0: u64 = 0x10;
    /// Capability list pointer (u8).
    pub const CAP_PTR: u64 = 0x34;
    /// Interrupt pin (u8).
    pub const INTERRUPT_PIN: u64 = 0x3d;
    /// Command: memory space enable.
    pub const CMD_MEMORY: u16 = 1 << 1;
    /// Command: bus master enable.
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
    /// Command: INTx disable.
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    /// Status: capability list present.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    /// Capability id of MSI.
    pub const CAP_ID_MSI: u8 = 0x05;
    /// Capability id of PCI Express.
    pub const CAP_ID_EXP: u8 = 0x10;
    /// Capability id of MSI-X.
    pub const CAP_ID_MSIX: u8 = 0x11;
}

/// One entry of the standard capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciCap {
    /// Capability id (`cfg::CAP_ID_*`).
    pub id: u8,
    /// Offset in config space.
    pub offset: u8,
}

/// Most capabilities a 256-byte config space can hold (48 dwords past 0x40).
pub const MAX_PCI_CAPS: usize = 48;

/// Walks the standard capability list in a config-space snapshot.
///
/// Loop-safe: a pointer below 0x40, a repeated pointer or more than
/// [`MAX_PCI_CAPS`] entries is an error; the low two pointer bits are
/// ignored as the spec says. A snapshot shorter than 64 bytes is truncated.
pub fn walk_capabilities(config: &[u8]) -> Result<Vec<PciCap>, ParseError> {
    let r = crate::bytes::Reader::little_endian(config);
    let status = r.u16(cfg::STATUS as usize)?;
    if status & cfg::STATUS_CAP_LIST == 0 {
        return Ok(Vec::new());
    }
    let mut seen = [false; 256];
    let mut out = Vec::new();
    let mut ptr = r.u8(cfg::CAP_PTR as usize)? & !3;
    while ptr != 0 {
        if ptr < 0x40 {
            return Err(ParseError::InvalidField {
                field: "capability pointer",
                offset: out
                    .last()
                    .map_or(cfg::CAP_PTR as usize, |c: &PciCap| c.offset as usize + 1),
                value: u64::from(ptr),
            });
        }
        if std::mem::replace(&mut seen[ptr as usize], true) {
            return Err(ParseError::Cycle {
                offset: ptr as usize,
            });
        }
        if out.len() == MAX_PCI_CAPS {
            return Err(ParseError::TooMany { max: MAX_PCI_CAPS });
        }
        let id = r.u8(ptr as usize)?;
        out.push(PciCap { id, offset: ptr });
        ptr = r.u8(ptr as usize + 1)? & !3;
    }
    Ok(out)
}

/// A decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bar {
    /// Unimplemented (region size 0).
    Absent,
    /// I/O port space.
    Io {
        /// Port address programmed in config space.
        address: u32,
        /// Size in bytes.
        size: u64,
    },
    /// Memory space.
    Memory {
        /// Address programmed in config space.
        address: u64,
        /// Size in bytes.
        size: u64,
        /// 64-bit BAR (uses the next BAR slot for the high half).
        is_64bit: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
}

/// Decodes BAR register value(s) plus the size vfio reports for the region.
///
/// `high` is the next BAR register, consulted only for a 64-bit BAR.
pub fn decode_bar(low: u32, high: u32, size: u64) -> Bar {
    if size == 0 {
        Bar::Absent
    } else if low & 1 == 1 {
        Bar::Io {
            address: low & !3,
            size,
        }
    } else {
        let is_64bit = (low >> 1) & 3 == 2;
        let high = if is_64bit { u64::from(high) << 32 } else { 0 };
        Bar::Memory {
            address: high | u64::from(low & !0xf),
            size,
            is_64bit,
            prefetchable: low & 8 != 0,
        }
    }
}

/// Config-space helpers for any vfio-pci [`Device`] (also `dyn Device`).
pub trait PciConfig: Device {
    /// The config-space region.
    fn config(&self) -> Result<Self::Region> {
        self.region(region::CONFIG)
    }

    /// Vendor id.
    fn vendor_id(&self) -> Result<u16> {
        self.config()?.read_at(cfg::VENDOR_ID)
    }

    /// Device id.
    fn device_id(&self) -> Result<u16> {
        self.config()?.read_at(cfg::DEVICE_ID)
    }

    /// Revision id.
    fn revision(&self) -> Result<u8> {
        self.config()?.read_at(cfg::REVISION)
    }

    /// Class code (base, sub, prog-if) as a 24-bit number.
    fn class_code(&self) -> Result<u32> {
        Ok(self.config()?.read_at::<u32>(cfg::REVISION)? >> 8)
    }

    /// Command register.
    fn command(&self) -> Result<u16> {
        self.config()?.read_at(cfg::COMMAND)
    }

    /// Sets or clears command bits (read-modify-write).
    fn update_command(&self, set: u16, clear: u16) -> Result<u16> {
        let config = self.config()?;
        let cmd = (config.read_at::<u16>(cfg::COMMAND)? | set) & !clear;
        config.write_at(cfg::COMMAND, cmd)?;
        Ok(cmd)
    }

    /// Enables or disables bus mastering (and memory decode when enabling).
    /// vfio-pci leaves both off; DMA needs them.
    fn set_bus_master(&self, enable: bool) -> Result<()> {
        if enable {
            self.update_command(cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY, 0)?;
        } else {
            self.update_command(0, cfg::CMD_BUS_MASTER)?;
        }
        Ok(())
    }

    /// The standard capability list, walked loop-safely.
    fn capabilities(&self) -> Result<Vec<PciCap>> {
        let config = self.config()?;
        let len = config.info().size.min(256) as usize;
        let mut snapshot = vec![0u8; len];
        config.read(0, &mut snapshot)?;
        walk_capabilities(&snapshot).map_err(|source| Error::Malformed {
            buffer: Buffer::ConfigSpace,
            source,
        })
    }

    /// The first capability with `id`, if present.
    fn find_capability(&self, id: u8) -> Result<Option<PciCap>> {
        Ok(self.capabilities()?.into_iter().find(|c| c.id == id))
    }

    /// BAR `index` (0–5), decoded from config space and the region size.
    fn bar(&self, index: u32) -> Result<Bar> {
        if index > region::BAR5 {
            return Err(Error::NoSuchIndex {
                op: "bar",
                target: Target::Region(index),
                count: 6,
            });
        }
        let config = self.config()?;
        let reg = cfg::BAR0 + 4 * u64::from(index);
        let low = config.read_at::<u32>(reg)?;
        let high = if index < region::BAR5 {
            config.read_at::<u32>(reg + 4)?
        } else {
            0
        };
        let size = self.region(index)?.info().size;
        Ok(decode_bar(low, high, size))
    }
}

impl<D: Device + ?Sized> PciConfig for D {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config_with_caps(chain: &[(u8, u8, u8)]) -> Vec<u8> {
        // (offset, id, next)
        let mut c = vec![0u8; 256];
        c[cfg::STATUS as usize] = cfg::STATUS_CAP_LIST as u8;
        c[cfg::CAP_PTR as usize] = chain.first().map_or(0, |x| x.0);
        for &(off, id, next) in chain {
            c[off as usize] = id;
            c[off as usize + 1] = next;
        }
        c
    }

    #[test]
    fn walk_finds_msi_then_pcie() {
        let c = config_with_caps(&[(0x40, cfg::CAP_ID_MSI, 0x50), (0x50, cfg::CAP_ID_EXP, 0)]);
        assert_eq!(
            walk_capabilities(&c).expect("walks"),
            vec![
                PciCap {
                    id: 5,
                    offset: 0x40
                },
                PciCap {
                    id: 0x10,
                    offset: 0x50
                }
            ]
        );
    }

    #[test]
    fn walk_rejects_loops() {
        let c = config_with_caps(&[(0x40, 5, 0x50), (0x50, 0x10, 0x40)]);
        assert_eq!(
            walk_capabilities(&c),
            Err(ParseError::Cycle { offset: 0x40 })
        );
        let c = config_with_caps(&[(0x40, 5, 0x40)]);
        assert_eq!(
            walk_capabilities(&c),
            Err(ParseError::Cycle { offset: 0x40 })
        );
    }

    #[test]
    fn region_offsets_round_trip() {
        assert_eq!(region_offset(region::CONFIG), 7 << 40);
        assert_eq!(offset_to_index(region_offset(5) + 0x123), 5);
        assert_eq!(offset_in_region(region_offset(5) + 0x123), 0x123);
    }

    #[test]
    fn bars_decode() {
        assert_eq!(
            decode_bar(0xfe00_000c, 0x1, 0x10_0000),
            Bar::Memory {
                address: 0x1_fe00_0000,
                size: 0x10_0000,
                is_64bit: true,
                prefetchable: true
            }
        );
        assert_eq!(
            decode_bar(0xc001, 0, 0x20),
            Bar::Io {
                address: 0xc000,
                size: 0x20
            }
        );
        assert_eq!(decode_bar(0xfe00_0000, 0x1, 0), Bar::Absent);
    }

    proptest! {
        #[test]
        fn walk_never_panics_and_is_bounded(config in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(caps) = walk_capabilities(&config) {
                prop_assert!(caps.len() <= MAX_PCI_CAPS);
                prop_assert!(caps.iter().all(|c| c.offset >= 0x40));
            }
        }
    }
}
