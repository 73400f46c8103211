//! The edu model, register by register, through the hal traits only.

mod common;

use std::time::Duration;

use common::{edu, reg32, set_reg32, set_reg64, EDU};
use rstest::rstest;
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::{flags as iflags, index};
use vfio_hal::pci::{cfg, region};
use vfio_hal::prelude::*;
use vfio_hal::region::flags as rflags;
use vfio_hal::{Container, DmaAccess, DmaBuffer, ErrorKind};
use vfio_hal_mock::models::edu::{self, reg, Edu};
use vfio_hal_mock::{DmaDirection, FaultReason, Incident, MockContainer, MockDevice};

fn bar0(dev: &MockDevice) -> vfio_hal_mock::MockRegion {
    dev.region(0).expect("BAR0")
}

// ---- Identity, regions, irqs --------------------------------------------

#[test]
fn pci_identity_is_qemus() {
    let (_c, dev) = edu().expect("edu");
    assert_eq!(dev.vendor_id().expect("vendor"), 0x1234);
    assert_eq!(dev.device_id().expect("device"), 0x11e8);
    assert_eq!(dev.revision().expect("revision"), 0x10);
    assert_eq!(dev.class_code().expect("class"), 0x00ff00);
    let config = dev.config().expect("config");
    assert_eq!(config.read_at::<u8>(cfg::INTERRUPT_PIN).expect("pin"), 1);
    assert_eq!(config.read_at::<u8>(cfg::HEADER_TYPE).expect("header"), 0);
}

#[test]
fn msi_capability_has_one_64bit_vector_without_masking_and_there_is_no_msix() {
    let (_c, dev) = edu().expect("edu");
    let caps = dev.capabilities().expect("caps");
    assert_eq!(caps.len(), 1);
    let msi = dev
        .find_capability(cfg::CAP_ID_MSI)
        .expect("walk")
        .expect("MSI");
    let ctrl = dev
        .config()
        .and_then(|c| c.read_at::<u16>(u64::from(msi.offset) + 2))
        .expect("control");
    assert_eq!(ctrl & (1 << 7), 1 << 7, "64-bit");
    assert_eq!(ctrl & 0x0e, 0, "one vector");
    assert_eq!(ctrl & (1 << 8), 0, "no per-vector masking");
    assert_eq!(ctrl & 1, 0, "disabled");
    assert!(dev
        .find_capability(cfg::CAP_ID_MSIX)
        .expect("walk")
        .is_none());
}

