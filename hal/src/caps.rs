//! Parsing (and encoding) of VFIO capability chains.
//!
//! Buffers are in the host's byte order, as the kernel writes them.
//!
//! Region info, device info and IOMMU info buffers may carry a chain of
//! capabilities: each starts with `struct vfio_info_cap_header { u16 id;
//! u16 version; u32 next; }`, where `next` is the byte offset of the next
//! capability from the start of the info buffer (0 ends the chain). The
//! buffer comes from the kernel and is treated as untrusted: every offset is
//! bounds-checked, every count is multiplied with overflow checks, cycles and
//! self-loops are rejected, capabilities may not overlap each other or the
//! fixed info struct, and the number of capabilities is bounded. Arbitrary
//! bytes return an error, never a panic (see the property tests and the
//! fuzz targets).
//!
//! Capability ids are scoped by the kind of buffer ([`ChainKind`]): id 1 is a
//! sparse-mmap area list in region info but an IOVA-range list in IOMMU info.

use std::collections::BTreeMap;

use crate::bytes::Reader;
use crate::container::IovaRange;

/// Largest info buffer the parser accepts (and backends will allocate).
pub const MAX_INFO_SIZE: usize = 1 << 20;
/// Most capabilities one chain may hold.
pub const MAX_CAPS: usize = 256;
/// Size of `struct vfio_info_cap_header`.
pub const CAP_HEADER_SIZE: usize = 8;

/// Which info buffer a chain belongs to; decides how ids are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKind {
    /// `struct vfio_region_info` (`VFIO_REGION_INFO_CAP_*`).
    Region,
    /// `struct vfio_device_info` (`VFIO_DEVICE_INFO_CAP_*`).
    Device,
    /// `struct vfio_iommu_type1_info` (`VFIO_IOMMU_TYPE1_INFO_CAP_*`).
    Iommu,
}

impl ChainKind {
    /// Size of the fixed info struct; no capability may start inside it.
    pub const fn fixed_size(self) -> usize {
        match self {
            Self::Region => 32,
            Self::Device => 24,
            Self::Iommu => 24,
        }
    }
}

/// One `struct vfio_region_sparse_mmap_area`: a mappable window of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SparseArea {
    /// Offset from the start of the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A decoded capability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capability {
    /// Region: `VFIO_REGION_INFO_CAP_SPARSE_MMAP` — only these areas may be mmapped.
    SparseMmap(Vec<SparseArea>),
    /// Region: `VFIO_REGION_INFO_CAP_TYPE` — a device-specific region type.
    RegionType {
        /// `VFIO_REGION_TYPE_*`.
        ty: u32,
        /// Subtype within the type.
        subtype: u32,
    },
    /// Region: `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE` — the MSI-X table may be mmapped.
    MsixMappable,
    /// Region: `VFIO_REGION_INFO_CAP_NVLINK2_SSATGT`.
    Nvlink2Ssatgt {
        /// The target address.
        tgt: u64,
    },
    /// Region: `VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD`.
    Nvlink2LinkSpeed {
        /// The link speed.
        link_speed: u32,
    },
    /// Device: `VFIO_DEVICE_INFO_CAP_ZPCI_BASE` (s390).
    ZpciBase {
        /// Start of available DMA addresses.
        start_dma: u64,
        /// End of available DMA addresses.
        end_dma: u64,
        /// Physical channel id.
        pchid: u16,
        /// Virtual function number.
        vfn: u16,
        /// Measurement block length.
        fmb_length: u16,
        /// PCI function type.
        pft: u8,
        /// PCI function group id.
        gid: u8,
    },
    /// Device: `VFIO_DEVICE_INFO_CAP_ZPCI_GROUP` (s390).
    ZpciGroup {
        /// DMA address space mask.
        dasm: u64,
        /// MSI address.
        msi_addr: u64,
        /// Flags.
        flags: u64,
        /// Measurement block update interval.
        mui: u16,
        /// Number of interrupts.
        noi: u16,
        /// Maximum store block size.
        maxstbl: u16,
        /// Supported PCI version.
        version: u8,
    },
    /// Device: `VFIO_DEVICE_INFO_CAP_ZPCI_UTIL` (s390): the utility string.
    ZpciUtil(Vec<u8>),
    /// Device: `VFIO_DEVICE_INFO_CAP_ZPCI_PFIP` (s390): the function path.
    ZpciPfip(Vec<u8>),
    /// Device: `VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP`.
    PciAtomicComp {
        /// `VFIO_PCI_ATOMIC_COMP*` flags.
        flags: u32,
    },
    /// IOMMU: `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE` — usable IOVA ranges.
    IovaRanges(Vec<IovaRange>),
    /// IOMMU: `VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION` — dirty-tracking support.
    Migration {
        /// Flags (none defined yet).
        flags: u32,
        /// Page sizes dirty tracking can report.
        pgsize_bitmap: u64,
        /// Largest dirty bitmap the kernel returns, in bytes.
        max_dirty_bitmap_size: u64,
    },
    /// IOMMU: `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL` — how many more mappings fit.
    DmaAvail {
        /// Remaining mapping count.
        avail: u32,
    },
    /// A capability this crate does not know; its bytes are kept verbatim.
    Unknown {
        /// The capability id.
        id: u16,
        /// The capability version.
        version: u16,
        /// The bytes after the header, up to the next capability or the end.
        data: Vec<u8>,
    },
}

