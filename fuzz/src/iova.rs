//! `iova_alloc`: arbitrary operation sequences on [`IovaAllocator`],
//! checked against a sequential model (the live allocations by tag).
//!
//! Input: the IOVA ranges, then operations until the input runs out (at
//! most [`MAX_OPS`]).
//!
//! - Ranges: a count byte (mod 5, so 0 — invalid — happens), then per range
//!   a selector byte: bit 2 set reads raw `u64` start and end; otherwise a
//!   page-granular start (`u32` pages) and length (`u16 + 1` pages), moved
//!   to the top of the address space by bit 0, start and end swapped by bit 1.
//! - Operations: one byte, low two bits the kind (0, 1 alloc; 2 release;
//!   3 look-ups), high four bits the tag. Alloc reads a size (bit 2 clear:
//!   `u16 << (byte % 48)`, set: raw `u64`) and an alignment (bit 3 clear:
//!   `1 << (byte % 64)`, set: raw `u64`, usually not a power of two).
//!
//! Properties:
//! - `new` accepts exactly the non-empty, well-formed, non-overlapping range
//!   sets; errors are `InvalidArgument`.
//! - Every result is the one the model predicts: a zero size, a bad alignment
//!   or a live tag is `InvalidArgument`; release and `get` of a tag answer
//!   what the model holds (`NotFound` for none).
//! - A granted allocation is aligned, does not wrap, lies inside the ranges
//!   (inside one range when no two ranges touch), and overlaps no live one.
//! - Space is conserved after every operation: free + allocated = total.
//! - `Exhausted` only when no free gap fits the size at that alignment
//!   (checked when no two ranges touch: with touching ranges the allocator
//!   merges them only once a release coalesces across the seam).
//! - Releasing everything restores all space, in one free extent per range.

use std::collections::BTreeMap;

use vfio_hal::{ErrorKind, IovaAllocator, IovaRange};

use crate::input::Input;

/// Most operations one input runs.
pub const MAX_OPS: usize = 512;

/// The fuzz entry point.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let ranges = decode_ranges(&mut input);
    let expected = well_formed(&ranges);
    let mut alloc = match (IovaAllocator::<u8>::new(&ranges), &expected) {
        (Ok(a), Some(_)) => a,
        (Err(e), None) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            return;
        }
        (Ok(_), None) => panic!("accepted malformed ranges {ranges:x?}"),
        (Err(e), Some(_)) => panic!("refused well-formed ranges {ranges:x?}: {e}"),
    };
    let sorted = expected.unwrap_or_default();
    let mut model = Model::new(sorted);
    assert_eq!(alloc.max_addr(), model.ranges.last().map_or(0, |r| r.end));

    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = input.u8();
        let tag = op >> 4;
        match op & 3 {
            0 | 1 => {
                let size = if op & 4 == 0 {
                    let base = u64::from(input.u16());
                    base << (input.u8() % 48)
                } else {
                    input.u64()
                };
                let align = if op & 8 == 0 {
                    1u64 << (input.u8() % 64)
                } else {
                    input.u64()
                };
                let result = alloc.alloc(size, align, tag);
                model.check_alloc(&alloc, size, align, tag, result.map_err(|e| e.kind()));
            }
            2 => model.check_release(tag, alloc.release(&tag).map_err(|e| e.kind())),
            _ => model.check_lookups(&alloc),
        }
        model.check_conserved(&alloc);
    }

    let live: Vec<u8> = model.live.keys().copied().collect();
    for tag in live {
        model.check_release(tag, alloc.release(&tag).map_err(|e| e.kind()));
    }
    assert_eq!(
        alloc.free_bytes(),
        model.total,
        "space lost after releasing everything"
    );
    assert_eq!(alloc.allocations().count(), 0);
    let seams = model.ranges.len() - model.runs.len();
    let extents = alloc.free_extents();
    assert!(
        extents <= model.ranges.len() && extents >= model.ranges.len() - seams,
        "{extents} free extents over {:x?}",
        model.ranges
    );
    if seams == 0 {
        assert_eq!(extents, model.ranges.len(), "free space not coalesced");
    }
}

fn decode_ranges(input: &mut Input<'_>) -> Vec<IovaRange> {
    let count = input.u8() % 5;
    (0..count)
        .map(|_| {
            let sel = input.u8();
            if sel & 4 != 0 {
                return IovaRange {
                    start: input.u64(),
                    end: input.u64(),
                };
            }
            let start = u64::from(input.u32()) << 12;
            let end = start + ((u64::from(input.u16()) + 1) << 12) - 1;
            let (start, end) = if sel & 1 != 0 {
                (u64::MAX - end, u64::MAX - start)
            } else {
                (start, end)
            };
            if sel & 2 != 0 {
                IovaRange {
                    start: end,
                    end: start,
                }
            } else {
                IovaRange { start, end }
            }
        })
        .collect()
}

/// The ranges sorted, if the allocator must accept them.
fn well_formed(ranges: &[IovaRange]) -> Option<Vec<IovaRange>> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let ok = !sorted.is_empty()
        && sorted.iter().all(|r| r.start <= r.end)
        && sorted.windows(2).all(|w| w[0].end < w[1].start);
    ok.then_some(sorted)
}

