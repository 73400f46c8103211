//! The `Region` trait: one BAR, ROM, config space or device-specific region.

use crate::caps::{Capability, SparseArea};
use crate::error::{Error, Result, Target};
use crate::memory::MmapArea;
use crate::scalar::Scalar;

/// `VFIO_REGION_INFO_FLAG_*` bits of [`RegionInfo::flags`].
pub mod flags {
    /// The region may be read.
    pub const READ: u32 = 1 << 0;
    /// The region may be written.
    pub const WRITE: u32 = 1 << 1;
    /// The region (or its sparse areas) may be mmapped.
    pub const MMAP: u32 = 1 << 2;
    /// The region info has a capability chain.
    pub const CAPS: u32 = 1 << 3;
}

/// What `VFIO_DEVICE_GET_REGION_INFO` reports, capabilities decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionInfo {
    /// The region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`, see [`flags`].
    pub flags: u32,
    /// Size in bytes (0 for an unimplemented BAR).
    pub size: u64,
    /// Offset of the region in the device file.
    pub offset: u64,
    /// The full capability chain.
    pub caps: Vec<Capability>,
}

impl RegionInfo {
    /// Whether reads are allowed.
    pub fn readable(&self) -> bool {
        self.flags & flags::READ != 0
    }

    /// Whether writes are allowed.
    pub fn writable(&self) -> bool {
        self.flags & flags::WRITE != 0
    }

    /// Whether any part may be mmapped.
    pub fn mmappable(&self) -> bool {
        self.flags & flags::MMAP != 0
    }

    /// The sparse-mmap capability's areas, if the region has one.
    pub fn sparse_areas(&self) -> Option<&[SparseArea]> {
        self.caps.iter().find_map(|c| match c {
            Capability::SparseMmap(a) => Some(a.as_slice()),
            _ => None,
        })
    }

    /// The areas that may be mmapped: the sparse areas if present, else the
    /// whole region if it has the MMAP flag, else none. Zero-sized areas and
    /// areas that do not fit the region are dropped.
    pub fn mappable_areas(&self) -> Vec<SparseArea> {
        if !self.mmappable() || self.size == 0 {
            return Vec::new();
        }
        match self.sparse_areas() {
            Some(areas) => areas
                .iter()
                .copied()
                .filter(|a| {
                    a.size > 0 && a.offset.checked_add(a.size).is_some_and(|e| e <= self.size)
                })
                .collect(),
            None => vec![SparseArea {
                offset: 0,
                size: self.size,
            }],
        }
    }

    /// The `(type, subtype)` of the region-type capability, if any.
    pub fn region_type(&self) -> Option<(u32, u32)> {
        self.caps.iter().find_map(|c| match c {
            Capability::RegionType { ty, subtype } => Some((*ty, *subtype)),
            _ => None,
        })
    }

    /// Whether the MSI-X table inside this BAR may be mmapped.
    pub fn msix_mappable(&self) -> bool {
        self.caps
            .iter()
            .any(|c| matches!(c, Capability::MsixMappable))
    }

    /// The device-file offset of `offset` inside this region (crosvm's
    /// `get_offset_for_addr`): what `pread`, `pwrite` or `mmap` of the
    /// device fd take.
    ///
    /// `OutOfRange` (with the size) for an offset at or past the end,
    /// `Overflow` if the file offset does not fit in 64 bits.
    pub fn file_offset(&self, offset: u64) -> Result<u64> {
        const OP: &str = "file_offset";
        if offset >= self.size {
            return Err(Error::OutOfRange {
                op: OP,
                target: Target::Region(self.index),
                offset,
                len: 1,
                size: self.size,
            });
        }
        self.offset.checked_add(offset).ok_or(Error::Overflow {
            op: OP,
            target: Target::Region(self.index),
            offset: self.offset,
            len: offset,
        })
    }

    /// Mappable area number `area` ([`RegionInfo::mappable_areas`]), if it
    /// may be mapped with `protection`.
    ///
    /// `NotSupported` for a region without mappable areas or a writable
    /// mapping of a region without the WRITE flag; `NoSuchIndex` (with the
    /// area count) for an index past the last area.
    pub fn mappable_area(&self, area: usize, protection: Protection) -> Result<SparseArea> {
        const OP: &str = "mmap_area";
        let areas = self.mappable_areas();
        if areas.is_empty() {
            return Err(not_permitted(
                OP,
                self.index,
                "region has no mappable area (no MMAP flag, or size 0)",
            ));
        }
        if protection.writable() && !self.writable() {
            return Err(not_permitted(OP, self.index, "region has no WRITE flag"));
        }
        areas.get(area).copied().ok_or(Error::NoSuchIndex {
            op: OP,
            target: Target::Region(self.index),
            count: u32::try_from(areas.len()).unwrap_or(u32::MAX),
        })
    }

    /// Checks an access of `len` bytes at `offset` against the size.
    pub fn check_access(&self, op: &'static str, offset: u64, len: u64) -> Result<()> {
        crate::error::check_bounds(op, Target::Region(self.index), offset, len, self.size)
    }
}

