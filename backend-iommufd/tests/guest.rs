//! The iommufd backend against the real kernel, in the lane's QEMU guest
//! (`bash tests/vm/lane.sh`): the cdev lifecycle and its typed errors, IOAS
//! map/unmap/copy/MAP_FILE, HWPTs and the dirty-tracking probe, and the edu
//! device (IDs, MSI, DMA) through the cdev. Ignored on the host.
//!
//! The lane provides the devices' PCI addresses in `VFIO_HAL_EDU_BDF` and
//! `VFIO_HAL_MSIX_BDF`, both bound to vfio-pci.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index::{MSI, MSIX};
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind, IovaRange};
use vfio_hal_iommufd::{
    sys, HwptOptions, IoasContainer, IommuType, Iommufd, PageTable, UnboundDevice,
};
use vfio_hal_linux::devfd::{Backing, VfioDevice};
use vfio_hal_linux::Host;

const PAGE: u64 = 4096;

fn lane_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this test runs in the real-kernel lane (bash tests/vm/lane.sh)")
    })
}

fn edu() -> String {
    lane_env("VFIO_HAL_EDU_BDF")
}

fn msix() -> String {
    lane_env("VFIO_HAL_MSIX_BDF")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
}

/// Polls `done` every millisecond for up to `limit` (edu's DMA runs after a
/// 100 ms virtual-time timer, slower under TCG).
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A memfd of `len` bytes.
fn memfd(len: u64) -> OwnedFd {
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"vfio-hal-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).expect("small length");
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
    assert_eq!(rc, 0, "ftruncate: {}", std::io::Error::last_os_error());
    fd
}

#[derive(Debug)]
struct NothingBehind;

impl Backing for NothingBehind {
    fn keep_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------
// The automatic choice
// ---------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_guest_kernel_offers_edus_cdev_and_dev_iommu() {
    let loc = Host::default().find_cdev(&edu()).expect("edu's cdev");
    println!("edu: cdev {} at {}", loc.cdev, loc.node.display());
    assert!(loc.node.exists(), "{}", loc.node.display());
    let container = IoasContainer::open().expect("/dev/iommu and an IOAS");
    let device = container.open_device(&edu()).expect("open edu");
    assert_eq!(device.vendor_id().expect("vendor id"), 0x1234);
}

// ---------------------------------------------------------------------------
// The cdev lifecycle
// ---------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn lifecycle_with_its_three_typed_refusals() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let unbound = UnboundDevice::open(&edu()).expect("open the cdev");
    assert_eq!(unbound.name(), edu());

    // 1. Get-info before bind: the kernel refuses every device ioctl.
    let dup = unbound.as_fd().try_clone_to_owned().expect("dup");
    let e = VfioDevice::new(dup, edu(), Arc::new(NothingBehind)).expect_err("not bound yet");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    assert!(e.to_string().contains("VFIO_DEVICE_GET_INFO"), "{e}");

    let bound = unbound.bind(&iommufd).expect("bind");
    println!("bound as dev id {}", bound.dev_id());

    // 2. Double bind: again on the same fd, and through a second fd.
    let e = sys::device_bind_iommufd(bound.as_fd(), iommufd.as_fd()).expect_err("bound twice");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    let second = UnboundDevice::open(&edu()).expect("a second open of the cdev");
    let e = second.bind(&iommufd).expect_err("already bound elsewhere");
    assert_eq!(e.error.kind(), ErrorKind::Busy, "{}", e.error);
    assert_eq!(e.error.errno(), Some(libc::EINVAL), "{}", e.error);
    assert!(e.error.to_string().contains(&edu()), "{}", e.error);
    assert!(
        e.error.to_string().contains("another file of this device"),
        "{}",
        e.error
    );
    drop(e.device);

    // 3. Attach to bad ids: none at all, one naming the device (no page
    // table), and an IOAS of another iommufd.
    let e = bound
        .attach(PageTable::Id(0xdead_beef))
        .expect_err("no object");
    assert_eq!(e.error.kind(), ErrorKind::NotFound, "{}", e.error);
    assert_eq!(e.error.errno(), Some(libc::ENOENT));
    let bound = e.device;
    let dev_id = bound.dev_id();
    let e = bound
        .attach(PageTable::Id(dev_id))
        .expect_err("a device is no page table");
    assert_eq!(e.error.kind(), ErrorKind::InvalidArgument, "{}", e.error);
    let bound = e.device;
    let other = Iommufd::open().expect("second iommufd");
    let foreign = other.alloc_ioas().expect("foreign IOAS");
    let e = bound.attach(&foreign).expect_err("another iommufd");
    assert_eq!(e.error.kind(), ErrorKind::InvalidArgument, "{}", e.error);
    assert!(e.error.errno().is_none(), "refused before the kernel");
    let bound = e.device;

    // The good path, and back.
    let attached = bound.attach(&ioas).expect("attach");
    assert!(attached.info().num_regions > vfio_hal::pci::region::CONFIG);
    assert_eq!(attached.vendor_id().expect("vendor"), 0x1234);
    let keep = attached.keep_fds();
    assert!(keep.contains(&iommufd.raw_fd()), "{keep:?}");
    let config = attached.config().expect("config region");
    let bound = attached.detach().expect("detach");
    // A handle taken while attached still reads (the binding stays).
    assert_eq!(config.read_at::<u16>(cfg::DEVICE_ID).expect("read"), 0x11e8);
    drop(config);
    let attached = bound.attach(&ioas).expect("attach again");
    assert_eq!(attached.device_id().expect("device"), 0x11e8);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn open_and_drop_leak_no_fds_and_objects() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let before = open_fds();
    for _ in 0..20 {
        let ioas = iommufd.alloc_ioas().expect("IOAS");
        let dev = UnboundDevice::open(&edu())
            .expect("open")
            .bind(&iommufd)
            .expect("bind")
            .attach(&ioas)
            .expect("attach");
        let bar0 = dev.region(0).expect("BAR0");
        assert_eq!(bar0.read_at::<u32>(0).expect("id"), 0x0100_00ed);
        // Drop the IOAS handle first: the device keeps the IOAS alive.
        drop(ioas);
        drop(dev);
        drop(bar0);
    }
    assert_eq!(open_fds(), before, "fd count changed");
    // Every IOAS was destroyed: a fresh one gets a small id again only if
    // ids are reused, so check destruction directly instead.
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let id = ioas.id();
    drop(ioas);
    let e = iommufd.destroy(id).expect_err("already destroyed by drop");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

