//! Lock-free reads of the registers a model declares side-effect free.
//!
//! A register read normally takes the device lock and calls the model.
//! For a register whose read changes nothing (QEMU's edu has only such
//! registers), the value the model gave at its last read stays right until
//! the device's state next changes — and every change happens under the
//! device lock. The mirror keeps those values with the *generation* of the
//! device state they were read in; a read whose register was filled in the
//! current generation is answered from the mirror without the lock, with
//! four plain loads.
//!
//! The generation is a sequence lock over the mirror: every holder of the
//! device lock makes it odd while it holds the lock, and on release moves
//! it to the next even value if it may have changed anything, or back to
//! the value it found if it only read a side-effect-free register (so the
//! values filled before stay good). A reader takes the mirror's value only
//! if the generation was the same even value before and after it read the
//! slot, and the slot was filled in that generation.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Declared registers past these bounds are ignored (read through the
/// lock): they keep a model's mistake from sizing a huge table.
const MAX_REGIONS: usize = 64;
const MAX_WORDS: usize = 16 * 1024;

/// A tag no generation has: generations start at 0 and are even when published.
const NEVER: u64 = 1;

/// One register: its last value and the generation it was read in.
#[derive(Debug)]
struct Slot {
    generation: AtomicU64,
    value: AtomicU32,
}

/// The side-effect-free 4-byte registers of one device.
#[derive(Debug)]
pub(crate) struct Mirror {
    generation: AtomicU64,
    /// Per region index, one slot per 4-byte offset up to the highest
    /// declared register; `None` where no register is declared.
    regions: Box<[Box<[Option<Slot>]>]>,
}

/// What a lock holder found when it took the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    found: u64,
}

impl Mirror {
    /// A mirror of `registers`, each `(region index, offset)` of a
    /// naturally aligned 4-byte register; misaligned ones, and ones past
    /// region 63 or offset 64 KiB, are ignored.
    pub(crate) fn new(registers: &[(u32, u64)]) -> Self {
        let mut regions: Vec<Vec<Option<Slot>>> = Vec::new();
        for &(region, offset) in registers {
            if offset % 4 != 0 {
                continue;
            }
            let (Ok(region), Ok(word)) = (usize::try_from(region), usize::try_from(offset / 4))
            else {
                continue;
            };
            if region >= MAX_REGIONS || word >= MAX_WORDS {
                log::warn!("register {offset:#x} of region {region} is past the mirror's bounds: read through the lock");
                continue;
            }
            if regions.len() <= region {
                regions.resize_with(region + 1, Vec::new);
            }
            let slots = &mut regions[region];
            if slots.len() <= word {
                slots.resize_with(word + 1, || None);
            }
            slots[word] = Some(Slot {
                generation: AtomicU64::new(NEVER),
                value: AtomicU32::new(0),
            });
        }
        Self {
            generation: AtomicU64::new(0),
            regions: regions.into_iter().map(Vec::into_boxed_slice).collect(),
        }
    }

    fn slot(&self, region: u32, offset: u64) -> Option<&Slot> {
        if offset % 4 != 0 {
            return None;
        }
        let slots = self.regions.get(usize::try_from(region).ok()?)?;
        slots.get(usize::try_from(offset / 4).ok()?)?.as_ref()
    }

    /// Whether `region`/`offset` is a declared register.
    pub(crate) fn declares(&self, region: u32, offset: u64) -> bool {
        self.slot(region, offset).is_some()
    }

    /// The register's value if it was filled in the current generation;
    /// `None` sends the caller to the locked path. Takes no lock.
    #[inline]
    pub(crate) fn read(&self, region: u32, offset: u64) -> Option<u32> {
        let slot = self.slot(region, offset)?;
        let before = self.generation.load(Ordering::Acquire);
        if slot.generation.load(Ordering::Acquire) != before {
            // Also when `before` is odd: no slot carries an odd tag.
            return None;
        }
        let value = slot.value.load(Ordering::Relaxed);
        // Orders the loads above before the check below (seqlock read side).
        fence(Ordering::Acquire);
        (self.generation.load(Ordering::Relaxed) == before).then_some(value)
    }

    /// Called by whoever just took the device lock: readers go to the
    /// locked path until [`Mirror::release`].
    #[inline]
    pub(crate) fn hold(&self) -> Held {
        let found = self.generation.load(Ordering::Relaxed);
        self.generation.store(found | NEVER, Ordering::Relaxed);
        // Seqlock write side: the odd value is ordered before any store
        // the holder makes to a slot.
        fence(Ordering::Release);
        Held { found }
    }

    /// Records `value` as read under the lock in generation `held`, which
    /// the holder will keep ([`Mirror::release`] with `changed == false`).
    pub(crate) fn fill(&self, held: Held, region: u32, offset: u64, value: u32) {
        if let Some(slot) = self.slot(region, offset) {
            slot.value.store(value, Ordering::Relaxed);
            slot.generation.store(held.found, Ordering::Release);
        }
    }

    /// Called before the device lock is released: a new generation if the
    /// holder may have changed the device's state, else the one it found.
    #[inline]
    pub(crate) fn release(&self, held: Held, changed: bool) {
        let next = if changed {
            held.found.wrapping_add(2)
        } else {
            held.found
        };
        self.generation.store(next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_is_served_only_in_the_generation_it_was_filled_in() {
        let m = Mirror::new(&[(0, 0x04), (0, 0x20), (2, 0x00)]);
        assert_eq!(m.read(0, 0x04), None, "never filled");

        let held = m.hold();
        m.fill(held, 0, 0x04, 7);
        assert_eq!(m.read(0, 0x04), None, "held: locked path");
        m.release(held, false);
        assert_eq!(m.read(0, 0x04), Some(7));
        assert_eq!(m.read(0, 0x20), None, "another register, not filled");

        // A holder that may have changed the state invalidates every value.
        let held = m.hold();
        m.release(held, true);
        assert_eq!(m.read(0, 0x04), None);

        let held = m.hold();
        m.fill(held, 0, 0x04, 8);
        m.fill(held, 2, 0x00, 9);
        m.release(held, false);
        assert_eq!((m.read(0, 0x04), m.read(2, 0x00)), (Some(8), Some(9)));
    }

    #[test]
    fn undeclared_and_misaligned_registers_are_never_served() {
        let m = Mirror::new(&[(0, 0x04), (0, 0x06), (u32::MAX, 0)]);
        let held = m.hold();
        m.fill(held, 0, 0x08, 1);
        m.fill(held, 0, 0x06, 1);
        m.fill(held, 1, 0x04, 1);
        m.release(held, false);
        for (region, offset) in [(0, 0x08), (0, 0x06), (0, 0x05), (1, 0x04), (0, u64::MAX)] {
            assert!(!m.declares(region, offset));
            assert_eq!(m.read(region, offset), None);
        }
        assert!(m.declares(0, 0x04));
    }
}
