//! Peer benchmarks (lane only): vfio-hal against rust-vmm's crates in the
//! lane's guest, same boot, interleaved; ignored on the host.
//!
//! - `vfio_hal_vs_vfio_ioctls`: DMA map+unmap (one 4 KiB page, one 2 MiB
//!   buffer) and 4-byte reads of edu's BAR0, through vfio-hal's type1
//!   backend ([`LegacyContainer`]) and through `vfio-ioctls` 0.10's
//!   `VfioContainer`/`VfioDevice`, both on the same device (edu) and group.
//!   A group belongs to one container at a time, so every round opens one
//!   library's container and device, measures, closes them, then does the
//!   same with the other library (in mirrored order every other round);
//!   opening is not timed, and each session warms up before its batches.
//!   The raw ioctls / `pread` on `vfio-ioctls`' own fds are measured in its
//!   session as the kernel's floor. Reads are like for like: `vfio-ioctls`'
//!   `region_read` is a `pread`, compared with vfio-hal's `pread` path (its
//!   mmap fast path switched off); vfio-hal's fast path is reported beside.
//! - `iova_allocator_vs_vm_allocator`: the workload of
//!   [`vfio_hal_peer_bench::alloc_workload`] on each allocator, fresh each
//!   run, interleaved.
//!
//! Each figure is the median over the rounds; the lines go to stdout as
//! `peers(<kernel>): ...`. Only correctness is asserted (every map, unmap
//! and read succeeds and reads edu's identification value; both allocators
//! complete the workload with valid placements): timings are reported, not
//! judged. Under TCG only the ratios carry over.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use vfio_bindings::bindings::vfio;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer};
use vfio_hal_guest_tests as lane;
use vfio_hal_legacy::LegacyContainer;
use vfio_hal_peer_bench::alloc_workload::{run_vfio_hal, run_vm_allocator, Shape, Workload};
use vfio_hal_peer_bench::timing::{median, per_op_ns, round_order};
use vfio_ioctls::{VfioContainer, VfioDevice};

const IOVA: u64 = 0x100_0000;
/// Buffer sizes for map+unmap, and the pairs per timed batch of each.
const MAP_CASES: [(u64, usize, &str); 2] = [(4096, 200, "4 KiB"), (2 << 20, 10, "2 MiB")];
/// 4-byte reads per timed batch.
const READS: usize = 2000;
/// Untimed iterations before each session's batches.
const WARMUP: usize = 20;
const ROUNDS: usize = 20;
const ALLOC_ROUNDS: usize = 10;
/// edu's identification register (BAR0 offset 0): version 1.0, `0xed`.
const EDU_IDENT: u32 = 0x0100_00ed;

/// Per-op nanoseconds of each measured loop, one sample per round.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    /// Warms `op` up, then records one timed batch of `n` under `name`.
    fn measure(&mut self, name: String, n: usize, mut op: impl FnMut()) {
        for _ in 0..WARMUP {
            op();
        }
        self.0.entry(name).or_default().push(per_op_ns(n, op));
    }

    /// Median nanoseconds per op of `name`.
    fn ns(&self, name: &str) -> f64 {
        median(self.0.get(name).map_or(&[][..], Vec::as_slice))
    }
}

