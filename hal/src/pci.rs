//! vfio-pci conventions and PCI config-space helpers over any [`Device`].

use crate::caps::ParseError;
use crate::device::Device;
use crate::error::{Buffer, Error, Result, Target};
use crate::msix::{MsixError, MsixLayout};
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
    /// Extended capability id of Advanced Error Reporting.
    pub const EXT_CAP_ID_ERR: u16 = 0x01;
    /// Extended capability id of the Device Serial Number.
    pub const EXT_CAP_ID_DSN: u16 = 0x03;
    /// Extended capability id of Alternative Routing-ID Interpretation.
    pub const EXT_CAP_ID_ARI: u16 = 0x0e;
    /// Extended capability id of SR-IOV.
    pub const EXT_CAP_ID_SRIOV: u16 = 0x10;
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

/// One entry of the PCIe extended capability list (config offsets 0x100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciExtCap {
    /// Extended capability id (`cfg::EXT_CAP_ID_*`); vfio-pci shows a
    /// capability it hides as id 0, keeping the chain through it.
    pub id: u16,
    /// Capability version.
    pub version: u8,
    /// Offset in config space.
    pub offset: u16,
}

/// Size of PCIe config space; extended capabilities live in `0x100..` it.
pub const PCIE_CONFIG_SIZE: usize = 4096;
/// Where the extended capability list starts.
pub const EXT_CAP_START: u16 = 0x100;
/// Most extended capabilities 4 KiB of config space can hold (one dword
/// header each past 0x100).
pub const MAX_PCI_EXT_CAPS: usize = (PCIE_CONFIG_SIZE - EXT_CAP_START as usize) / 4;

