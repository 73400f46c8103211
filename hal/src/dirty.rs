//! Dirty-page bitmaps: one bit per page of an IOVA range, the shape in
//! which type1 (`VFIO_IOMMU_DIRTY_PAGES`), iommufd
//! (`IOMMU_HWPT_GET_DIRTY_BITMAP`) and device DMA logging
//! (`VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`) all report what a device
//! wrote: bit `n % 64` of `u64` word `n / 64` stands for the page at
//! `iova + n * page_size`.
//!
//! Construction checks the geometry with checked arithmetic (power-of-two
//! page size, page-aligned range, no wrap, a bounded size), so the words
//! handed to the kernel always match the range asked about.
//!
//! ```
//! use vfio_hal::dirty::DirtyBitmap;
//!
//! // Three pages from 0x10000; a write of 0x20 bytes at 0x10ff0 touches two.
//! let mut bitmap = DirtyBitmap::new(0x10000, 0x3000, 0x1000)?;
//! bitmap.mark(0x10ff0, 0x20)?;
//! assert_eq!(bitmap.dirty().collect::<Vec<_>>(), [0x10000, 0x11000]);
//! assert_eq!(bitmap.count(), 2);
//! assert!(!bitmap.is_dirty(0x12000)?);
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use crate::error::{Error, Result, Target};

/// The largest bitmap this crate allocates: 256 MiB of bits, which at
/// 4 KiB pages covers 8 TiB of IOVA space.
pub const MAX_BITMAP_BYTES: u64 = 256 << 20;

/// Which pages of `[iova, iova + len)` were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    iova: u64,
    len: u64,
    page_size: u64,
    words: Vec<u64>,
}

const OP: &str = "dirty bitmap";

