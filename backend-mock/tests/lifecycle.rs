//! Plug, open, close, reset, unplug; config-space virtualization; features.

mod common;

use common::{copy_engine, edu, reg32, set_reg32, DMA, EDU};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::pci::{cfg, region};
use vfio_hal::prelude::*;
use vfio_hal::{dynamic, Container, DmaAccess, DmaBuffer, ErrorKind, FeatureOp};
use vfio_hal_mock::models::{edu::reg, CopyEngine, Edu};
use vfio_hal_mock::{
    BarLayout, DeviceContext, DeviceModel, MockContainer, MockDevice, MockIrq, MockRegion,
    PciLayout,
};

fn assert_send_sync<T: Send + Sync + std::fmt::Debug + 'static>() {}

#[test]
fn the_handles_are_send_sync_debug_and_static() {
    assert_send_sync::<MockContainer>();
    assert_send_sync::<MockDevice>();
    assert_send_sync::<MockRegion>();
    assert_send_sync::<MockIrq>();
}

#[test]
fn open_errors_not_found_and_busy_and_reopen_after_close() {
    let c = MockContainer::new();
    assert_eq!(
        c.open_device("nothing").expect_err("unknown").kind(),
        ErrorKind::NotFound
    );
    c.plug(EDU, Edu::new()).expect("plug");
    assert_eq!(
        c.plug(EDU, Edu::new()).expect_err("duplicate").kind(),
        ErrorKind::Busy
    );
    let dev = c.open_device(EDU).expect("open");
    assert_eq!(
        c.open_device(EDU).expect_err("already open").kind(),
        ErrorKind::Busy
    );
    let bar = dev.region(0).expect("bar0");
    drop(dev);
    let busy = c
        .open_device(EDU)
        .expect_err("a region handle keeps the device open");
    assert_eq!(
        (busy.kind(), busy.errno()),
        (ErrorKind::Busy, Some(libc::EBUSY))
    );
    // The message says why, not just "busy".
    let message = busy.to_string();
    assert!(
        message.contains("still open") && message.contains("region or irq"),
        "{message}"
    );
    assert_eq!(
        bar.read_at::<u32>(reg::ID).expect("still usable"),
        reg::ID_VALUE
    );
    drop(bar);
    c.open_device(EDU).expect("reopen after the last handle");
    assert_eq!(c.devices(), vec![EDU.to_owned()]);
}

