//! Several threads mapping, unmapping and accessing one `MockContainer` and
//! one open edu device at the same time; every result must be one a
//! sequential execution allows.
//!
//! The state-machine test gives each thread its own slots of IOVA space
//! (and of host memory), where the outcome of every call is determined by
//! that thread's own history: those results are checked exactly against a
//! sequential model, and the final mappings equal the model's. Every thread
//! also works on a shared, contended IOVA range, where the interleaving
//! decides who wins: there only invariants are checked — each result is one
//! the kernel rules allow, the final mappings are disjoint and inside the
//! range, and the mapped bytes are conserved (what the threads' successful
//! maps added minus what their unmaps removed is what is left). The edu
//! liveness register, written and read by every thread, must behave as one
//! linearizable register.
//!
//! Run: `cargo test -p vfio-hal-mock --test concurrency`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;

use common::EDU;
use proptest::prelude::*;
use vfio_hal::prelude::*;
use vfio_hal::{Container, DmaAccess, DmaBuffer, ErrorKind};
use vfio_hal_mock::models::edu::{reg, Edu};
use vfio_hal_mock::{FaultReason, MappingInfo, MockContainer, MockDevice};

const PAGE: u64 = 4096;
const THREADS: usize = 4;
/// Pages of IOVA space (and host memory) each thread owns.
const SLOTS: u64 = 8;
/// Pages of the contended range.
const SHARED_SLOTS: u64 = 8;
const OWN_BASE: u64 = 0x100_0000;
const SHARED_BASE: u64 = 0x800_0000;
/// The device name DMA accesses are recorded under.
const DEVICE: &str = "concurrency";

fn own_iova(thread: usize, slot: u64) -> u64 {
    OWN_BASE + (thread as u64 * SLOTS + slot) * PAGE
}

fn shared_iova(slot: u64) -> u64 {
    SHARED_BASE + slot * PAGE
}

/// One thread's step.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Map own slots `[slot, slot + pages)` with `access`.
    Map {
        slot: u64,
        pages: u64,
        access: DmaAccess,
    },
    /// Unmap own slots `[slot, slot + pages)`.
    Unmap { slot: u64, pages: u64 },
    /// A device write of `value` at the start of an own slot, through the IOMMU.
    DeviceWrite { slot: u64, value: u64 },
    /// A device read of 8 bytes at the start of an own slot.
    DeviceRead { slot: u64 },
    /// Map shared slots `[slot, slot + pages)`.
    SharedMap { slot: u64, pages: u64 },
    /// Unmap shared slots `[slot, slot + pages)`.
    SharedUnmap { slot: u64, pages: u64 },
    /// A device read at the start of a shared slot.
    SharedRead { slot: u64 },
    /// Write the edu liveness register, then read it back.
    Liveness,
    /// Read edu's identification register.
    Identify,
}

/// What a step returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Success, with the bytes unmapped or the value read (else 0).
    Ok(u64),
    /// A hal error of this kind.
    Err(ErrorKind),
    /// The IOMMU refused a device access.
    Fault(FaultReason),
    /// Liveness: wrote `.0`, read `.1`.
    Live(u32, u32),
}

