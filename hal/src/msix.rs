//! The MSI-X capability's layout: where the vector table and the
//! pending-bit array (PBA) live, and which parts of their BAR a VMM may map
//! into a guest while it traps them (crosvm's `VfioMsixCap`).
//!
//! A VMM emulates the guest's view of the table (the guest programs
//! addresses it never owns), so every page holding the table or the PBA must
//! trap; the rest of the BAR can be mapped for speed. Current kernels report
//! such a BAR as mappable as a whole (`MSIX_MAPPABLE`), older ones through
//! sparse areas that already leave the table's page out: carving the table
//! and PBA pages out of [`RegionInfo::mappable_areas`] gives the right areas
//! on both.
//!
//! The capability comes from the device and is untrusted: a BIR past BAR 5,
//! a table or PBA outside its BAR and overlapping structures are
//! [`MsixError`]s, never a panic.
//!
//! ```
//! use vfio_hal::prelude::*;
//! use vfio_hal::{memory::page_size, SparseArea};
//! use vfio_hal_mock::{models::{CopyEngine, Edu}, MockContainer};
//!
//! let container = MockContainer::new();
//! container.plug("ce", CopyEngine::with_vectors(8))?;
//! container.plug("edu", Edu::new())?;
//! let ce = container.open_device("ce")?;
//!
//! let msix = ce.msix_layout()?.expect("the copy engine has MSI-X");
//! assert_eq!(msix.table_size, 8);
//! assert_eq!((msix.table_bar, msix.table_offset, msix.table_len()), (2, 0x4000, 8 * 16));
//! assert_eq!((msix.pba_bar, msix.pba_offset, msix.pba_len()), (2, 0x4800, 8));
//! assert!(msix.table_contains(2, 0x4010) && !msix.table_contains(0, 0x4010));
//!
//! // BAR2 around the table's page: both SRAM areas, mapped one by one.
//! let bar2 = ce.region(msix.table_bar)?;
//! let areas = msix.mappable_areas(bar2.info(), page_size()).map_err(|e| e.into_error())?;
//! assert_eq!(areas, [SparseArea { offset: 0, size: 0x4000 }, SparseArea { offset: 0x5000, size: 0x3000 }]);
//!
//! // edu has MSI, no MSI-X.
//! assert!(container.open_device("edu")?.msix_layout()?.is_none());
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use crate::caps::SparseArea;
use crate::error::{Error, ErrorKind, Target};
use crate::region::RegionInfo;

/// Bytes per MSI-X table entry.
pub const TABLE_ENTRY_SIZE: u64 = 16;
/// Length of the MSI-X capability in config space.
pub const CAP_LEN: usize = 12;
/// The highest BAR a BIR may name.
pub const MAX_BIR: u32 = 5;

/// The two structures an MSI-X capability places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsixStructure {
    /// The vector table.
    Table,
    /// The pending-bit array.
    Pba,
}

impl std::fmt::Display for MsixStructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Table => "table",
            Self::Pba => "PBA",
        })
    }
}

/// Why an MSI-X capability, or a question about it, does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsixError {
    /// The BIR field names no BAR.
    #[error("MSI-X {structure} BIR {bir} names no BAR (0 to {MAX_BIR})")]
    BadBir {
        /// Which structure.
        structure: MsixStructure,
        /// The BIR found.
        bir: u32,
    },
    /// The structure does not fit in its BAR.
    #[error(
        "MSI-X {structure} at {offset:#x}+{len:#x} lies outside BAR {bar} of {bar_size:#x} bytes"
    )]
    OutsideBar {
        /// Which structure.
        structure: MsixStructure,
        /// Its BAR.
        bar: u32,
        /// Its offset in the BAR.
        offset: u64,
        /// Its length.
        len: u64,
        /// The BAR's size: the violated bound.
        bar_size: u64,
    },
    /// Offset plus length (or its page-aligned end) does not fit in 64 bits.
    #[error("MSI-X {structure} at {offset:#x}+{len:#x} overflows u64")]
    Overflow {
        /// Which structure.
        structure: MsixStructure,
        /// Its offset in the BAR.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The table and the PBA share bytes of one BAR.
    #[error("MSI-X table at {table_offset:#x} and PBA at {pba_offset:#x} overlap in BAR {bar}")]
    Overlap {
        /// The BAR both are in.
        bar: u32,
        /// The table's offset.
        table_offset: u64,
        /// The PBA's offset.
        pba_offset: u64,
    },
    /// A config-space snapshot ends inside the capability.
    #[error("MSI-X capability at {cap_offset:#x} needs {CAP_LEN} bytes; config space has {len}")]
    Truncated {
        /// The capability's offset.
        cap_offset: u8,
        /// The snapshot's length.
        len: usize,
    },
    /// Pages must be a power of two in size.
    #[error("page size {page_size:#x} is not a power of two")]
    PageSize {
        /// The size given.
        page_size: u64,
    },
}

