//! Byte copies in and out of memory that someone else may write at the same
//! time: DMA buffers a device writes, RAM-like BARs, and — in the mock — the
//! host memory a device-model thread writes through its IOMMU.
//!
//! Every access is a relaxed atomic load or store of one byte
//! ([`AtomicU8::from_ptr`]). Why that and not the alternatives:
//!
//! - A plain copy (`copy_nonoverlapping`, `&[u8]`) lets the compiler assume
//!   nobody else writes the bytes meanwhile; a concurrent device write is
//!   then a data race, undefined behaviour.
//! - Volatile accesses are meant for memory outside the Rust abstract
//!   machine and are fine against a real device, but two Rust threads doing
//!   volatile accesses to the same bytes are still a data race (a mock
//!   device model is Rust code, often on another thread; Miri reports it).
//! - Relaxed atomics are race-free against each other, and the compiler may
//!   not assume the bytes unchanged by anyone else, so each copy loads (or
//!   stores) every byte when it runs. A relaxed byte load or store is a plain
//!   `mov`/`ldrb`/`strb` — no lock prefix, no exclusive monitor, never split
//!   — so it also suits uncached or write-combined device memory. Unlike
//!   volatile, the model would let a compiler merge two relaxed loads of the
//!   same byte with nothing between them; that is harmless for memory
//!   without read side effects (RAM, RAM-like BARs), all these copies are for.
//! - One byte, not a word, per access: the Rust memory model forbids racing
//!   atomic accesses of different sizes to overlapping bytes. With words on
//!   the aligned middle and bytes at the edges, a device writing a 16-byte
//!   descriptor while the CPU polls its last 4 bytes would mix sizes. Bytes
//!   are the one granule every access can share; the cost is a loop of byte
//!   moves instead of a `memcpy` (about 4.5 GB/s instead of tens), which
//!   only matters for copies of many kilobytes.
//!
//! No ordering beyond the bytes themselves is implied: a copy may observe a
//! concurrent writer's bytes partly old and partly new (as with real DMA);
//! ordering against the device's own signals (an interrupt, a status
//! register) is the caller's, e.g. an `Acquire` fence after the signal.
//!
//! Register access (MMIO, where a read may have side effects and the width
//! matters) is not this: [`crate::MmapArea::load`] and
//! [`crate::MmapArea::store`] are one volatile access of the width asked.
//! Their writer is the device, outside the abstract machine. Memory that
//! another Rust thread writes (the mock's RAM BARs, which its device models
//! write through these copies) must be read with these copies too: a
//! volatile access racing an atomic one from another thread is a data race.

use std::sync::atomic::{AtomicU8, Ordering};

/// Copies `out.len()` bytes starting at `src` into `out`, one relaxed
/// atomic byte load each.
///
/// # Safety
/// `[src, src + out.len())` must be live memory, readable for the whole
/// call, that no Rust reference points into (other threads and devices may
/// write it, but only through these functions or from outside the process's
/// Rust code). `out` is a Rust borrow, so it cannot overlap it.
pub unsafe fn read(src: *const u8, out: &mut [u8]) {
    for (i, slot) in out.iter_mut().enumerate() {
        // SAFETY: `src + i` is inside the live range the caller vouches for
        // (i < out.len()); a u8 is always aligned. The `*mut` cast is only
        // for the `from_ptr` signature: the byte is only loaded, and relaxed
        // byte loads are allowed even on read-only memory (the atomics
        // module's read-only-memory exception). All concurrent access to the
        // byte is atomic (or from outside the abstract machine), per the
        // caller's contract, so the load races with nothing.
        let byte = unsafe { AtomicU8::from_ptr(src.wrapping_add(i).cast_mut()) };
        *slot = byte.load(Ordering::Relaxed);
    }
}

/// Copies `data` to `[dst, dst + data.len())`, one relaxed atomic byte
/// store each.
///
/// # Safety
/// As for [`read`], and the range must also be writable.
pub unsafe fn write(dst: *mut u8, data: &[u8]) {
    for (i, &value) in data.iter().enumerate() {
        // SAFETY: `dst + i` is inside the live, writable range the caller
        // vouches for (i < data.len()); a u8 is always aligned; every
        // concurrent access to the byte is atomic or outside the abstract
        // machine, so the store races with nothing.
        let byte = unsafe { AtomicU8::from_ptr(dst.wrapping_add(i)) };
        byte.store(value, Ordering::Relaxed);
    }
}
