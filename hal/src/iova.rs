//! A user-space IOVA allocator with crosvm's semantics.
//!
//! Seeded from the IOVA ranges the IOMMU reports (the holes between them,
//! such as x86's MSI window, are never handed out). Allocations are named by
//! a caller-chosen tag, looked up and released by it. Free space is kept
//! twice — by start (to coalesce on release) and by size (to find a fit) —
//! so allocation and release are O(log n) in the number of free extents;
//! only an extent that fits the size but not the size plus the worst-case
//! alignment slack is checked individually.

use std::collections::{BTreeMap, BTreeSet};

use crate::container::IovaRange;
use crate::error::{Error, Result, Target};

/// Allocates IOVA space by size, alignment and tag.
#[derive(Debug, Clone)]
pub struct IovaAllocator<T: Ord + Clone> {
    /// Free extents: start -> inclusive end.
    by_start: BTreeMap<u64, u64>,
    /// Free extents by (size, start).
    by_size: BTreeSet<(u128, u64)>,
    /// Live allocations.
    allocs: BTreeMap<T, IovaRange>,
    /// Starts of the seed ranges: free space never merges across one, so an
    /// allocation never spans two ranges (the kernel would refuse to map it).
    range_starts: BTreeSet<u64>,
    max_addr: u64,
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidArgument {
        op: "IovaAllocator",
        target: Target::None,
        reason,
    }
}

impl<T: Ord + Clone> IovaAllocator<T> {
    /// Creates an allocator over `ranges` (any order, must not overlap).
    pub fn new(ranges: &[IovaRange]) -> Result<Self> {
        let mut sorted = ranges.to_vec();
        sorted.sort();
        if sorted.is_empty() {
            return Err(invalid("no IOVA ranges"));
        }
        if sorted.windows(2).any(|w| w[0].end >= w[1].start) {
            return Err(invalid("IOVA ranges overlap"));
        }
        if sorted.iter().any(|r| r.end < r.start) {
            return Err(invalid("IOVA range ends before it starts"));
        }
        let mut a = Self {
            by_start: BTreeMap::new(),
            by_size: BTreeSet::new(),
            allocs: BTreeMap::new(),
            range_starts: sorted.iter().map(|r| r.start).collect(),
            max_addr: sorted.last().map_or(0, |r| r.end),
        };
        for r in sorted {
            a.insert_free(r.start, r.end);
        }
        Ok(a)
    }

    fn insert_free(&mut self, start: u64, end: u64) {
        self.by_start.insert(start, end);
        self.by_size
            .insert((IovaRange { start, end }.size(), start));
    }

    fn remove_free(&mut self, start: u64) -> Option<u64> {
        let end = self.by_start.remove(&start)?;
        self.by_size
            .remove(&(IovaRange { start, end }.size(), start));
        Some(end)
    }

    /// The highest address any range allows.
    pub fn max_addr(&self) -> u64 {
        self.max_addr
    }