impl MsixError {
    /// As the crate's [`Error`]: kind [`ErrorKind::Malformed`] (the caller's
    /// bad page size: [`ErrorKind::InvalidArgument`]), this error its source.
    pub fn into_error(self) -> Error {
        let kind = match self {
            Self::PageSize { .. } => ErrorKind::InvalidArgument,
            _ => ErrorKind::Malformed,
        };
        let target = match self {
            Self::BadBir { .. } | Self::Truncated { .. } | Self::PageSize { .. } => Target::None,
            Self::OutsideBar { bar, .. } | Self::Overlap { bar, .. } => Target::Region(bar),
            Self::Overflow { .. } => Target::None,
        };
        Error::other("msix layout", target, kind, self)
    }
}

/// Where the MSI-X table and PBA live, from the MSI-X capability.
///
/// Build it with [`MsixLayout::from_registers`] or [`MsixLayout::parse`],
/// or read a device's with [`PciConfig::msix_layout`](crate::PciConfig::msix_layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsixLayout {
    /// Offset of the capability in config space.
    pub cap_offset: u8,
    /// Number of table entries: the vector count (1 to 2048).
    pub table_size: u32,
    /// BAR holding the table (0–5).
    pub table_bar: u32,
    /// Offset of the table in its BAR.
    pub table_offset: u64,
    /// BAR holding the pending-bit array (0–5).
    pub pba_bar: u32,
    /// Offset of the PBA in its BAR.
    pub pba_offset: u64,
}

impl MsixLayout {
    /// Decodes the capability's Message Control, Table Offset/BIR and PBA
    /// Offset/BIR registers; a BIR past 5 is [`MsixError::BadBir`].
    pub fn from_registers(
        cap_offset: u8,
        control: u16,
        table: u32,
        pba: u32,
    ) -> Result<Self, MsixError> {
        let bir = |structure, reg: u32| match reg & 7 {
            bir if bir > MAX_BIR => Err(MsixError::BadBir { structure, bir }),
            bir => Ok(bir),
        };
        Ok(Self {
            cap_offset,
            table_size: u32::from(control & 0x7ff) + 1,
            table_bar: bir(MsixStructure::Table, table)?,
            table_offset: u64::from(table & !7),
            pba_bar: bir(MsixStructure::Pba, pba)?,
            pba_offset: u64::from(pba & !7),
        })
    }

    /// Decodes the capability at `cap_offset` of a config-space snapshot.
    pub fn parse(config: &[u8], cap_offset: u8) -> Result<Self, MsixError> {
        let at = usize::from(cap_offset);
        let cap = config.get(at..at + CAP_LEN).ok_or(MsixError::Truncated {
            cap_offset,
            len: config.len(),
        })?;
        let u32_at = |i: usize| u32::from_le_bytes([cap[i], cap[i + 1], cap[i + 2], cap[i + 3]]);
        Self::from_registers(
            cap_offset,
            u16::from_le_bytes([cap[2], cap[3]]),
            u32_at(4),
            u32_at(8),
        )
    }

    /// Bytes the table occupies (16 per entry).
    pub fn table_len(&self) -> u64 {
        u64::from(self.table_size) * TABLE_ENTRY_SIZE
    }

    /// Bytes the PBA occupies (one bit per entry, in 64-bit words).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }

    /// The structures as `(which, bar, offset, len)`.
    fn structures(&self) -> [(MsixStructure, u32, u64, u64); 2] {
        [
            (
                MsixStructure::Table,
                self.table_bar,
                self.table_offset,
                self.table_len(),
            ),
            (
                MsixStructure::Pba,
                self.pba_bar,
                self.pba_offset,
                self.pba_len(),
            ),
        ]
    }