/// Why a chain did not parse. Offsets are byte offsets into the info buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer is larger than [`MAX_INFO_SIZE`].
    #[error("buffer of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Buffer length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The buffer is too short for the structure at `offset`.
    #[error("truncated: {need} bytes needed at offset {offset}, buffer has {len}")]
    Truncated {
        /// Where the structure starts.
        offset: usize,
        /// How many bytes it needs.
        need: usize,
        /// Buffer length.
        len: usize,
    },
    /// A capability starts inside the fixed info struct.
    #[error("capability offset {offset} lies inside the {fixed}-byte info header")]
    InsideHeader {
        /// The offset.
        offset: usize,
        /// Size of the fixed struct.
        fixed: usize,
    },
    /// The chain visits `offset` a second time.
    #[error("capability chain loops back to offset {offset}")]
    Cycle {
        /// The repeated offset.
        offset: usize,
    },
    /// Two capabilities share bytes.
    #[error("capability at {second} overlaps the one at {first}")]
    Overlap {
        /// The lower one.
        first: usize,
        /// The one that starts inside it.
        second: usize,
    },
    /// The chain holds more than [`MAX_CAPS`] capabilities.
    #[error("more than {max} capabilities")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// An element count times the element size overflows.
    #[error("count {count} of {elem}-byte elements at offset {offset} overflows")]
    CountOverflow {
        /// The structure's offset.
        offset: usize,
        /// The claimed count.
        count: u64,
        /// Element size.
        elem: usize,
    },
    /// A field holds a value the format forbids.
    #[error("invalid value {value:#x} for {field} at offset {offset}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// The structure's offset.
        offset: usize,
        /// The value found.
        value: u64,
    },
}

/// One parsed capability with where it sat in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapEntry {
    /// Byte offset of the header in the info buffer.
    pub offset: usize,
    /// The header's version field.
    pub version: u16,
    /// The decoded capability.
    pub cap: Capability,
}

/// Parses the chain that starts at `first` (0 = no chain) in `buf`.
///
/// `buf` is the whole info buffer, fixed struct included, as long as the
/// kernel's `argsz` says.
pub fn parse_chain(kind: ChainKind, buf: &[u8], first: u32) -> Result<Vec<CapEntry>, ParseError> {
    if buf.len() > MAX_INFO_SIZE {
        return Err(ParseError::TooLarge {
            len: buf.len(),
            max: MAX_INFO_SIZE,
        });
    }
    let r = Reader::new(buf);
    let fixed = kind.fixed_size();
    // start offset -> end offset of every capability seen so far.
    let mut extents: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut next = first as usize;
    while next != 0 {
        let offset = next;
        if offset < fixed {
            return Err(ParseError::InsideHeader { offset, fixed });
        }
        if extents.contains_key(&offset) {
            return Err(ParseError::Cycle { offset });
        }
        if out.len() == MAX_CAPS {
            return Err(ParseError::TooMany { max: MAX_CAPS });
        }
        let id = r.u16(offset)?;
        let version = r.u16(offset + 2)?;
        next = r.u32(offset + 4)? as usize;
        // Unknown capabilities extend to the next one, or to the end.
        let unknown_end = if next > offset {
            next.min(buf.len())
        } else {
            buf.len()
        };
        let (cap, len) = decode(kind, &r, offset, id, version, unknown_end)?;
        let end = offset + len;
        check_overlap(&extents, offset, end)?;
        extents.insert(offset, end);
        out.push(CapEntry {
            offset,
            version,
            cap,
        });
    }
    Ok(out)
}

