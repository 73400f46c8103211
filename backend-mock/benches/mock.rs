//! Hot paths of the mock, measured through the hal traits, each beside a
//! plain-Rust floor in the same run (the machine is shared: compare the
//! ratios, not the absolute figures).
//!
//! - `region_read`: 4-byte reads of edu's liveness register through
//!   `RegionExt::read_at` on a `MockRegion` (generic), on the same region
//!   erased to a `DynRegion` (`vfio_hal::dynamic`), and through `Region::read`;
//!   the floor is a `dyn Region` read with checked bounds from a trivial
//!   register file (no lock, no model). edu declares its registers
//!   side-effect free, so these reads are answered from the device's
//!   register mirror: the hal's bounds check, the revocation flag and the
//!   mirror's four loads. The `locked path` benchmark reads the same
//!   register of an edu that declares nothing, which every read of a
//!   register with side effects pays: the device lock (one atomic
//!   read-modify-write), the removal checks, the BAR routing (region role,
//!   memory decode in the command register, backing span, vfio-pci's access
//!   split), the dynamic call into the model with its `DeviceContext`, and
//!   the virtual-time check after the access (a second dynamic call,
//!   `DeviceModel::deadline`); see docs/PERFORMANCE.md.
//! - `map_unmap`: one map plus one unmap of a 4 KiB page while n other
//!   mappings are live, n = 1 k, 10 k, 100 k, 1 M; the floor is a bare
//!   `BTreeMap` with the same overlap check and no lock. Both are O(log n).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not
//! the wall clock: on a shared machine another process's load stretches
//! wall time for some samples and not others, while neither path here ever
//! blocks, so its CPU time is its cost.
//!
//! Run: `cargo bench -p vfio-hal-mock --bench mock -- --warm-up-time 1 --measurement-time 3`.
//! Results are recorded in docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::hint::black_box;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use vfio_hal::dynamic::{erase_container, DynRegion};
use vfio_hal::prelude::*;
use vfio_hal::region::flags;
use vfio_hal::{Container, DmaAccess, DmaBuffer, IovaRange, RegionInfo, Result};
use vfio_hal_mock::models::edu::{reg, Edu};
use vfio_hal_mock::{DeviceContext, DeviceModel, IommuConfig, MockContainer, PciLayout};

const PAGE: u64 = 4096;
/// Live mappings of the `map_unmap` curve.
const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// The floor of a register read: a region of 64 registers behind `dyn
/// Region`, with the same bounds check as every backend and nothing else.
struct RegisterFile {
    info: RegionInfo,
    regs: [u8; 256],
}

impl Region for RegisterFile {
    fn info(&self) -> &RegionInfo {
        &self.info
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.info.check_access("pread", offset, buf.len() as u64)?;
        let at = offset as usize;
        buf.copy_from_slice(&self.regs[at..at + buf.len()]);
        Ok(())
    }

    /// The scalar entry point `read_at` calls, served directly (as a
    /// backend with a cheap register access does).
    fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
        self.info.check_access("pread", offset, size as u64)?;
        let r = &self.regs[offset as usize..];
        Ok(match size {
            1 => u64::from(r[0]),
            2 => u64::from(u16::from_le_bytes([r[0], r[1]])),
            4 => u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]])),
            _ => u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]),
        })
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn mmap(&self) -> Result<Vec<vfio_hal::MmapArea>> {
        Ok(Vec::new())
    }
}

/// edu with no register declared side-effect free: every read takes the
/// device lock and calls the model.
#[derive(Debug)]
struct Unmirrored(Edu);

impl DeviceModel for Unmirrored {
    fn layout(&self) -> PciLayout {
        self.0.layout()
    }

    fn read(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<()> {
        self.0.read(ctx, region, offset, data)
    }

    fn write(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        self.0.write(ctx, region, offset, data)
    }

    fn reset(&mut self, ctx: &mut DeviceContext<'_>) {
        self.0.reset(ctx)
    }

    fn deadline(&self) -> Option<Duration> {
        self.0.deadline()
    }

    fn on_deadline(&mut self, ctx: &mut DeviceContext<'_>) {
        self.0.on_deadline(ctx)
    }
}

/// The calling thread's CPU time, as a criterion measurement; shown in the
/// same units as wall time.
struct ThreadCpuTime;

/// The wall-clock measurement, for its duration formatter.
static WALL: WallTime = WallTime;

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives
    // across the call; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn region_read(c: &mut Criterion<ThreadCpuTime>) {
    let container = MockContainer::new();
    container.plug("edu", Edu::new()).expect("plug");
    let dev = container.open_device("edu").expect("open");
    let bar0 = dev.region(0).expect("bar0");
    bar0.write_at::<u32>(reg::LIVENESS, 0x5a5a_5a5a)
        .expect("write");

    let erased_container = MockContainer::new();
    erased_container.plug("edu", Edu::new()).expect("plug");
    let erased = erase_container(erased_container);
    let erased_dev = erased.open_device("edu").expect("open");
    let dyn_bar0: DynRegion = erased_dev.region(0).expect("bar0");
    dyn_bar0
        .write_at::<u32>(reg::LIVENESS, 0x5a5a_5a5a)
        .expect("write");

    let locked_container = MockContainer::new();
    locked_container
        .plug("edu", Unmirrored(Edu::new()))
        .expect("plug");
    let locked_dev = locked_container.open_device("edu").expect("open");
    let locked_bar0 = locked_dev.region(0).expect("bar0");
    locked_bar0
        .write_at::<u32>(reg::LIVENESS, 0x5a5a_5a5a)
        .expect("write");

