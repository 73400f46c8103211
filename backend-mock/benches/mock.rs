//! Hot paths of the mock, measured through the hal traits.
//!
//! - `region_read`: 4-byte reads of edu's liveness register through
//!   `Region::read` and `RegionExt::read_at` (one device lock, no allocation).
//! - `map_unmap`: one map plus one unmap of a 4 KiB page while 100 000 other
//!   mappings are live (O(log n) in the IOVA-keyed B-tree).
//!
//! Run: `cargo bench -p vfio-hal-mock --bench mock -- --warm-up-time 1 --measurement-time 3`.
//! Results are recorded in docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use vfio_hal::prelude::*;
use vfio_hal::{Container, DmaAccess, DmaBuffer};
use vfio_hal_mock::models::edu::{reg, Edu};
use vfio_hal_mock::{IommuConfig, MockContainer};

const LIVE: u64 = 100_000;
const PAGE: u64 = 4096;

fn region_read(c: &mut Criterion) {
    let container = MockContainer::new();
    container.plug("edu", Edu::new()).expect("plug");
    let dev = container.open_device("edu").expect("open");
    let bar0 = dev.region(0).expect("bar0");
    bar0.write_at::<u32>(reg::LIVENESS, 0x5a5a_5a5a)
        .expect("write");

    let mut g = c.benchmark_group("region_read");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Region::read 4 bytes", |b| {
        let mut buf = [0u8; 4];
        b.iter(|| {
            bar0.read(black_box(reg::LIVENESS), &mut buf).expect("read");
            black_box(buf)
        })
    });
    g.bench_function("read_at::<u32>", |b| {
        b.iter(|| black_box(bar0.read_at::<u32>(black_box(reg::LIVENESS)).expect("read")))
    });
    g.finish();
}

fn map_unmap(c: &mut Criterion) {
    // One host page mapped at every other IOVA page; the benchmark maps and
    // unmaps the pages in between, walking through the whole tree.
    let page = DmaBuffer::new(PAGE as usize).expect("alloc");
    let container = MockContainer::with_config(IommuConfig {
        max_mappings: 2 * LIVE as u32,
        ..IommuConfig::default()
    })
    .expect("valid configuration");
    for i in 0..LIVE {
        // SAFETY: `page` is declared before the container, so it outlives
        // every mapping; nothing reads or writes it during the benchmark.
        unsafe { container.map_dma_raw(2 * i * PAGE, page.as_ptr(), PAGE, DmaAccess::ReadWrite) }
            .expect("pre-map");
    }
    assert_eq!(container.mapping_count() as u64, LIVE);

    let mut g = c.benchmark_group("map_unmap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("map+unmap 4 KiB, 100 000 live", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let iova = (2 * i + 1) * PAGE;
            i = (i + 1) % LIVE;
            // SAFETY: as above.
            unsafe { container.map_dma_raw(iova, page.as_ptr(), PAGE, DmaAccess::ReadWrite) }
                .expect("map");
            black_box(container.unmap_dma(iova, PAGE).expect("unmap"))
        })
    });
    g.finish();
    assert_eq!(container.mapping_count() as u64, LIVE);
}

/// The generated group function has no doc comment to carry.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::region_read, super::map_unmap);
}
criterion_main!(group::benches);