/// How a mapping may be accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Loads only (`PROT_READ`).
    Read,
    /// Loads and stores (`PROT_READ | PROT_WRITE`).
    ReadWrite,
}

impl Protection {
    /// Whether stores are allowed.
    pub fn writable(self) -> bool {
        self == Self::ReadWrite
    }
}

/// One device region.
///
/// # Contract
/// `read`/`write` check `offset + len` with overflow-checked arithmetic
/// before touching the device: a wrap is `Overflow`, past the end is
/// `OutOfRange`, a region without the READ/WRITE flag is `NotSupported`.
/// Backends may serve an access from an mmapped area when one covers it.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::ErrorKind;
/// use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let bar0 = container.open_device("edu")?.region(0)?;
/// assert!(bar0.info().readable() && bar0.info().writable());
///
/// // Raw bytes, little endian as PCI is ...
/// let mut id = [0u8; 4];
/// bar0.read(reg::ID, &mut id)?;
/// assert_eq!(u32::from_le_bytes(id), reg::ID_VALUE);
/// // ... or typed, through RegionExt.
/// bar0.write_at::<u32>(reg::LIVENESS, 1)?;
/// assert_eq!(bar0.read_at::<u32>(reg::LIVENESS)?, !1);
///
/// let err = bar0.write_at::<u32>(u64::MAX - 1, 0).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Overflow);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub trait Region {
    /// Index, flags, size, offset and capabilities.
    fn info(&self) -> &RegionInfo;

    /// Reads `buf.len()` bytes at `offset` from the region's start.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `data` at `offset` from the region's start.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()>;

    /// Reads `size` bytes (1 to 8) at `offset` as one little-endian
    /// integer, as a single access: what [`RegionExt::read_at`] calls.
    ///
    /// The default reads the bytes with [`Region::read`]; a backend that
    /// can serve a register access more cheaply than through a byte slice
    /// (one load from a cached mapping) overrides it. Errors as `read`; a
    /// `size` above 8 is `InvalidArgument`.
    fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
        read_scalar_through_read(self, offset, size)
    }

    /// Writes the low `size` bytes (1 to 8) of `value` at `offset`, little
    /// endian, as a single access: what [`RegionExt::write_at`] calls.
    ///
    /// The default writes the bytes with [`Region::write`]; backends may
    /// override it as [`Region::read_scalar`]. Errors as `write`; a `size`
    /// above 8 is `InvalidArgument`.
    fn write_scalar(&self, offset: u64, size: usize, value: u64) -> Result<()> {
        write_scalar_through_write(self, offset, size, value)
    }

    /// Maps every mappable area ([`RegionInfo::mappable_areas`]).
    ///
    /// `NotSupported` if the region has none, or if the backend cannot map
    /// (the mock's handler-backed BARs).
    fn mmap(&self) -> Result<Vec<MmapArea>>;

    /// Maps one mappable area, number `area` of
    /// [`RegionInfo::mappable_areas`], with `protection`: for a VMM that
    /// maps some areas into the guest and traps the rest, or maps a
    /// writable BAR read-only.
    ///
    /// Errors as [`RegionInfo::mappable_area`] says; `NotSupported` from a
    /// backend that cannot map single areas (the default).
    ///
    /// ```
    /// use vfio_hal::prelude::*;
    /// use vfio_hal::Protection;
    /// use vfio_hal_mock::{models::{copy_engine::SRAM_BAR, CopyEngine, Edu}, MockContainer};
    ///
    /// let container = MockContainer::new();
    /// container.plug("ce", CopyEngine::new())?;
    /// let bar2 = container.open_device("ce")?.region(u32::from(SRAM_BAR))?;
    /// // The SRAM above the MSI-X page, read-only.
    /// bar2.write_at::<u32>(0x5000, 7)?;
    /// let sram = bar2.mmap_area(1, Protection::Read)?;
    /// assert_eq!((sram.region_offset(), sram.is_writable()), (0x5000, false));
    /// assert_eq!(sram.load::<u32>(0)?, 7);
    /// assert!(bar2.mmap_area(2, Protection::Read).is_err()); // two areas
    ///
    /// // edu's BAR0 is registers: nothing to map.
    /// container.plug("edu", Edu::new())?;
    /// assert!(container.open_device("edu")?.region(0)?.mmap_area(0, Protection::Read).is_err());
    /// # Ok::<(), vfio_hal::Error>(())
    /// ```
    fn mmap_area(&self, area: usize, protection: Protection) -> Result<MmapArea> {
        let _ = (area, protection);
        Err(Error::NotSupported {
            op: "mmap_area",
            target: Target::Region(self.info().index),
            reason: "this backend cannot map single areas",
        })
    }
}

/// Typed access over any [`Region`] (also `dyn Region`).
pub trait RegionExt: Region {
    /// Reads one little-endian `T` at `offset`, as a single access.
    #[inline]
    fn read_at<T: Scalar>(&self, offset: u64) -> Result<T> {
        self.read_scalar(offset, T::SIZE).map(T::from_u64)
    }