// ---------------------------------------------------------------------------
// IOAS
// ---------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn map_fixed_and_kernel_chosen_and_unmap_lengths() {
    let container = IoasContainer::open().expect("container");
    let fresh = container.ioas().iova_ranges().expect("ranges");
    println!("fresh IOAS: {fresh:?}");
    let _edu = container.open_device(&edu()).expect("edu");
    let info = container.iommu_info().expect("iommu info");
    println!("with edu attached: {info:?}");
    assert!(!info.iova_ranges.is_empty());
    let min = info.min_page_size().expect("a page size");
    assert!(min <= PAGE && PAGE % min == 0, "min page {min:#x}");
    let alignment = container.ioas().iova_ranges().expect("ranges").alignment;
    assert!((1..=PAGE).contains(&alignment), "alignment {alignment}");

    let buf = DmaBuffer::new(4 * PAGE as usize).expect("buffer");
    let iova = 0x10_0000;
    // SAFETY: `buf` outlives every mapping of it in this test (all are unmapped below).
    unsafe { container.map_dma_raw(iova, buf.as_ptr(), 2 * PAGE, DmaAccess::ReadWrite) }
        .expect("map fixed");
    // SAFETY: as above.
    let e = unsafe { container.map_dma_raw(iova + PAGE, buf.as_ptr(), PAGE, DmaAccess::ReadWrite) }
        .expect_err("overlap");
    assert_eq!(e.kind(), ErrorKind::AlreadyMapped, "{e}");
    let e = container.unmap_dma(iova, PAGE).expect_err("split");
    assert_eq!(e.kind(), ErrorKind::NotMapped, "{e}");
    assert_eq!(
        container.unmap_dma(iova, 2 * PAGE).expect("unmap"),
        2 * PAGE
    );
    let e = container
        .unmap_dma(iova, 2 * PAGE)
        .expect_err("nothing there");
    assert_eq!(e.kind(), ErrorKind::NotMapped, "{e}");

    // Kernel-chosen IOVA: inside a reported range, aligned.
    // SAFETY: as above.
    let chosen = unsafe {
        container
            .ioas()
            .map(buf.as_ptr(), PAGE, DmaAccess::ReadOnly)
    }
    .expect("map at a kernel-chosen IOVA");
    println!("kernel chose {chosen:#x}");
    assert_eq!(chosen % alignment, 0);
    assert!(
        info.iova_ranges.iter().any(|r| r.contains(chosen, PAGE)),
        "{chosen:#x} outside {:?}",
        info.iova_ranges
    );
    assert_eq!(container.unmap_dma(chosen, PAGE).expect("unmap"), PAGE);

    // Unmap-all returns the sum and is idempotent.
    let rest = buf.as_ptr().wrapping_add(PAGE as usize);
    // SAFETY: as above.
    unsafe { container.map_dma_raw(iova, buf.as_ptr(), PAGE, DmaAccess::ReadWrite) }
        .expect("map 1");
    // SAFETY: as above; `rest` is the buffer's second page.
    unsafe { container.map_dma_raw(iova + 8 * PAGE, rest, 3 * PAGE, DmaAccess::WriteOnly) }
        .expect("map 2");
    assert_eq!(container.unmap_all().expect("unmap all"), 4 * PAGE);
    assert_eq!(container.unmap_all().expect("again"), 0);

    // Normalised refusals.
    // SAFETY: refused before any mapping is made.
    let e = unsafe {
        container.map_dma_raw(
            u64::MAX - PAGE + 1,
            buf.as_ptr(),
            2 * PAGE,
            DmaAccess::ReadWrite,
        )
    }
    .expect_err("wraps");
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
    // SAFETY: refused before any mapping is made.
    let e = unsafe { container.map_dma_raw(iova + 1, buf.as_ptr(), PAGE, DmaAccess::ReadWrite) }
        .expect_err("misaligned");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn map_file_from_a_memfd_or_not_supported() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let file = memfd(4 * PAGE);
    let supported = ioas.map_file_supported().expect("probe");
    println!("IOMMU_IOAS_MAP_FILE supported: {supported}");
    let fixed = ioas.map_file(
        file.as_fd(),
        PAGE,
        2 * PAGE,
        DmaAccess::ReadWrite,
        Some(0x20_0000),
    );
    if supported {
        assert_eq!(fixed.expect("map file fixed"), 0x20_0000);
        let chosen = ioas
            .map_file(file.as_fd(), 0, PAGE, DmaAccess::ReadOnly, None)
            .expect("map file, kernel-chosen IOVA");
        assert_eq!(ioas.unmap(0x20_0000, 2 * PAGE).expect("unmap"), 2 * PAGE);
        assert_eq!(ioas.unmap(chosen, PAGE).expect("unmap"), PAGE);
    } else {
        let e = fixed.expect_err("the probe said no");
        assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
        assert_eq!(e.errno(), Some(libc::ENOTTY), "{e}");
    }
}