fn report(line: std::fmt::Arguments<'_>) {
    // Straight to stdout: libtest captures `println!` of a passing test.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Says so when the figures above come from an unoptimised build (the
/// lane's default; CI runs it), which they do not represent.
fn report_build(kernel: &str) {
    if cfg!(debug_assertions) {
        report(format_args!(
            "peers({kernel}): unoptimised build: figures not representative (use lane.sh --release)"
        ));
    }
}

/// One round's vfio-hal session: its own type1 container with edu's group.
fn hal_session(bdf: &str, bufs: &[DmaBuffer], s: &mut Samples) {
    let container = LegacyContainer::open().expect("vfio-hal: container");
    let edu = container.open_device(bdf).expect("vfio-hal: open edu");
    for ((len, batch, label), buf) in MAP_CASES.iter().zip(bufs) {
        s.measure(format!("map {label} vfio-hal"), *batch, || {
            // SAFETY: `buf` outlives the loop, and every mapping is undone
            // at once.
            unsafe { container.map_dma_raw(IOVA, buf.as_ptr(), *len, DmaAccess::ReadWrite) }
                .expect("vfio-hal: map");
            assert_eq!(
                container.unmap_dma(IOVA, *len).expect("vfio-hal: unmap"),
                *len
            );
        });
    }
    let bar0 = edu.region(0).expect("vfio-hal: BAR0");
    let read = || assert_eq!(bar0.read_at::<u32>(0).expect("vfio-hal: read"), EDU_IDENT);
    edu.set_fast_path(false);
    assert!(!bar0.fast_path_covers(0, 4));
    s.measure("read pread vfio-hal".into(), READS, read);
    edu.set_fast_path(true);
    assert!(bar0.fast_path_covers(0, 4), "BAR0 is mmappable");
    s.measure("read mmap vfio-hal".into(), READS, read);
}

/// One round's vfio-ioctls session: its own `VfioContainer` with edu's
/// group; also the raw calls on its fds.
fn peer_session(bdf: &str, bufs: &[DmaBuffer], s: &mut Samples) {
    let container = Arc::new(VfioContainer::new(None).expect("vfio-ioctls: container"));
    let edu = VfioDevice::new(&lane::pci_device_dir(bdf), container.clone(), false)
        .expect("vfio-ioctls: open edu");
    let fd = container.as_raw_fd();
    for ((len, batch, label), buf) in MAP_CASES.iter().zip(bufs) {
        let size = usize::try_from(*len).expect("fits usize");
        s.measure(format!("map {label} vfio-ioctls"), *batch, || {
            // SAFETY: as in `hal_session`; nothing references the buffer's
            // memory while it is mapped.
            unsafe { container.vfio_dma_map(IOVA, size, buf.as_ptr()) }.expect("vfio-ioctls: map");
            container
                .vfio_dma_unmap(IOVA, size)
                .expect("vfio-ioctls: unmap");
        });
        s.measure(format!("map {label} raw"), *batch, || {
            raw_map_unmap(fd, buf, *len)
        });
    }
    s.measure("read pread vfio-ioctls".into(), READS, || {
        // `region_read` reports failure only in the log: a fresh zeroed
        // buffer each time makes a failed read show.
        let mut v = [0u8; 4];
        edu.region_read(0, &mut v, 0);
        assert_eq!(u32::from_le_bytes(v), EDU_IDENT, "vfio-ioctls: read");
    });
    let dev_fd = edu.as_raw_fd();
    let at = i64::try_from(edu.get_region_offset(0)).expect("offset fits off_t");
    s.measure("read pread raw".into(), READS, || {
        let mut v = [0u8; 4];
        // SAFETY: reads at most 4 bytes into `v`.
        let n = unsafe { libc::pread64(dev_fd, v.as_mut_ptr().cast(), 4, at) };
        assert!(n == 4 && u32::from_le_bytes(v) == EDU_IDENT, "raw pread");
    });
}

/// `VFIO_IOMMU_MAP_DMA` + `VFIO_IOMMU_UNMAP_DMA` through `libc::ioctl`.
fn raw_map_unmap(fd: i32, buf: &DmaBuffer, len: u64) {
    let map = vfio::vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<vfio::vfio_iommu_type1_dma_map>() as u32,
        flags: vfio::VFIO_DMA_MAP_FLAG_READ | vfio::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: buf.as_ptr() as u64,
        iova: IOVA,
        size: len,
    };
    // SAFETY: VFIO_IOMMU_MAP_DMA reads its struct; `buf` outlives the
    // mapping, which is undone below.
    let rc = unsafe { libc::ioctl(fd, vfio_hal_linux::sys::VFIO_IOMMU_MAP_DMA.code as _, &map) };
    assert_eq!(rc, 0, "raw VFIO_IOMMU_MAP_DMA");
    let mut unmap = vfio::vfio_iommu_type1_dma_unmap {
        argsz: std::mem::size_of::<vfio::vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova: IOVA,
        size: len,
        data: Default::default(),
    };
    // SAFETY: VFIO_IOMMU_UNMAP_DMA reads and writes its fixed struct (no
    // bitmap flag, so no data).
    let rc = unsafe {
        libc::ioctl(
            fd,
            vfio_hal_linux::sys::VFIO_IOMMU_UNMAP_DMA.code as _,
            &mut unmap,
        )
    };
    assert!(rc == 0 && unmap.size == len, "raw VFIO_IOMMU_UNMAP_DMA");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn vfio_hal_vs_vfio_ioctls() {
    let kernel = lane::lane_env(lane::KERNEL);
    let bdf = lane::lane_env(lane::EDU_BDF);
    let bufs: Vec<DmaBuffer> = MAP_CASES
        .iter()
        .map(|&(len, ..)| {
            let buf = DmaBuffer::new(usize::try_from(len).expect("fits usize")).expect("buffer");
            buf.fill(0x5a); // populated before it is pinned
            buf
        })
        .collect();
    #[derive(Clone, Copy)]
    enum Side {
        Hal,
        Peer,
    }
    let mut s = Samples::default();
    for round in 0..ROUNDS {
        for side in round_order(&[Side::Hal, Side::Peer], round) {
            match side {
                Side::Hal => hal_session(&bdf, &bufs, &mut s),
                Side::Peer => peer_session(&bdf, &bufs, &mut s),
            }
        }
    }

    let us = |name: &str| s.ns(name) / 1000.0;
    report(format_args!(
        "peers({kernel}): vfio-hal vs vfio-ioctls 0.10 on edu's group, type1 container each; \
         median over {ROUNDS} rounds, sides alternating"
    ));
    for (_, batch, label) in MAP_CASES {
        let (hal, peer, raw) = (
            us(&format!("map {label} vfio-hal")),
            us(&format!("map {label} vfio-ioctls")),
            us(&format!("map {label} raw")),
        );
        report(format_args!(
            "peers({kernel}): map+unmap {label} (batches of {batch}): vfio-hal {hal:.2} us, \
             vfio-ioctls {peer:.2} us, raw ioctls {raw:.2} us; \
             vfio-hal/vfio-ioctls {:.3}, vfio-hal/raw {:.3}, vfio-ioctls/raw {:.3}",
            hal / peer,
            hal / raw,
            peer / raw
        ));
    }
    let (pread, mmap, peer, raw) = (
        s.ns("read pread vfio-hal"),
        s.ns("read mmap vfio-hal"),
        s.ns("read pread vfio-ioctls"),
        s.ns("read pread raw"),
    );
    report(format_args!(
        "peers({kernel}): 4-byte BAR0 read (batches of {READS}): vfio-hal pread path {pread:.0} ns, \
         vfio-ioctls region_read {peer:.0} ns, raw pread {raw:.0} ns, vfio-hal mmap path {mmap:.0} ns; \
         vfio-hal pread/vfio-ioctls {:.3}, vfio-hal mmap/vfio-ioctls {:.3}, vfio-ioctls/raw {:.3}",
        pread / peer,
        mmap / peer,
        peer / raw
    ));
    report_build(&kernel);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn iova_allocator_vs_vm_allocator() {
    let kernel = lane::lane_env(lane::KERNEL);
    let w = Workload::generate(Shape::default());
    #[derive(Clone, Copy, PartialEq)]
    enum Which {
        Hal,
        VmAllocator,
    }
    let (mut hal, mut peer) = (Vec::new(), Vec::new());
    for round in 0..ALLOC_ROUNDS {
        for which in round_order(&[Which::Hal, Which::VmAllocator], round) {
            let mut starts = Vec::new();
            let ns = per_op_ns(1, || {
                starts = match which {
                    Which::Hal => run_vfio_hal(&w),
                    Which::VmAllocator => run_vm_allocator(&w),
                }
                .expect("the allocator completes the workload");
            });
            if round == 0 {
                w.check(&starts).expect("valid placements");
            }
            if which == Which::Hal {
                hal.push(ns);
            } else {
                peer.push(ns);
            }
        }
    }
    let steps = w.steps().len() as f64;
    let (hal, peer) = (median(&hal) / steps, median(&peer) / steps);
    report(format_args!(
        "peers({kernel}): IOVA workload ({} allocs 4 KiB..2 MiB + as many frees, fresh allocator \
         per run, median of {ALLOC_ROUNDS} interleaved runs): vfio-hal IovaAllocator {hal:.0} ns/step, \
         vm-allocator 0.1.4 {peer:.0} ns/step; vfio-hal/vm-allocator {:.3}",
        w.allocs(),
        hal / peer
    ));
    report_build(&kernel);
}
