//! One IOVA-allocation workload, run by vfio-hal's allocator and by
//! rust-vmm's `vm-allocator`.
//!
//! The workload is what a VMM's DMA layer does with IO address space:
//! buffers of 4 KiB to 2 MiB (three in four a power-of-two number of pages,
//! the rest any page count up to the next power of two), half of them
//! aligned only to the page, half naturally aligned (to their size rounded
//! up to a power of two, at most 2 MiB); a fill up to a number of live
//! buffers, a churn phase that frees a random live buffer and allocates a
//! new one, and a drain that frees the rest in shuffled order — repeated,
//! so freed space is reused. Everything is drawn from a fixed seed
//! ([`Shape`]), so every run and both allocators see the same steps.
//!
//! Both runners ([`run_vfio_hal`], [`run_vm_allocator`]) do exactly the
//! listed steps through each crate's public API as a VMM would use it —
//! vfio-hal's allocator keys allocations by a tag, `vm-allocator` hands back
//! the range, which the caller keeps — and stop at the first step either
//! refuses. Each returns the start address of every allocation, which
//! [`Workload::check`] replays (alignment, window, no overlap with a live
//! buffer). After the drain each runner also checks that the whole window
//! is one free extent again.
//!
//! The placement policies differ and are each crate's natural one:
//! vfio-hal's allocator is best-fit (the only policy it offers),
//! `vm-allocator` is asked for `AllocPolicy::FirstMatch`, its default.

use std::collections::BTreeMap;
use std::fmt;

use vfio_hal::{IovaAllocator, IovaRange};
use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

/// The page size every buffer is a multiple of.
pub const PAGE: u64 = 4096;
/// The largest buffer (and the largest alignment).
pub const MAX_SIZE: u64 = 2 << 20;

/// One step of a [`Workload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Allocate `size` bytes aligned to `align`, known from now on as `id`.
    Alloc {
        /// Names the buffer for its [`Step::Free`]; ids are never reused.
        id: u32,
        /// Bytes, a multiple of [`PAGE`].
        size: u64,
        /// A power of two, at least [`PAGE`].
        align: u64,
    },
    /// Free the buffer allocated as `id`.
    Free {
        /// The id of a live buffer.
        id: u32,
    },
}

/// The knobs of [`Workload::generate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Seeds every random choice.
    pub seed: u64,
    /// Live buffers after the fill.
    pub live: usize,
    /// Free-one-allocate-one steps after the fill.
    pub churn: usize,
    /// Fill, churn, drain repetitions.
    pub cycles: usize,
}

impl Default for Shape {
    /// 512 live buffers, 2048 churn steps, two cycles: 5120 allocations and
    /// as many frees.
    fn default() -> Self {
        Self {
            seed: 0x5eed_1ab5_0f10_c8a1,
            live: 512,
            churn: 2048,
            cycles: 2,
        }
    }
}

/// SplitMix64: small, fast and good enough to draw a workload from a seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        // `len` fits in u64, and the result is below `len`.
        self.below(len as u64) as usize
    }
}

/// A fixed list of allocation steps over one IOVA window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    window: IovaRange,
    steps: Vec<Step>,
    allocs: usize,
}

impl Workload {
    /// The window every workload allocates from: 512 GiB starting at
    /// 4 GiB, above x86's MSI hole, so that one range describes it for both
    /// allocators (`vm-allocator` manages a single range).
    pub const WINDOW: IovaRange = IovaRange {
        start: 1 << 32,
        end: (1 << 32) + (1 << 39) - 1,
    };