/// Copies a mapping into a second IOAS and lets edu DMA through the copy,
/// which proves both IOASes reach the same pages.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn ioas_copy_reaches_the_same_pages() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let src = iommufd.alloc_ioas().expect("src IOAS");
    let dst = iommufd.alloc_ioas().expect("dst IOAS");
    let buf = DmaBuffer::new(PAGE as usize).expect("buffer");
    // SAFETY: `buf` outlives both mappings: the IOASes and the device are
    // dropped before it (declared later, dropped earlier).
    unsafe { src.map_fixed(0x20_0000, buf.as_ptr(), PAGE, DmaAccess::ReadWrite) }.expect("map src");
    // SAFETY: as above.
    let at = unsafe { dst.copy_from(&src, 0x20_0000, PAGE, DmaAccess::ReadWrite, Some(0x30_0000)) }
        .expect("copy fixed");
    assert_eq!(at, 0x30_0000);
    // SAFETY: as above.
    let chosen = unsafe { dst.copy_from(&src, 0x20_0000, PAGE, DmaAccess::ReadOnly, None) }
        .expect("copy, kernel-chosen");
    assert_ne!(chosen, 0x30_0000);
    assert_eq!(dst.unmap(chosen, PAGE).expect("unmap copy"), PAGE);
    // SAFETY: nothing is mapped by a refused copy.
    let e = unsafe { dst.copy_from(&src, 0x50_0000, PAGE, DmaAccess::ReadWrite, None) }
        .expect_err("nothing at the source");
    assert_eq!(e.kind(), ErrorKind::NotMapped, "{e}");

    let dev = UnboundDevice::open(&edu())
        .expect("open")
        .bind(&iommufd)
        .expect("bind")
        .attach(&dst)
        .expect("attach to the copy");
    dev.set_bus_master(true).expect("bus master");
    let bar0 = dev.region(0).expect("BAR0");
    buf.write(0, b"through the copy").expect("fill");
    edu_dma(&bar0, 0x30_0000, EDU_BUFFER, 16, false);
    buf.fill(0);
    edu_dma(&bar0, EDU_BUFFER, 0x30_0000, 16, true);
    let mut back = [0u8; 16];
    buf.read(0, &mut back).expect("read back");
    assert_eq!(&back, b"through the copy");
    drop(bar0);
    drop(dev);
    assert_eq!(dst.unmap(0x30_0000, PAGE).expect("unmap"), PAGE);
    assert_eq!(src.unmap_all().expect("unmap all"), PAGE);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn allow_iovas_and_options() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let window = IovaRange {
        start: 0x100_0000,
        end: 0x1ff_ffff,
    };
    ioas.allow_iovas(&[window]).expect("allow");
    let buf = DmaBuffer::new(PAGE as usize).expect("buffer");
    // SAFETY: unmapped below, before `buf` drops.
    let iova = unsafe { ioas.map(buf.as_ptr(), PAGE, DmaAccess::ReadWrite) }.expect("map");
    assert!(
        window.contains(iova, PAGE),
        "{iova:#x} outside the allowed window"
    );
    assert_eq!(ioas.unmap(iova, PAGE).expect("unmap"), PAGE);
    ioas.allow_iovas(&[]).expect("remove the allowed list");
    let bad = IovaRange {
        start: 0x2000,
        end: 0x1000,
    };
    let e = ioas.allow_iovas(&[bad]).expect_err("start > end");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    assert!(ioas.huge_pages().expect("get huge pages"), "default on");
    ioas.set_huge_pages(false)
        .expect("disable on an empty IOAS");
    assert!(!ioas.huge_pages().expect("get"));
    let mode = iommufd.rlimit_mode().expect("rlimit mode");
    println!("RLIMIT_MEMLOCK accounting: {mode:?}");
}