#[test]
fn device_info_regions_and_irqs_are_laid_out_like_vfio_pci() {
    let (_c, dev) = edu().expect("edu");
    let info = dev.info();
    assert_eq!(info.name, EDU);
    assert_eq!(info.kind(), vfio_hal::DeviceKind::Pci);
    assert!(info.can_reset());
    assert_eq!((info.num_regions, info.num_irqs), (9, 5));

    let bar = bar0(&dev);
    assert_eq!(bar.info().size, 1 << 20);
    assert_eq!(bar.info().flags, rflags::READ | rflags::WRITE);
    assert_eq!(bar.info().offset, 0);
    assert_eq!(
        bar.mmap().expect_err("handler-backed").kind(),
        ErrorKind::NotSupported
    );
    for i in [1, 2, 3, 4, 5, region::ROM, region::VGA] {
        assert_eq!(dev.region(i).expect("region").info().size, 0, "region {i}");
    }
    let config = dev.region(region::CONFIG).expect("config");
    assert_eq!((config.info().size, config.info().offset), (256, 7 << 40));
    assert_eq!(
        dev.region(9).expect_err("no region 9").kind(),
        ErrorKind::InvalidArgument
    );

    let irq = |i| dev.irq(i).expect("irq").info();
    assert_eq!(
        irq(index::INTX).flags,
        iflags::EVENTFD | iflags::MASKABLE | iflags::AUTOMASKED
    );
    assert_eq!(irq(index::INTX).count, 1);
    assert_eq!(
        (irq(index::MSI).count, irq(index::MSI).flags),
        (1, iflags::EVENTFD | iflags::NORESIZE)
    );
    assert_eq!(irq(index::MSIX).count, 0);
    assert_eq!(
        (irq(index::ERR).count, irq(index::ERR).flags),
        (0, 0),
        "conventional PCI: vfio-pci has no ERR index"
    );
    assert_eq!(
        (irq(index::REQ).count, irq(index::REQ).flags),
        (1, iflags::EVENTFD | iflags::NORESIZE)
    );
    assert_eq!(
        dev.irq(5).expect_err("no index 5").kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn bar0_sizes_through_config_space_and_memory_decode_is_on_after_open() {
    let (_c, dev) = edu().expect("edu");
    let config = dev.config().expect("config");
    let original = config.read_at::<u32>(cfg::BAR0).expect("bar");
    assert_eq!(original & 0xf, 0, "32-bit non-prefetchable memory");
    config.write_at::<u32>(cfg::BAR0, u32::MAX).expect("size");
    assert_eq!(config.read_at::<u32>(cfg::BAR0).expect("mask"), 0xfff0_0000);
    config
        .write_at::<u32>(cfg::BAR0, original)
        .expect("restore");
    assert_eq!(config.read_at::<u32>(cfg::BAR0).expect("bar"), original);
    assert!(matches!(
        dev.bar(0).expect("bar"),
        vfio_hal::pci::Bar::Memory {
            size: 0x10_0000,
            ..
        }
    ));
    assert_eq!(
        dev.command().expect("cmd") & (cfg::CMD_MEMORY | cfg::CMD_BUS_MASTER),
        cfg::CMD_MEMORY
    );
}

// ---- Register access rules ------------------------------------------------

#[test]
fn identification_register() {
    let (_c, dev) = edu().expect("edu");
    assert_eq!(reg32(&dev, reg::ID), 0x0100_00ed);
    set_reg32(&dev, reg::ID, 0);
    assert_eq!(reg32(&dev, reg::ID), 0x0100_00ed, "read only");
}

#[rstest]
#[case::u8_below_0x80(0x00, 1)]
#[case::u16_below_0x80(0x00, 2)]
#[case::unaligned_u32_splits_into_u16s(0x02, 4)]
#[case::u16_at_0x80(0x80, 2)]
fn accesses_narrower_than_4_bytes_read_zero(#[case] offset: u64, #[case] size: usize) {
    // QEMU's memory core refuses them before edu sees them (edu's minimum
    // access size is 4): they read 0, as measured in the real-kernel lane.
    let (_c, dev) = edu().expect("edu");
    let mut buf = [0xaau8; 8];
    bar0(&dev).read(offset, &mut buf[..size]).expect("read");
    assert!(buf[..size].iter().all(|&b| b == 0), "{buf:02x?}");
}

#[rstest]
#[case::u64_below_0x80(0x00, 8)]
#[case::unlisted(0x10, 4)]
#[case::unlisted_high(0x100, 8)]
#[case::upper_half_of_a_dma_register(0x84, 4)]
#[case::last_register_of_the_bar(0xf_fffc, 4)]
fn other_sizes_and_unlisted_offsets_read_all_ones(#[case] offset: u64, #[case] size: usize) {
    let (_c, dev) = edu().expect("edu");
    let mut buf = [0u8; 8];
    bar0(&dev).read(offset, &mut buf[..size]).expect("read");
    assert!(buf[..size].iter().all(|&b| b == 0xff), "{buf:02x?}");
}

#[test]
fn accesses_outside_bar0_are_errors_not_panics() {
    let (_c, dev) = edu().expect("edu");
    let bar = bar0(&dev);
    assert_eq!(
        bar.read_at::<u32>(1 << 20).expect_err("past end").kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        bar.read_at::<u64>(u64::MAX - 3).expect_err("wraps").kind(),
        ErrorKind::Overflow
    );
    assert_eq!(
        bar.write_at::<u32>((1 << 20) - 2, 0)
            .expect_err("straddles")
            .kind(),
        ErrorKind::OutOfRange
    );
}

#[test]
fn liveness_reads_back_the_inverse_and_ignores_other_widths() {
    let (_c, dev) = edu().expect("edu");
    assert_eq!(reg32(&dev, reg::LIVENESS), 0, "power-on value");
    for v in [0, 1, 0xdead_beef, u32::MAX] {
        set_reg32(&dev, reg::LIVENESS, v);
        assert_eq!(reg32(&dev, reg::LIVENESS), !v);
    }
    bar0(&dev)
        .write_at::<u16>(reg::LIVENESS, 0x1234)
        .expect("ignored write");
    assert_eq!(
        reg32(&dev, reg::LIVENESS),
        0,
        "unchanged by the 2-byte write"
    );
    // As on QEMU: narrower than 4 bytes reads 0.
    assert_eq!(bar0(&dev).read_at::<u16>(reg::LIVENESS).expect("read"), 0);
}

#[rstest]
#[case(0, 1)]
#[case(1, 1)]
#[case(5, 120)]
#[case(10, 3_628_800)]
#[case(12, 479_001_600)]
#[case(13, 0x7328_cc00)] // 6227020800 mod 2^32
#[case(34, 0)]
#[case(u32::MAX, 0)]
fn factorial_wraps_at_32_bits(#[case] n: u32, #[case] expect: u32) {
    let (_c, dev) = edu().expect("edu");
    set_reg32(&dev, reg::FACTORIAL, n);
    assert_eq!(
        reg32(&dev, reg::STATUS) & reg::EDU_STATUS_COMPUTING,
        0,
        "done on the first poll"
    );
    assert_eq!(reg32(&dev, reg::FACTORIAL), expect);
}

#[test]
fn factorial_shows_computing_and_ignores_writes_until_done_on_a_manual_clock() {
    let (c, dev) = edu().expect("edu");
    let clock = c.clock();
    clock.set_manual(true);
    set_reg32(&dev, reg::FACTORIAL, 5);
    assert_eq!(
        reg32(&dev, reg::STATUS) & reg::EDU_STATUS_COMPUTING,
        reg::EDU_STATUS_COMPUTING
    );
    assert_eq!(
        reg32(&dev, reg::FACTORIAL),
        5,
        "the input until the worker finishes"
    );
    set_reg32(&dev, reg::FACTORIAL, 3);
    clock.advance(edu::FACTORIAL_DELAY);
    assert_eq!(reg32(&dev, reg::STATUS) & reg::EDU_STATUS_COMPUTING, 0);
    assert_eq!(
        reg32(&dev, reg::FACTORIAL),
        120,
        "the write during computing was ignored"
    );
}

#[test]
fn status_bit_7_is_writable_and_bit_0_is_not() {
    let (_c, dev) = edu().expect("edu");
    set_reg32(&dev, reg::STATUS, 0xffff_ffff);
    assert_eq!(reg32(&dev, reg::STATUS), reg::EDU_STATUS_IRQFACT);
    set_reg32(&dev, reg::STATUS, 0x01);
    assert_eq!(reg32(&dev, reg::STATUS), 0);
}

// ---- Interrupts -------------------------------------------------------------

/// Routes MSI vector 0 to `efd` and enables bus mastering: an MSI is a
/// memory write by the device, dropped without it (as on QEMU).
fn route_msi(dev: &MockDevice, efd: &EventFd) {
    dev.set_bus_master(true).expect("bus master");
    dev.irq(index::MSI)
        .and_then(|i| i.set_eventfd(0, Some(efd.as_fd())))
        .expect("route MSI");
}

fn route_intx(dev: &MockDevice, efd: &EventFd) {
    dev.irq(index::INTX)
        .and_then(|i| i.set_eventfd(0, Some(efd.as_fd())))
        .expect("route INTx");
}

#[test]
fn factorial_interrupt_goes_out_as_msi_when_msi_is_enabled() {
    let (_c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &msi);
    set_reg32(&dev, reg::STATUS, reg::EDU_STATUS_IRQFACT);
    set_reg32(&dev, reg::FACTORIAL, 6);
    assert_eq!(msi.take().expect("read eventfd"), 1, "one MSI");
    assert_eq!(reg32(&dev, reg::IRQ_STATUS), reg::FACT_IRQ);
    assert_eq!(reg32(&dev, reg::FACTORIAL), 720);
    set_reg32(&dev, reg::IRQ_ACK, reg::FACT_IRQ);
    assert_eq!(reg32(&dev, reg::IRQ_STATUS), 0);
    assert_eq!(msi.take().expect("read eventfd"), 0, "no further message");
}

#[test]
fn factorial_without_bit_7_raises_nothing() {
    let (_c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &msi);
    set_reg32(&dev, reg::FACTORIAL, 4);
    assert_eq!(reg32(&dev, reg::FACTORIAL), 24);
    assert_eq!(
        (
            msi.take().expect("read eventfd"),
            reg32(&dev, reg::IRQ_STATUS)
        ),
        (0, 0)
    );
}

/// vfio-pci's virtual MSI message control (`vfio_msi_config_write`): the
/// word reads as the user last wrote it, with Enable kept clear while MSI
/// is not routed and Multiple Message Enable capped at the function's
/// capability; `SET_IRQS` enables the function's MSI without showing it
/// there; a write while routed reaches the function, so clearing Enable
/// stops its messages until MSI is routed afresh.
#[test]
fn the_msi_control_is_vfio_pcis_virtual_word() {
    let (_c, dev) = edu().expect("edu");
    let msi_cap = dev
        .find_capability(cfg::CAP_ID_MSI)
        .expect("walk")
        .expect("MSI");
    let ctrl = u64::from(msi_cap.offset) + 2;
    let config = dev.config().expect("config");
    let read = || config.read_at::<u16>(ctrl).expect("control");
    let found = read();
    assert_eq!(found & 1, 0, "MSI off after open");
    config
        .write_at::<u16>(ctrl, 0x00f1)
        .expect("try to enable by hand, ask for 128 messages");
    assert_eq!(
        read(),
        0x0080,
        "Enable kept clear, one message (edu's capability)"
    );
    config.write_at::<u16>(ctrl, found).expect("back");
    let efd = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &efd);
    assert_eq!(read() & 1, 0, "SET_IRQS leaves the virtual word");
    set_reg32(&dev, reg::IRQ_RAISE, 0x1);
    assert_eq!(
        efd.take().expect("read eventfd"),
        1,
        "the function's MSI is on"
    );
    set_reg32(&dev, reg::IRQ_ACK, 0x1);
    config.write_at::<u16>(ctrl, found | 1).expect("enable");
    assert_eq!(read() & 1, 1, "a write while routed is kept");
    config.write_at::<u16>(ctrl, found).expect("disable");
    set_reg32(&dev, reg::IRQ_RAISE, 0x1);
    assert_eq!(
        efd.take().expect("read eventfd"),
        0,
        "the function's MSI is off"
    );
    set_reg32(&dev, reg::IRQ_ACK, 0x1);
    dev.irq(index::MSI)
        .and_then(|i| i.disable())
        .expect("disable");
    route_msi(&dev, &efd);
    set_reg32(&dev, reg::IRQ_RAISE, 0x1);
    assert_eq!(
        efd.take().expect("read eventfd"),
        1,
        "routed afresh: on again"
    );
}

#[test]
fn raise_and_acknowledge_drive_intx_when_msi_is_off() {
    let (_c, dev) = edu().expect("edu");
    let intx = EventFd::nonblocking().expect("eventfd");
    route_intx(&dev, &intx);
    let status = || {
        dev.config()
            .and_then(|c| c.read_at::<u16>(cfg::STATUS))
            .expect("status")
    };
    set_reg32(&dev, reg::IRQ_RAISE, 0x8000_0000);
    assert_eq!(intx.take().expect("read eventfd"), 1);
    assert_eq!(reg32(&dev, reg::IRQ_STATUS), 0x8000_0000);
    assert_ne!(
        status() & (1 << 3),
        0,
        "interrupt status bit: line asserted"
    );
    set_reg32(&dev, reg::IRQ_RAISE, 0x1);
    assert_eq!(reg32(&dev, reg::IRQ_STATUS), 0x8000_0001);
    set_reg32(&dev, reg::IRQ_ACK, 0x8000_0000);
    assert_ne!(status() & (1 << 3), 0, "still asserted: status is not 0");
    set_reg32(&dev, reg::IRQ_ACK, 0x1);
    assert_eq!(reg32(&dev, reg::IRQ_STATUS), 0);
    assert_eq!(status() & (1 << 3), 0, "lowered when the status reaches 0");
}

#[test]
fn msi_is_dropped_and_recorded_without_bus_mastering() {
    let (c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &msi);
    dev.set_bus_master(false).expect("bus master off");
    set_reg32(&dev, reg::IRQ_RAISE, 0x10);
    assert_eq!(
        msi.take().expect("read eventfd"),
        0,
        "no MSI without bus mastering"
    );
    assert!(
        c.incidents().iter().any(|i| matches!(
            i,
            vfio_hal_mock::Incident::MsiWithoutBusMaster { vector: 0, .. }
        )),
        "recorded: {:?}",
        c.incidents()
    );
}

#[test]
fn with_msi_enabled_intx_stays_quiet() {
    let (_c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &msi);
    set_reg32(&dev, reg::IRQ_RAISE, 0x10);
    assert_eq!(msi.take().expect("read eventfd"), 1);
    let status = dev
        .config()
        .and_then(|c| c.read_at::<u16>(cfg::STATUS))
        .expect("status");
    assert_eq!(status & (1 << 3), 0, "no INTx");
    // Every raise while the status is non-zero sends another message, as in QEMU.
    set_reg32(&dev, reg::IRQ_RAISE, 0);
    assert_eq!(msi.take().expect("read eventfd"), 1);
}

// ---- DMA -------------------------------------------------------------------

struct Dma {
    container: MockContainer,
    dev: MockDevice,
}

impl Dma {
    fn new() -> Self {
        let (container, dev) = edu().expect("edu");
        dev.set_bus_master(true).expect("bus master");
        Self { container, dev }
    }

    fn start(&self, src: u64, dst: u64, count: u64, cmd: u64) {
        set_reg64(&self.dev, reg::DMA_SRC, src);
        set_reg64(&self.dev, reg::DMA_DST, dst);
        set_reg64(&self.dev, reg::DMA_CNT, count);
        set_reg64(&self.dev, reg::DMA_CMD, cmd);
    }

    fn wait(&self) {
        let bar = bar0(&self.dev);
        while bar.read_at::<u64>(reg::DMA_CMD).expect("cmd") & reg::EDU_DMA_RUN != 0 {}
    }

    fn to_device(&self, iova: u64, offset: u64, count: u64) {
        self.start(iova, reg::DMA_START + offset, count, reg::EDU_DMA_RUN);
        self.wait();
    }

    fn to_ram(&self, offset: u64, iova: u64, count: u64) {
        self.start(
            reg::DMA_START + offset,
            iova,
            count,
            reg::EDU_DMA_RUN | reg::EDU_DMA_DIR,
        );
        self.wait();
    }
}

#[test]
fn dma_round_trip_with_msi_and_data_check() {
    let d = Dma::new();
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&d.dev, &msi);
    let src = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadOnly,
        )
        .expect("map");
    let dst = d
        .container
        .map_buffer(
            0x20_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::WriteOnly,
        )
        .expect("map");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    src.buffer().write(0, &pattern).expect("fill");
    let t0 = d.container.clock().now();
    d.start(
        0x10_0000,
        reg::DMA_START,
        4096,
        reg::EDU_DMA_RUN | reg::EDU_DMA_IRQ,
    );
    assert_eq!(
        msi.take().expect("read eventfd"),
        1,
        "one MSI for the first transfer"
    );
    assert_eq!(reg32(&d.dev, reg::IRQ_STATUS), reg::DMA_IRQ);
    set_reg32(&d.dev, reg::IRQ_ACK, reg::DMA_IRQ);
    d.start(
        reg::DMA_START,
        0x20_0000,
        4096,
        reg::EDU_DMA_RUN | reg::EDU_DMA_DIR | reg::EDU_DMA_IRQ,
    );
    assert_eq!(
        msi.take().expect("read eventfd"),
        1,
        "one MSI for the second transfer"
    );
    assert_eq!(dst.buffer().to_vec(), pattern);
    assert!(
        d.container.clock().now() - t0 >= 2 * edu::DMA_DELAY,
        "two 100 ms timers ran"
    );
    assert!(d.container.faults().is_empty());
}