#[test]
fn closing_resets_config_and_interrupts_and_edu_keeps_its_registers() {
    let (c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    dev.irq(index::MSI)
        .and_then(|i| i.set_eventfd(0, Some(msi.as_fd())))
        .expect("MSI");
    dev.set_bus_master(true).expect("bus master");
    set_reg32(&dev, reg::LIVENESS, 5);
    drop(dev);
    let dev = c.open_device(EDU).expect("reopen");
    // vfio-pci's reset on close finds no reset handler in QEMU's edu.
    assert_eq!(reg32(&dev, reg::LIVENESS), !5, "edu keeps its registers");
    assert_eq!(
        dev.command().expect("cmd"),
        cfg::CMD_MEMORY,
        "as vfio-pci enables it"
    );
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(
        msi.take().expect("read eventfd"),
        0,
        "routes were torn down on close"
    );
    // MSI is off again, so INTx could be enabled.
    let intx = EventFd::nonblocking().expect("eventfd");
    dev.irq(index::INTX)
        .and_then(|i| i.set_eventfd(0, Some(intx.as_fd())))
        .expect("INTx");
    assert_eq!(
        intx.take().expect("read eventfd"),
        1,
        "the still-raised line fires"
    );
}

#[test]
fn unplug_makes_every_operation_device_gone() {
    let (c, dev) = edu().expect("edu");
    let bar = dev.region(0).expect("bar0");
    let msi = dev.irq(index::MSI).expect("msi");
    let efd = EventFd::nonblocking().expect("eventfd");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("route");
    c.unplug(EDU).expect("unplug");
    let gone = |e: vfio_hal::Error| {
        assert_eq!(
            (e.kind(), e.errno()),
            (ErrorKind::DeviceGone, Some(libc::ENODEV)),
            "{e}"
        );
    };
    gone(bar.read_at::<u32>(0).expect_err("read"));
    gone(bar.write_at::<u32>(4, 0).expect_err("write"));
    gone(bar.mmap().expect_err("mmap"));
    gone(msi.trigger(0, 1).expect_err("irq"));
    gone(dev.region(0).expect_err("region"));
    gone(dev.irq(0).expect_err("irq"));
    gone(dev.reset().expect_err("reset"));
    gone(
        dev.config()
            .and_then(|c| c.read_at::<u16>(0))
            .expect_err("config"),
    );
    assert_eq!(
        c.open_device(EDU).expect_err("removed").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        c.unplug(EDU).expect_err("twice").kind(),
        ErrorKind::NotFound
    );
    // The name is free again.
    c.plug(EDU, Edu::new()).expect("re-plug");
    c.open_device(EDU)
        .expect("the new device opens while the old handles live");
}

#[test]
fn request_unplug_signals_req_and_reports_whether_anyone_listens() {
    let c = MockContainer::new();
    c.plug(EDU, Edu::new()).expect("plug");
    assert!(!c.request_unplug(EDU).expect("not open"));
    assert_eq!(
        c.request_unplug("nothing").expect_err("unknown").kind(),
        ErrorKind::NotFound
    );
    let dev = c.open_device(EDU).expect("open");
    assert!(!c.request_unplug(EDU).expect("no REQ eventfd"));
    let req = EventFd::nonblocking().expect("eventfd");
    dev.irq(index::REQ)
        .and_then(|i| i.set_eventfd(0, Some(req.as_fd())))
        .expect("REQ");
    assert!(c.request_unplug(EDU).expect("signalled"));
    assert_eq!(req.take().expect("read eventfd"), 1);
    // The driver releases the device, then the host removes it.
    drop(dev);
    c.unplug(EDU).expect("unplug");
    assert!(c.devices().is_empty());
}

#[test]
fn config_space_enforces_read_only_w1c_and_writable_bits() {
    let (_c, dev) = edu().expect("edu");
    let config = dev.config().expect("config");
    config.write_at::<u32>(cfg::VENDOR_ID, 0).expect("ignored");
    assert_eq!(dev.vendor_id().expect("vendor"), 0x1234);
    config.write_at::<u16>(cfg::COMMAND, 0xffff).expect("write");
    assert_eq!(
        dev.command().expect("cmd"),
        0x0507,
        "only the writable command bits (QEMU's: no parity error response)"
    );
    config
        .write_at::<u16>(cfg::COMMAND, cfg::CMD_MEMORY)
        .expect("write");
    config.write_at::<u8>(0x3c, 0x0b).expect("interrupt line");
    assert_eq!(config.read_at::<u8>(0x3c).expect("line"), 0x0b);
    config
        .write_at::<u8>(cfg::INTERRUPT_PIN, 4)
        .expect("ignored");
    assert_eq!(config.read_at::<u8>(cfg::INTERRUPT_PIN).expect("pin"), 1);
    let status = config.read_at::<u16>(cfg::STATUS).expect("status");
    assert_eq!(status & cfg::STATUS_CAP_LIST, cfg::STATUS_CAP_LIST);
    config
        .write_at::<u16>(cfg::STATUS, 0xffff)
        .expect("w1c everything");
    assert_eq!(
        config.read_at::<u16>(cfg::STATUS).expect("status"),
        status,
        "no error bit was set"
    );
    config.write_at::<u32>(0x30, u32::MAX).expect("ROM BAR");
    assert_eq!(config.read_at::<u32>(0x30).expect("rom"), 0, "no ROM");
    // Whole-space snapshots and the end of the space.
    let mut all = [0u8; 256];
    config.read(0, &mut all).expect("snapshot");
    assert_eq!(&all[..2], &[0x34, 0x12]);
    assert_eq!(
        config.read_at::<u32>(256).expect_err("past the end").kind(),
        ErrorKind::OutOfRange
    );
}

#[test]
fn pcie_config_space_is_4k_with_no_extended_capabilities() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let config = dev.config().expect("config");
    assert_eq!(config.read_at::<u32>(0x100).expect("ext header"), 0);
    assert_eq!(config.read_at::<u32>(0xffc).expect("last dword"), 0);
    let exp = dev
        .find_capability(cfg::CAP_ID_EXP)
        .expect("walk")
        .expect("PCIe cap");
    assert_eq!(
        config
            .read_at::<u16>(u64::from(exp.offset) + 2)
            .expect("flags")
            & 0xf,
        2
    );
}

#[test]
fn absent_regions_and_unwritable_regions_fail_cleanly() {
    let (_c, dev) = edu().expect("edu");
    let rom = dev.region(region::ROM).expect("rom");
    assert_eq!(
        rom.read_at::<u32>(0).expect_err("absent").kind(),
        ErrorKind::NotSupported
    );
    assert_eq!(
        rom.mmap().expect_err("absent").kind(),
        ErrorKind::NotSupported
    );
    let config = dev.config().expect("config");
    assert_eq!(
        config.mmap().expect_err("config").kind(),
        ErrorKind::NotSupported
    );
}

#[test]
fn features_other_than_low_power_are_not_supported() {
    let (_c, dev) = edu().expect("edu");
    let support = dev
        .probe_feature(vfio_hal::device::feature::MIGRATION)
        .expect("probe");
    assert!(!support.get && !support.set);
    let e = dev
        .feature(FeatureOp::Get, 1, &mut [])
        .expect_err("no features");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::NotSupported, Some(libc::ENOTTY))
    );
    assert!(dev.keep_fds().is_empty());
}