// ---------------------------------------------------------------------------
// HWPT, hardware info, dirty tracking
// ---------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn hw_info_hwpt_and_the_dirty_tracking_probe() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let bound = UnboundDevice::open(&edu())
        .expect("open")
        .bind(&iommufd)
        .expect("bind");
    let info = bound.hw_info().expect("IOMMU_GET_HW_INFO");
    println!("hw info: {info:?}");
    // The lane's QEMU has an emulated Intel IOMMU.
    assert_eq!(info.iommu_type, IommuType::IntelVtd);
    assert!(!info.data.is_empty(), "VT-d reports its registers");

    let dirty = bound.alloc_hwpt(
        &ioas,
        HwptOptions {
            dirty_tracking: true,
            ..Default::default()
        },
    );
    let supported = info.dirty_tracking_supported();
    println!(
        "dirty tracking: reported {supported}, allocation {:?}",
        dirty.as_ref().map(|h| h.id())
    );
    match dirty {
        Ok(hwpt) => {
            assert!(
                supported,
                "allocated, but the IOMMU does not report the capability"
            );
            let dev = bound
                .attach(&hwpt)
                .expect("attach to the dirty-tracking HWPT");
            assert_eq!(dev.pt_id(), hwpt.id());
            hwpt.set_dirty_tracking(true).expect("enable");
            let buf = DmaBuffer::new(4 * PAGE as usize).expect("buffer");
            // SAFETY: unmapped below, before `buf` drops.
            unsafe { ioas.map_fixed(0x40_0000, buf.as_ptr(), 4 * PAGE, DmaAccess::ReadWrite) }
                .expect("map");
            dev.set_bus_master(true).expect("bus master");
            let bar0 = dev.region(0).expect("BAR0");
            edu_dma(&bar0, EDU_BUFFER, 0x40_0000 + 2 * PAGE, 64, true);
            let map = hwpt
                .read_dirty(0x40_0000, 4 * PAGE, PAGE, false)
                .expect("read dirty");
            assert!(
                map.is_dirty(0x40_0000 + 2 * PAGE).expect("in the range"),
                "{:?}",
                map.words()
            );
            hwpt.set_dirty_tracking(false).expect("disable");
            drop(bar0);
            drop(dev);
            assert_eq!(ioas.unmap_all().expect("unmap"), 4 * PAGE);
        }
        Err(e) => {
            assert!(
                !supported,
                "the IOMMU reports dirty tracking but refused: {e}"
            );
            assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
            let plain = bound
                .alloc_hwpt(&ioas, HwptOptions::default())
                .expect("plain HWPT");
            let e = plain
                .set_dirty_tracking(true)
                .expect_err("not a tracking HWPT");
            assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
            let dev = bound.attach(&plain).expect("attach to the HWPT");
            assert_eq!(dev.pt_id(), plain.id());
            assert_eq!(dev.vendor_id().expect("vendor"), 0x1234);
            assert!(!dev.dirty_tracking_supported().expect("probe"));
        }
    }
}

// ---------------------------------------------------------------------------
// The edu device through the cdev
// ---------------------------------------------------------------------------

/// edu's DMA buffer in device address space.
const EDU_BUFFER: u64 = 0x40000;