    /// Checks that the table fits in its BAR of `table_bar_size` bytes, the
    /// PBA in its BAR of `pba_bar_size`, and that they do not overlap.
    pub fn check_bars(&self, table_bar_size: u64, pba_bar_size: u64) -> Result<(), MsixError> {
        let mut spans = [(0, 0); 2];
        for ((structure, bar, offset, len), (span, bar_size)) in self
            .structures()
            .into_iter()
            .zip(spans.iter_mut().zip([table_bar_size, pba_bar_size]))
        {
            if bar > MAX_BIR {
                return Err(MsixError::BadBir {
                    structure,
                    bir: bar,
                });
            }
            let end = offset.checked_add(len).ok_or(MsixError::Overflow {
                structure,
                offset,
                len,
            })?;
            if end > bar_size {
                return Err(MsixError::OutsideBar {
                    structure,
                    bar,
                    offset,
                    len,
                    bar_size,
                });
            }
            *span = (offset, end);
        }
        let [(table, table_end), (pba, pba_end)] = spans;
        if self.table_bar == self.pba_bar && table < pba_end && pba < table_end {
            return Err(MsixError::Overlap {
                bar: self.table_bar,
                table_offset: table,
                pba_offset: pba,
            });
        }
        Ok(())
    }

    /// Whether byte `offset` of BAR `bar` is in the table.
    pub fn table_contains(&self, bar: u32, offset: u64) -> bool {
        bar == self.table_bar
            && offset >= self.table_offset
            && offset - self.table_offset < self.table_len()
    }

    /// Whether byte `offset` of BAR `bar` is in the PBA.
    pub fn pba_contains(&self, bar: u32, offset: u64) -> bool {
        bar == self.pba_bar
            && offset >= self.pba_offset
            && offset - self.pba_offset < self.pba_len()
    }