    /// Writes one little-endian `T` at `offset`, as a single access.
    #[inline]
    fn write_at<T: Scalar>(&self, offset: u64, value: T) -> Result<()> {
        self.write_scalar(offset, T::SIZE, value.to_u64())
    }
}

impl<R: Region + ?Sized> RegionExt for R {}

/// [`Region::read_scalar`] through [`Region::read`]: the default, and
/// where a backend's override sends the accesses it cannot serve itself.
#[inline]
pub fn read_scalar_through_read<R: Region + ?Sized>(
    region: &R,
    offset: u64,
    size: usize,
) -> Result<u64> {
    let mut bytes = [0u8; 8];
    let buf = bytes
        .get_mut(..size)
        .ok_or_else(|| too_wide("region read", region))?;
    region.read(offset, buf)?;
    Ok(u64::from_le_bytes(bytes))
}

/// [`Region::write_scalar`] through [`Region::write`], as
/// [`read_scalar_through_read`].
#[inline]
pub fn write_scalar_through_write<R: Region + ?Sized>(
    region: &R,
    offset: u64,
    size: usize,
    value: u64,
) -> Result<()> {
    let bytes = value.to_le_bytes();
    let data = bytes
        .get(..size)
        .ok_or_else(|| too_wide("region write", region))?;
    region.write(offset, data)
}

/// The error for a scalar access wider than 8 bytes.
#[cold]
fn too_wide<R: Region + ?Sized>(op: &'static str, region: &R) -> Error {
    Error::InvalidArgument {
        op,
        target: Target::Region(region.info().index),
        reason: "a scalar access is 1 to 8 bytes",
    }
}

/// The error for an access to a region lacking the READ or WRITE flag.
pub fn not_permitted(op: &'static str, index: u32, reason: &'static str) -> Error {
    Error::NotSupported {
        op,
        target: Target::Region(index),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, f: u32, caps: Vec<Capability>) -> RegionInfo {
        RegionInfo {
            index: 0,
            flags: f,
            size,
            offset: 0,
            caps,
        }
    }

    #[test]
    fn file_offsets_are_bounded_by_the_region() {
        let mut r = info(0x1000, flags::READ, vec![]);
        r.offset = 2 << 40;
        assert_eq!(r.file_offset(0).ok(), Some(2 << 40));
        assert_eq!(r.file_offset(0xfff).ok(), Some((2 << 40) + 0xfff));
        let e = r.file_offset(0x1000).expect_err("past the end");
        assert!(matches!(e, Error::OutOfRange { size: 0x1000, .. }), "{e}");
        r.offset = u64::MAX;
        let e = r.file_offset(1).expect_err("wraps");
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        assert!(info(0, flags::READ, vec![]).file_offset(0).is_err());
    }

    #[test]
    fn one_mappable_area_is_chosen_by_index_and_protection() {
        use crate::ErrorKind;
        let area = |offset, size| SparseArea { offset, size };
        let sparse = vec![Capability::SparseMmap(vec![
            area(0, 0x1000),
            area(0x3000, 0x1000),
        ])];
        let rw = info(
            0x4000,
            flags::READ | flags::WRITE | flags::MMAP,
            sparse.clone(),
        );
        assert_eq!(
            rw.mappable_area(1, Protection::ReadWrite).ok(),
            Some(area(0x3000, 0x1000))
        );
        let e = rw
            .mappable_area(2, Protection::Read)
            .expect_err("two areas");
        assert!(matches!(e, Error::NoSuchIndex { count: 2, .. }), "{e}");
        let ro = info(0x4000, flags::READ | flags::MMAP, sparse);
        assert!(ro.mappable_area(0, Protection::Read).is_ok());
        let e = ro
            .mappable_area(0, Protection::ReadWrite)
            .expect_err("read-only");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        let e = info(0x4000, flags::READ, vec![])
            .mappable_area(0, Protection::Read)
            .expect_err("no MMAP flag");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
    }

    #[test]
    fn mappable_areas_follow_flags_and_sparse_cap() {
        assert!(info(4096, flags::READ, vec![]).mappable_areas().is_empty());
        assert_eq!(
            info(4096, flags::MMAP, vec![]).mappable_areas(),
            vec![SparseArea {
                offset: 0,
                size: 4096
            }]
        );
        let sparse = vec![Capability::SparseMmap(vec![
            SparseArea {
                offset: 0,
                size: 0x1000,
            },
            SparseArea {
                offset: 0x3000,
                size: 0x1000,
            },
            SparseArea {
                offset: 0x3000,
                size: 0,
            },
            SparseArea {
                offset: u64::MAX,
                size: 2,
            },
        ])];
        assert_eq!(
            info(0x4000, flags::MMAP | flags::CAPS, sparse).mappable_areas(),
            vec![
                SparseArea {
                    offset: 0,
                    size: 0x1000
                },
                SparseArea {
                    offset: 0x3000,
                    size: 0x1000
                }
            ]
        );
    }
}