/// One edu DMA of `len` bytes; `to_ram` selects device buffer → RAM.
fn edu_dma(bar0: &impl Region, src: u64, dst: u64, len: u64, to_ram: bool) {
    bar0.write_at::<u64>(0x80, src).expect("src");
    bar0.write_at::<u64>(0x88, dst).expect("dst");
    bar0.write_at::<u64>(0x90, len).expect("count");
    bar0.write_at::<u64>(0x98, if to_ram { 0b11 } else { 0b01 })
        .expect("start");
    wait_for("edu DMA", Duration::from_secs(20), || {
        bar0.read_at::<u64>(0x98).expect("command") & 1 == 0
    });
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_ids_config_and_capabilities() {
    let container = IoasContainer::open().expect("container");
    let dev = container.open_device(&edu()).expect("edu");
    assert_eq!(dev.vendor_id().expect("vendor"), 0x1234);
    assert_eq!(dev.device_id().expect("device"), 0x11e8);
    assert_eq!(dev.revision().expect("revision"), 0x10);
    assert!(dev
        .find_capability(cfg::CAP_ID_MSI)
        .expect("walk")
        .is_some());
    let bar0 = dev.region(0).expect("BAR0");
    assert_eq!(bar0.info().size, 1 << 20);
    assert_eq!(bar0.read_at::<u32>(0).expect("id"), 0x0100_00ed);
    bar0.write_at::<u32>(0x04, 0x1234_5678).expect("liveness");
    assert_eq!(bar0.read_at::<u32>(0x04).expect("liveness"), !0x1234_5678);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_msi_reaches_an_eventfd_exactly_once() {
    let container = IoasContainer::open().expect("container");
    let dev = container.open_device(&edu()).expect("edu");
    dev.set_bus_master(true).expect("bus master");
    let msi = dev.irq(MSI).expect("MSI");
    assert_eq!(msi.info().count, 1);
    let efd = EventFd::nonblocking().expect("eventfd");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("route MSI");
    let bar0 = dev.region(0).expect("BAR0");
    bar0.write_at::<u32>(0x60, 1).expect("raise");
    let fired = efd.poll(Duration::from_secs(10)).expect("poll");
    assert!(fired, "no MSI within 10 s");
    assert_eq!(efd.take().expect("read"), 1);
    bar0.write_at::<u32>(0x64, 1).expect("ack");
    assert!(!efd.poll(Duration::from_millis(200)).expect("poll"));
    msi.disable().expect("disable");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_dma_round_trip_through_the_ioas() {
    let container = IoasContainer::open().expect("container");
    let dev = container.open_device(&edu()).expect("edu");
    dev.set_bus_master(true).expect("bus master");
    let bar0 = dev.region(0).expect("BAR0");
    let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    let src = DmaBuffer::new(PAGE as usize).expect("src");
    src.write(0, &pattern).expect("fill");
    let src = container
        .map_buffer(0x10_0000, src, DmaAccess::ReadOnly)
        .expect("map src");
    let dst = container
        .map_buffer(
            0x20_0000,
            DmaBuffer::new(PAGE as usize).expect("dst"),
            DmaAccess::WriteOnly,
        )
        .expect("map dst");
    edu_dma(&bar0, src.iova(), EDU_BUFFER, pattern.len() as u64, false);
    edu_dma(&bar0, EDU_BUFFER, dst.iova(), pattern.len() as u64, true);
    let mut back = vec![0u8; pattern.len()];
    dst.buffer().read(0, &mut back).expect("read back");
    assert_eq!(back, pattern);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_msix_device_opens_through_the_cdev() {
    let container = IoasContainer::open().expect("container");
    let dev = container.open_device(&msix()).expect("NVMe");
    let msix = dev.irq(MSIX).expect("MSI-X");
    assert!(msix.info().count > 0, "{:?}", msix.info());
    assert!(dev
        .find_capability(cfg::CAP_ID_MSIX)
        .expect("walk")
        .is_some());
    let efd = EventFd::nonblocking().expect("eventfd");
    msix.set_eventfd(0, Some(efd.as_fd()))
        .expect("route vector 0");
    msix.trigger(0, 1).expect("loopback trigger");
    assert!(efd.poll(Duration::from_secs(5)).expect("poll"));
    msix.disable().expect("disable");
}

// ---------------------------------------------------------------------------
// Dirty tracking on the kernel's mock IOMMU (CONFIG_IOMMUFD_TEST)
// ---------------------------------------------------------------------------

/// The kernel's iommufd selftest interface, `IOMMU_TEST_CMD`: a mock device
/// and IOMMU whose domains do track dirty pages, unlike the lane's emulated
/// VT-d. Layout of `struct iommu_test_cmd` in Linux 6.12's
/// `drivers/iommu/iommufd/iommufd_test.h` (kernel-internal, test-only).
mod kernel_mock {
    use std::os::fd::AsFd;

    use vfio_hal_iommufd::{HwPagetable, HwptOptions, Ioas, Iommufd};
    use vfio_hal_linux::sys::{io, ioctl_with_mut_ref, Request};

    const IOMMU_TEST_CMD: Request = Request::new("IOMMU_TEST_CMD", io(b';', 0x80 + 32));
    const OP_MOCK_DOMAIN: u32 = 2;
    const OP_MOCK_DOMAIN_REPLACE: u32 = 10;
    const OP_DIRTY: u32 = 13;
    /// `MOCK_APERTURE_START`: the mock IOMMU only maps from 16 MiB.
    pub const APERTURE_START: u64 = 1 << 24;
    /// `MOCK_IO_PAGE_SIZE`: half a host page.
    pub const IO_PAGE: u64 = 4096 / 2;

    #[repr(C)]
    #[derive(Default)]
    struct TestCmd {
        size: u32,
        op: u32,
        id: u32,
        reserved: u32,
        /// The 48-byte union, 8-byte aligned.
        payload: [u64; 6],
        last: u32,
        pad: u32,
    }

    fn run(iommufd: &Iommufd, op: u32, id: u32, payload: [u64; 6]) -> [u64; 6] {
        let mut cmd = TestCmd {
            size: std::mem::size_of::<TestCmd>() as u32,
            op,
            id,
            payload,
            ..Default::default()
        };
        // SAFETY: IOMMU_TEST_CMD takes a struct iommu_test_cmd (72 bytes on
        // 6.12, which TestCmd reproduces); the only pointer passed (OP_DIRTY's
        // uptr) names a live bitmap the kernel only reads.
        unsafe { ioctl_with_mut_ref(iommufd.as_fd(), IOMMU_TEST_CMD, &mut cmd) }.unwrap_or_else(
            |e| {
                panic!(
                    "IOMMU_TEST_CMD op {op}: errno {} (IOMMUFD_TEST off, or a real IOMMU registered first)",
                    e.0
                )
            },
        );
        cmd.payload
    }

    /// A mock device bound to `iommufd` and attached to `ioas`:
    /// (selftest device object id, dev id).
    pub fn mock_device(iommufd: &Iommufd, ioas: u32) -> (u32, u32) {
        let out = run(iommufd, OP_MOCK_DOMAIN, ioas, [0; 6]);
        (out[0] as u32, out[1] as u32)
    }

    /// Moves the mock device to the page table `pt`.
    pub fn replace(iommufd: &Iommufd, stdev: u32, pt: u32) {
        run(
            iommufd,
            OP_MOCK_DOMAIN_REPLACE,
            stdev,
            [u64::from(pt), 0, 0, 0, 0, 0],
        );
    }

    /// A mock device on `ioas` moved to a dirty-tracking HWPT of its own:
    /// (selftest device object id, dev id, the HWPT).
    pub fn on_dirty_hwpt(iommufd: &Iommufd, ioas: &Ioas) -> (u32, u32, HwPagetable) {
        let (stdev, dev_id) = mock_device(iommufd, ioas.id());
        let options = HwptOptions {
            dirty_tracking: true,
            ..Default::default()
        };
        let hwpt = HwPagetable::alloc(dev_id, ioas, options).expect("dirty-tracking HWPT");
        replace(iommufd, stdev, hwpt.id());
        (stdev, dev_id, hwpt)
    }

    /// Marks mock pages dirty as the device would: bit `n` of `bits` is the
    /// `IO_PAGE` at `iova + n * IO_PAGE`. Returns how many were marked.
    pub fn mark_dirty(iommufd: &Iommufd, hwpt: u32, iova: u64, len: u64, bits: &[u64]) -> u64 {
        let payload = [0, iova, len, IO_PAGE, bits.as_ptr() as u64, 0];
        run(iommufd, OP_DIRTY, hwpt, payload)[5]
    }
}

/// Runs in the lane's `nommu` boot only: Linux 6.12 probes the mock's
/// devices with the ops of the first registered IOMMU without a firmware
/// node (`__iommu_probe_device` → `iommu_fwspec_ops(NULL)`), which with
/// the emulated VT-d present is VT-d, so the mock device has no IOMMU and
/// `IOMMU_TEST_OP_MOCK_DOMAIN` fails with EINVAL. The `nommu` boot (the
/// same kernel, no VT-d) runs it; the other boots leave it out (`--skip`).
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane (its nommu boot): bash tests/vm/lane.sh"
)]
fn dirty_tracking_enable_and_read_on_the_kernel_mock_iommu() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let (stdev, dev_id, hwpt) = kernel_mock::on_dirty_hwpt(&iommufd, &ioas);
    let info = iommufd.hw_info(dev_id).expect("hw info of the mock");
    println!("mock hw info: {info:?}");
    assert!(
        info.dirty_tracking_supported(),
        "the mock IOMMU tracks dirty pages"
    );

    let base = kernel_mock::APERTURE_START;
    let len = 16 * PAGE;
    let buf = DmaBuffer::new(len as usize).expect("buffer");
    // SAFETY: unmapped below, before `buf` drops.
    unsafe { ioas.map_fixed(base, buf.as_ptr(), len, DmaAccess::ReadWrite) }.expect("map");
    hwpt.set_dirty_tracking(true).expect("enable");
    let clean = hwpt.read_dirty(base, len, PAGE, false).expect("read");
    assert_eq!(clean.dirty().count(), 0, "{:?}", clean.words());

    // Mock pages are half a host page: 2 and 3 are host page 1, 10 is in page 5.
    let marked =
        kernel_mock::mark_dirty(&iommufd, hwpt.id(), base, len, &[1 << 2 | 1 << 3 | 1 << 10]);
    assert_eq!(marked, 3);
    let kept = hwpt.read_dirty(base, len, PAGE, true).expect("read, keep");
    let pages: Vec<u64> = kept.dirty().collect();
    assert_eq!(pages, vec![base + PAGE, base + 5 * PAGE]);
    let read = hwpt
        .read_dirty(base, len, PAGE, false)
        .expect("read, clear");
    assert_eq!(
        read.dirty().collect::<Vec<_>>(),
        pages,
        "NO_CLEAR kept the bits"
    );
    let after = hwpt.read_dirty(base, len, PAGE, false).expect("read again");
    assert_eq!(after.dirty().count(), 0, "the previous read cleared");

    let e = hwpt
        .read_dirty(base, len, 3000, false)
        .expect_err("bad page size");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    hwpt.set_dirty_tracking(false).expect("disable");
    assert_eq!(ioas.unmap_all().expect("unmap"), len);
    // The mock device holds the HWPT: destroy it first, then the handles go.
    iommufd.destroy(stdev).expect("destroy the mock device");
}

/// `Container::set_dirty_tracking`/`read_dirty` of an [`IoasContainer`]
/// made `with_dirty_tracking`, on two kernel mock devices each attached to
/// a HWPT of its own that the container covers: a read merges both HWPTs'
/// bitmaps, `keep` is `NO_CLEAR`, a read with tracking off is refused, and
/// a HWPT that cannot track is refused before the kernel sees it. The
/// kernel mock IOMMU is the only one the lane has that tracks dirty pages,
/// hence the `nommu` boot (see the test above); the other boots leave it out.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane (its nommu boot): bash tests/vm/lane.sh"
)]
fn ioas_container_reads_dirty_pages_of_its_hwpts_on_the_kernel_mock_iommu() {
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let ioas = iommufd.alloc_ioas().expect("IOAS");
    let c = IoasContainer::with_ioas(ioas.clone(), Host::default()).with_dirty_tracking();
    let migration = c
        .iommu_info()
        .expect("iommu info")
        .caps
        .into_iter()
        .find_map(|cap| match cap {
            vfio_hal::Capability::Migration { pgsize_bitmap, .. } => Some(pgsize_bitmap),
            _ => None,
        });
    assert!(
        migration.is_some_and(|sizes| sizes & PAGE != 0),
        "a tracking container reports its page sizes: {migration:?}"
    );
    let mocks: Vec<(u32, vfio_hal_iommufd::HwPagetable)> = (0..2)
        .map(|_| {
            let (stdev, _, hwpt) = kernel_mock::on_dirty_hwpt(&iommufd, &ioas);
            c.add_dirty_hwpt(&hwpt).expect("cover the HWPT");
            (stdev, hwpt)
        })
        .collect();

    let base = kernel_mock::APERTURE_START;
    let len = 16 * PAGE;
    let ram = c
        .map_buffer(
            base,
            DmaBuffer::new(len as usize).expect("buffer"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    let e = c
        .read_dirty(base, len, PAGE, false)
        .expect_err("read before tracking starts");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    c.set_dirty_tracking(true).expect("start");
    let read = |keep| -> Vec<u64> {
        c.read_dirty(base, len, PAGE, keep)
            .expect("read")
            .dirty()
            .collect()
    };
    assert_eq!(read(false), Vec::<u64>::new(), "nothing written yet");
    // Mock pages are half a host page: bit 2 is host page 1, bit 10 page 5.
    assert_eq!(
        kernel_mock::mark_dirty(&iommufd, mocks[0].1.id(), base, len, &[1 << 2]),
        1
    );
    assert_eq!(
        kernel_mock::mark_dirty(&iommufd, mocks[1].1.id(), base, len, &[1 << 10]),
        1
    );
    let both = vec![base + PAGE, base + 5 * PAGE];
    assert_eq!(read(true), both, "the bitmaps of both HWPTs, merged");
    assert_eq!(read(false), both, "keep left the bits");
    assert_eq!(read(false), Vec::<u64>::new(), "the previous read cleared");
    c.set_dirty_tracking(false).expect("stop");
    let e = c
        .read_dirty(base, len, PAGE, false)
        .expect_err("read after tracking stopped");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let (stdev, dev_id) = kernel_mock::mock_device(&iommufd, ioas.id());
    let plain = vfio_hal_iommufd::HwPagetable::alloc(dev_id, &ioas, HwptOptions::default())
        .expect("a HWPT without tracking");
    let e = c
        .add_dirty_hwpt(&plain)
        .expect_err("a HWPT that cannot track");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let untracking = IoasContainer::with_ioas(ioas.clone(), Host::default());
    let e = untracking
        .set_dirty_tracking(true)
        .expect_err("a container made without tracking");
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");

    drop(ram);
    // The mock devices hold their HWPTs: destroy them first.
    for stdev in mocks.iter().map(|(stdev, _)| *stdev).chain([stdev]) {
        iommufd.destroy(stdev).expect("destroy a mock device");
    }
}

// ---------------------------------------------------------------------------
// Peer-to-peer, hot reset, ERR and SR-IOV on the cdev path
// ---------------------------------------------------------------------------

/// iommufd pins the pages it maps (`pin_user_pages`), which refuses the
/// PFN-mapped BAR of another device: no peer-to-peer DMA through an IOAS
/// on 6.12 (dma-buf based P2P needs `IOMMU_IOAS_MAP_FILE` of a dma-buf,
/// later kernels). The refusal is typed and carries the errno.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn peer_to_peer_dma_is_refused_by_an_ioas() {
    use vfio_hal_guest_tests::{self as lane, peer};
    let container = IoasContainer::open().expect("container");
    let _edu = container.open_device(&edu()).expect("edu");
    let other = container
        .open_device(&lane::lane_env(lane::PEER_BDF))
        .expect("the peer edu");
    let e = peer::map_peer_bar(&container, &other).expect_err("an IOAS pins pages");
    eprintln!("IOAS refuses a peer BAR: {e}");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EFAULT)),
        "{e}"
    );
    assert_eq!(
        container.unmap_all().expect("unmap all"),
        0,
        "nothing left mapped"
    );
}