    /// The parts of `region` (a BAR) a VMM may map while it traps the
    /// MSI-X table and PBA: the region's mappable areas (its sparse areas,
    /// or all of it with the MMAP flag) minus every `page_size` page that
    /// holds a byte of the table or PBA. A BAR holding neither keeps its
    /// mappable areas; one without the MMAP flag has none.
    pub fn mappable_areas(
        &self,
        region: &RegionInfo,
        page_size: u64,
    ) -> Result<Vec<SparseArea>, MsixError> {
        if !page_size.is_power_of_two() {
            return Err(MsixError::PageSize { page_size });
        }
        let mut holes = Vec::new();
        for (structure, bar, offset, len) in self.structures() {
            if bar != region.index {
                continue;
            }
            let overflow = MsixError::Overflow {
                structure,
                offset,
                len,
            };
            let end = offset
                .checked_add(len)
                .and_then(|end| end.checked_next_multiple_of(page_size))
                .ok_or(overflow)?;
            holes.push((offset & !(page_size - 1), end));
        }
        let mut out = Vec::new();
        for area in region.mappable_areas() {
            // `mappable_areas` drops areas whose end overflows.
            let mut pieces = vec![(area.offset, area.offset + area.size)];
            for &(hole, hole_end) in &holes {
                pieces = pieces
                    .into_iter()
                    .flat_map(|(start, end)| {
                        let before = (start, hole.min(end));
                        let after = (hole_end.max(start), end);
                        [before, after].into_iter().filter(|(s, e)| s < e)
                    })
                    .collect();
            }
            out.extend(pieces.into_iter().map(|(start, end)| SparseArea {
                offset: start,
                size: end - start,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Capability;
    use crate::region::flags;
    use proptest::prelude::*;

    const PAGE: u64 = 0x1000;

    fn bar(index: u32, size: u64, caps: Vec<Capability>) -> RegionInfo {
        RegionInfo {
            index,
            flags: flags::READ | flags::WRITE | flags::MMAP,
            size,
            offset: u64::from(index) << 40,
            caps,
        }
    }

    fn area(offset: u64, size: u64) -> SparseArea {
        SparseArea { offset, size }
    }

    /// QEMU's NVMe: 64 vectors, table at 0x2000 and PBA at 0x3000 of BAR0.
    fn nvme() -> MsixLayout {
        MsixLayout::from_registers(0x40, 63, 0x2000, 0x3000).expect("valid")
    }

    #[test]
    fn registers_decode() {
        let l = MsixLayout::from_registers(0x70, 0x8003, 0x4002, 0x4803).expect("valid");
        assert_eq!(
            l,
            MsixLayout {
                cap_offset: 0x70,
                table_size: 4,
                table_bar: 2,
                table_offset: 0x4000,
                pba_bar: 3,
                pba_offset: 0x4800,
            }
        );
        assert_eq!((l.table_len(), l.pba_len()), (64, 8));
        let l = MsixLayout::from_registers(0x70, 0x7ff, 0, 0x8000).expect("valid");
        assert_eq!(
            (l.table_size, l.table_len(), l.pba_len()),
            (2048, 0x8000, 256)
        );
    }

    #[test]
    fn a_bir_past_5_is_refused() {
        assert_eq!(
            MsixLayout::from_registers(0x40, 0, 0x2006, 0x3000),
            Err(MsixError::BadBir {
                structure: MsixStructure::Table,
                bir: 6
            })
        );
        assert_eq!(
            MsixLayout::from_registers(0x40, 0, 0x2000, 0x3007),
            Err(MsixError::BadBir {
                structure: MsixStructure::Pba,
                bir: 7
            })
        );
        let mut l = nvme();
        l.pba_bar = 9;
        assert!(matches!(
            l.check_bars(0x4000, 0x4000),
            Err(MsixError::BadBir { bir: 9, .. })
        ));
    }

    #[test]
    fn parse_reads_the_snapshot_and_refuses_a_short_one() {
        let mut config = vec![0u8; 256];
        config[0x42..0x44].copy_from_slice(&63u16.to_le_bytes());
        config[0x44..0x48].copy_from_slice(&0x2000u32.to_le_bytes());
        config[0x48..0x4c].copy_from_slice(&0x3000u32.to_le_bytes());
        assert_eq!(MsixLayout::parse(&config, 0x40), Ok(nvme()));
        assert_eq!(
            MsixLayout::parse(&config[..0x4b], 0x40),
            Err(MsixError::Truncated {
                cap_offset: 0x40,
                len: 0x4b
            })
        );
        assert!(MsixLayout::parse(&config, 0xfc).is_err());
    }

    #[test]
    fn structures_must_fit_their_bars_and_not_overlap() {
        assert_eq!(nvme().check_bars(0x4000, 0x4000), Ok(()));
        // The PBA (8 bytes at 0x3000) needs 0x3008 bytes.
        assert_eq!(
            nvme().check_bars(0x4000, 0x3004),
            Err(MsixError::OutsideBar {
                structure: MsixStructure::Pba,
                bar: 0,
                offset: 0x3000,
                len: 8,
                bar_size: 0x3004
            })
        );
        // The upper half of a 64-bit BAR has size 0.
        assert!(matches!(
            nvme().check_bars(0, 0x4000),
            Err(MsixError::OutsideBar {
                structure: MsixStructure::Table,
                bar_size: 0,
                ..
            })
        ));
        let overlapping = MsixLayout::from_registers(0x40, 63, 0x2000, 0x2100).expect("bir");
        assert_eq!(
            overlapping.check_bars(0x4000, 0x4000),
            Err(MsixError::Overlap {
                bar: 0,
                table_offset: 0x2000,
                pba_offset: 0x2100
            })
        );
        let other_bar = MsixLayout::from_registers(0x40, 63, 0x2000, 0x2101).expect("bir");
        assert_eq!(other_bar.check_bars(0x4000, 0x4000), Ok(()));
    }

    #[test]
    fn offsets_near_u64_max_are_overflow() {
        let mut l = nvme();
        l.table_offset = u64::MAX - 8;
        assert!(matches!(
            l.check_bars(u64::MAX, u64::MAX),
            Err(MsixError::Overflow {
                structure: MsixStructure::Table,
                ..
            })
        ));
        l.table_offset = u64::MAX - 0x400 - 0x7ff;
        assert!(matches!(
            l.mappable_areas(&bar(0, 0x4000, vec![]), PAGE),
            Err(MsixError::Overflow { .. })
        ));
    }

    #[test]
    fn the_table_and_pba_pages_are_carved_out_of_a_whole_bar() {
        // MSIX_MAPPABLE: the kernel lets the whole BAR be mapped.
        let bar0 = bar(0, 0x4000, vec![Capability::MsixMappable]);
        assert_eq!(
            nvme().mappable_areas(&bar0, PAGE),
            Ok(vec![area(0, 0x2000)])
        );
        // Larger pages take the neighbours along.
        assert_eq!(nvme().mappable_areas(&bar0, 0x4000), Ok(vec![]));
        // Another BAR keeps its areas.
        assert_eq!(
            nvme().mappable_areas(&bar(4, 0x4000, vec![]), PAGE),
            Ok(vec![area(0, 0x4000)])
        );
        // Table and PBA in a 64 KiB BAR, with room above.
        let l = MsixLayout::from_registers(0x40, 3, 0x8000, 0xa000).expect("bir");
        assert_eq!(
            l.mappable_areas(&bar(0, 0x10000, vec![]), PAGE),
            Ok(vec![
                area(0, 0x8000),
                area(0x9000, 0x1000),
                area(0xb000, 0x5000)
            ])
        );
    }

    #[test]
    fn sparse_areas_are_respected() {
        // Pre-4.16 kernels leave the table page out already.
        let sparse = Capability::SparseMmap(vec![area(0, 0x2000), area(0x3000, 0x1000)]);
        assert_eq!(
            nvme().mappable_areas(&bar(0, 0x4000, vec![sparse]), PAGE),
            Ok(vec![area(0, 0x2000)])
        );
        // Without the MMAP flag nothing maps.
        let mut no_mmap = bar(0, 0x4000, vec![]);
        no_mmap.flags = flags::READ | flags::WRITE;
        assert_eq!(nvme().mappable_areas(&no_mmap, PAGE), Ok(vec![]));
    }

    #[test]
    fn a_page_size_must_be_a_power_of_two() {
        let e = nvme()
            .mappable_areas(&bar(0, 0x4000, vec![]), 0x3000)
            .expect_err("not a power of two");
        assert_eq!(e, MsixError::PageSize { page_size: 0x3000 });
        assert_eq!(e.into_error().kind(), ErrorKind::InvalidArgument);
        assert!(nvme().mappable_areas(&bar(0, 0x4000, vec![]), 0).is_err());
    }

    #[test]
    fn errors_convert_to_malformed() {
        let e = MsixError::BadBir {
            structure: MsixStructure::Table,
            bir: 6,
        }
        .into_error();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert!(e.to_string().contains("BIR 6"), "{e}");
    }

    #[test]
    fn contains_follows_the_bar_and_the_length() {
        let l = nvme();
        assert!(l.table_contains(0, 0x2000) && l.table_contains(0, 0x23ff));
        assert!(!l.table_contains(0, 0x2400) && !l.table_contains(0, 0x1fff));
        assert!(!l.table_contains(1, 0x2000));
        assert!(l.pba_contains(0, 0x3007) && !l.pba_contains(0, 0x3008));
    }

    proptest! {
        #[test]
        fn areas_avoid_the_structures_and_stay_inside_the_region(
            control in any::<u16>(),
            table in any::<u32>(),
            pba in any::<u32>(),
            size_pages in 0u64..64,
            sparse in proptest::collection::vec((0u64..80, 0u64..8), 0..4),
            whole in any::<bool>(),
            page_shift in 12u32..17,
        ) {
            let page = 1u64 << page_shift;
            let Ok(l) = MsixLayout::from_registers(0x40, control, table, pba) else {
                prop_assert!(table & 7 > 5 || pba & 7 > 5);
                return Ok(());
            };
            let size = size_pages * PAGE;
            let caps = if whole {
                vec![]
            } else {
                vec![Capability::SparseMmap(
                    sparse.iter().map(|&(o, s)| area(o * PAGE, s * PAGE)).collect(),
                )]
            };
            let region = bar(l.table_bar, size, caps);
            let areas = l.mappable_areas(&region, page).expect("no overflow from u32 offsets");
            for a in &areas {
                prop_assert!(a.size > 0 && a.offset + a.size <= size);
                let inside_mappable = region
                    .mappable_areas()
                    .iter()
                    .any(|m| a.offset >= m.offset && a.offset + a.size <= m.offset + m.size);
                prop_assert!(inside_mappable);
                for (bar, offset, len) in [(l.table_bar, l.table_offset, l.table_len()), (l.pba_bar, l.pba_offset, l.pba_len())] {
                    if bar == region.index {
                        let first = offset & !(page - 1);
                        prop_assert!(a.offset + a.size <= first || a.offset >= offset + len);
                    }
                }
            }
        }

        #[test]
        fn parse_never_panics(config in proptest::collection::vec(any::<u8>(), 0..300), at in any::<u8>()) {
            if let Ok(l) = MsixLayout::parse(&config, at) {
                prop_assert!(l.table_bar <= MAX_BIR && l.pba_bar <= MAX_BIR);
                prop_assert!((1..=2048).contains(&l.table_size));
                let _ = l.check_bars(0x10000, 0x10000);
            }
        }
    }
}