/// Whether `[at, at + size)` at `align` fits in the inclusive gap.
fn fits(gap: IovaRange, size: u64, align: u64) -> bool {
    gap.start
        .checked_next_multiple_of(align)
        .and_then(|at| at.checked_add(size - 1))
        .is_some_and(|last| last <= gap.end)
}

struct Model {
    ranges: Vec<IovaRange>,
    /// Maximal runs of touching ranges: what allocations may span.
    runs: Vec<IovaRange>,
    total: u128,
    live: BTreeMap<u8, IovaRange>,
}

impl Model {
    fn new(ranges: Vec<IovaRange>) -> Self {
        let mut runs: Vec<IovaRange> = Vec::new();
        for r in &ranges {
            match runs.last_mut() {
                Some(last) if last.end.checked_add(1) == Some(r.start) => last.end = r.end,
                _ => runs.push(*r),
            }
        }
        let total = ranges.iter().map(IovaRange::size).sum();
        Self {
            ranges,
            runs,
            total,
            live: BTreeMap::new(),
        }
    }

    fn check_alloc(
        &mut self,
        alloc: &IovaAllocator<u8>,
        size: u64,
        align: u64,
        tag: u8,
        result: Result<u64, ErrorKind>,
    ) {
        let refused = size == 0 || !align.is_power_of_two() || self.live.contains_key(&tag);
        let at = match result {
            Err(kind) if refused => return assert_eq!(kind, ErrorKind::InvalidArgument),
            Ok(at) if refused => {
                panic!("granted {size:#x} at {at:#x} (align {align:#x}, tag {tag}) that must be refused")
            }
            Err(kind) => {
                assert_eq!(
                    kind,
                    ErrorKind::Exhausted,
                    "alloc {size:#x} align {align:#x}"
                );
                if self.runs.len() == self.ranges.len() {
                    assert!(
                        !self.gaps().into_iter().any(|g| fits(g, size, align)),
                        "Exhausted, yet {size:#x} at align {align:#x} fits: ranges {:x?}, live {:x?}",
                        self.ranges,
                        self.live
                    );
                }
                return;
            }
            Ok(at) => at,
        };
        assert_eq!(at % align, 0, "{at:#x} not aligned to {align:#x}");
        let last = at
            .checked_add(size - 1)
            .unwrap_or_else(|| panic!("{at:#x} + {size:#x} wraps"));
        let got = IovaRange {
            start: at,
            end: last,
        };
        assert!(
            self.runs.iter().any(|r| r.start <= at && last <= r.end),
            "{got} outside the ranges {:x?}",
            self.ranges
        );
        if let Some((t, r)) = self
            .live
            .iter()
            .find(|(_, r)| !(r.end < at || last < r.start))
        {
            panic!("{got} overlaps {r} (tag {t})");
        }
        assert_eq!(alloc.get(&tag), Some(got));
        self.live.insert(tag, got);
    }

    fn check_release(&mut self, tag: u8, result: Result<IovaRange, ErrorKind>) {
        match (result, self.live.remove(&tag)) {
            (Ok(got), Some(want)) => assert_eq!(got, want, "release of tag {tag}"),
            (Err(kind), None) => assert_eq!(kind, ErrorKind::NotFound),
            (got, want) => panic!("release of tag {tag}: got {got:?}, model has {want:?}"),
        }
    }

    fn check_lookups(&self, alloc: &IovaAllocator<u8>) {
        let listed: Vec<(u8, IovaRange)> = alloc.allocations().map(|(&t, r)| (t, r)).collect();
        let want: Vec<(u8, IovaRange)> = self.live.iter().map(|(&t, &r)| (t, r)).collect();
        assert_eq!(listed, want);
        for tag in 0..16 {
            assert_eq!(alloc.get(&tag), self.live.get(&tag).copied());
        }
    }

    fn check_conserved(&self, alloc: &IovaAllocator<u8>) {
        let used: u128 = self.live.values().map(IovaRange::size).sum();
        assert_eq!(used + alloc.free_bytes(), self.total, "space not conserved");
    }

    /// Free gaps of each range (only meaningful when no ranges touch, so
    /// every allocation lies inside one range).
    fn gaps(&self) -> Vec<IovaRange> {
        let mut taken: Vec<IovaRange> = self.live.values().copied().collect();
        taken.sort();
        let mut gaps = Vec::new();
        for range in &self.ranges {
            let mut cursor = Some(range.start);
            for t in taken
                .iter()
                .filter(|t| range.start <= t.start && t.end <= range.end)
            {
                if let Some(c) = cursor {
                    if t.start > c {
                        gaps.push(IovaRange {
                            start: c,
                            end: t.start - 1,
                        });
                    }
                }
                cursor = t.end.checked_add(1);
            }
            if let Some(c) = cursor.filter(|&c| c <= range.end) {
                gaps.push(IovaRange {
                    start: c,
                    end: range.end,
                });
            }
        }
        gaps
    }
}