/// The iommufd-owned form of the hot reset (no group fds): igb, bound to
/// this iommufd, alone behind its root port; its registers read their
/// reset values afterwards.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn pci_hot_reset_in_the_iommufd_owned_form() {
    use vfio_hal_guest_tests::{self as lane, igb};
    use vfio_hal_linux::devfd::HotResetInfo;
    let bdf = lane::lane_env(lane::IGB_BDF);
    let container = IoasContainer::open().expect("container");
    let dev = container.open_device(&bdf).expect("igb");
    let info = dev
        .vfio_device()
        .pci_hot_reset_info()
        .expect("hot reset info");
    eprintln!("igb hot reset (cdev) affects {info:?}");
    assert_eq!(
        info.flags & (HotResetInfo::DEV_ID | HotResetInfo::DEV_ID_OWNED),
        HotResetInfo::DEV_ID | HotResetInfo::DEV_ID_OWNED,
        "device ids, all owned by this iommufd"
    );
    assert_eq!(info.devices.len(), 1);
    assert_eq!(info.devices[0].id, dev.dev_id());
    let held = igb::leave_reset_mark(&dev);
    // A group list is the group path's form: refused for a cdev.
    let efd = EventFd::nonblocking().expect("any fd");
    let e = dev
        .vfio_device()
        .pci_hot_reset(&[efd.as_fd()])
        .expect_err("a cdev takes no group fds");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    assert_eq!(igb::reset_mark(&dev), held, "a refused reset reset nothing");

    dev.pci_hot_reset().expect("hot reset");
    assert_eq!(igb::reset_mark(&dev), 0, "igb's registers were reset");
    assert_eq!(dev.vendor_id().expect("vendor"), 0x8086);
    // edu on the root bus: no slot or bus reset reaches it.
    let edu = container.open_device(&edu()).expect("edu");
    let e = edu.pci_hot_reset().expect_err("root bus");
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
}