    /// Allocates `size` bytes aligned to `align` (a power of two) under `tag`.
    ///
    /// Picks the smallest free extent that fits. Errors: zero size, bad
    /// alignment or a tag already in use → `InvalidArgument`; no room →
    /// `Exhausted`.
    pub fn alloc(&mut self, size: u64, align: u64, tag: T) -> Result<u64> {
        if size == 0 {
            return Err(invalid("size must not be zero"));
        }
        if !align.is_power_of_two() {
            return Err(invalid("alignment must be a power of two"));
        }
        if self.allocs.contains_key(&tag) {
            return Err(invalid("tag already allocated"));
        }
        let need = u128::from(size);
        let slack = need + u128::from(align) - 1;
        let fits = |start: u64, end: u64| -> Option<u64> {
            let aligned = start.checked_next_multiple_of(align)?;
            let last = aligned.checked_add(size - 1)?;
            (last <= end).then_some(aligned)
        };
        // Tight candidates first (smaller extents: best fit), then the
        // smallest extent that fits whatever its alignment.
        let tight = self
            .by_size
            .range((need, 0)..(slack, 0))
            .find_map(|&(_, s)| fits(s, self.by_start[&s]).map(|a| (s, a)));
        let found = tight.or_else(|| {
            self.by_size
                .range((slack, 0)..)
                .next()
                .and_then(|&(_, s)| fits(s, self.by_start[&s]).map(|a| (s, a)))
        });
        let (extent, at) = found.ok_or(Error::Exhausted {
            op: "IovaAllocator::alloc",
            target: Target::Iova { iova: 0, len: size },
            reason: "no free extent fits this size and alignment",
        })?;
        let end = self.remove_free(extent).unwrap_or(extent);
        if at > extent {
            self.insert_free(extent, at - 1);
        }
        let last = at + (size - 1);
        if last < end {
            self.insert_free(last + 1, end);
        }
        self.allocs.insert(
            tag,
            IovaRange {
                start: at,
                end: last,
            },
        );
        Ok(at)
    }

    /// The range allocated under `tag`.
    pub fn get(&self, tag: &T) -> Option<IovaRange> {
        self.allocs.get(tag).copied()
    }

