//! The allocator workload of `vfio_hal_peer_bench::alloc_workload` on the
//! host: vfio-hal's `IovaAllocator` against `vm-allocator`'s
//! `AddressAllocator`, the whole default workload (5120 allocations and
//! 5120 frees) per iteration, from a fresh allocator each time.
//!
//! Run: `cargo bench -p vfio-hal-peer-bench --bench iova -- --warm-up-time 1 --measurement-time 5`.
//! The lane measures the same workload in its guest (`tests/guest.rs`);
//! docs/PERFORMANCE.md reports both.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use vfio_hal_peer_bench::alloc_workload::{run_vfio_hal, run_vm_allocator, Shape, Workload};

fn allocators(c: &mut Criterion) {
    let w = Workload::generate(Shape::default());
    // Both must do the whole workload correctly before they are timed.
    w.check(&run_vfio_hal(&w).expect("vfio-hal"))
        .expect("vfio-hal placements");
    w.check(&run_vm_allocator(&w).expect("vm-allocator"))
        .expect("vm-allocator placements");

    let mut g = c.benchmark_group("iova_workload");
    g.throughput(Throughput::Elements(w.steps().len() as u64));
    g.bench_function("vfio-hal IovaAllocator", |b| {
        b.iter(|| black_box(run_vfio_hal(black_box(&w)).expect("vfio-hal")))
    });
    g.bench_function("vm-allocator AddressAllocator", |b| {
        b.iter(|| black_box(run_vm_allocator(black_box(&w)).expect("vm-allocator")))
    });
    g.finish();
}

/// The generated group function has no doc comment to carry.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::allocators);
}
criterion_main!(group::benches);