    let mut regs = [0u8; 256];
    regs[reg::LIVENESS as usize..][..4].copy_from_slice(&(!0x5a5a_5a5au32).to_le_bytes());
    let file = RegisterFile {
        info: RegionInfo {
            index: 0,
            flags: flags::READ | flags::WRITE,
            size: 256,
            offset: 0,
            caps: Vec::new(),
        },
        regs,
    };
    let floor: &dyn Region = &file;

    let expected = !0x5a5a_5a5au32;
    let mut g = c.benchmark_group("region_read");
    g.throughput(Throughput::Elements(1));
    g.bench_function("floor: dyn Region, register file", |b| {
        b.iter(|| {
            black_box(
                floor
                    .read_at::<u32>(black_box(reg::LIVENESS))
                    .expect("read"),
            )
        })
    });
    g.bench_function("MockRegion read_at::<u32>", |b| {
        b.iter(|| black_box(bar0.read_at::<u32>(black_box(reg::LIVENESS)).expect("read")))
    });
    g.bench_function("DynRegion read_at::<u32>", |b| {
        b.iter(|| {
            black_box(
                dyn_bar0
                    .read_at::<u32>(black_box(reg::LIVENESS))
                    .expect("read"),
            )
        })
    });
    g.bench_function("MockRegion Region::read 4 bytes", |b| {
        let mut buf = [0u8; 4];
        b.iter(|| {
            bar0.read(black_box(reg::LIVENESS), &mut buf).expect("read");
            black_box(buf)
        })
    });
    g.bench_function("MockRegion read_at::<u32>, locked path", |b| {
        b.iter(|| {
            black_box(
                locked_bar0
                    .read_at::<u32>(black_box(reg::LIVENESS))
                    .expect("read"),
            )
        })
    });
    g.finish();
    assert_eq!(bar0.read_at::<u32>(reg::LIVENESS).expect("read"), expected);
    assert_eq!(
        locked_bar0.read_at::<u32>(reg::LIVENESS).expect("read"),
        expected
    );
    assert_eq!(
        dyn_bar0.read_at::<u32>(reg::LIVENESS).expect("read"),
        expected
    );
}

/// The floor of map+unmap: the table alone, with the mock's overlap check
/// (only the last mapping starting at or before the end can overlap).
#[derive(Default)]
struct BareTable(BTreeMap<u64, (u64, usize)>);

impl BareTable {
    fn map(&mut self, iova: u64, host: usize, len: u64) -> bool {
        let last = iova + (len - 1);
        if let Some((&start, &(l, _))) = self.0.range(..=last).next_back() {
            if start + (l - 1) >= iova {
                return false;
            }
        }
        self.0.insert(iova, (len, host)).is_none()
    }

    fn unmap(&mut self, iova: u64) -> Option<u64> {
        self.0.remove(&iova).map(|(len, _)| len)
    }
}

fn map_unmap(c: &mut Criterion<ThreadCpuTime>) {
    // One host page (no allocation per mapping) mapped at every other IOVA
    // page; each iteration maps and unmaps one of the pages in between,
    // walking through the whole tree.
    let page = DmaBuffer::new(PAGE as usize).expect("alloc");
    let host = page.as_ptr();
    let mut g = c.benchmark_group("map_unmap");
    g.throughput(Throughput::Elements(1));
    for live in SIZES {
        let mut bare = BareTable::default();
        for i in 0..live {
            assert!(bare.map(2 * i * PAGE, host.addr(), PAGE));
        }
        g.bench_with_input(
            BenchmarkId::new("floor: BTreeMap", live),
            &live,
            |b, &live| {
                let mut i = 0u64;
                b.iter(|| {
                    let iova = (2 * i + 1) * PAGE;
                    i = (i + 1) % live;
                    assert!(bare.map(black_box(iova), host.addr(), PAGE));
                    black_box(bare.unmap(iova))
                })
            },
        );
        drop(bare);

        let container = MockContainer::with_config(IommuConfig {
            max_mappings: u32::try_from(live + 1).expect("fits"),
            // One range: 2 M pages reach past x86's MSI hole.
            iova_ranges: vec![IovaRange {
                start: 0,
                end: (1 << 48) - 1,
            }],
            ..IommuConfig::default()
        })
        .expect("valid configuration");
        for i in 0..live {
            // SAFETY: `page` outlives `container`, so every mapping; nothing
            // reads or writes it during the benchmark.
            unsafe { container.map_dma_raw(2 * i * PAGE, host, PAGE, DmaAccess::ReadWrite) }
                .expect("pre-map");
        }
        assert_eq!(container.mapping_count() as u64, live);
        g.bench_with_input(BenchmarkId::new("mock", live), &live, |b, &live| {
            let mut i = 0u64;
            b.iter(|| {
                let iova = (2 * i + 1) * PAGE;
                i = (i + 1) % live;
                // SAFETY: as above.
                unsafe { container.map_dma_raw(black_box(iova), host, PAGE, DmaAccess::ReadWrite) }
                    .expect("map");
                black_box(container.unmap_dma(iova, PAGE).expect("unmap"))
            })
        });
        assert_eq!(container.mapping_count() as u64, live);
    }
    g.finish();
}

/// The generated group function has no doc comment to carry.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default().with_measurement(super::ThreadCpuTime);
        targets = super::region_read, super::map_unmap
    }
}
criterion_main!(group::benches);