fn arb_access() -> impl Strategy<Value = DmaAccess> {
    prop_oneof![
        Just(DmaAccess::ReadOnly),
        Just(DmaAccess::WriteOnly),
        Just(DmaAccess::ReadWrite)
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let own = 0..SLOTS;
    let shared = 0..SHARED_SLOTS;
    prop_oneof![
        3 => (own.clone(), 1u64..4, arb_access()).prop_map(|(slot, pages, access)| Op::Map {
            slot,
            pages: pages.min(SLOTS - slot),
            access
        }),
        2 => (own.clone(), 1u64..4).prop_map(|(slot, pages)| Op::Unmap {
            slot,
            pages: pages.min(SLOTS - slot)
        }),
        2 => (own.clone(), any::<u64>()).prop_map(|(slot, value)| Op::DeviceWrite { slot, value }),
        2 => own.prop_map(|slot| Op::DeviceRead { slot }),
        2 => (shared.clone(), 1u64..4).prop_map(|(slot, pages)| Op::SharedMap {
            slot,
            pages: pages.min(SHARED_SLOTS - slot)
        }),
        2 => (shared.clone(), 1u64..4).prop_map(|(slot, pages)| Op::SharedUnmap {
            slot,
            pages: pages.min(SHARED_SLOTS - slot)
        }),
        1 => shared.prop_map(|slot| Op::SharedRead { slot }),
        2 => Just(Op::Liveness),
        1 => Just(Op::Identify),
    ]
}

/// The process memory behind every mapping: one page per own slot of every
/// thread, then one per shared slot. Only ever accessed through the IOMMU.
struct Arena(DmaBuffer);

impl Arena {
    fn new() -> Self {
        let pages = THREADS as u64 * SLOTS + SHARED_SLOTS;
        Self(DmaBuffer::new((pages * PAGE) as usize).expect("arena"))
    }

    fn own(&self, thread: usize, slot: u64) -> *mut u8 {
        self.page(thread as u64 * SLOTS + slot)
    }

    fn shared(&self, slot: u64) -> *mut u8 {
        self.page(THREADS as u64 * SLOTS + slot)
    }

    fn page(&self, n: u64) -> *mut u8 {
        self.0.as_ptr().wrapping_add((n * PAGE) as usize)
    }
}

fn map(c: &MockContainer, iova: u64, host: *mut u8, pages: u64, access: DmaAccess) -> Outcome {
    // SAFETY: `host` is a page of the arena with `pages` arena pages after
    // it (slots never run past their block), and the arena outlives the
    // container's mappings: every test unmaps all before dropping it.
    let r = unsafe { c.map_dma_raw(iova, host, pages * PAGE, access) };
    match r {
        Ok(()) => Outcome::Ok(0),
        Err(e) => Outcome::Err(e.kind()),
    }
}

fn unmap(c: &MockContainer, iova: u64, pages: u64) -> Outcome {
    match c.unmap_dma(iova, pages * PAGE) {
        Ok(n) => Outcome::Ok(n),
        Err(e) => Outcome::Err(e.kind()),
    }
}

fn device_read(c: &MockContainer, iova: u64) -> Outcome {
    let mut b = [0u8; 8];
    match c.iommu().dma_read(DEVICE, iova, &mut b) {
        Ok(()) => Outcome::Ok(u64::from_le_bytes(b)),
        Err(f) => Outcome::Fault(f.reason),
    }
}

/// Runs one thread's steps and returns what each one returned.
fn run_thread(
    c: &MockContainer,
    dev: &MockDevice,
    arena: &Arena,
    thread: usize,
    ops: &[Op],
) -> Vec<Outcome> {
    let bar0 = dev.region(0).expect("BAR0");
    let mut seq = 0u32;
    ops.iter()
        .map(|&op| match op {
            Op::Map {
                slot,
                pages,
                access,
            } => map(
                c,
                own_iova(thread, slot),
                arena.own(thread, slot),
                pages,
                access,
            ),
            Op::Unmap { slot, pages } => unmap(c, own_iova(thread, slot), pages),
            Op::DeviceWrite { slot, value } => {
                match c
                    .iommu()
                    .dma_write(DEVICE, own_iova(thread, slot), &value.to_le_bytes())
                {
                    Ok(()) => Outcome::Ok(0),
                    Err(f) => Outcome::Fault(f.reason),
                }
            }
            Op::DeviceRead { slot } => device_read(c, own_iova(thread, slot)),
            Op::SharedMap { slot, pages } => map(
                c,
                shared_iova(slot),
                arena.shared(slot),
                pages,
                DmaAccess::ReadWrite,
            ),
            Op::SharedUnmap { slot, pages } => unmap(c, shared_iova(slot), pages),
            Op::SharedRead { slot } => device_read(c, shared_iova(slot)),
            Op::Liveness => {
                seq += 1;
                let value = ((thread as u32) << 24) | seq;
                let read = bar0
                    .write_at::<u32>(reg::LIVENESS, value)
                    .and_then(|()| bar0.read_at::<u32>(reg::LIVENESS));
                match read {
                    Ok(v) => Outcome::Live(value, v),
                    Err(e) => Outcome::Err(e.kind()),
                }
            }
            Op::Identify => match bar0.read_at::<u32>(reg::ID) {
                Ok(v) => Outcome::Ok(u64::from(v)),
                Err(e) => Outcome::Err(e.kind()),
            },
        })
        .collect()
}

/// The sequential model of one thread's own slots: the kernel's mapping
/// rules on a page-slot grid, and the memory behind each slot.
#[derive(Debug, Default)]
struct OwnModel {
    /// First slot -> (pages, access).
    maps: BTreeMap<u64, (u64, DmaAccess)>,
    /// The first 8 bytes of each slot's host page.
    mem: [u64; SLOTS as usize],
}

impl OwnModel {
    fn containing(&self, slot: u64) -> Option<(u64, u64, DmaAccess)> {
        let (&start, &(pages, access)) = self.maps.range(..=slot).next_back()?;
        (slot < start + pages).then_some((start, pages, access))
    }

    fn map(&mut self, slot: u64, pages: u64, access: DmaAccess) -> Outcome {
        if (slot..slot + pages).any(|s| self.containing(s).is_some()) {
            return Outcome::Err(ErrorKind::AlreadyMapped);
        }
        self.maps.insert(slot, (pages, access));
        Outcome::Ok(0)
    }

    fn unmap(&mut self, slot: u64, pages: u64) -> Outcome {
        let last = slot + pages - 1;
        let splits_head = self.containing(slot).is_some_and(|(s, _, _)| s < slot);
        let splits_tail = self
            .containing(last)
            .is_some_and(|(s, n, _)| s + n - 1 > last);
        if splits_head || splits_tail {
            return Outcome::Err(ErrorKind::InvalidArgument);
        }
        let inside: Vec<u64> = self.maps.range(slot..=last).map(|(&s, _)| s).collect();
        if inside.is_empty() {
            return Outcome::Err(ErrorKind::NotMapped);
        }
        let bytes = inside
            .iter()
            .filter_map(|s| self.maps.remove(s))
            .map(|(n, _)| n * PAGE)
            .sum();
        Outcome::Ok(bytes)
    }

    fn device(&mut self, slot: u64, write: Option<u64>) -> Outcome {
        let Some((_, _, access)) = self.containing(slot) else {
            return Outcome::Fault(FaultReason::NotMapped);
        };
        match write {
            Some(_) if !access.device_writes() => Outcome::Fault(FaultReason::WriteToReadOnly),
            Some(v) => {
                self.mem[slot as usize] = v;
                Outcome::Ok(0)
            }
            None if !access.device_reads() => Outcome::Fault(FaultReason::ReadFromWriteOnly),
            None => Outcome::Ok(self.mem[slot as usize]),
        }
    }

    fn mappings(&self, thread: usize) -> Vec<MappingInfo> {
        self.maps
            .iter()
            .map(|(&slot, &(pages, access))| MappingInfo {
                iova: own_iova(thread, slot),
                len: pages * PAGE,
                access,
            })
            .collect()
    }
}

fn edu_container() -> (MockContainer, MockDevice) {
    let c = MockContainer::new();
    c.plug(EDU, Edu::new()).expect("plug edu");
    let dev = c.open_device(EDU).expect("open edu");
    (c, dev)
}

/// What one thread's checked results leave for the whole-run checks.
struct ThreadSummary {
    /// Bytes its successful shared maps added minus what its unmaps removed.
    net_shared: i128,
    /// Its liveness steps: (value written, value read back).
    live: Vec<(u32, u32)>,
    /// Its own slots, as the sequential model ends them.
    model: OwnModel,
}

/// Checks one thread's own-slot results against its model, and its shared
/// results against what the rules allow.
fn check_thread(
    thread: usize,
    ops: &[Op],
    outcomes: &[Outcome],
) -> Result<ThreadSummary, TestCaseError> {
    prop_assert_eq!(ops.len(), outcomes.len());
    let mut model = OwnModel::default();
    let mut net: i128 = 0;
    let mut live = Vec::new();
    for (i, (&op, &got)) in ops.iter().zip(outcomes).enumerate() {
        let at = format!("thread {thread} step {i}: {op:?}");
        match op {
            Op::Map {
                slot,
                pages,
                access,
            } => prop_assert_eq!(got, model.map(slot, pages, access), "{}", at),
            Op::Unmap { slot, pages } => prop_assert_eq!(got, model.unmap(slot, pages), "{}", at),
            Op::DeviceWrite { slot, value } => {
                prop_assert_eq!(got, model.device(slot, Some(value)), "{}", at)
            }
            Op::DeviceRead { slot } => prop_assert_eq!(got, model.device(slot, None), "{}", at),
            Op::SharedMap { pages, .. } => match got {
                Outcome::Ok(0) => net += i128::from(pages * PAGE),
                Outcome::Err(ErrorKind::AlreadyMapped) => {}
                other => prop_assert!(false, "{}: {:?} is not a possible map result", at, other),
            },
            Op::SharedUnmap { pages, .. } => match got {
                Outcome::Ok(n) => {
                    prop_assert!(n > 0 && n <= pages * PAGE && n % PAGE == 0, "{}: {}", at, n);
                    net -= i128::from(n);
                }
                Outcome::Err(ErrorKind::NotMapped | ErrorKind::InvalidArgument) => {}
                other => prop_assert!(false, "{}: {:?} is not a possible unmap result", at, other),
            },
            Op::SharedRead { .. } => prop_assert!(
                matches!(got, Outcome::Ok(_) | Outcome::Fault(FaultReason::NotMapped)),
                "{}: {:?}",
                at,
                got
            ),
            Op::Liveness => match got {
                Outcome::Live(wrote, read) => live.push((wrote, read)),
                other => prop_assert!(false, "{}: {:?}", at, other),
            },
            Op::Identify => prop_assert_eq!(got, Outcome::Ok(u64::from(reg::ID_VALUE)), "{}", at),
        }
    }
    Ok(ThreadSummary {
        net_shared: net,
        live,
        model,
    })
}

/// The liveness register is one linearizable register: a read after my own
/// write returns NOT of my write or of a value another thread wrote, and the
/// values I see from any one other thread never go back in its order.
fn check_liveness(observed: &[Vec<(u32, u32)>]) -> Result<(), TestCaseError> {
    let written: BTreeSet<u32> = observed.iter().flatten().map(|&(w, _)| w).collect();
    for (thread, obs) in observed.iter().enumerate() {
        let mut last_seen: BTreeMap<u32, u32> = BTreeMap::new();
        for &(wrote, read) in obs {
            let value = !read;
            let writer = value >> 24;
            if writer == thread as u32 {
                prop_assert_eq!(
                    value,
                    wrote,
                    "thread {} read an older write of its own",
                    thread
                );
            } else {
                prop_assert!(
                    written.contains(&value),
                    "thread {} read {:#x}, which nobody wrote",
                    thread,
                    read
                );
                let seq = value & 0xff_ffff;
                let prev = last_seen.insert(writer, seq).unwrap_or(0);
                prop_assert!(
                    seq >= prev,
                    "thread {} saw thread {}'s write {} after its write {}",
                    thread,
                    writer,
                    seq,
                    prev
                );
            }
        }
    }
    Ok(())
}

fn run_case(plans: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let arena = Arena::new();
    let (c, dev) = edu_container();
    let start = Barrier::new(plans.len());
    let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(t, ops)| {
                let (c, dev, arena, start) = (&c, &dev, &arena, &start);
                s.spawn(move || {
                    start.wait();
                    run_thread(c, dev, arena, t, ops)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    });

    let mut net: i128 = 0;
    let mut live = Vec::new();
    let mut faults = 0usize;
    let mappings = c.mappings();
    for (t, (ops, got)) in plans.iter().zip(&outcomes).enumerate() {
        let summary = check_thread(t, ops, got)?;
        net += summary.net_shared;
        live.push(summary.live);
        let model = summary.model;
        faults += got
            .iter()
            .filter(|o| matches!(o, Outcome::Fault(_)))
            .count();
        // The final state of the thread's own slots is the model's.
        let (lo, hi) = (own_iova(t, 0), own_iova(t, SLOTS));
        let own: Vec<MappingInfo> = mappings
            .iter()
            .copied()
            .filter(|m| m.iova >= lo && m.iova < hi)
            .collect();
        prop_assert_eq!(own, model.mappings(t), "thread {} final mappings", t);
    }
    check_liveness(&live)?;

    // The contended range: disjoint, inside the range, bytes conserved.
    let shared: Vec<MappingInfo> = mappings
        .iter()
        .copied()
        .filter(|m| m.iova >= SHARED_BASE)
        .collect();
    for w in shared.windows(2) {
        prop_assert!(w[0].iova + w[0].len <= w[1].iova, "overlap: {:?}", w);
    }
    for m in &shared {
        prop_assert!(
            m.iova + m.len <= shared_iova(SHARED_SLOTS),
            "{:?} outside",
            m
        );
    }
    let left: i128 = shared.iter().map(|m| i128::from(m.len)).sum();
    prop_assert_eq!(left, net, "mapped bytes not conserved in the shared range");

    let total: u64 = mappings.iter().map(|m| m.len).sum();
    prop_assert_eq!(c.mapped_bytes(), total);
    prop_assert_eq!(c.mapping_count(), mappings.len());
    prop_assert_eq!(
        c.take_faults().len(),
        faults,
        "every refused access recorded once"
    );

    // The register holds the last write of some thread.
    let finals: BTreeSet<u32> = live
        .iter()
        .filter_map(|l| l.last())
        .map(|&(w, _)| w)
        .collect();
    if !finals.is_empty() {
        let now = !dev
            .region(0)
            .and_then(|b| b.read_at::<u32>(reg::LIVENESS))
            .expect("liveness");
        prop_assert!(finals.contains(&now), "final liveness {:#x}", now);
    }

    prop_assert_eq!(c.unmap_all().expect("unmap all"), total);
    drop((dev, c));
    drop(arena);
    Ok(())
}

/// Cases per run; Miri (which also checks the threads for data races) gets fewer.
const CASES: u32 = if cfg!(miri) { 12 } else { 96 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn concurrent_threads_agree_with_a_sequential_model(
        plans in proptest::collection::vec(proptest::collection::vec(arb_op(), 1..48), THREADS)
    ) {
        run_case(&plans)?;
    }
}

/// Threads fight over one IOVA with `map_buffer` guards: while a thread
/// holds the mapping, nobody else can map there and nobody else's unmap can
/// remove it, so a device write through the IOMMU lands in exactly that
/// thread's buffer and a device read returns it.
#[test]
fn contended_guards_see_only_their_own_memory() {
    const IOVA: u64 = 0x40_0000;
    const ROUNDS: u32 = if cfg!(miri) { 40 } else { 300 };
    let (c, dev) = edu_container();
    let start = Barrier::new(THREADS);
    let wins: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS as u32)
            .map(|t| {
                let (c, dev, start) = (&c, &dev, &start);
                s.spawn(move || {
                    let bar0 = dev.region(0).expect("BAR0");
                    let mut buffer = Some(DmaBuffer::new(PAGE as usize).expect("buffer"));
                    let mut wins = 0;
                    start.wait();
                    for round in 0..ROUNDS {
                        let b = buffer.take().expect("buffer is home");
                        match c.map_buffer(IOVA, b, DmaAccess::ReadWrite) {
                            Ok(guard) => {
                                wins += 1;
                                let value = (u64::from(t) << 32) | u64::from(round);
                                c.iommu()
                                    .dma_write(DEVICE, IOVA + 8, &value.to_le_bytes())
                                    .expect("our mapping is live");
                                let mut back = [0u8; 8];
                                c.iommu()
                                    .dma_read(DEVICE, IOVA + 8, &mut back)
                                    .expect("our mapping is live");
                                assert_eq!(u64::from_le_bytes(back), value);
                                guard.buffer().read(8, &mut back).expect("read");
                                assert_eq!(u64::from_le_bytes(back), value, "landed in our buffer");
                                buffer = Some(guard.unmap().expect("only we unmap it"));
                            }
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::AlreadyMapped);
                                buffer = Some(e.buffer);
                            }
                        }
                        let v = (t << 16) | round;
                        bar0.write_at::<u32>(reg::LIVENESS, v)
                            .expect("liveness write");
                        assert_eq!(bar0.read_at::<u32>(reg::ID).expect("id"), reg::ID_VALUE);
                    }
                    wins
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    });
    assert!(
        wins.iter().sum::<u32>() >= 1,
        "the first attempt finds the IOVA free: {wins:?}"
    );
    assert_eq!(c.mapping_count(), 0);
    assert_eq!(c.mapped_bytes(), 0);
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}
