//! The legacy backend against the real kernel, in the QEMU lane
//! (`bash tests/vm/lane.sh`): QEMU's `edu` (and an MSI-X capable NVMe)
//! bound to vfio-pci behind the emulated Intel IOMMU, through the type1
//! container on the default kernel and through iommufd's compat container
//! on the compat kernel. On the host every test here is ignored.
//!
//! The lane runs tests one at a time in name order; the test that unplugs
//! the spare edu is named to run last.

use std::time::{Duration, Instant};

use vfio_hal::device::feature;
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index::{ERR, MSI, MSIX, REQ};
use vfio_hal::pci::{cfg, region::CONFIG};
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind, IovaRange, VfToken};
use vfio_hal_guest_tests as lane;
use vfio_hal_legacy::LegacyContainer;
use vfio_hal_linux::VfioDevice;

/// edu's identification register (BAR0 + 0).
const EDU_IDENT: u32 = 0x0100_00ed;
/// An IOVA window edu can reach (it masks DMA addresses to 28 bits).
const IOVA: u64 = 0x10_0000;
/// How long a device completion or an interrupt may take under TCG.
const TIMEOUT: Duration = Duration::from_secs(10);

fn edu_bdf() -> String {
    lane::lane_env(lane::EDU_BDF)
}

fn open_edu() -> (LegacyContainer, VfioDevice) {
    let container = LegacyContainer::open().expect("open /dev/vfio/vfio");
    let edu = container.open_device(&edu_bdf()).expect("open edu");
    (container, edu)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn container_reports_iommu_info_without_assuming_page_sizes() {
    let (container, _edu) = open_edu();
    assert!(container.has_unmap_all(), "6.12 offers VFIO_UNMAP_ALL");
    let info = container.iommu_info().expect("VFIO_IOMMU_GET_INFO");
    let page = info.min_page_size().expect("a page size bitmap");
    assert!(page <= 4096, "smallest IOMMU page {page:#x} above 4 KiB");
    assert!(
        info.iova_ranges
            .iter()
            .any(|r: &IovaRange| r.contains(IOVA, 64 << 20)),
        "edu's DMA window is not inside {:?}",
        info.iova_ranges
    );
    eprintln!(
        "kernel {}: page sizes {:#x}, ranges {:?}, dma_avail {:?}",
        lane::lane_env(lane::KERNEL),
        info.page_sizes,
        info.iova_ranges,
        info.dma_avail
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_address_space_needs_an_attached_group() {
    let container = LegacyContainer::open().expect("open /dev/vfio/vfio");
    let e = container.iommu_info().expect_err("no group, no IOMMU");
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    let buf = DmaBuffer::new(4096).expect("buffer");
    let e = container
        .map_buffer(IOVA, buf, DmaAccess::ReadWrite)
        .expect_err("no group, no map");
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    assert_eq!(container.unmap_all().expect("nothing to unmap"), 0);

    let group = container.attach(&edu_bdf()).expect("attach edu's group");
    drop(group); // the container keeps it
    assert_eq!(container.group_ids().len(), 1);
    container.iommu_info().expect("info with a group attached");
    let m = container
        .map_buffer(IOVA, DmaBuffer::new(4096).expect("b"), DmaAccess::ReadWrite)
        .expect("map before any device is open");
    let edu = container.open_device(&edu_bdf()).expect("open edu");
    drop(edu);
    assert_eq!(
        container.group_ids().len(),
        1,
        "still held by the container"
    );
    assert_eq!(m.unmap().expect("unmap").len(), 4096);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_info_config_ids_and_msi_capability() {
    let (_c, edu) = open_edu();
    let info = edu.info();
    assert_eq!(info.kind(), vfio_hal::DeviceKind::Pci);
    assert!(info.num_regions >= 9, "{info:?}");
    assert!(info.num_irqs >= 5, "{info:?}");
    assert_eq!(info.name, edu_bdf());
    assert_eq!(edu.vendor_id().expect("vendor"), 0x1234);
    assert_eq!(edu.device_id().expect("device"), 0x11e8);
    assert_eq!(edu.revision().expect("revision"), 0x10);
    let msi = edu.find_capability(cfg::CAP_ID_MSI).expect("walk");
    assert!(msi.is_some(), "edu has an MSI capability");
    let e = edu.region(info.num_regions).expect_err("no such region");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = edu.irq(info.num_irqs).expect_err("no such irq");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn bar0_liveness_by_pread_and_by_mmap() {
    let (_c, edu) = open_edu();
    edu.update_command(cfg::CMD_MEMORY, 0)
        .expect("memory decode on");
    let bar0 = edu.region(0).expect("BAR0");
    assert_eq!(bar0.info().size, 1 << 20);
    assert!(bar0.info().mmappable(), "edu's BAR0 is mmappable");

    // The fast path serves aligned register access...
    assert!(bar0.fast_path_covers(0x04, 4));
    assert_eq!(bar0.read_at::<u32>(0x00).expect("ident"), EDU_IDENT);
    bar0.write_at(0x04, 0x1234_5678u32).expect("liveness write");
    assert_eq!(bar0.read_at::<u32>(0x04).expect("liveness"), !0x1234_5678);

    // ...and pread/pwrite give the same answers.
    edu.set_fast_path(false);
    assert!(!bar0.fast_path_covers(0x04, 4));
    assert_eq!(
        bar0.read_at::<u32>(0x00).expect("ident by pread"),
        EDU_IDENT
    );
    bar0.write_at(0x04, 0xa5a5_0f0fu32).expect("pwrite");
    assert_eq!(bar0.read_at::<u32>(0x04).expect("pread"), !0xa5a5_0f0f);
    // An access width edu refuses (2 bytes below 0x80) reads the same on
    // both paths: whatever QEMU answers for an invalid access.
    let narrow_pread: u16 = bar0.read_at(0x04).expect("2-byte read by pread");
    edu.set_fast_path(true);
    assert!(bar0.fast_path_covers(0x04, 2));
    let narrow_mmap: u16 = bar0.read_at(0x04).expect("2-byte read by mmap");
    assert_eq!(narrow_mmap, narrow_pread);
    eprintln!("edu 2-byte read at 0x04: {narrow_mmap:#x}");

    // An explicit mmap sees the same registers.
    let areas = bar0.mmap().expect("mmap BAR0");
    assert_eq!(areas.len(), 1);
    assert_eq!(areas[0].load::<u32>(0).expect("load"), EDU_IDENT);
    areas[0].store::<u32>(4, 7).expect("store");
    assert_eq!(bar0.read_at::<u32>(0x04).expect("read"), !7);

    // Bounds are checked before the kernel sees anything.
    let e = bar0.read(1 << 20, &mut [0u8; 4]).expect_err("past the end");
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    let e = bar0.read(u64::MAX - 1, &mut [0u8; 4]).expect_err("wraps");
    assert_eq!(e.kind(), ErrorKind::Overflow);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn memory_decode_off_falls_back_to_pread_instead_of_sigbus() {
    let (_c, edu) = open_edu();
    edu.update_command(cfg::CMD_MEMORY, 0).expect("decode on");
    let bar0 = edu.region(0).expect("BAR0");
    assert_eq!(bar0.read_at::<u32>(0).expect("ident"), EDU_IDENT);
    assert!(bar0.fast_path_covers(0, 4));
    // vfio-pci zaps BAR mmaps while decode is off; a load would be SIGBUS.
    edu.update_command(0, cfg::CMD_MEMORY).expect("decode off");
    assert!(
        !bar0.fast_path_covers(0, 4),
        "fast path must stop with decode off"
    );
    let e = bar0
        .read_at::<u32>(0)
        .expect_err("vfio-pci refuses BAR access");
    assert_eq!(e.errno(), Some(libc::EIO), "{e}");
    edu.update_command(cfg::CMD_MEMORY, 0)
        .expect("decode on again");
    assert!(bar0.fast_path_covers(0, 4));
    assert_eq!(bar0.read_at::<u32>(0).expect("ident"), EDU_IDENT);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn msi_from_the_raise_register_fires_once_and_deassigns() {
    let (_c, edu) = open_edu();
    edu.set_bus_master(true).expect("bus master");
    let bar0 = edu.region(0).expect("BAR0");
    let msi = edu.irq(MSI).expect("MSI");
    assert_eq!(msi.info().count, 1);
    let efd = EventFd::nonblocking().expect("eventfd");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("route MSI");

    bar0.write_at(0x60, 1u32).expect("raise");
    assert_eq!(efd.wait(TIMEOUT).expect("wait"), 1, "one MSI");
    assert_eq!(bar0.read_at::<u32>(0x24).expect("status") & 1, 1);
    bar0.write_at(0x64, 1u32).expect("ack");
    assert_eq!(
        efd.wait(Duration::from_millis(300)).expect("wait"),
        0,
        "exactly one"
    );

    msi.set_eventfd(0, None).expect("de-assign");
    bar0.write_at(0x60, 1u32).expect("raise");
    assert_eq!(
        efd.wait(Duration::from_millis(300)).expect("wait"),
        0,
        "de-assigned"
    );
    bar0.write_at(0x64, 1u32).expect("ack");
    msi.disable().expect("disable MSI");

    // Invalid requests are typed errors, no ioctl needed.
    let e = msi.mask(0, 1).expect_err("MSI is not maskable");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = msi
        .set_eventfd(1, Some(efd.as_fd()))
        .expect_err("one vector only");
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn err_and_req_are_ordinary_irq_indices() {
    let (_c, edu) = open_edu();
    let req = edu.irq(REQ).expect("REQ");
    assert_eq!(req.info().count, 1, "vfio-pci always offers REQ");
    let efd = EventFd::nonblocking().expect("eventfd");
    req.set_eventfd(0, Some(efd.as_fd())).expect("route REQ");
    req.trigger(0, 1).expect("loopback REQ");
    assert_eq!(efd.wait(TIMEOUT).expect("wait"), 1);
    req.disable().expect("disable REQ");
    // The kernel has nothing to disable now: it answers EINVAL.
    let e = req.disable().expect_err("nothing routed");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    req.set_eventfd(0, Some(efd.as_fd()))
        .expect("route REQ again");
    req.set_eventfd(0, None).expect("de-assign REQ");
    let err = edu.irq(ERR).expect("ERR");
    // edu is conventional PCI: no AER, so no ERR vector.
    if err.info().count == 0 {
        let e = err
            .set_eventfd(0, Some(efd.as_fd()))
            .expect_err("no vector");
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
    } else {
        err.set_eventfd(0, Some(efd.as_fd())).expect("route ERR");
        err.trigger(0, 1).expect("loopback ERR");
        assert_eq!(efd.wait(TIMEOUT).expect("wait"), 1);
        err.disable().expect("disable ERR");
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_dma_round_trip_through_the_iommu() {
    let (container, edu) = open_edu();
    edu.set_bus_master(true).expect("bus master");
    let bar0 = edu.region(0).expect("BAR0");
    let src = DmaBuffer::new(4096).expect("src");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    src.write(0, &pattern).expect("fill");
    let src = container
        .map_buffer(IOVA, src, DmaAccess::ReadOnly)
        .expect("map src");
    let dst = container
        .map_buffer(
            IOVA + 0x10000,
            DmaBuffer::new(4096).expect("dst"),
            DmaAccess::ReadWrite,
        )
        .expect("map dst");

    let run = |from: u64, to: u64, cmd: u64| {
        bar0.write_at(0x80, from).expect("src");
        bar0.write_at(0x88, to).expect("dst");
        bar0.write_at(0x90, 4096u64).expect("count");
        bar0.write_at(0x98, cmd).expect("start");
        let deadline = Instant::now() + TIMEOUT;
        while bar0.read_at::<u64>(0x98).expect("cmd") & 1 != 0 {
            assert!(Instant::now() < deadline, "edu DMA did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    run(src.iova(), 0x40000, 1); // RAM -> device buffer
    run(0x40000, dst.iova(), 3); // device buffer -> RAM
    let mut got = vec![0u8; 4096];
    dst.buffer().read(0, &mut got).expect("read dst");
    assert!(got == pattern, "DMA round trip corrupted the data");

    // Unmapping returns the length; the guard then finds nothing to unmap
    // (NotMapped) and frees the buffer.
    assert_eq!(container.unmap_dma(dst.iova(), 4096).expect("unmap"), 4096);
    drop(dst);
    let src = src.unmap().expect("unmap through the guard");
    assert_eq!(src.len(), 4096);
    assert_eq!(container.unmap_all().expect("unmap all"), 0);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn unmap_semantics_are_normalised() {
    let (container, _edu) = open_edu();
    let page = container
        .iommu_info()
        .expect("info")
        .min_page_size()
        .expect("page");
    let e = container.unmap_dma(IOVA, page).expect_err("nothing mapped");
    assert_eq!(e.kind(), ErrorKind::NotMapped, "{e}");

    let buf = DmaBuffer::new(2 * page as usize).expect("buffer");
    let m = container
        .map_buffer(IOVA, buf, DmaAccess::ReadWrite)
        .expect("map two pages");
    let e = container
        .map_buffer(
            IOVA,
            DmaBuffer::new(page as usize).expect("b"),
            DmaAccess::ReadWrite,
        )
        .expect_err("overlap");
    assert_eq!(e.kind(), ErrorKind::AlreadyMapped);
    let split = container.unmap_dma(IOVA, page);
    match lane::kernel_flavour() {
        // type1v2 refuses to split with EINVAL.
        lane::KernelFlavour::Default => {
            assert_eq!(split.expect_err("split").kind(), ErrorKind::InvalidArgument)
        }
        // iommufd refuses with ENOENT.
        lane::KernelFlavour::Compat => {
            assert_eq!(split.expect_err("split").kind(), ErrorKind::NotMapped)
        }
    }
    let e = container
        .unmap_dma(u64::MAX - page + 1, 2 * page)
        .expect_err("wraps");
    assert_eq!(e.kind(), ErrorKind::Overflow);
    // Checked before the call (iommufd alone would say ENOENT).
    let e = container.unmap_dma(IOVA + 1, page).expect_err("misaligned");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    assert_eq!(container.unmap_all().expect("unmap all"), 2 * page);
    assert_eq!(container.unmap_all().expect("idempotent"), 0);
    drop(m); // its unmap sees NotMapped and frees the buffer

    // The range-by-range fallback unmaps the same.
    let m = container
        .map_buffer(
            IOVA,
            DmaBuffer::new(page as usize).expect("b"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    assert_eq!(container.unmap_each_range().expect("by ranges"), page);
    drop(m);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn features_probe_and_hot_reset_info_are_typed() {
    let (_c, edu) = open_edu();
    // edu has no migration driver.
    assert!(
        !edu.probe_feature(feature::MIGRATION)
            .expect("probe migration")
            .get
    );
    let lp = edu
        .probe_feature(feature::LOW_POWER_ENTRY)
        .expect("probe low power");
    eprintln!("low power entry: {lp:?}");
    if lp.set {
        edu.low_power_entry().expect("enter low power");
        let bar0 = edu.region(0).expect("BAR0");
        assert!(!bar0.fast_path_covers(0, 4), "no fast path in low power");
        edu.low_power_exit().expect("leave low power");
    }
    match edu.pci_hot_reset_info() {
        Ok(info) => {
            eprintln!("hot reset affects {:?}", info.devices);
            assert!(info.devices.iter().any(|d| d.address() == edu_bdf()));
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}"),
    }
    if edu.info().can_reset() {
        edu.reset().expect("reset");
    } else {
        assert!(edu.reset().is_err());
    }
    // The config region keeps working after all of it.
    assert_eq!(edu.vendor_id().expect("vendor"), 0x1234);
    let e = edu
        .feature(vfio_hal::FeatureOp::Get, 8, &mut [0u8; 32])
        .expect_err("refused");
    assert_eq!(
        e.kind(),
        ErrorKind::NotSupported,
        "DMA logging report carries a pointer"
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn msix_device_has_sparse_or_msix_mappable_bar_and_loopback_vectors() {
    let container = LegacyContainer::open().expect("container");
    let nvme = container
        .open_device(&lane::lane_env(lane::MSIX_BDF))
        .expect("open the MSI-X device");
    nvme.set_bus_master(true).expect("bus master");
    assert!(nvme
        .find_capability(cfg::CAP_ID_MSIX)
        .expect("walk")
        .is_some());
    let bar0 = nvme.region(0).expect("BAR0");
    let areas = bar0.info().mappable_areas();
    assert!(!areas.is_empty(), "{:?}", bar0.info());
    eprintln!(
        "nvme BAR0: size {:#x}, sparse {:?}, msix mappable {}",
        bar0.info().size,
        bar0.info().sparse_areas(),
        bar0.info().msix_mappable()
    );
    // The version register through the fast path and through pread agree.
    let vs_fast: u32 = bar0.read_at(0x08).expect("VS");
    nvme.set_fast_path(false);
    let vs_pread: u32 = bar0.read_at(0x08).expect("VS by pread");
    nvme.set_fast_path(true);
    assert_eq!(vs_fast, vs_pread);
    assert!(vs_fast >> 16 >= 1, "NVMe major version {vs_fast:#x}");

    let msix = nvme.irq(MSIX).expect("MSI-X");
    assert!(msix.info().count >= 2, "{:?}", msix.info());
    let (a, b) = (
        EventFd::nonblocking().expect("eventfd"),
        EventFd::nonblocking().expect("eventfd"),
    );
    msix.set_eventfds(0, &[Some(a.as_fd()), Some(b.as_fd())])
        .expect("route two vectors");
    msix.trigger(1, 1).expect("loopback vector 1");
    assert_eq!(b.wait(TIMEOUT).expect("wait"), 1);
    assert_eq!(a.wait(Duration::from_millis(100)).expect("wait"), 0);
    msix.disable().expect("disable");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn dropping_everything_returns_every_fd() {
    let before = open_fds();
    for _ in 0..3 {
        let (container, edu) = open_edu();
        edu.update_command(cfg::CMD_MEMORY, 0).expect("decode");
        let bar0 = edu.region(0).expect("BAR0");
        assert_eq!(bar0.read_at::<u32>(0).expect("ident"), EDU_IDENT);
        let _areas = bar0.mmap().expect("mmap");
        let efd = EventFd::nonblocking().expect("eventfd");
        edu.irq(MSI)
            .expect("MSI")
            .set_eventfd(0, Some(efd.as_fd()))
            .expect("route");
        let _m = container
            .map_buffer(IOVA, DmaBuffer::new(4096).expect("b"), DmaAccess::ReadWrite)
            .expect("map");
        assert_eq!(edu.keep_fds().len(), 3, "device, group, container");
        // Dropped with a live mapping, a routed interrupt and mmaps.
    }
    assert_eq!(open_fds(), before, "fds leaked");
    // And the device opens again.
    let (_c, edu) = open_edu();
    assert_eq!(edu.config().expect("config").info().index, CONFIG);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn groups_several_in_one_container() {
    let (container, edu) = open_edu();
    let spare = container
        .open_device(&lane::lane_env(lane::SPARE_BDF))
        .expect("open the spare edu");
    let ids = container.group_ids();
    assert_eq!(
        ids.len(),
        2,
        "edu and the spare in separate groups: {ids:?}"
    );
    let group = container.group_of(&edu_bdf()).expect("edu's group");
    let status = group.status().expect("status");
    assert!(status.viable && status.container_set, "{status:?}");
    // One address space for both.
    let m = container
        .map_buffer(IOVA, DmaBuffer::new(4096).expect("b"), DmaAccess::ReadWrite)
        .expect("map");
    drop(spare);
    assert_eq!(container.group_ids().len(), 1, "the spare's group left");
    drop(m);
    drop(edu);
    drop(group);
    assert!(container.group_ids().is_empty());
}

/// Runs last (name order): the spare edu leaves the guest for good, hot
/// unplugged while a thread reads its BAR; the driver revokes it on REQ
/// (see `vfio_hal_guest_tests::unplug`). Its group goes with its container
/// link; the container and edu are unaffected and nothing leaks.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn zz_device_del_in_use_req_revoke_device_gone_clean_drop() {
    let (container, edu) = open_edu();
    let fds_before = open_fds();
    let spare_bdf = lane::lane_env(lane::SPARE_BDF);
    let group = {
        let spare = container
            .open_device(&spare_bdf)
            .expect("open the spare edu");
        let group = container.group_of(&spare_bdf).expect("spare's group");
        lane::unplug::unplug_while_in_use(
            "legacy",
            spare,
            &lane::lane_env(lane::SPARE_ID),
            &spare_bdf,
        );
        group
    };
    assert_eq!(
        open_fds(),
        fds_before + 1,
        "besides the spare's group, every fd of the unplug is closed"
    );
    drop(group);
    assert_eq!(container.group_ids().len(), 1, "the spare's group left");
    assert_eq!(open_fds(), fds_before, "the spare's group fd is closed");

    // The container and edu are unaffected.
    let m = container
        .map_buffer(IOVA, DmaBuffer::new(4096).expect("b"), DmaAccess::ReadWrite)
        .expect("map after the unplug");
    assert_eq!(edu.vendor_id().expect("vendor"), 0x1234);
    drop(m);
}

/// The peer of peer-to-peer DMA: an edu that stays for the whole boot.
fn peer_bdf() -> String {
    lane::lane_env(lane::PEER_BDF)
}

fn igb_bdf() -> String {
    lane::lane_env(lane::IGB_BDF)
}

/// type1 maps the PFNs of another device's mmapped BAR, so edu's DMA reaches
/// the peer edu's register; iommufd's compat container pins pages and
/// refuses the same map with the kernel's errno.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn peer_to_peer_dma_into_another_devices_bar() {
    let (container, edu) = open_edu();
    let peer = container
        .open_device(&peer_bdf())
        .expect("open the peer edu");
    let mapped = lane::peer::map_peer_bar(&container, &peer);
    if lane::kernel_flavour() == lane::KernelFlavour::Compat {
        let e = mapped.expect_err("iommufd pins pages: no PFN-mapped BAR");
        eprintln!("compat container refuses a peer BAR: {e}");
        assert_eq!(e.errno(), Some(libc::EFAULT), "{e}");
        return;
    }
    let window = mapped.expect("map the peer's BAR 0");
    let seen = lane::peer::edu_dma_into_peer_liveness(&container, &edu, &window, 0x5eed_0001);
    assert_eq!(
        seen, !0x5eed_0001,
        "the peer's register did not get edu's write"
    );
    drop(window);
    assert_eq!(
        container.unmap_all().expect("unmap all"),
        0,
        "the window was unmapped"
    );
}

/// vfio-pci has no migration driver for edu: every migration and DMA
/// logging call is the kernel's `ENOTTY` (kind `NotSupported`), through the
/// typed calls too, and a raw `MIG_DEVICE_STATE` SET is refused before the
/// ioctl.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn migration_of_edu_is_not_supported_by_vfio_pci() {
    use vfio_hal::migration::MigrationState;
    let (_container, edu) = open_edu();
    let not_supported = |what: &str, e: vfio_hal::Error| {
        assert_eq!(
            (e.kind(), e.errno()),
            (ErrorKind::NotSupported, Some(libc::ENOTTY)),
            "{what}: {e}"
        );
    };
    not_supported("flags", edu.migration_flags().expect_err("no driver"));
    not_supported("state", edu.migration_state().expect_err("no driver"));
    not_supported(
        "set",
        edu.set_migration_state(MigrationState::Stop)
            .expect_err("no driver"),
    );
    let e = edu
        .feature(
            vfio_hal::FeatureOp::Set,
            feature::MIG_DEVICE_STATE,
            &mut [1, 0, 0, 0, 0, 0, 0, 0],
        )
        .expect_err("raw SET");
    assert!(e.errno().is_none(), "refused before the ioctl: {e}");
    // Nor has it device DMA logging (a variant driver's).
    not_supported(
        "logging start",
        edu.dma_logging_start(4096, &[(IOVA, 4096)])
            .expect_err("no logging"),
    );
    not_supported(
        "logging report",
        edu.dma_logging_report(IOVA, 4096, 4096)
            .expect_err("no logging"),
    );
}

/// type1 dirty tracking on edu: while it runs, a DMA write by edu shows in
/// the bitmap. vfio-pci does not pin pages, so type1 cannot tell which
/// pages the device wrote and reports every page of the mapping dirty, on
/// every read; with tracking stopped a read is refused. iommufd's compat
/// container has no type1 dirty tracking: `NotSupported`.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn type1_dirty_pages_report_the_mapping_edu_wrote() {
    const PAGE: u64 = 4096;
    let (container, edu) = open_edu();
    if lane::kernel_flavour() == lane::KernelFlavour::Compat {
        let e = container.set_dirty_tracking(true).expect_err("compat");
        assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
        return;
    }
    edu.set_bus_master(true).expect("bus master");
    let ram = container
        .map_buffer(
            IOVA,
            DmaBuffer::new(4 * PAGE as usize).expect("buffer"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    let bar0 = edu.region(0).expect("BAR0");
    container.set_dirty_tracking(true).expect("start");
    bar0.write_at(0x80, 0x40000u64).expect("src");
    bar0.write_at(0x88, IOVA + 2 * PAGE).expect("dst");
    bar0.write_at(0x90, 64u64).expect("count");
    bar0.write_at(0x98, 3u64).expect("device buffer -> RAM");
    let deadline = Instant::now() + TIMEOUT;
    while bar0.read_at::<u64>(0x98).expect("cmd") & 1 != 0 {
        assert!(Instant::now() < deadline, "edu DMA did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let every_page: Vec<u64> = (0..4).map(|p| IOVA + p * PAGE).collect();
    for read in ["first", "second"] {
        let bitmap = container
            .read_dirty(IOVA, 4 * PAGE, PAGE, false)
            .expect("read dirty");
        assert!(
            bitmap.is_dirty(IOVA + 2 * PAGE).expect("in range"),
            "{read} read: {:x?}",
            bitmap.words()
        );
        assert_eq!(
            bitmap.dirty().collect::<Vec<_>>(),
            every_page,
            "{read} read"
        );
    }
    let e = container
        .read_dirty(IOVA, 4 * PAGE, PAGE, true)
        .expect_err("type1 always clears");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    container.set_dirty_tracking(false).expect("stop");
    let e = container
        .read_dirty(IOVA, 4 * PAGE, PAGE, false)
        .expect_err("not tracking");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    drop(ram);
}

/// A bus reset behind the igb's root port, owned through the container's
/// groups: igb's registers read their reset values afterwards, its config
/// space is restored and its BAR serves again; without the groups the
/// kernel refuses.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn pci_hot_reset_through_the_containers_groups() {
    let container = LegacyContainer::open().expect("container");
    let igb = container.open_device(&igb_bdf()).expect("open igb");
    let info = igb.pci_hot_reset_info().expect("hot reset info");
    eprintln!("igb hot reset affects {info:?}");
    assert_eq!(info.flags & vfio_hal_linux::devfd::HotResetInfo::DEV_ID, 0);
    assert_eq!(info.devices.len(), 1, "igb is alone behind its root port");
    assert_eq!(info.devices[0].address(), igb_bdf());
    let group = container.group_of(&igb_bdf()).expect("igb's group");
    assert_eq!(info.devices[0].id, group.id());

    let held = lane::igb::leave_reset_mark(&igb);
    let command = igb
        .config()
        .and_then(|c| c.read_at::<u16>(cfg::COMMAND))
        .expect("command");
    // The group-less form is the cdev's: refused for a group-opened device.
    let e = igb.pci_hot_reset(&[]).expect_err("no groups");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    assert_eq!(
        lane::igb::reset_mark(&igb),
        held,
        "a refused reset reset nothing"
    );

    container.pci_hot_reset(&igb).expect("hot reset");
    assert_eq!(lane::igb::reset_mark(&igb), 0, "igb's registers were reset");
    assert_eq!(igb.vendor_id().expect("vendor"), 0x8086);
    assert_eq!(
        igb.config()
            .and_then(|c| c.read_at::<u16>(cfg::COMMAND))
            .expect("command"),
        command,
        "the kernel restored the command register"
    );
    lane::igb::leave_reset_mark(&igb);

    // A reset that would also reset a group the container does not hold is
    // refused before the kernel is asked: edu's container knows no igb.
    let (other, _edu) = open_edu();
    let e = other
        .pci_hot_reset(&igb)
        .expect_err("igb's group is not in it");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::Busy, Some(libc::EINVAL)),
        "{e}"
    );
    // edu on the root bus: no slot or bus reset reaches it.
    let edu = other.open_device(&edu_bdf()).expect("edu");
    let e = other.pci_hot_reset(&edu).expect_err("root bus");
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
}

/// The ERR interrupt of a PCIe device with AER: an error the host injects
/// at igb's root port reaches igb's eventfd through the guest's AER driver
/// and vfio-pci, and the device still answers after recovery.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn err_irq_fires_on_an_injected_aer_error() {
    let container = LegacyContainer::open().expect("container");
    let igb = container.open_device(&igb_bdf()).expect("open igb");
    let took =
        lane::igb::err_fires_on_an_error_at_its_port(&igb, &lane::lane_env(lane::IGB_PORT_ID));
    eprintln!("ERR signalled {took:?} after the injection");
    assert_eq!(igb.vendor_id().expect("vendor after recovery"), 0x8086);
}

/// A VF of a PF bound to vfio-pci opens only with the PF's VF token; while
/// it is open, the PF itself opens only with it too.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn vf_token_gates_opening_a_virtual_function() {
    let pf_bdf = igb_bdf();
    let vfs = lane::igb::VirtualFunctions::create(&pf_bdf, 1).expect("create a VF");
    let vf_bdf = vfs.addresses()[0].clone();
    eprintln!("igb VF at {vf_bdf}");
    let container = LegacyContainer::open().expect("container");
    let token = VfToken::from_bytes(*b"vfio-hal-lane-vf");
    let wrong = VfToken::from_bytes([0x55; 16]);
    {
        let pf = container.open_device(&pf_bdf).expect("open the PF");
        pf.set_vf_token(&token).expect("set the VF token");
        for (what, result) in [
            ("no token", container.open_device(&vf_bdf)),
            (
                "a wrong token",
                container.open_device_with_vf_token(&vf_bdf, &wrong),
            ),
        ] {
            let e = result.expect_err(what);
            assert_eq!(
                (e.kind(), e.errno()),
                (ErrorKind::PermissionDenied, Some(libc::EACCES)),
                "{what}: {e}"
            );
        }
        let vf = container
            .open_device_with_vf_token(&vf_bdf, &token)
            .expect("the VF opens with the PF's token");
        assert_eq!(vf.device_id().expect("device id"), lane::igb::VF_DEVICE_ID);
        // While a VF is in use, the PF opens only with the token as well.
        let e = container
            .open_device(&pf_bdf)
            .expect_err("PF without the token");
        assert_eq!(e.errno(), Some(libc::EACCES), "{e}");
        drop(
            container
                .open_device_with_vf_token(&pf_bdf, &token)
                .expect("PF with it"),
        );
        drop(vf);
    }
    // A token for a device that is neither PF nor VF is refused.
    let e = container
        .open_device_with_vf_token(&edu_bdf(), &token)
        .expect_err("edu has no VFs");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    drop(container);
    drop(vfs);
    assert!(
        !lane::pci_device_dir(&vf_bdf).exists(),
        "the VF is gone again"
    );
}

/// Polls the device's runtime PM status until it reads `want`.
fn wait_runtime_pm(bdf: &str, want: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = lane::runtime_pm_status(bdf).expect("power/runtime_status");
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{bdf}: runtime PM {status}, waited for {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Low power on a device whose PM capability allows D3hot (igb): entry
/// really suspends it; with a wakeup eventfd the next access resumes it,
/// signals the eventfd once and ends low power; without one an access is
/// served and the device suspends again until the exit.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn low_power_suspends_the_device_and_an_access_wakes_it() {
    let bdf = igb_bdf();
    let container = LegacyContainer::open().expect("container");
    let igb = container.open_device(&bdf).expect("open igb");
    wait_runtime_pm(&bdf, "active");
    let power_state = || {
        std::fs::read_to_string(lane::pci_device_dir(&bdf).join("power_state"))
            .expect("power_state")
            .trim()
            .to_owned()
    };

    let wakeup = EventFd::nonblocking().expect("eventfd");
    igb.low_power_entry_with_wakeup(wakeup.as_fd())
        .expect("enter low power with wakeup");
    wait_runtime_pm(&bdf, "suspended");
    assert_eq!(power_state(), "D3hot", "igb's PM capability allows D3hot");
    assert!(
        !wakeup.poll(Duration::from_millis(100)).expect("poll"),
        "woken without an access"
    );
    assert_eq!(igb.vendor_id().expect("a config read wakes it"), 0x8086);
    assert!(
        wakeup.poll(TIMEOUT).expect("poll"),
        "the access did not signal the wakeup"
    );
    assert_eq!(wakeup.take().expect("read"), 1);
    assert_eq!(power_state(), "D0");
    // Woken, it left low power: a new entry is allowed (not EINVAL).
    igb.low_power_entry().expect("enter low power again");
    wait_runtime_pm(&bdf, "suspended");
    let bar0 = igb.region(0).expect("BAR 0");
    let e = igb.low_power_entry().expect_err("already in low power");
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    // The refusal leaves the mmap fast path off: the kernel zapped the BAR.
    assert!(!bar0.fast_path_covers(0, 4), "fast path on in low power");
    // Without a wakeup eventfd an access is served and the device goes
    // back to sleep: it is still in low power until the exit.
    assert_eq!(igb.vendor_id().expect("config read in low power"), 0x8086);
    wait_runtime_pm(&bdf, "suspended");
    assert!(
        !wakeup.poll(Duration::from_millis(100)).expect("poll"),
        "no eventfd now"
    );
    igb.low_power_exit().expect("leave low power");
    wait_runtime_pm(&bdf, "active");
    assert_eq!(power_state(), "D0");
    igb.low_power_exit().expect("leaving twice is fine");
}

/// The kernel's mtty sample through its (emulated) group: opened by UUID
/// and by sysfs path, with migration v2 and DMA logging, and its serial
/// registers and FIFO migrated into a second instance.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn mtty_opens_through_its_group_and_its_serial_state_migrates() {
    let (src, dst) = (
        lane::lane_env(lane::MTTY_SRC),
        lane::lane_env(lane::MTTY_DST),
    );
    let container = LegacyContainer::open().expect("container");
    let seen = lane::mtty::opens_by_path_with_migration_and_logging(&container, &src)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{seen}");
    let group = container.group_of(&src).expect("mtty's group");
    assert_ne!(
        group.id(),
        container.group_of(&dst).expect("group").id(),
        "each mdev has its own group"
    );
    let migrated =
        lane::mtty::serial_state_migrates(&container, &src, &dst).unwrap_or_else(|e| panic!("{e}"));
    println!("{migrated}");
}
