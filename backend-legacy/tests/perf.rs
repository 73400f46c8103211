//! The HAL's overhead over the raw calls, measured in the lane's guest (`bash tests/vm/lane.sh`)
//! in one boot; ignored on the host. Prints one `perf(...)` line per
//! comparison. Figures mean something only from an optimised build (the
//! lane builds unoptimised test binaries).
//!
//! A measurement, not a test of speed: under TCG on a shared machine any
//! ratio bound can fail from load alone, so none is asserted. What is
//! checked cannot depend on load: every map and unmap succeeds (and unmaps
//! the page it mapped), every read returns edu's identification value.
//! The figures are recorded in docs/PERFORMANCE.md.
//!
//! - map+unmap of one 4 KiB page: the HAL (`map_dma_raw` + `unmap_dma`)
//!   against a loop of raw `VFIO_IOMMU_{MAP,UNMAP}_DMA` ioctls;
//! - a 4-byte read of edu's BAR0: the mmap fast path against `pread`, and
//!   each against its raw counterpart.
//!
//! Each pair runs in mirrored order (A B B A) after a warm-up, as the lane
//! notes advise for TCG.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer};
use vfio_hal_guest_tests as lane;
use vfio_hal_legacy::LegacyContainer;

const IOVA: u64 = 0x100_0000;
const MAPS: u32 = 3000;
const READS: u32 = 30000;

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (no bitmap).
#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

/// Prints one line to the real stdout: libtest captures `println!` of a
/// passing test, and the lane's log should show the figures either way.
fn report(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Runs `a` and `b` in the order A B B A, `n` iterations each; returns
/// the mean time per iteration of each.
fn mirrored(n: u32, mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed()
    };
    // Warm-up of both.
    time(&mut a);
    time(&mut b);
    let a1 = time(&mut a);
    let b1 = time(&mut b);
    let b2 = time(&mut b);
    let a2 = time(&mut a);
    ((a1 + a2) / (2 * n), (b1 + b2) / (2 * n))
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn perf_ratios() {
    let kernel = lane::lane_env(lane::KERNEL);
    let container = LegacyContainer::open().expect("container");
    let edu = container
        .open_device(&lane::lane_env(lane::EDU_BDF))
        .expect("open edu");

    // map + unmap of one page.
    let buf = DmaBuffer::new(4096).expect("buffer");
    let fd = container.fd().as_raw_fd();
    let (hal, raw) = mirrored(
        MAPS,
        || {
            // SAFETY: `buf` outlives every mapping: each is unmapped at once.
            unsafe { container.map_dma_raw(IOVA, buf.as_ptr(), 4096, DmaAccess::ReadWrite) }
                .expect("HAL map");
            assert_eq!(container.unmap_dma(IOVA, 4096).expect("HAL unmap"), 4096);
        },
        || {
            let map = DmaMap {
                argsz: std::mem::size_of::<DmaMap>() as u32,
                flags: 3,
                vaddr: buf.as_ptr() as u64,
                iova: IOVA,
                size: 4096,
            };
            // SAFETY: as above; the struct is the kernel's 32-byte layout.
            let r = unsafe { libc::ioctl(fd, 0x3b71, &map) };
            assert_eq!(r, 0, "raw map");
            let mut unmap = DmaUnmap {
                argsz: std::mem::size_of::<DmaUnmap>() as u32,
                flags: 0,
                iova: IOVA,
                size: 4096,
            };
            // SAFETY: the kernel reads and writes this 24-byte struct only.
            let r = unsafe { libc::ioctl(fd, 0x3b72, &mut unmap) };
            assert!(r == 0 && unmap.size == 4096, "raw unmap");
        },
    );
    let map_ratio = hal.as_secs_f64() / raw.as_secs_f64();
    report(format_args!(
        "perf({kernel}): map+unmap 4 KiB: HAL {} ns, raw ioctls {} ns, HAL/raw {map_ratio:.2}",
        hal.as_nanos(),
        raw.as_nanos()
    ));

    // 4-byte BAR0 reads: the HAL's two paths, and each against its raw
    // counterpart (a volatile load from an mmap, a bare pread).
    edu.update_command(cfg::CMD_MEMORY, 0)
        .expect("memory decode");
    let bar0 = edu.region(0).expect("BAR0");
    assert!(bar0.fast_path_covers(0, 4));
    let areas = bar0.mmap().expect("mmap BAR0");
    let raw_ptr = areas[0].as_ptr().cast::<u32>();
    let dev_fd = edu.fd().as_raw_fd();
    let bar0_offset = i64::try_from(bar0.info().offset).expect("offset fits off_t");
    let ident = 0x0100_00ed;
    // The path is a per-device switch: set it per block, not per read.
    let block = |fast: bool| {
        edu.set_fast_path(fast);
        let t = Instant::now();
        for _ in 0..READS {
            assert_eq!(bar0.read_at::<u32>(0).expect("read"), ident);
        }
        t.elapsed()
    };
    block(true);
    block(false);
    let (m1, p1, p2, m2) = (block(true), block(false), block(false), block(true));
    let (mmap, pread) = ((m1 + m2) / (2 * READS), (p1 + p2) / (2 * READS));
    let (raw_load, raw_pread) = mirrored(
        READS,
        || {
            // SAFETY: `areas` keeps the page-aligned BAR mapping alive.
            assert_eq!(unsafe { std::ptr::read_volatile(raw_ptr) }, ident);
        },
        || {
            let mut v = [0u8; 4];
            // SAFETY: reads 4 bytes into `v`.
            let n = unsafe { libc::pread64(dev_fd, v.as_mut_ptr().cast(), 4, bar0_offset) };
            assert!(n == 4 && u32::from_le_bytes(v) == ident, "raw pread");
        },
    );
    edu.set_fast_path(true);
    let read_ratio = pread.as_secs_f64() / mmap.as_secs_f64();
    let mmap_overhead = mmap.as_secs_f64() / raw_load.as_secs_f64();
    let pread_overhead = pread.as_secs_f64() / raw_pread.as_secs_f64();
    report(format_args!(
        "perf({kernel}): 4-byte BAR0 read: mmap path {} ns (raw load {} ns, {mmap_overhead:.2}x), \
         pread path {} ns (raw pread {} ns, {pread_overhead:.2}x), pread/mmap {read_ratio:.2}",
        mmap.as_nanos(),
        raw_load.as_nanos(),
        pread.as_nanos(),
        raw_pread.as_nanos()
    ));

    if cfg!(debug_assertions) {
        report(format_args!(
            "perf({kernel}): unoptimised build: the figures are not representative"
        ));
    }
}