    /// Draws a workload of the given shape.
    pub fn generate(shape: Shape) -> Self {
        let mut rng = Rng(shape.seed);
        let mut steps = Vec::new();
        let mut next_id = 0u32;
        let mut live: Vec<u32> = Vec::with_capacity(shape.live);
        let mut alloc = |rng: &mut Rng, steps: &mut Vec<Step>, live: &mut Vec<u32>| {
            let pow = 1u64 << rng.below(10); // 1 .. 512 pages
            let pages = if rng.below(4) == 0 {
                1 + rng.below(pow)
            } else {
                pow
            };
            let size = pages * PAGE;
            let align = if rng.below(2) == 0 {
                PAGE
            } else {
                size.next_power_of_two().min(MAX_SIZE)
            };
            steps.push(Step::Alloc {
                id: next_id,
                size,
                align,
            });
            live.push(next_id);
            next_id += 1;
        };
        for _ in 0..shape.cycles {
            while live.len() < shape.live {
                alloc(&mut rng, &mut steps, &mut live);
            }
            for _ in 0..shape.churn {
                if !live.is_empty() {
                    let victim = live.swap_remove(rng.index(live.len()));
                    steps.push(Step::Free { id: victim });
                }
                alloc(&mut rng, &mut steps, &mut live);
            }
            // Fisher-Yates, then free in that order.
            for i in (1..live.len()).rev() {
                live.swap(i, rng.index(i + 1));
            }
            steps.extend(live.drain(..).map(|id| Step::Free { id }));
        }
        let allocs = steps
            .iter()
            .filter(|s| matches!(s, Step::Alloc { .. }))
            .count();
        Self {
            window: Self::WINDOW,
            steps,
            allocs,
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The IOVA window allocated from.
    pub fn window(&self) -> IovaRange {
        self.window
    }

    /// How many of the steps are allocations.
    pub fn allocs(&self) -> usize {
        self.allocs
    }

    /// Replays the steps with `starts` (the start of each allocation, in
    /// order, as a runner returns them) and checks that every buffer is
    /// aligned as asked, lies in the window and overlaps no live buffer.
    pub fn check(&self, starts: &[u64]) -> Result<(), Failed> {
        let fail = |step: usize, reason: String| Failed {
            allocator: "placement check",
            step,
            reason,
        };
        if starts.len() != self.allocs {
            return Err(fail(
                self.steps.len(),
                format!("{} starts for {} allocations", starts.len(), self.allocs),
            ));
        }
        let mut starts = starts.iter();
        // start -> last byte, of every live buffer; id -> start.
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        let mut by_id: BTreeMap<u32, u64> = BTreeMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            match *step {
                Step::Alloc { id, size, align } => {
                    let start = *starts.next().ok_or_else(|| fail(i, "no start".into()))?;
                    if start % align != 0 || !self.window.contains(start, size) {
                        return Err(fail(i, format!("{start:#x}+{size:#x} misplaced")));
                    }
                    let last = start + (size - 1);
                    let below = live.range(..=last).next_back();
                    if let Some((&s, &e)) = below.filter(|&(_, &e)| e >= start) {
                        return Err(fail(
                            i,
                            format!("{start:#x}..={last:#x} overlaps {s:#x}..={e:#x}"),
                        ));
                    }
                    live.insert(start, last);
                    by_id.insert(id, start);
                }
                Step::Free { id } => {
                    let start = by_id
                        .remove(&id)
                        .ok_or_else(|| fail(i, format!("id {id} is not live")))?;
                    live.remove(&start);
                }
            }
        }
        Ok(())
    }
}

/// A step an allocator refused, or a check it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Which allocator (or check).
    pub allocator: &'static str,
    /// Index of the step in [`Workload::steps`] (the step count for a
    /// check after the last step).
    pub step: usize,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: step {}: {}", self.allocator, self.step, self.reason)
    }
}

impl std::error::Error for Failed {}

/// Runs `workload` on vfio-hal's [`IovaAllocator`], tagging each buffer
/// with its id; returns the start of every allocation.
pub fn run_vfio_hal(workload: &Workload) -> Result<Vec<u64>, Failed> {
    let fail = |step: usize, reason: String| Failed {
        allocator: "vfio-hal IovaAllocator",
        step,
        reason,
    };
    let mut a =
        IovaAllocator::<u32>::new(&[workload.window]).map_err(|e| fail(0, e.to_string()))?;
    let mut starts = Vec::with_capacity(workload.allocs);
    for (i, step) in workload.steps.iter().enumerate() {
        match *step {
            Step::Alloc { id, size, align } => {
                starts.push(
                    a.alloc(size, align, id)
                        .map_err(|e| fail(i, e.to_string()))?,
                );
            }
            Step::Free { id } => {
                a.release(&id).map_err(|e| fail(i, e.to_string()))?;
            }
        }
    }
    if a.free_bytes() != workload.window.size() || a.free_extents() != 1 {
        return Err(fail(
            workload.steps.len(),
            format!(
                "after the drain: {} free bytes in {} extents",
                a.free_bytes(),
                a.free_extents()
            ),
        ));
    }
    Ok(starts)
}