fn check_overlap(
    extents: &BTreeMap<usize, usize>,
    start: usize,
    end: usize,
) -> Result<(), ParseError> {
    if let Some((&s, &e)) = extents.range(..start).next_back() {
        if e > start {
            return Err(ParseError::Overlap {
                first: s,
                second: start,
            });
        }
    }
    if let Some((&s, _)) = extents.range(start..).next() {
        if s < end {
            return Err(ParseError::Overlap {
                first: start,
                second: s,
            });
        }
    }
    Ok(())
}

/// Decodes one capability; returns it and its length in bytes, header included.
fn decode(
    kind: ChainKind,
    r: &Reader<'_>,
    at: usize,
    id: u16,
    version: u16,
    unknown_end: usize,
) -> Result<(Capability, usize), ParseError> {
    let body = at + CAP_HEADER_SIZE;
    let fixed = |len: usize| -> Result<usize, ParseError> {
        r.bytes(at, len)?;
        Ok(len)
    };
    Ok(match (kind, id) {
        (ChainKind::Region, 1) => {
            let nr = r.u32(body)?;
            let areas_at = body + 8;
            let total = r.elements(areas_at, u64::from(nr), 16)?;
            let areas = (0..nr as usize)
                .map(|i| {
                    let at = areas_at + 16 * i;
                    let offset = r.u64(at)?;
                    let size = r.u64(at + 8)?;
                    // Callers mmap and bounds-check `offset + size`: it must not wrap.
                    if offset.checked_add(size).is_none() {
                        return Err(ParseError::InvalidField {
                            field: "sparse_mmap_area.size",
                            offset: at,
                            value: size,
                        });
                    }
                    Ok(SparseArea { offset, size })
                })
                .collect::<Result<_, ParseError>>()?;
            (Capability::SparseMmap(areas), CAP_HEADER_SIZE + 8 + total)
        }
        (ChainKind::Region, 2) => (
            Capability::RegionType {
                ty: r.u32(body)?,
                subtype: r.u32(body + 4)?,
            },
            fixed(16)?,
        ),
        (ChainKind::Region, 3) => (Capability::MsixMappable, fixed(CAP_HEADER_SIZE)?),
        (ChainKind::Region, 4) => (Capability::Nvlink2Ssatgt { tgt: r.u64(body)? }, fixed(16)?),
        (ChainKind::Region, 5) => (
            Capability::Nvlink2LinkSpeed {
                link_speed: r.u32(body)?,
            },
            fixed(16)?,
        ),
        (ChainKind::Device, 1) => (
            Capability::ZpciBase {
                start_dma: r.u64(body)?,
                end_dma: r.u64(body + 8)?,
                pchid: r.u16(body + 16)?,
                vfn: r.u16(body + 18)?,
                fmb_length: r.u16(body + 20)?,
                pft: r.u8(body + 22)?,
                gid: r.u8(body + 23)?,
            },
            fixed(CAP_HEADER_SIZE + 24)?,
        ),
        (ChainKind::Device, 2) => (
            Capability::ZpciGroup {
                dasm: r.u64(body)?,
                msi_addr: r.u64(body + 8)?,
                flags: r.u64(body + 16)?,
                mui: r.u16(body + 24)?,
                noi: r.u16(body + 26)?,
                maxstbl: r.u16(body + 28)?,
                version: r.u8(body + 30)?,
            },
            fixed(CAP_HEADER_SIZE + 32)?,
        ),
        (ChainKind::Device, 3 | 4) => {
            let size = r.u32(body)?;
            let data = r.bytes(body + 4, size as usize)?.to_vec();
            let len = CAP_HEADER_SIZE + 4 + data.len();
            let cap = if id == 3 {
                Capability::ZpciUtil(data)
            } else {
                Capability::ZpciPfip(data)
            };
            (cap, len)
        }
        (ChainKind::Device, 5) => (
            Capability::PciAtomicComp {
                flags: r.u32(body)?,
            },
            fixed(16)?,
        ),
        (ChainKind::Iommu, 1) => {
            let nr = r.u32(body)?;
            let ranges_at = body + 8;
            let total = r.elements(ranges_at, u64::from(nr), 16)?;
            let ranges = (0..nr as usize)
                .map(|i| {
                    let start = r.u64(ranges_at + 16 * i)?;
                    let end = r.u64(ranges_at + 16 * i + 8)?;
                    if end < start {
                        return Err(ParseError::InvalidField {
                            field: "iova_range.end",
                            offset: ranges_at + 16 * i,
                            value: end,
                        });
                    }
                    Ok(IovaRange { start, end })
                })
                .collect::<Result<_, ParseError>>()?;
            (Capability::IovaRanges(ranges), CAP_HEADER_SIZE + 8 + total)
        }
        (ChainKind::Iommu, 2) => (
            Capability::Migration {
                flags: r.u32(body)?,
                pgsize_bitmap: r.u64(body + 8)?,
                max_dirty_bitmap_size: r.u64(body + 16)?,
            },
            fixed(32)?,
        ),
        (ChainKind::Iommu, 3) => (
            Capability::DmaAvail {
                avail: r.u32(body)?,
            },
            fixed(12)?,
        ),
        _ => {
            let len = unknown_end.saturating_sub(at).max(CAP_HEADER_SIZE);
            let data = r.bytes(body, len - CAP_HEADER_SIZE)?.to_vec();
            (Capability::Unknown { id, version, data }, len)
        }
    })
}