impl DirtyBitmap {
    /// A clean bitmap for `[iova, iova + len)` in pages of `page_size`.
    ///
    /// # Errors
    /// `InvalidArgument` when `page_size` is not a power of two, `len` is
    /// zero, or `iova` or `len` is not a multiple of `page_size`;
    /// `Overflow` when the range wraps; `OutOfRange` when the bitmap would
    /// exceed [`MAX_BITMAP_BYTES`] (the bound is its `size`).
    pub fn new(iova: u64, len: u64, page_size: u64) -> Result<Self> {
        let target = Target::Iova { iova, len };
        let invalid = |reason| Error::InvalidArgument {
            op: OP,
            target: target.clone(),
            reason,
        };
        if !page_size.is_power_of_two() {
            return Err(invalid("the page size must be a power of two"));
        }
        if len == 0 {
            return Err(invalid("the range must not be empty"));
        }
        if iova % page_size != 0 || len % page_size != 0 {
            return Err(invalid("the range must be page aligned"));
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                op: OP,
                target,
                offset: iova,
                len,
            });
        }
        let pages = len / page_size;
        let bytes = pages.div_ceil(64) * 8;
        if bytes > MAX_BITMAP_BYTES {
            return Err(Error::OutOfRange {
                op: OP,
                target,
                offset: 0,
                len: bytes,
                size: MAX_BITMAP_BYTES,
            });
        }
        Ok(Self {
            iova,
            len,
            page_size,
            words: vec![0; (bytes / 8) as usize],
        })
    }

    /// A clean bitmap for the pages that `[start, start + len)` touches:
    /// the start rounded down and the end rounded up to `page_size`.
    ///
    /// # Errors
    /// As [`DirtyBitmap::new`]; `Overflow` also when rounding the end up
    /// passes the top of the address space.
    pub fn covering(start: u64, len: u64, page_size: u64) -> Result<Self> {
        if !page_size.is_power_of_two() || len == 0 {
            return Self::new(start, len, page_size);
        }
        let overflow = || Error::Overflow {
            op: OP,
            target: Target::Iova { iova: start, len },
            offset: start,
            len,
        };
        let first = start & !(page_size - 1);
        let last_page = start.checked_add(len - 1).ok_or_else(overflow)? & !(page_size - 1);
        // The top page of the address space is coverable; a range of all
        // 2^64 bytes is not representable.
        let covered = (last_page - first)
            .checked_add(page_size)
            .ok_or_else(overflow)?;
        Self::new(first, covered, page_size)
    }

    /// First IOVA covered.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Bytes of IOVA space covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never: a bitmap covers at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes per bit.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Pages covered (bits that mean something).
    pub fn pages(&self) -> u64 {
        self.len / self.page_size
    }

    /// The bits, for reading a kernel's answer.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The bits, for a kernel (or a model) to fill. Bits past
    /// [`pages`](Self::pages) in the last word are ignored.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// The bit of the page holding `iova`.
    fn bit(&self, iova: u64) -> Result<u64> {
        match iova.checked_sub(self.iova) {
            Some(off) if off < self.len => Ok(off / self.page_size),
            _ => Err(Error::OutOfRange {
                op: OP,
                target: Target::Iova {
                    iova: self.iova,
                    len: self.len,
                },
                offset: iova,
                len: 1,
                size: self.len,
            }),
        }
    }

    /// Whether the page holding `iova` is dirty.
    ///
    /// # Errors
    /// `OutOfRange` when `iova` lies outside the range.
    pub fn is_dirty(&self, iova: u64) -> Result<bool> {
        let bit = self.bit(iova)?;
        Ok(self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Marks every page that `[iova, iova + len)` touches; a zero `len`
    /// marks nothing.
    ///
    /// # Errors
    /// `Overflow` when the write wraps; `OutOfRange` when any of it lies
    /// outside the range (nothing is marked then).
    pub fn mark(&mut self, iova: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let last = iova.checked_add(len - 1).ok_or(Error::Overflow {
            op: OP,
            target: Target::Iova { iova, len },
            offset: iova,
            len,
        })?;
        let (first, last) = (self.bit(iova)?, self.bit(last)?);
        for bit in first..=last {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        Ok(())
    }

    /// The IOVA of every dirty page, in order.
    pub fn dirty(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pages())
            .filter(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
            .map(|bit| self.iova + bit * self.page_size)
    }

    /// How many pages are dirty.
    pub fn count(&self) -> u64 {
        self.dirty().count() as u64
    }

    /// Marks every page clean.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds the dirty pages of `other`, which must cover the same range in
    /// the same page size (two reads of one range, say).
    ///
    /// # Errors
    /// `InvalidArgument` when the geometries differ.
    pub fn merge(&mut self, other: &DirtyBitmap) -> Result<()> {
        if (self.iova, self.len, self.page_size) != (other.iova, other.len, other.page_size) {
            return Err(Error::InvalidArgument {
                op: OP,
                target: Target::Iova {
                    iova: other.iova,
                    len: other.len,
                },
                reason: "merged bitmaps must cover the same range in the same page size",
            });
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn bad_geometry_is_refused_with_the_rule() {
        let kind = |r: Result<DirtyBitmap>| r.expect_err("refused").kind();
        assert_eq!(
            kind(DirtyBitmap::new(0, 0x3000, 0x1800)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(DirtyBitmap::new(0, 0x3000, 0)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(DirtyBitmap::new(0, 0, 0x1000)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(DirtyBitmap::new(0x800, 0x1000, 0x1000)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(DirtyBitmap::new(0, 0x1800, 0x1000)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(DirtyBitmap::new(u64::MAX - 0xfff, 0x2000, 0x1000)),
            ErrorKind::Overflow
        );
        let e = DirtyBitmap::new(0, 1 << 62, 0x1000).expect_err("too big");
        assert!(
            matches!(e, Error::OutOfRange { size, .. } if size == MAX_BITMAP_BYTES),
            "{e:?}"
        );
        // The top page of the address space is fine.
        let top = DirtyBitmap::new(u64::MAX - 0xfff, 0x1000, 0x1000).expect("top page");
        assert_eq!(top.pages(), 1);
    }

    #[test]
    fn covering_rounds_out_to_whole_pages() {
        let b = DirtyBitmap::covering(0x1ff0, 0x20, 0x1000).expect("two pages");
        assert_eq!((b.iova(), b.len()), (0x1000, 0x2000));
        let top = DirtyBitmap::covering(u64::MAX - 0x10, 0x11, 0x1000).expect("the top page");
        assert_eq!((top.iova(), top.len()), (u64::MAX - 0xfff, 0x1000));
        let e = DirtyBitmap::covering(u64::MAX - 0x10, 0x12, 0x1000).expect_err("wraps");
        assert_eq!(e.kind(), ErrorKind::Overflow);
        let e = DirtyBitmap::covering(1, u64::MAX, 0x1000).expect_err("all 2^64 bytes");
        assert_eq!(e.kind(), ErrorKind::Overflow);
    }

    #[test]
    fn marks_outside_the_range_change_nothing() {
        let mut b = DirtyBitmap::new(0x4000, 0x2000, 0x1000).expect("bitmap");
        for (iova, len) in [(0x3fff, 2), (0x5fff, 2), (0x6000, 1), (u64::MAX, 2)] {
            assert!(b.mark(iova, len).is_err(), "{iova:#x}+{len:#x}");
        }
        assert_eq!(b.count(), 0);
        b.mark(0x5fff, 1).expect("last byte");
        assert_eq!(b.dirty().collect::<Vec<_>>(), [0x5000]);
        assert_eq!(
            b.is_dirty(0x6000).expect_err("outside").kind(),
            ErrorKind::OutOfRange
        );
    }

    #[test]
    fn bits_past_the_last_page_are_ignored_and_merge_checks_geometry() {
        let mut b = DirtyBitmap::new(0, 3 * 0x1000, 0x1000).expect("3 pages");
        b.words_mut()[0] = u64::MAX;
        assert_eq!(b.count(), 3);
        let mut other = DirtyBitmap::new(0, 3 * 0x1000, 0x1000).expect("same");
        other.mark(0x2000, 1).expect("mark");
        b.clear();
        b.merge(&other).expect("same geometry");
        assert_eq!(b.dirty().collect::<Vec<_>>(), [0x2000]);
        let wider = DirtyBitmap::new(0, 4 * 0x1000, 0x1000).expect("4 pages");
        assert_eq!(
            b.merge(&wider).expect_err("differs").kind(),
            ErrorKind::InvalidArgument
        );
    }

    proptest! {
        /// A mark makes exactly the pages it touches dirty, whatever its
        /// alignment, and the word layout is the kernel's.
        #[test]
        fn a_mark_dirties_exactly_the_pages_it_touches(
            shift in 12u32..16,
            pages in 1u64..300,
            start in 0u64..(300 << 15),
            len in 1u64..(1 << 18),
        ) {
            let page = 1u64 << shift;
            let base = 0x1_0000_0000u64;
            let mut b = DirtyBitmap::new(base, pages * page, page).expect("bitmap");
            let iova = base + start % (pages * page);
            let len = len.min(base + pages * page - iova);
            b.mark(iova, len).expect("inside");
            let first = (iova - base) / page;
            let last = (iova + len - 1 - base) / page;
            for bit in 0..pages {
                let want = (first..=last).contains(&bit);
                prop_assert_eq!(b.is_dirty(base + bit * page).expect("inside"), want);
                prop_assert_eq!(b.words()[(bit / 64) as usize] >> (bit % 64) & 1 == 1, want);
            }
            prop_assert_eq!(b.count(), last - first + 1);
        }
    }
}