/// Runs `workload` on `vm-allocator`'s [`AddressAllocator`]
/// (`AllocPolicy::FirstMatch`), keeping each returned range by id for its
/// free; returns the start of every allocation.
pub fn run_vm_allocator(workload: &Workload) -> Result<Vec<u64>, Failed> {
    let fail = |step: usize, reason: String| Failed {
        allocator: "vm-allocator AddressAllocator",
        step,
        reason,
    };
    let base = workload.window.start;
    let len = u64::try_from(workload.window.size())
        .map_err(|_| fail(0, "window larger than u64".into()))?;
    let mut a = AddressAllocator::new(base, len).map_err(|e| fail(0, e.to_string()))?;
    let mut ranges: Vec<Option<RangeInclusive>> = vec![None; workload.allocs];
    let mut starts = Vec::with_capacity(workload.allocs);
    for (i, step) in workload.steps.iter().enumerate() {
        match *step {
            Step::Alloc { id, size, align } => {
                let r = a
                    .allocate(size, align, AllocPolicy::FirstMatch)
                    .map_err(|e| fail(i, e.to_string()))?;
                starts.push(r.start());
                let slot = ranges
                    .get_mut(id as usize)
                    .ok_or_else(|| fail(i, format!("id {id} out of range")))?;
                *slot = Some(r);
            }
            Step::Free { id } => {
                let r = ranges
                    .get_mut(id as usize)
                    .and_then(Option::take)
                    .ok_or_else(|| fail(i, format!("id {id} is not live")))?;
                a.free(&r).map_err(|e| fail(i, e.to_string()))?;
            }
        }
    }
    // Coalesced back into one free node: the whole window fits at its base.
    a.allocate(len, PAGE, AllocPolicy::ExactMatch(base))
        .map_err(|e| fail(workload.steps.len(), format!("after the drain: {e}")))?;
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Workload {
        Workload::generate(Shape {
            live: 64,
            churn: 256,
            ..Shape::default()
        })
    }

    #[test]
    fn the_default_shape_has_the_documented_size_and_mix() {
        let w = Workload::generate(Shape::default());
        assert_eq!(w.allocs(), 2 * (512 + 2048));
        assert_eq!(w.steps().len(), 2 * w.allocs());
        let sizes: Vec<(u64, u64)> = w
            .steps()
            .iter()
            .filter_map(|s| match *s {
                Step::Alloc { size, align, .. } => Some((size, align)),
                Step::Free { .. } => None,
            })
            .collect();
        assert!(sizes.iter().all(|&(s, a)| s % PAGE == 0
            && (PAGE..=MAX_SIZE).contains(&s)
            && a.is_power_of_two()
            && (PAGE..=MAX_SIZE).contains(&a)));
        assert!(sizes.iter().any(|&(s, _)| s == PAGE));
        assert!(sizes.iter().any(|&(s, _)| s == MAX_SIZE));
        assert!(sizes.iter().any(|&(s, _)| !(s / PAGE).is_power_of_two()));
        assert!(sizes.iter().any(|&(_, a)| a == PAGE));
        assert!(sizes.iter().any(|&(_, a)| a == MAX_SIZE));
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        assert_eq!(small(), small());
        let other = Workload::generate(Shape {
            seed: 1,
            live: 64,
            churn: 256,
            cycles: 2,
        });
        assert_ne!(small().steps(), other.steps());
    }

    #[test]
    fn every_id_is_freed_exactly_once_after_its_allocation() {
        let w = small();
        let mut state = vec![0u8; w.allocs()];
        for step in w.steps() {
            match *step {
                Step::Alloc { id, .. } => {
                    assert_eq!(state[id as usize], 0);
                    state[id as usize] = 1;
                }
                Step::Free { id } => {
                    assert_eq!(state[id as usize], 1);
                    state[id as usize] = 2;
                }
            }
        }
        assert!(state.iter().all(|&s| s == 2));
    }

    #[test]
    fn both_allocators_complete_the_default_workload_with_valid_placements() {
        let w = Workload::generate(Shape::default());
        let ours = run_vfio_hal(&w).expect("vfio-hal");
        w.check(&ours).expect("vfio-hal placements");
        let theirs = run_vm_allocator(&w).expect("vm-allocator");
        w.check(&theirs).expect("vm-allocator placements");
    }

    #[test]
    fn the_check_catches_overlap_misalignment_and_a_short_list() {
        let w = small();
        let mut starts = run_vfio_hal(&w).expect("vfio-hal");
        assert!(w.check(&starts[1..]).is_err());
        let first = starts[0];
        starts[1] = first; // two live buffers at one address
        assert!(w.check(&starts).is_err());
        starts[1] = first + 1; // misaligned
        assert!(w.check(&starts).is_err());
    }

    #[test]
    fn a_window_too_small_is_reported_with_the_step() {
        let mut w = small();
        w.window = IovaRange {
            start: 1 << 32,
            end: (1 << 32) + (4 << 20) - 1,
        };
        let e = run_vfio_hal(&w).expect_err("4 MiB cannot hold 64 buffers");
        assert!(e.step > 0 && e.step < w.steps().len(), "{e}");
        let e = run_vm_allocator(&w).expect_err("nor for vm-allocator");
        assert!(e.step > 0 && e.step < w.steps().len(), "{e}");
    }
}