/// The ERR interrupt through the cdev: an AER error injected at igb's root
/// port reaches igb's eventfd.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn err_irq_fires_on_an_injected_aer_error() {
    use vfio_hal_guest_tests::{self as lane, igb};
    let container = IoasContainer::open().expect("container");
    let dev = container
        .open_device(&lane::lane_env(lane::IGB_BDF))
        .expect("igb");
    let took = igb::err_fires_on_an_error_at_its_port(&dev, &lane::lane_env(lane::IGB_PORT_ID));
    eprintln!("ERR signalled {took:?} after the injection");
}

/// Linux 6.12's cdev path does not check VF tokens (binding with one,
/// `VFIO_DEVICE_BIND_FLAG_TOKEN`, came with 6.17): a VF of a PF bound to
/// vfio-pci binds without its token, where the group path refuses it.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn a_virtual_function_binds_through_its_cdev_without_a_token_on_6_12() {
    use vfio_hal_guest_tests::{self as lane, igb};
    let vfs = igb::VirtualFunctions::create(&lane::lane_env(lane::IGB_BDF), 1).expect("a VF");
    let vf = vfs.addresses()[0].clone();
    let container = IoasContainer::open().expect("container");
    let dev = container
        .open_device(&vf)
        .expect("the VF binds without a token");
    assert_eq!(dev.device_id().expect("device id"), igb::VF_DEVICE_ID);
    drop(dev);
    drop(container);
}