#[test]
fn a_transfer_takes_100ms_of_virtual_time_and_ignores_register_writes_meanwhile() {
    let d = Dma::new();
    let clock = d.container.clock();
    clock.set_manual(true);
    let buf = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    buf.buffer().write(0, &[0xab; 16]).expect("fill");
    d.start(0x10_0000, reg::DMA_START, 16, reg::EDU_DMA_RUN);
    let bar = bar0(&d.dev);
    assert_eq!(
        bar.read_at::<u64>(reg::DMA_CMD).expect("cmd") & reg::EDU_DMA_RUN,
        reg::EDU_DMA_RUN
    );
    // Ignored while running: every DMA register, and a second start.
    set_reg64(&d.dev, reg::DMA_SRC, 0x30_0000);
    set_reg64(&d.dev, reg::DMA_DST, reg::DMA_START + 0x100);
    set_reg64(&d.dev, reg::DMA_CNT, 1);
    set_reg64(&d.dev, reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    assert_eq!(bar.read_at::<u64>(reg::DMA_SRC).expect("src"), 0x10_0000);
    assert_eq!(
        bar.read_at::<u64>(reg::DMA_DST).expect("dst"),
        reg::DMA_START
    );
    assert_eq!(bar.read_at::<u64>(reg::DMA_CNT).expect("count"), 16);
    clock.advance(edu::DMA_DELAY - Duration::from_millis(1));
    assert_ne!(
        bar.read_at::<u64>(reg::DMA_CMD).expect("cmd") & reg::EDU_DMA_RUN,
        0,
        "99 ms: still running"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        bar.read_at::<u64>(reg::DMA_CMD).expect("cmd"),
        0,
        "done, direction bit never took"
    );
    clock.set_manual(false);
    d.to_ram(0, 0x10_0800, 16);
    let mut out = [0u8; 16];
    buf.buffer().read(0x800, &mut out).expect("read");
    assert_eq!(
        out, [0xab; 16],
        "the first transfer used the original registers"
    );
}

#[test]
fn a_command_without_the_start_bit_is_ignored() {
    let d = Dma::new();
    set_reg64(&d.dev, reg::DMA_CMD, reg::EDU_DMA_DIR | reg::EDU_DMA_IRQ);
    assert_eq!(bar0(&d.dev).read_at::<u64>(reg::DMA_CMD).expect("cmd"), 0);
}

#[test]
fn dma_registers_take_4_and_8_byte_accesses_and_a_4_byte_write_replaces_the_whole_value() {
    let d = Dma::new();
    let bar = bar0(&d.dev);
    bar.write_at::<u64>(reg::DMA_SRC, 0x1_2345_6789)
        .expect("write");
    assert_eq!(
        bar.read_at::<u64>(reg::DMA_SRC).expect("read"),
        0x1_2345_6789
    );
    assert_eq!(bar.read_at::<u32>(reg::DMA_SRC).expect("read"), 0x2345_6789);
    bar.write_at::<u32>(reg::DMA_SRC, 5).expect("write");
    assert_eq!(bar.read_at::<u64>(reg::DMA_SRC).expect("read"), 5);
}

#[test]
fn ram_addresses_are_masked_to_28_bits() {
    let d = Dma::new();
    let buf = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    buf.buffer().write(0, b"masked").expect("fill");
    d.to_device(0xf000_0000 | 0x10_0000, 0, 6);
    d.to_ram(0, 0x1_0000_0000 | 0x10_0010, 6);
    let mut out = [0u8; 6];
    buf.buffer().read(0x10, &mut out).expect("read");
    assert_eq!(&out, b"masked");
    assert!(d.container.faults().is_empty());
}

#[test]
fn a_transfer_outside_the_device_buffer_is_refused_safely() {
    let d = Dma::new();
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&d.dev, &msi);
    let buf = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(8192).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    buf.buffer().fill(0x11);
    d.start(
        0x10_0000,
        reg::DMA_START + 0xff0,
        0x20,
        reg::EDU_DMA_RUN | reg::EDU_DMA_IRQ,
    );
    d.wait();
    d.start(
        reg::DMA_START,
        0x10_0000,
        8192,
        reg::EDU_DMA_RUN | reg::EDU_DMA_DIR,
    );
    d.wait();
    d.start(u64::MAX, 0x10_0000, 2, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    d.wait();
    assert!(
        buf.buffer().to_vec().iter().all(|&b| b == 0x11),
        "RAM untouched"
    );
    let refused = d
        .container
        .incidents()
        .iter()
        .filter(|i| matches!(i, Incident::Refused { device, .. } if device == EDU))
        .count();
    assert_eq!(refused, 3);
    assert_eq!(
        msi.take().expect("read eventfd"),
        1,
        "the command completes as QEMU's would"
    );
}

#[test]
fn without_bus_mastering_nothing_moves_and_it_is_recorded() {
    let (c, dev) = edu().expect("edu");
    let buf = c
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    set_reg64(&dev, reg::DMA_SRC, reg::DMA_START);
    set_reg64(&dev, reg::DMA_DST, 0x10_0000);
    set_reg64(&dev, reg::DMA_CNT, 64);
    buf.buffer().fill(0x22);
    set_reg64(&dev, reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    assert_eq!(
        bar0(&dev).read_at::<u64>(reg::DMA_CMD).expect("cmd"),
        reg::EDU_DMA_DIR
    );
    assert!(buf.buffer().to_vec().iter().all(|&b| b == 0x22));
    assert_eq!(
        c.incidents(),
        vec![Incident::DmaWithoutBusMaster {
            device: EDU.to_owned(),
            iova: 0x10_0000,
            len: 64,
            direction: DmaDirection::Write,
        }]
    );
    // A read of RAM reads zeros into the buffer (QEMU's bus-master address
    // space is empty then), and is recorded once.
    set_reg64(&dev, reg::DMA_SRC, 0x10_0000);
    set_reg64(&dev, reg::DMA_DST, reg::DMA_START);
    set_reg64(&dev, reg::DMA_CMD, reg::EDU_DMA_RUN);
    dev.set_bus_master(true).expect("bus master");
    set_reg64(&dev, reg::DMA_SRC, reg::DMA_START);
    set_reg64(&dev, reg::DMA_DST, 0x10_0000);
    set_reg64(&dev, reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    let out = buf.buffer().to_vec();
    assert!(out[..64].iter().all(|&b| b == 0), "{:?}", &out[..64]);
    assert!(out[64..].iter().all(|&b| b == 0x22));
    assert_eq!(c.incidents().len(), 2);
}

#[test]
fn dma_to_an_unmapped_or_read_only_iova_faults_and_touches_nothing() {
    let d = Dma::new();
    let ro = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadOnly,
        )
        .expect("map");
    ro.buffer().fill(0x33);
    // Load a known pattern into the device buffer first.
    d.to_device(0x10_0000, 0, 4096);
    d.to_ram(0, 0x10_0000, 16);
    d.to_ram(0, 0x50_0000, 16);
    d.to_device(0x50_0000, 0, 16);
    let faults = d.container.faults();
    assert_eq!(faults.len(), 3, "{faults:?}");
    assert_eq!(faults[0].reason, FaultReason::WriteToReadOnly);
    assert_eq!(
        (faults[1].iova, faults[1].reason),
        (0x50_0000, FaultReason::NotMapped)
    );
    assert_eq!(faults[2].direction, DmaDirection::Read);
    assert!(
        ro.buffer().to_vec().iter().all(|&b| b == 0x33),
        "read-only memory untouched"
    );
    // The failed read filled its part of the device buffer with zeros, as
    // QEMU reads an address it cannot translate; the rest is as it was.
    let rw = d
        .container
        .map_buffer(
            0x20_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    d.to_ram(0, 0x20_0000, 32);
    let mut out = [0u8; 32];
    rw.buffer().read(0, &mut out).expect("read");
    assert_eq!(out[..16], [0; 16]);
    assert_eq!(out[16..], [0x33; 16]);
}

#[test]
fn a_transfer_across_into_an_unmapped_page_moves_the_mapped_part() {
    let d = Dma::new();
    let page = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    page.buffer().fill(0x77);
    d.to_device(0x10_0000, 0, 4096);
    // Reading the last 16 bytes of the page and 16 beyond it: the mapped
    // half arrives, the unmapped half reads as zeros (QEMU translates page
    // by page).
    page.buffer().write(4080, &[0x11; 16]).expect("write");
    d.to_device(0x10_0000 + 4080, 0x100, 32);
    page.buffer().fill(0);
    d.to_ram(0x100, 0x10_0000, 32);
    let mut out = [0u8; 32];
    page.buffer().read(0, &mut out).expect("read");
    assert_eq!((&out[..16], &out[16..]), (&[0x11; 16][..], &[0; 16][..]));
    // Writing across the end: the mapped half lands, the rest is dropped.
    page.buffer().fill(0x22);
    d.to_ram(0x100, 0x10_0000 + 4080, 32);
    let mut tail = [0u8; 16];
    page.buffer().read(4080, &mut tail).expect("read");
    assert_eq!(tail, [0x11; 16]);
    let faults = d.container.faults();
    assert_eq!(
        faults.iter().map(|f| f.iova).collect::<Vec<_>>(),
        [0x10_1000, 0x10_1000],
        "one fault per unmapped page: {faults:?}"
    );
}

#[test]
fn dropping_the_container_unmaps_so_a_late_device_dma_faults() {
    let mem = DmaBuffer::new(4096).expect("alloc");
    let c = MockContainer::new();
    c.plug(EDU, Edu::new()).expect("plug");
    let dev = c.open_device(EDU).expect("open");
    dev.set_bus_master(true).expect("bus master");
    // SAFETY: `mem` is declared before the container and outlives it.
    unsafe { c.map_dma_raw(0x10_0000, mem.as_ptr(), 4096, DmaAccess::ReadWrite) }.expect("map");
    set_reg32(&dev, reg::LIVENESS, 0);
    drop(c);
    // The device is still open; its DMA must not reach `mem` any more.
    set_reg64(&dev, reg::DMA_SRC, reg::DMA_START);
    set_reg64(&dev, reg::DMA_DST, 0x10_0000);
    set_reg64(&dev, reg::DMA_CNT, 16);
    mem.fill(0x44);
    set_reg64(&dev, reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    assert!(mem.to_vec().iter().all(|&b| b == 0x44));
}

// ---- Reset -----------------------------------------------------------------

#[test]
fn reset_keeps_the_registers_as_qemus_edu_does_and_config_and_routes_survive() {
    let (_c, dev) = edu().expect("edu");
    let msi = EventFd::nonblocking().expect("eventfd");
    route_msi(&dev, &msi);
    dev.set_bus_master(true).expect("bus master");
    set_reg32(&dev, reg::LIVENESS, 7);
    set_reg32(&dev, reg::STATUS, reg::EDU_STATUS_IRQFACT);
    set_reg32(&dev, reg::IRQ_RAISE, 0x40);
    set_reg64(&dev, reg::DMA_SRC, 0x1234);
    set_reg32(&dev, reg::FACTORIAL, 5);
    assert_eq!(msi.take().expect("read eventfd"), 2, "raise, factorial");
    dev.reset().expect("reset");
    for (r, v) in [
        (reg::LIVENESS, !7),
        (reg::STATUS, reg::EDU_STATUS_IRQFACT),
        (reg::IRQ_STATUS, 0x41),
        (reg::FACTORIAL, 120),
    ] {
        assert_eq!(reg32(&dev, r), v, "register {r:#x}");
    }
    assert_eq!(
        bar0(&dev).read_at::<u64>(reg::DMA_SRC).expect("src"),
        0x1234
    );
    assert_ne!(
        dev.command().expect("cmd") & cfg::CMD_BUS_MASTER,
        0,
        "config survives"
    );
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(
        msi.take().expect("read eventfd"),
        1,
        "the MSI route survives"
    );
}

#[test]
fn the_registers_and_the_buffer_survive_a_close_and_reopen() {
    let Dma { container, dev } = Dma::new();
    let d = Dma { container, dev };
    let page = d
        .container
        .map_buffer(
            0x10_0000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    page.buffer().fill(0x5c);
    d.to_device(0x10_0000, 0, 4096);
    set_reg32(&d.dev, reg::LIVENESS, 9);
    drop(d.dev);
    let dev = d.container.open_device(EDU).expect("reopen");
    assert_eq!(reg32(&dev, reg::LIVENESS), !9);
    dev.set_bus_master(true).expect("bus master");
    page.buffer().fill(0);
    set_reg64(&dev, reg::DMA_SRC, reg::DMA_START);
    set_reg64(&dev, reg::DMA_DST, 0x10_0000);
    set_reg64(&dev, reg::DMA_CNT, 4096);
    set_reg64(&dev, reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR);
    assert!(page.buffer().to_vec().iter().all(|&b| b == 0x5c));
}

#[test]
fn memory_decode_off_makes_bar_accesses_fail_with_eio() {
    let (_c, dev) = edu().expect("edu");
    dev.update_command(0, cfg::CMD_MEMORY).expect("decode off");
    let e = bar0(&dev).read_at::<u32>(reg::ID).expect_err("no decode");
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Io, Some(libc::EIO)));
    let e = bar0(&dev)
        .write_at::<u32>(reg::LIVENESS, 1)
        .expect_err("no decode");
    assert_eq!(e.kind(), ErrorKind::Io);
    dev.update_command(cfg::CMD_MEMORY, 0).expect("decode on");
    assert_eq!(reg32(&dev, reg::ID), reg::ID_VALUE);
}
