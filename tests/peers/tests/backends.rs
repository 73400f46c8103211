//! Guest benchmark (lane only): map+unmap of one 4 KiB page through the HAL
//! on iommufd ([`IoasContainer`], edu attached through its cdev) and on the
//! legacy container ([`LegacyContainer`], the MSI-X device attached through
//! its group: type1v2, or iommufd's compat container on the lane's `compat`
//! kernel), each against a raw `ioctl` loop on the same address space.
//!
//! Both containers live at once, so the four loops are interleaved batch by
//! batch, in mirrored order every other round (A B C D, D C B A, ...), and
//! each loop's figure is the median over the rounds: slow phases of the
//! guest (TCG, a loaded host) hit all four alike. Absolute times under TCG
//! are inflated several-fold: only the ratios carry over. The figures go
//! straight to stdout as `bench:` lines.
//!
//! It asserts only that every map and unmap succeeds: timings are reported,
//! not judged.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use iommufd_bindings as iommu;
use vfio_bindings::bindings::vfio;
use vfio_hal::{Container, DmaAccess, DmaBuffer};
use vfio_hal_iommufd::{sys, IoasContainer};
use vfio_hal_legacy::LegacyContainer;

const LEN: u64 = 4096;
const IOVA: u64 = 0x100_0000;
const WARMUP: usize = 200;
const BATCH: usize = 200;
const ROUNDS: usize = 16;

/// Nanoseconds per iteration of one batch of `op`.
fn batch_ns(op: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..BATCH {
        op();
    }
    start.elapsed().as_nanos() as f64 / BATCH as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn hal_op<'a, C: Container>(c: &'a C, buf: &'a DmaBuffer) -> impl FnMut() + 'a {
    move || {
        // SAFETY: `buf` outlives the loop, and each iteration unmaps it again.
        unsafe { c.map_dma_raw(IOVA, buf.as_ptr(), LEN, DmaAccess::ReadWrite) }.expect("map");
        assert_eq!(c.unmap_dma(IOVA, LEN).expect("unmap"), LEN);
    }
}

/// `IOMMU_IOAS_MAP` + `IOMMU_IOAS_UNMAP` straight through `libc::ioctl`.
fn raw_iommufd_op<'a>(fd: BorrowedFd<'a>, ioas: u32, buf: &'a DmaBuffer) -> impl FnMut() + 'a {
    move || {
        let mut map = iommu::iommu_ioas_map {
            size: std::mem::size_of::<iommu::iommu_ioas_map>() as u32,
            flags: sys::MAP_FIXED_IOVA | sys::MAP_READABLE | sys::MAP_WRITEABLE,
            ioas_id: ioas,
            __reserved: 0,
            user_va: buf.as_ptr() as u64,
            length: LEN,
            iova: IOVA,
        };
        // SAFETY: IOMMU_IOAS_MAP with its struct; `buf` outlives the mapping.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), sys::IOMMU_IOAS_MAP.code as _, &mut map) };
        assert_eq!(rc, 0, "raw IOMMU_IOAS_MAP");
        let mut unmap = iommu::iommu_ioas_unmap {
            size: std::mem::size_of::<iommu::iommu_ioas_unmap>() as u32,
            ioas_id: ioas,
            iova: IOVA,
            length: LEN,
        };
        // SAFETY: IOMMU_IOAS_UNMAP with its struct, which has no pointers.
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), sys::IOMMU_IOAS_UNMAP.code as _, &mut unmap) };
        assert_eq!(rc, 0, "raw IOMMU_IOAS_UNMAP");
    }
}

/// `VFIO_IOMMU_MAP_DMA` + `VFIO_IOMMU_UNMAP_DMA` straight through `libc::ioctl`.
fn raw_type1_op<'a>(fd: BorrowedFd<'a>, buf: &'a DmaBuffer) -> impl FnMut() + 'a {
    let map_req = vfio_hal_linux::sys::VFIO_IOMMU_MAP_DMA.code;
    let unmap_req = vfio_hal_linux::sys::VFIO_IOMMU_UNMAP_DMA.code;
    move || {
        let map = vfio::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio::vfio_iommu_type1_dma_map>() as u32,
            flags: vfio::VFIO_DMA_MAP_FLAG_READ | vfio::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: buf.as_ptr() as u64,
            iova: IOVA,
            size: LEN,
        };
        // SAFETY: VFIO_IOMMU_MAP_DMA reads its struct; `buf` outlives the mapping.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), map_req as _, &map) };
        assert_eq!(rc, 0, "raw VFIO_IOMMU_MAP_DMA");
        let mut unmap = vfio::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<vfio::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova: IOVA,
            size: LEN,
            data: Default::default(),
        };
        // SAFETY: VFIO_IOMMU_UNMAP_DMA reads and writes its fixed struct (no
        // bitmap flag, so no data).
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), unmap_req as _, &mut unmap) };
        assert_eq!(rc, 0, "raw VFIO_IOMMU_UNMAP_DMA");
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn bench_map_unmap_4k_iommufd_vs_legacy_vs_raw() {
    let var = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} (lane only)"));
    let kernel = std::env::var("VFIO_HAL_KERNEL").unwrap_or_else(|_| "?".into());
    let iommufd = IoasContainer::open().expect("iommufd container");
    let _edu = iommufd
        .open_device(&var("VFIO_HAL_EDU_BDF"))
        .expect("edu via its cdev");
    let legacy = LegacyContainer::open().expect("legacy container");
    let _msix = legacy
        .open_device(&var("VFIO_HAL_MSIX_BDF"))
        .expect("the MSI-X device via its group");
    let buf = DmaBuffer::new(LEN as usize).expect("buffer");
    buf.fill(0x5a);

    const NAMES: [&str; 4] = ["iommufd HAL", "iommufd raw", "legacy HAL", "legacy raw"];
    let mut ops: [Box<dyn FnMut() + '_>; 4] = [
        Box::new(hal_op(&iommufd, &buf)),
        Box::new(raw_iommufd_op(
            iommufd.iommufd().as_fd(),
            iommufd.ioas().id(),
            &buf,
        )),
        Box::new(hal_op(&legacy, &buf)),
        Box::new(raw_type1_op(legacy.fd(), &buf)),
    ];
    for op in ops.iter_mut() {
        for _ in 0..WARMUP {
            op();
        }
    }
    let mut samples: [Vec<f64>; 4] = Default::default();
    for round in 0..ROUNDS {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for i in order {
            samples[i].push(batch_ns(&mut ops[i]));
        }
    }
    drop(ops);
    let ns: Vec<f64> = samples.into_iter().map(median).collect();
    let us = |i: usize| ns[i] / 1000.0;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "bench({kernel}): map+unmap 4 KiB, median over {ROUNDS} interleaved rounds of {BATCH}"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let _ = writeln!(out, "bench({kernel}): {name:<12} {:8.2} us", us(i));
    }
    let _ = writeln!(
        out,
        "bench({kernel}): ratios: iommufd HAL/raw {:.3}, legacy HAL/raw {:.3}, \
         iommufd HAL/legacy HAL {:.3}, iommufd raw/legacy raw {:.3}",
        ns[0] / ns[1],
        ns[2] / ns[3],
        ns[0] / ns[2],
        ns[1] / ns[3],
    );
}