/// The second spare edu, hot-unplugged while a thread reads its BAR through
/// the cdev; revoked on REQ (see `vfio_hal_guest_tests::unplug`). The
/// iommufd binding ends with the device file: the IOAS and its mappings
/// stay usable and nothing leaks.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn zz_device_del_in_use_req_revoke_device_gone_clean_drop() {
    use vfio_hal_guest_tests::{self as lane, unplug};
    let container = IoasContainer::open().expect("container");
    let fds_before = open_fds();
    let bdf = lane::lane_env(lane::SPARE2_BDF);
    let spare = container
        .open_device(&bdf)
        .expect("open the second spare edu");
    unplug::unplug_while_in_use("iommufd", spare, &lane::lane_env(lane::SPARE2_ID), &bdf);
    assert_eq!(
        open_fds(),
        fds_before,
        "an fd of the unplugged device is left"
    );
    let m = container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(PAGE as usize).expect("b"),
            DmaAccess::ReadWrite,
        )
        .expect("map after the unplug");
    drop(m);
}

/// The kernel's mtty sample through its cdev, bound to an IOAS as an
/// emulated device: opened by UUID and by sysfs path, with migration v2 and
/// DMA logging, and its serial registers and FIFO migrated into a second
/// instance.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn mtty_opens_through_its_cdev_and_its_serial_state_migrates() {
    let (src, dst) = (
        lane_env(vfio_hal_guest_tests::MTTY_SRC),
        lane_env(vfio_hal_guest_tests::MTTY_DST),
    );
    let host = Host::default();
    let cdev = host.find_cdev(&src).expect("mtty's cdev");
    assert!(cdev.node.exists(), "{}", cdev.node.display());
    let container = IoasContainer::open().expect("IOAS");
    let seen =
        vfio_hal_guest_tests::mtty::opens_by_path_with_migration_and_logging(&container, &src)
            .unwrap_or_else(|e| panic!("{e}"));
    println!("{seen} ({})", cdev.node.display());
    let migrated = vfio_hal_guest_tests::mtty::serial_state_migrates(&container, &src, &dst)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{migrated}");
}