/// Walks the PCIe extended capability list in a config-space snapshot.
///
/// A snapshot of 256 bytes or less (conventional PCI, or a config region
/// that stops there) has none, and so has one whose header at 0x100 is 0 or
/// all ones. Loop-safe like [`walk_capabilities`]: a next pointer below
/// 0x100, a repeated pointer, or more than [`MAX_PCI_EXT_CAPS`] entries is
/// an error; the low two pointer bits are ignored. Bytes past 4 KiB are not
/// looked at.
///
/// ```
/// use vfio_hal::pci::{cfg, walk_extended_capabilities, PciExtCap};
///
/// // AER at 0x100 (version 2), pointing at the serial number at 0x140.
/// let mut config = vec![0u8; 4096];
/// config[0x100..0x104].copy_from_slice(&(u32::from(cfg::EXT_CAP_ID_ERR) | 2 << 16 | 0x140 << 20).to_le_bytes());
/// config[0x140..0x144].copy_from_slice(&(u32::from(cfg::EXT_CAP_ID_DSN) | 1 << 16).to_le_bytes());
/// let caps = walk_extended_capabilities(&config)?;
/// assert_eq!(caps, [
///     PciExtCap { id: cfg::EXT_CAP_ID_ERR, version: 2, offset: 0x100 },
///     PciExtCap { id: cfg::EXT_CAP_ID_DSN, version: 1, offset: 0x140 },
/// ]);
///
/// // A chain that points back at itself is refused, not followed forever.
/// config[0x140..0x144].copy_from_slice(&(3_u32 | 1 << 16 | 0x100 << 20).to_le_bytes());
/// assert!(walk_extended_capabilities(&config).is_err());
/// # Ok::<(), vfio_hal::caps::ParseError>(())
/// ```
pub fn walk_extended_capabilities(config: &[u8]) -> Result<Vec<PciExtCap>, ParseError> {
    let config = &config[..config.len().min(PCIE_CONFIG_SIZE)];
    if config.len() <= usize::from(EXT_CAP_START) {
        return Ok(Vec::new());
    }
    let r = crate::bytes::Reader::little_endian(config);
    let first = r.u32(usize::from(EXT_CAP_START))?;
    if first == 0 || first == u32::MAX {
        return Ok(Vec::new());
    }
    let mut seen = [false; PCIE_CONFIG_SIZE / 4];
    let mut out = Vec::new();
    let mut ptr = EXT_CAP_START;
    loop {
        if std::mem::replace(&mut seen[usize::from(ptr) / 4], true) {
            return Err(ParseError::Cycle {
                offset: usize::from(ptr),
            });
        }
        if out.len() == MAX_PCI_EXT_CAPS {
            return Err(ParseError::TooMany {
                max: MAX_PCI_EXT_CAPS,
            });
        }
        let header = r.u32(usize::from(ptr))?;
        out.push(PciExtCap {
            id: header as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset: ptr,
        });
        // 12 bits: always below 4 KiB.
        let next = ((header >> 20) as u16) & !3;
        if next == 0 {
            return Ok(out);
        }
        if next < EXT_CAP_START {
            return Err(ParseError::InvalidField {
                field: "extended capability pointer",
                offset: usize::from(ptr),
                value: u64::from(next),
            });
        }
        ptr = next;
    }
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

    /// The PCIe extended capability list, walked loop-safely
    /// ([`walk_extended_capabilities`]); empty for a config region of 256
    /// bytes.
    ///
    /// ```
    /// use vfio_hal::prelude::*;
    /// use vfio_hal::pci::cfg;
    /// use vfio_hal_mock::{models::{CopyEngine, Edu}, MockContainer};
    ///
    /// let container = MockContainer::new();
    /// container.plug("ce", CopyEngine::new())?;
    /// container.plug("edu", Edu::new())?;
    /// // The copy engine is PCIe (4 KiB of config space) without extended
    /// // capabilities; edu is conventional PCI (256 bytes).
    /// let ce = container.open_device("ce")?;
    /// assert_eq!(ce.config()?.info().size, 4096);
    /// assert!(ce.extended_capabilities()?.is_empty());
    /// assert_eq!(ce.find_extended_capability(cfg::EXT_CAP_ID_ERR)?, None);
    /// assert!(container.open_device("edu")?.extended_capabilities()?.is_empty());
    /// # Ok::<(), vfio_hal::Error>(())
    /// ```
    fn extended_capabilities(&self) -> Result<Vec<PciExtCap>> {
        let config = self.config()?;
        let len = config.info().size.min(PCIE_CONFIG_SIZE as u64) as usize;
        let mut snapshot = vec![0u8; len];
        config.read(0, &mut snapshot)?;
        walk_extended_capabilities(&snapshot).map_err(|source| Error::Malformed {
            buffer: Buffer::ConfigSpace,
            source,
        })
    }

    /// The first extended capability with `id`, if present.
    fn find_extended_capability(&self, id: u16) -> Result<Option<PciExtCap>> {
        Ok(self
            .extended_capabilities()?
            .into_iter()
            .find(|c| c.id == id))
    }

    /// Where the MSI-X table and PBA live, from the MSI-X capability,
    /// checked against the sizes of their BARs; `None` without MSI-X.
    /// A malformed capability is [`ErrorKind::Malformed`](crate::ErrorKind::Malformed)
    /// with an [`MsixError`] source.
    fn msix_layout(&self) -> Result<Option<MsixLayout>> {
        let Some(cap) = self.find_capability(cfg::CAP_ID_MSIX)? else {
            return Ok(None);
        };
        let config = self.config()?;
        let at = u64::from(cap.offset);
        let layout = MsixLayout::from_registers(
            cap.offset,
            config.read_at(at + 2)?,
            config.read_at(at + 4)?,
            config.read_at(at + 8)?,
        )
        .map_err(MsixError::into_error)?;
        let table_bar = self.region(layout.table_bar)?.info().size;
        let pba_bar = self.region(layout.pba_bar)?.info().size;
        layout
            .check_bars(table_bar, pba_bar)
            .map_err(MsixError::into_error)?;
        Ok(Some(layout))
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

    /// A 4 KiB config space with extended capabilities `(offset, id, next)`.
    fn config_with_ext_caps(chain: &[(u16, u16, u16)]) -> Vec<u8> {
        let mut c = vec![0u8; PCIE_CONFIG_SIZE];
        for &(off, id, next) in chain {
            let header = u32::from(id) | 1 << 16 | u32::from(next) << 20;
            c[off as usize..off as usize + 4].copy_from_slice(&header.to_le_bytes());
        }
        c
    }

    #[test]
    fn extended_walk_follows_the_chain() {
        let c = config_with_ext_caps(&[
            (0x100, cfg::EXT_CAP_ID_ERR, 0x148),
            (0x148, 0, 0x200),
            (0x200, cfg::EXT_CAP_ID_SRIOV, 0),
        ]);
        let caps = walk_extended_capabilities(&c).expect("walks");
        assert_eq!(
            caps.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>(),
            [(1, 0x100), (0, 0x148), (0x10, 0x200)]
        );
        assert!(caps.iter().all(|c| c.version == 1));
    }

    #[test]
    fn extended_walk_is_empty_without_extended_space() {
        assert_eq!(walk_extended_capabilities(&[0xff; 256]), Ok(vec![]));
        assert_eq!(walk_extended_capabilities(&[0; 4096]), Ok(vec![]));
        assert_eq!(walk_extended_capabilities(&[0xff; 4096]), Ok(vec![]));
    }

    #[test]
    fn extended_walk_rejects_loops_and_low_pointers() {
        let c = config_with_ext_caps(&[(0x100, 1, 0x200), (0x200, 3, 0x100)]);
        assert_eq!(
            walk_extended_capabilities(&c),
            Err(ParseError::Cycle { offset: 0x100 })
        );
        let c = config_with_ext_caps(&[(0x100, 1, 0x100)]);
        assert_eq!(
            walk_extended_capabilities(&c),
            Err(ParseError::Cycle { offset: 0x100 })
        );
        let c = config_with_ext_caps(&[(0x100, 1, 0x200), (0x200, 3, 0x40)]);
        assert_eq!(
            walk_extended_capabilities(&c),
            Err(ParseError::InvalidField {
                field: "extended capability pointer",
                offset: 0x200,
                value: 0x40
            })
        );
        // A pointer into a snapshot cut short is truncation, not a panic.
        let c = config_with_ext_caps(&[(0x100, 1, 0x800)]);
        assert!(matches!(
            walk_extended_capabilities(&c[..0x200]),
            Err(ParseError::Truncated { .. })
        ));
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
        fn extended_walk_never_panics_and_is_bounded(
            chain in proptest::collection::vec((any::<u16>(), any::<u16>()), 0..40),
            len in 0usize..5000,
        ) {
            // Random headers at random dword offsets; some point into the header.
            let mut c = vec![0u8; len];
            for (i, &(id, next)) in chain.iter().enumerate() {
                let at = 0x100 + 4 * (usize::from(next) % 0x3c0);
                let at = if i == 0 { 0x100 } else { at };
                if at + 4 <= c.len() {
                    let header = u32::from(id) | u32::from(next) << 16;
                    c[at..at + 4].copy_from_slice(&header.to_le_bytes());
                }
            }
            if let Ok(caps) = walk_extended_capabilities(&c) {
                prop_assert!(caps.len() <= MAX_PCI_EXT_CAPS);
                prop_assert!(caps.iter().all(|c| c.offset >= EXT_CAP_START && usize::from(c.offset) < PCIE_CONFIG_SIZE));
            }
        }

        #[test]
        fn walk_never_panics_and_is_bounded(config in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(caps) = walk_capabilities(&config) {
                prop_assert!(caps.len() <= MAX_PCI_CAPS);
                prop_assert!(caps.iter().all(|c| c.offset >= 0x40));
            }
        }
    }
}
