//! vfio-hal against its rust-vmm peers.
//!
//! Not part of the library: a benchmark crate that puts vfio-hal beside the
//! crates a rust-vmm VMM would otherwise use, doing identical work.
//!
//! - [`alloc_workload`]: one deterministic IOVA-allocation workload, run by
//!   vfio-hal's [`IovaAllocator`](vfio_hal::IovaAllocator) and by
//!   `vm-allocator`'s `AddressAllocator`, both checked at every step.
//! - [`timing`]: interleaved batches and medians, the method of the lane's
//!   guest benchmarks.
//!
//! The figures come from the real-kernel lane (`tests/guest.rs`, ignored
//! on the host) and from a host criterion bench of the allocator workload
//! (`benches/iova.rs`); `docs/PERFORMANCE.md` reports both with their
//! commands.

#![warn(missing_docs, missing_debug_implementations)]

pub mod alloc_workload;
pub mod timing;