/// Encodes capabilities into a chain, as the kernel lays them out.
///
/// The result is a whole info buffer: `fixed_size` zero bytes for the info
/// struct, then the capabilities, each 8-byte aligned. Returns the buffer and
/// the offset of the first capability (0 if `caps` is empty). Used by the mock
/// backend and by the round-trip property tests.
pub fn encode_chain(kind: ChainKind, caps: &[Capability]) -> (Vec<u8>, u32) {
    let mut buf = vec![0u8; kind.fixed_size()];
    let mut prev_next: Option<usize> = None;
    let mut first = 0u32;
    for cap in caps {
        let at = buf.len().next_multiple_of(8);
        buf.resize(at, 0);
        match prev_next {
            Some(p) => buf[p..p + 4].copy_from_slice(&(at as u32).to_ne_bytes()),
            None => first = at as u32,
        }
        let (id, version, body) = encode_one(cap);
        buf.extend_from_slice(&id.to_ne_bytes());
        buf.extend_from_slice(&version.to_ne_bytes());
        prev_next = Some(buf.len());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&body);
    }
    let _ = kind;
    (buf, first)
}

fn encode_one(cap: &Capability) -> (u16, u16, Vec<u8>) {
    let mut b = Vec::new();
    let (id, version) = match cap {
        Capability::SparseMmap(areas) => {
            b.extend_from_slice(&(areas.len() as u32).to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            for a in areas {
                b.extend_from_slice(&a.offset.to_ne_bytes());
                b.extend_from_slice(&a.size.to_ne_bytes());
            }
            (1, 1)
        }
        Capability::RegionType { ty, subtype } => {
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(&subtype.to_ne_bytes());
            (2, 1)
        }
        Capability::MsixMappable => (3, 1),
        Capability::Nvlink2Ssatgt { tgt } => {
            b.extend_from_slice(&tgt.to_ne_bytes());
            (4, 1)
        }
        Capability::Nvlink2LinkSpeed { link_speed } => {
            b.extend_from_slice(&link_speed.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            (5, 1)
        }
        Capability::ZpciBase {
            start_dma,
            end_dma,
            pchid,
            vfn,
            fmb_length,
            pft,
            gid,
        } => {
            b.extend_from_slice(&start_dma.to_ne_bytes());
            b.extend_from_slice(&end_dma.to_ne_bytes());
            b.extend_from_slice(&pchid.to_ne_bytes());
            b.extend_from_slice(&vfn.to_ne_bytes());
            b.extend_from_slice(&fmb_length.to_ne_bytes());
            b.push(*pft);
            b.push(*gid);
            (1, 1)
        }
        Capability::ZpciGroup {
            dasm,
            msi_addr,
            flags,
            mui,
            noi,
            maxstbl,
            version,
        } => {
            b.extend_from_slice(&dasm.to_ne_bytes());
            b.extend_from_slice(&msi_addr.to_ne_bytes());
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&mui.to_ne_bytes());
            b.extend_from_slice(&noi.to_ne_bytes());
            b.extend_from_slice(&maxstbl.to_ne_bytes());
            b.push(*version);
            b.push(0);
            (2, 1)
        }
        Capability::ZpciUtil(data) | Capability::ZpciPfip(data) => {
            b.extend_from_slice(&(data.len() as u32).to_ne_bytes());
            b.extend_from_slice(data);
            (
                if matches!(cap, Capability::ZpciUtil(_)) {
                    3
                } else {
                    4
                },
                1,
            )
        }
        Capability::PciAtomicComp { flags } => {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            (5, 1)
        }
        Capability::IovaRanges(ranges) => {
            b.extend_from_slice(&(ranges.len() as u32).to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            for r in ranges {
                b.extend_from_slice(&r.start.to_ne_bytes());
                b.extend_from_slice(&r.end.to_ne_bytes());
            }
            (1, 1)
        }
        Capability::Migration {
            flags,
            pgsize_bitmap,
            max_dirty_bitmap_size,
        } => {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&pgsize_bitmap.to_ne_bytes());
            b.extend_from_slice(&max_dirty_bitmap_size.to_ne_bytes());
            (2, 1)
        }
        Capability::DmaAvail { avail } => {
            b.extend_from_slice(&avail.to_ne_bytes());
            (3, 1)
        }
        Capability::Unknown { id, version, data } => {
            b.extend_from_slice(data);
            (*id, *version)
        }
    };
    (id, version, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(buf: &mut [u8], at: usize, id: u16, next: u32) {
        buf[at..at + 2].copy_from_slice(&id.to_ne_bytes());
        buf[at + 2..at + 4].copy_from_slice(&1u16.to_ne_bytes());
        buf[at + 4..at + 8].copy_from_slice(&next.to_ne_bytes());
    }

    #[test]
    fn no_chain_is_empty() {
        assert_eq!(parse_chain(ChainKind::Region, &[0; 32], 0), Ok(vec![]));
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let mut buf = vec![0u8; 48];
        header(&mut buf, 32, 3, 32);
        assert_eq!(
            parse_chain(ChainKind::Region, &buf, 32),
            Err(ParseError::Cycle { offset: 32 })
        );
    }

    #[test]
    fn two_cap_cycle_is_rejected() {
        let mut buf = vec![0u8; 64];
        header(&mut buf, 32, 3, 48);
        header(&mut buf, 48, 3, 32);
        assert_eq!(
            parse_chain(ChainKind::Region, &buf, 32),
            Err(ParseError::Cycle { offset: 32 })
        );
    }

    #[test]
    fn sparse_count_that_overflows_is_rejected() {
        let mut buf = vec![0u8; 64];
        header(&mut buf, 32, 1, 0);
        buf[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            parse_chain(ChainKind::Region, &buf, 32),
            Err(ParseError::Truncated { .. } | ParseError::CountOverflow { .. })
        ));
    }

    #[test]
    fn cap_inside_the_fixed_struct_is_rejected() {
        let buf = vec![0u8; 64];
        assert_eq!(
            parse_chain(ChainKind::Region, &buf, 8),
            Err(ParseError::InsideHeader {
                offset: 8,
                fixed: 32
            })
        );
    }

    #[test]
    fn overlapping_caps_are_rejected() {
        // A type cap (16 bytes) at 32 and another header at 40, inside it.
        let mut buf = vec![0u8; 64];
        header(&mut buf, 32, 2, 40);
        buf[40..48].copy_from_slice(&[3, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_chain(ChainKind::Region, &buf, 32),
            Err(ParseError::Overlap {
                first: 32,
                second: 40
            })
        );
    }

    #[test]
    fn oversized_buffer_is_rejected() {
        let buf = vec![0u8; MAX_INFO_SIZE + 1];
        assert!(matches!(
            parse_chain(ChainKind::Iommu, &buf, 24),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn backward_but_acyclic_link_parses() {
        let mut buf = vec![0u8; 64];
        header(&mut buf, 48, 3, 32);
        header(&mut buf, 32, 3, 0);
        let caps = parse_chain(ChainKind::Region, &buf, 48).expect("parses");
        assert_eq!(caps.len(), 2);
    }

    #[test]
    fn a_sparse_area_whose_end_wraps_is_rejected() {
        let top = |size| {
            [Capability::SparseMmap(vec![
                SparseArea {
                    offset: 0,
                    size: 0x1000,
                },
                SparseArea {
                    offset: u64::MAX - 0xfff,
                    size,
                },
            ])]
        };
        // Ending at the last byte of the 64-bit space is fine.
        let (buf, first) = encode_chain(ChainKind::Region, &top(0xfff));
        let parsed = parse_chain(ChainKind::Region, &buf, first).expect("parses");
        assert_eq!(parsed[0].cap, top(0xfff)[0]);
        // One byte more wraps.
        let (buf, first) = encode_chain(ChainKind::Region, &top(0x1000));
        assert_eq!(
            parse_chain(ChainKind::Region, &buf, first),
            Err(ParseError::InvalidField {
                field: "sparse_mmap_area.size",
                offset: 32 + CAP_HEADER_SIZE + 8 + 16,
                value: 0x1000
            })
        );
    }

    #[test]
    fn ids_are_scoped_by_buffer_kind() {
        let caps = [Capability::SparseMmap(vec![SparseArea {
            offset: 0,
            size: 0x1000,
        }])];
        let (buf, first) = encode_chain(ChainKind::Region, &caps);
        let parsed = parse_chain(ChainKind::Region, &buf, first).expect("parses");
        assert_eq!(parsed[0].cap, caps[0]);
        // The same bytes read as IOMMU info are an IOVA-range list.
        let as_iommu = parse_chain(ChainKind::Iommu, &buf, first).expect("parses");
        assert_eq!(
            as_iommu[0].cap,
            Capability::IovaRanges(vec![IovaRange {
                start: 0,
                end: 0x1000
            }])
        );
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_cap(kind: ChainKind) -> BoxedStrategy<Capability> {
        let unknown = (
            100u16..200,
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(id, version, mut data)| {
                // Unknown data is kept up to the next 8-byte boundary.
                data.resize(data.len().next_multiple_of(8), 0);
                Capability::Unknown { id, version, data }
            });
        match kind {
            ChainKind::Region => prop_oneof![
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5).prop_map(|v| {
                    Capability::SparseMmap(
                        v.into_iter()
                            .map(|(offset, size)| SparseArea {
                                offset,
                                size: size.min(u64::MAX - offset),
                            })
                            .collect(),
                    )
                }),
                (any::<u32>(), any::<u32>())
                    .prop_map(|(ty, subtype)| Capability::RegionType { ty, subtype }),
                Just(Capability::MsixMappable),
                any::<u64>().prop_map(|tgt| Capability::Nvlink2Ssatgt { tgt }),
                any::<u32>().prop_map(|link_speed| Capability::Nvlink2LinkSpeed { link_speed }),
                unknown,
            ]
            .boxed(),
            ChainKind::Device => prop_oneof![
                (any::<u64>(), any::<u64>(), any::<u16>(), any::<u8>()).prop_map(
                    |(start_dma, end_dma, pchid, pft)| Capability::ZpciBase {
                        start_dma,
                        end_dma,
                        pchid,
                        vfn: pchid ^ 1,
                        fmb_length: 32,
                        pft,
                        gid: pft ^ 3,
                    }
                ),
                (any::<u64>(), any::<u64>(), any::<u16>()).prop_map(|(dasm, msi_addr, mui)| {
                    Capability::ZpciGroup {
                        dasm,
                        msi_addr,
                        flags: 1,
                        mui,
                        noi: 2,
                        maxstbl: 3,
                        version: 4,
                    }
                }),
                proptest::collection::vec(any::<u8>(), 0..4).prop_map(|mut v| {
                    v.resize(v.len().next_multiple_of(8) + 4, b'x');
                    Capability::ZpciUtil(v)
                }),
                any::<u32>().prop_map(|flags| Capability::PciAtomicComp { flags }),
                unknown,
            ]
            .boxed(),
            ChainKind::Iommu => prop_oneof![
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5).prop_map(|v| {
                    Capability::IovaRanges(
                        v.into_iter()
                            .map(|(a, b)| IovaRange {
                                start: a.min(b),
                                end: a.max(b),
                            })
                            .collect(),
                    )
                }),
                (any::<u64>(), any::<u64>()).prop_map(|(p, m)| Capability::Migration {
                    flags: 0,
                    pgsize_bitmap: p,
                    max_dirty_bitmap_size: m,
                }),
                any::<u32>().prop_map(|avail| Capability::DmaAvail { avail }),
                unknown,
            ]
            .boxed(),
        }
    }

    fn arb_kind() -> impl Strategy<Value = ChainKind> {
        prop_oneof![
            Just(ChainKind::Region),
            Just(ChainKind::Device),
            Just(ChainKind::Iommu)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(kind in arb_kind(), buf in arb_bytes(512), first: u32) {
            let _ = parse_chain(kind, &buf, first);
        }

        #[test]
        fn arbitrary_bytes_with_plausible_offsets_never_panic(
            kind in arb_kind(),
            buf in arb_bytes(256),
            first in 0u32..256,
        ) {
            if let Ok(caps) = parse_chain(kind, &buf, first) {
                // Everything parsed lies inside the buffer, and offsets are unique.
                let mut offsets: Vec<_> = caps.iter().map(|c| c.offset).collect();
                prop_assert!(offsets.iter().all(|&o| o + CAP_HEADER_SIZE <= buf.len()));
                offsets.sort_unstable();
                offsets.dedup();
                prop_assert_eq!(offsets.len(), caps.len());
            }
        }

        #[test]
        fn encode_then_parse_round_trips(
            (kind, caps) in arb_kind().prop_flat_map(|k| {
                (Just(k), proptest::collection::vec(arb_cap(k), 0..6))
            })
        ) {
            let (buf, first) = encode_chain(kind, &caps);
            let parsed = parse_chain(kind, &buf, first).expect("an encoded chain parses");
            let back: Vec<_> = parsed.into_iter().map(|e| e.cap).collect();
            prop_assert_eq!(back, caps);
        }

        #[test]
        fn any_truncation_of_a_valid_chain_errors_cleanly(
            caps in proptest::collection::vec(arb_cap(ChainKind::Region), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let (buf, first) = encode_chain(ChainKind::Region, &caps);
            let at = cut.index(buf.len());
            match parse_chain(ChainKind::Region, &buf[..at], first) {
                Ok(parsed) => {
                    // Only possible when the cut falls inside trailing Unknown data.
                    prop_assert!(parsed.len() <= caps.len());
                }
                Err(e) => prop_assert!(
                    matches!(e, ParseError::Truncated { .. } | ParseError::CountOverflow { .. }),
                    "unexpected {e:?}"
                ),
            }
        }

        #[test]
        fn a_next_pointer_into_an_earlier_capability_is_rejected(
            caps in proptest::collection::vec(arb_cap(ChainKind::Region), 2..5),
            into in any::<prop::sample::Index>(),
        ) {
            // An unknown capability's size is defined by its `next`, so only
            // a known one has an "inside" to point into.
            prop_assume!(!matches!(caps[0], Capability::Unknown { .. }));
            let (mut buf, first) = encode_chain(ChainKind::Region, &caps);
            let entries = parse_chain(ChainKind::Region, &buf, first).expect("valid");
            let (a, b) = (entries[0].offset, entries[1].offset);
            // Point the first capability's `next` strictly inside itself.
            let target = a + 1 + into.index(b - a - 1);
            buf[a + 4..a + 8].copy_from_slice(&(target as u32).to_ne_bytes());
            prop_assert!(parse_chain(ChainKind::Region, &buf, first).is_err());
        }

        #[test]
        fn element_counts_beyond_the_buffer_are_rejected(
            nr in 1u32..=u32::MAX,
            extra in 0usize..64,
            kind in prop_oneof![Just(ChainKind::Region), Just(ChainKind::Iommu)],
        ) {
            let fixed = kind.fixed_size();
            let mut buf = vec![0u8; fixed + 16 + extra];
            buf[fixed..fixed + 2].copy_from_slice(&1u16.to_ne_bytes());
            buf[fixed + 8..fixed + 12].copy_from_slice(&nr.to_ne_bytes());
            let fits = (nr as usize) * 16 <= extra;
            let r = parse_chain(kind, &buf, fixed as u32);
            prop_assert_eq!(r.is_ok(), fits);
        }

        #[test]
        fn pointing_the_last_next_anywhere_earlier_is_rejected(
            caps in proptest::collection::vec(arb_cap(ChainKind::Iommu), 1..5),
            back in any::<prop::sample::Index>(),
        ) {
            let (mut buf, first) = encode_chain(ChainKind::Iommu, &caps);
            let entries = parse_chain(ChainKind::Iommu, &buf, first).expect("valid");
            let last = entries.last().expect("non-empty").offset;
            let target = entries[back.index(entries.len())].offset;
            buf[last + 4..last + 8].copy_from_slice(&(target as u32).to_ne_bytes());
            let r = parse_chain(ChainKind::Iommu, &buf, first);
            prop_assert_eq!(r, Err(ParseError::Cycle { offset: target }));
        }
    }
}