#[test]
fn the_mock_erases_to_the_dynamic_types() {
    let c = MockContainer::new();
    c.plug(DMA, CopyEngine::new()).expect("plug");
    let erased = dynamic::erase_container(c.clone());
    let dev = erased.open_device(DMA).expect("open");
    assert_eq!(dev.vendor_id().expect("vendor"), 0x1234);
    let buf = DmaBuffer::new(4096).expect("alloc");
    let mapping = erased
        .map_buffer(0x1000, buf, DmaAccess::ReadWrite)
        .expect("map");
    assert_eq!(c.mapping_count(), 1);
    drop(mapping);
    assert_eq!(c.mapping_count(), 0);
}

#[test]
fn devices_in_one_container_share_its_iommu() {
    let c = MockContainer::new();
    c.plug(EDU, Edu::new()).expect("edu");
    c.plug(DMA, CopyEngine::new()).expect("copy engine");
    let e = c.open_device(EDU).expect("open");
    let d = c.open_device(DMA).expect("open");
    e.set_bus_master(true).expect("bm");
    d.set_bus_master(true).expect("bm");
    let buf = c
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(8192).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    buf.buffer().write(0, b"shared").expect("fill");
    let bar = d.region(0).expect("bar0");
    use vfio_hal_mock::models::copy_engine::reg as ce;
    bar.write_at::<u64>(ce::SRC, 0x10_0000).expect("src");
    bar.write_at::<u64>(ce::DST, 0x10_1000).expect("dst");
    bar.write_at::<u32>(ce::LEN, 6).expect("len");
    bar.write_at::<u32>(ce::DOORBELL, ce::DOORBELL_GO)
        .expect("go");
    let edu_bar = e.region(0).expect("bar0");
    edu_bar
        .write_at::<u64>(reg::DMA_SRC, 0x10_1000)
        .expect("src");
    edu_bar
        .write_at::<u64>(reg::DMA_DST, reg::DMA_START)
        .expect("dst");
    edu_bar.write_at::<u64>(reg::DMA_CNT, 6).expect("count");
    edu_bar
        .write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN)
        .expect("cmd");
    edu_bar
        .write_at::<u64>(reg::DMA_SRC, reg::DMA_START)
        .expect("src");
    edu_bar
        .write_at::<u64>(reg::DMA_DST, 0x10_0100)
        .expect("dst");
    edu_bar
        .write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR)
        .expect("cmd");
    let mut out = [0u8; 6];
    buf.buffer().read(0x100, &mut out).expect("read");
    assert_eq!(&out, b"shared");
}

/// A model with a deliberately broken layout.
#[derive(Debug)]
struct Broken(PciLayout);

impl DeviceModel for Broken {
    fn layout(&self) -> PciLayout {
        self.0.clone()
    }
    fn read(
        &mut self,
        _: &mut DeviceContext<'_>,
        _: u32,
        _: u64,
        d: &mut [u8],
    ) -> vfio_hal::Result<()> {
        d.fill(0);
        Ok(())
    }
    fn write(
        &mut self,
        _: &mut DeviceContext<'_>,
        _: u32,
        _: u64,
        _: &[u8],
    ) -> vfio_hal::Result<()> {
        Ok(())
    }
    fn reset(&mut self, _: &mut DeviceContext<'_>) {}
}

#[test]
fn inconsistent_layouts_are_refused_at_plug() {
    let c = MockContainer::new();
    let base = PciLayout::new(0x1234, 1);
    let mut cases = Vec::new();
    let mut l = base.clone();
    l.bars[0] = Some(BarLayout::memory32(3000));
    cases.push(("size not a power of two", l));
    let mut l = base.clone();
    l.bars[5] = Some(BarLayout::memory64(4096));
    cases.push(("64-bit BAR in the last slot", l));
    let mut l = base.clone();
    l.bars[0] = Some(BarLayout::memory32(0x2000).with_ram(0x800, 0x1000));
    cases.push(("unaligned RAM", l));
    let mut l = base.clone();
    l.bars[0] = Some(BarLayout::memory32(0x2000).with_ram(0x1000, 0x2000));
    cases.push(("RAM past the BAR", l));
    let mut l = base.clone();
    l.msi = Some(vfio_hal_mock::MsiLayout {
        vectors: 3,
        addr64: false,
    });
    cases.push(("3 MSI vectors", l));
    let mut l = base;
    l.msix = Some(vfio_hal_mock::MsixLayout {
        vectors: 4,
        table_bar: 1,
        table_offset: 0,
        pba_bar: 1,
        pba_offset: 0x800,
    });
    cases.push(("MSI-X in a missing BAR", l));
    for (what, layout) in cases {
        let e = c.plug(what, Broken(layout)).expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
    }
    assert!(c.devices().is_empty());
}