    /// Releases the allocation under `tag`, returning its range.
    /// An unknown tag is `NotFound`.
    pub fn release(&mut self, tag: &T) -> Result<IovaRange> {
        let r = self.allocs.remove(tag).ok_or(Error::NotFound {
            op: "IovaAllocator::release",
            target: Target::None,
            reason: "no allocation under this tag",
        })?;
        let (mut start, mut end) = (r.start, r.end);
        // Coalesce with the free extent just below and just above.
        if let Some((&s, &e)) = self.by_start.range(..start).next_back() {
            if e.checked_add(1) == Some(start) && !self.range_starts.contains(&start) {
                self.remove_free(s);
                start = s;
            }
        }
        if let Some(next) = end
            .checked_add(1)
            .filter(|n| !self.range_starts.contains(n))
        {
            if let Some(e) = self.remove_free(next) {
                end = e;
            }
        }
        self.insert_free(start, end);
        Ok(r)
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u128 {
        self.by_size.iter().map(|&(sz, _)| sz).sum()
    }

    /// Number of free extents (for fragmentation checks).
    pub fn free_extents(&self) -> usize {
        self.by_start.len()
    }

    /// Live allocations, by tag.
    pub fn allocations(&self) -> impl Iterator<Item = (&T, IovaRange)> {
        self.allocs.iter().map(|(t, r)| (t, *r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    fn x86_ranges() -> Vec<IovaRange> {
        vec![
            IovaRange {
                start: 0,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: (1 << 39) - 1,
            },
        ]
    }

    #[test]
    fn alloc_get_release_by_tag() {
        let mut a = IovaAllocator::new(&x86_ranges()).expect("new");
        let iova = a.alloc(0x2000, 0x1000, "ring").expect("alloc");
        assert_eq!(
            a.get(&"ring"),
            Some(IovaRange {
                start: iova,
                end: iova + 0x1fff
            })
        );
        assert_eq!(
            a.alloc(0x1000, 0x1000, "ring").expect_err("dup tag").kind(),
            ErrorKind::InvalidArgument
        );
        a.release(&"ring").expect("release");
        assert_eq!(a.get(&"ring"), None);
        assert_eq!(
            a.release(&"ring").expect_err("twice").kind(),
            ErrorKind::NotFound
        );
        assert_eq!(a.max_addr(), (1 << 39) - 1);
    }

    #[test]
    fn never_allocates_in_the_msi_hole() {
        let ranges = vec![
            IovaRange {
                start: 0xfed0_0000,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: 0xfeff_ffff,
            },
        ];
        let mut a = IovaAllocator::new(&ranges).expect("new");
        // 2 MiB fits in neither 1 MiB piece even though the span does.
        assert_eq!(
            a.alloc(0x20_0000, 0x1000, 1).expect_err("no room").kind(),
            ErrorKind::Exhausted
        );
        assert_eq!(a.alloc(0x10_0000, 0x1000, 2).expect("fits"), 0xfed0_0000);
        assert_eq!(a.alloc(0x10_0000, 0x1000, 3).expect("fits"), 0xfef0_0000);
    }

    #[test]
    fn alignment_is_honoured_and_whole_space_is_usable() {
        let mut a = IovaAllocator::new(&[IovaRange {
            start: 0,
            end: u64::MAX,
        }])
        .expect("new");
        let big = a.alloc(u64::MAX, 1, 0u8).expect("almost everything");
        assert_eq!(big, 0);
        assert_eq!(a.alloc(1, 1, 1).expect("last byte"), u64::MAX);
        assert_eq!(a.free_bytes(), 0);
        a.release(&0).expect("release");
        a.release(&1).expect("release");
        assert_eq!(a.free_bytes(), 1u128 << 64);
        assert_eq!(a.free_extents(), 1);
    }

    #[test]
    fn touching_ranges_never_merge_into_one_allocation() {
        let ranges = [
            IovaRange {
                start: 0,
                end: 0xfff,
            },
            IovaRange {
                start: 0x1000,
                end: 0x1fff,
            },
        ];
        let mut a = IovaAllocator::new(&ranges).expect("new");
        a.alloc(0x1000, 0x1000, 0).expect("first");
        a.alloc(0x1000, 0x1000, 1).expect("second");
        a.release(&0).expect("release");
        a.release(&1).expect("release");
        assert_eq!(a.free_extents(), 2, "the seam stays");
        assert_eq!(
            a.alloc(0x2000, 0x1000, 2).expect_err("spans both").kind(),
            ErrorKind::Exhausted
        );
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(IovaAllocator::<u8>::new(&[]).is_err());
        let overlapping = [
            IovaRange { start: 0, end: 10 },
            IovaRange { start: 10, end: 20 },
        ];
        assert!(IovaAllocator::<u8>::new(&overlapping).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { size: u64, align_shift: u32 },
        Release(usize),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..0x40_000, 0u32..20)
                .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
            any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn allocations_are_disjoint_aligned_inside_ranges_and_conserve_space(
            ops in proptest::collection::vec(arb_op(), 1..200)
        ) {
            let ranges = vec![
                IovaRange { start: 0x1000, end: 0x2f_ffff },
                IovaRange { start: 0x40_0000, end: 0x7f_ffff },
            ];
            let total: u128 = ranges.iter().map(|r| r.size()).sum();
            let mut a = IovaAllocator::new(&ranges).expect("new");
            let mut live: Vec<u32> = Vec::new();
            for (tag, op) in (0u32..).zip(ops) {
                match op {
                    Op::Alloc { size, align_shift } => {
                        let align = 1u64 << align_shift;
                        if let Ok(iova) = a.alloc(size, align, tag) {
                            prop_assert_eq!(iova % align, 0);
                            prop_assert!(ranges.iter().any(|r| r.contains(iova, size)));
                            live.push(tag);
                        }
                    }
                    Op::Release(i) if !live.is_empty() => {
                        let tag = live.swap_remove(i % live.len());
                        a.release(&tag).expect("live tag releases");
                    }
                    Op::Release(_) => {}
                }
                let mut spans: Vec<IovaRange> = live.iter().map(|t| a.get(t).expect("live")).collect();
                spans.sort();
                prop_assert!(spans.windows(2).all(|w| w[0].end < w[1].start), "overlap: {:?}", spans);
                let used: u128 = spans.iter().map(|r| r.size()).sum();
                prop_assert_eq!(used + a.free_bytes(), total);
            }
            for t in live { a.release(&t).expect("release"); }
            prop_assert_eq!(a.free_bytes(), total);
            prop_assert_eq!(a.free_extents(), 2);
        }
    }
}
