//! The copy engine: the kernel selftests' DMA driver contract, MSI-X, SRAM mmaps.

mod common;

use common::{copy_engine, reg32, set_reg32, set_reg64, DMA};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::{flags as iflags, index};
use vfio_hal::pci::{cfg, region};
use vfio_hal::prelude::*;
use vfio_hal::region::flags as rflags;
use vfio_hal::{DmaAccess, DmaBuffer, DmaMapping, ErrorKind, SparseArea};
use vfio_hal_mock::models::copy_engine::{self as ce, err, reg};
use vfio_hal_mock::{FaultReason, Incident, MockContainer, MockDevice};

const SRC: u64 = 0x10_0000;
const DST: u64 = 0x20_0000;

struct Engine {
    c: MockContainer,
    dev: MockDevice,
    vectors: Vec<EventFd>,
}

impl Engine {
    /// Bus master on, every vector routed to its own eventfd.
    fn new() -> Self {
        let (c, dev) = copy_engine().expect("copy engine");
        dev.set_bus_master(true).expect("bus master");
        let vectors: Vec<EventFd> = (0..ce::DEFAULT_VECTORS)
            .map(|_| EventFd::nonblocking().expect("eventfd"))
            .collect();
        let fds: Vec<_> = vectors.iter().map(|e| Some(e.as_fd())).collect();
        dev.irq(index::MSIX)
            .and_then(|i| i.set_eventfds(0, &fds))
            .expect("route MSI-X");
        Self { c, dev, vectors }
    }

    fn map(&self, iova: u64, access: DmaAccess) -> DmaMapping<'_, MockContainer> {
        self.c
            .map_buffer(iova, DmaBuffer::new(0x4000).expect("alloc"), access)
            .expect("map")
    }

    fn copy(&self, src: u64, dst: u64, len: u32, vector: u32, doorbell: u32) -> u32 {
        set_reg64(&self.dev, reg::SRC, src);
        set_reg64(&self.dev, reg::DST, dst);
        set_reg32(&self.dev, reg::LEN, len);
        set_reg32(&self.dev, reg::VECTOR, vector);
        set_reg32(&self.dev, reg::DOORBELL, doorbell | reg::DOORBELL_GO);
        reg32(&self.dev, reg::STATUS)
    }

    fn signals(&self) -> Vec<u64> {
        self.vectors
            .iter()
            .map(|e| e.take().expect("read eventfd"))
            .collect()
    }
}

#[test]
fn identity_regions_and_irqs() {
    let (_c, dev) = copy_engine().expect("copy engine");
    assert_eq!(
        (dev.vendor_id().expect("v"), dev.device_id().expect("d")),
        (0x1234, 0x0c0e)
    );
    assert_eq!(dev.class_code().expect("class"), 0x080100);
    assert_eq!(reg32(&dev, reg::ID), ce::ID_VALUE);
    assert_eq!(reg32(&dev, reg::VECTORS), u32::from(ce::DEFAULT_VECTORS));
    assert_eq!(dev.info().num_regions, 10);

    let bar0 = dev.region(0).expect("bar0");
    assert_eq!(
        (bar0.info().size, bar0.info().flags),
        (0x1000, rflags::READ | rflags::WRITE)
    );
    let bar2 = dev.region(2).expect("bar2");
    assert_eq!(bar2.info().size, 0x8000);
    assert_eq!(
        bar2.info().flags,
        rflags::READ | rflags::WRITE | rflags::MMAP | rflags::CAPS
    );
    assert_eq!(
        bar2.info().sparse_areas(),
        Some(
            &[
                SparseArea {
                    offset: 0,
                    size: 0x4000
                },
                SparseArea {
                    offset: 0x5000,
                    size: 0x3000
                }
            ][..]
        )
    );
    assert!(matches!(
        dev.bar(2).expect("bar"),
        vfio_hal::pci::Bar::Memory {
            is_64bit: true,
            prefetchable: true,
            size: 0x8000,
            ..
        }
    ));
    assert_eq!(dev.region(3).expect("upper half").info().size, 0);
    assert_eq!(
        dev.region(region::CONFIG).expect("config").info().size,
        4096,
        "PCIe"
    );

    let counters = dev.region(ce::COUNTERS_REGION).expect("counters");
    assert_eq!(counters.info().flags, rflags::READ | rflags::CAPS);
    assert_eq!(counters.info().region_type(), Some((1 << 31 | 0x1234, 1)));
    assert_eq!(
        counters
            .write_at::<u64>(0, 1)
            .expect_err("read only")
            .kind(),
        ErrorKind::NotSupported
    );

    let irq = |i| dev.irq(i).expect("irq").info();
    assert_eq!(irq(index::INTX).count, 0, "no interrupt pin");
    assert_eq!(irq(index::MSI).count, 0);
    assert_eq!(
        (irq(index::MSIX).count, irq(index::MSIX).flags),
        (4, iflags::EVENTFD | iflags::NORESIZE)
    );
    assert_eq!(irq(index::ERR).count, 1, "PCIe");

    let caps: Vec<u8> = dev
        .capabilities()
        .expect("caps")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(caps, vec![cfg::CAP_ID_MSIX, cfg::CAP_ID_EXP]);
}

#[test]
fn a_copy_succeeds_and_raises_exactly_one_msix_on_its_vector() {
    let e = Engine::new();
    let src = e.map(SRC, DmaAccess::ReadOnly);
    let dst = e.map(DST, DmaAccess::WriteOnly);
    let data: Vec<u8> = (0..0x4000u32).map(|i| (i % 251) as u8).collect();
    src.buffer().write(0, &data).expect("fill");
    let status = e.copy(SRC, DST, 0x4000, 2, 0);
    assert_eq!(status, reg::STATUS_DONE);
    assert_eq!(dst.buffer().to_vec(), data);
    assert_eq!(e.signals(), vec![0, 0, 1, 0]);
    assert_eq!(reg32(&e.dev, reg::COMPLETED), 1);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::NONE);
}

#[test]
fn exactly_one_msi_per_request() {
    let e = Engine::new();
    let _src = e.map(SRC, DmaAccess::ReadWrite);
    let _dst = e.map(DST, DmaAccess::ReadWrite);
    for i in 0..10u32 {
        assert_eq!(
            e.copy(SRC + u64::from(i) * 16, DST, 16, i % 4, 0),
            reg::STATUS_DONE
        );
    }
    assert_eq!(e.signals(), vec![3, 3, 2, 2]);
    assert_eq!(reg32(&e.dev, reg::COMPLETED), 10);
    let counters = e.dev.region(ce::COUNTERS_REGION).expect("counters");
    assert_eq!(counters.read_at::<u64>(0).expect("completed"), 10);
    assert_eq!(counters.read_at::<u64>(8).expect("failed"), 0);
}

#[test]
fn a_copy_from_an_unmapped_iova_corrupts_nothing_and_raises_no_interrupt() {
    let e = Engine::new();
    let dst = e.map(DST, DmaAccess::ReadWrite);
    dst.buffer().fill(0x5a);
    let status = e.copy(0x90_0000, DST, 64, 0, 0);
    assert_eq!(status, reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::SRC_FAULT);
    assert!(dst.buffer().to_vec().iter().all(|&b| b == 0x5a));
    assert_eq!(e.signals(), vec![0; 4]);
    let faults = e.c.faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        (faults[0].iova, faults[0].reason),
        (0x90_0000, FaultReason::NotMapped)
    );
    assert_eq!(faults[0].device, DMA);
}

#[test]
fn a_copy_to_an_unmapped_or_read_only_iova_corrupts_nothing_and_raises_no_interrupt() {
    let e = Engine::new();
    let src = e.map(SRC, DmaAccess::ReadOnly);
    src.buffer().fill(0x77);
    let ro = e.map(DST, DmaAccess::ReadOnly);
    ro.buffer().fill(0x66);
    assert_eq!(e.copy(SRC, 0x90_0000, 64, 1, 0), reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::DST_FAULT);
    assert_eq!(e.copy(SRC, DST, 64, 1, 0), reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::DST_FAULT);
    // Running off the end of a mapping fails whole, too.
    assert_eq!(e.copy(SRC, DST + 0x3ff0, 32, 1, 0), reg::STATUS_ERROR);
    assert!(ro.buffer().to_vec().iter().all(|&b| b == 0x66));
    assert_eq!(e.signals(), vec![0; 4]);
    let reasons: Vec<FaultReason> = e.c.faults().iter().map(|f| f.reason).collect();
    assert_eq!(
        reasons,
        vec![
            FaultReason::NotMapped,
            FaultReason::WriteToReadOnly,
            FaultReason::WriteToReadOnly
        ]
    );
    assert_eq!(
        e.dev
            .region(ce::COUNTERS_REGION)
            .and_then(|r| r.read_at::<u64>(8))
            .expect("failed"),
        3
    );
    // A good copy afterwards still works and clears the error.
    let rw = e.map(0x30_0000, DmaAccess::ReadWrite);
    assert_eq!(e.copy(SRC, 0x30_0000, 64, 1, 0), reg::STATUS_DONE);
    assert_eq!(rw.buffer().to_vec()[..64], [0x77; 64]);
    assert_eq!(e.signals(), vec![0, 1, 0, 0]);
}

#[test]
fn bad_length_and_vector_fail_at_once() {
    let e = Engine::new();
    assert_eq!(e.copy(SRC, DST, 0, 0, 0), reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::BAD_LENGTH);
    assert_eq!(e.copy(SRC, DST, ce::MAX_LEN + 1, 0, 0), reg::STATUS_ERROR);
    assert_eq!(e.copy(SRC, DST, 16, 4, 0), reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::BAD_VECTOR);
    set_reg32(&e.dev, reg::STATUS, reg::STATUS_ERROR);
    assert_eq!(
        reg32(&e.dev, reg::STATUS),
        0,
        "error bit is write-1-to-clear"
    );
}

#[test]
fn without_bus_mastering_the_copy_fails_and_is_recorded() {
    let e = Engine::new();
    let _src = e.map(SRC, DmaAccess::ReadWrite);
    let _dst = e.map(DST, DmaAccess::ReadWrite);
    e.dev.set_bus_master(false).expect("bus master off");
    assert_eq!(e.copy(SRC, DST, 16, 0, 0), reg::STATUS_ERROR);
    assert_eq!(reg32(&e.dev, reg::ERROR), err::BUS_MASTER);
    assert!(matches!(
        e.c.incidents()[..],
        [Incident::DmaWithoutBusMaster { .. }]
    ));
    assert_eq!(e.signals(), vec![0; 4]);
}

#[test]
fn registers_are_frozen_while_busy_on_a_manual_clock() {
    let e = Engine::new();
    let _src = e.map(SRC, DmaAccess::ReadWrite);
    let _dst = e.map(DST, DmaAccess::ReadWrite);
    let clock = e.c.clock();
    clock.set_manual(true);
    assert_eq!(e.copy(SRC, DST, 16, 0, 0), reg::STATUS_BUSY);
    set_reg64(&e.dev, reg::DST, 0x99_0000);
    let bar0 = e.dev.region(0).expect("bar0");
    assert_eq!(bar0.read_at::<u64>(reg::DST).expect("dst"), DST);
    assert_eq!(e.signals(), vec![0; 4]);
    clock.advance(ce::COPY_LATENCY);
    assert_eq!(reg32(&e.dev, reg::STATUS), reg::STATUS_DONE);
    assert_eq!(e.signals(), vec![1, 0, 0, 0]);
}

#[test]
fn sram_is_mmappable_and_coherent_with_region_io_and_the_engine() {
    let e = Engine::new();
    let bar2 = e.dev.region(ce::SRAM_BAR.into()).expect("bar2");
    let areas = bar2.mmap().expect("mmap");
    assert_eq!(areas.len(), 2);
    assert_eq!((areas[0].region_offset(), areas[0].len()), (0, 0x4000));
    assert_eq!((areas[1].region_offset(), areas[1].len()), (0x5000, 0x3000));
    areas[0]
        .store::<u64>(0x100, 0x0123_4567_89ab_cdef)
        .expect("store");
    assert_eq!(
        bar2.read_at::<u64>(0x100).expect("read"),
        0x0123_4567_89ab_cdef
    );
    bar2.write_at::<u32>(0x5008, 0xfeed_f00d).expect("write");
    assert_eq!(areas[1].load::<u32>(0x8).expect("load"), 0xfeed_f00d);

    // IOVA -> SRAM, then SRAM -> IOVA.
    let src = e.map(SRC, DmaAccess::ReadOnly);
    src.buffer().write(0, b"into the sram").expect("fill");
    assert_eq!(
        e.copy(SRC, 0x5100, 13, 0, reg::DOORBELL_DST_SRAM),
        reg::STATUS_DONE
    );
    let mut seen = [0u8; 13];
    areas[1].read(0x100, &mut seen).expect("mmap read");
    assert_eq!(&seen, b"into the sram");
    let dst = e.map(DST, DmaAccess::WriteOnly);
    assert_eq!(
        e.copy(0x5100, DST, 13, 0, reg::DOORBELL_SRC_SRAM),
        reg::STATUS_DONE
    );
    let mut back = [0u8; 13];
    dst.buffer().read(0, &mut back).expect("read");
    assert_eq!(&back, b"into the sram");
    // An SRAM range that crosses into the MSI-X page is refused.
    assert_eq!(
        e.copy(0x3ff0, DST, 32, 0, reg::DOORBELL_SRC_SRAM),
        reg::STATUS_ERROR
    );
    assert_eq!(reg32(&e.dev, reg::ERROR), err::SRAM_RANGE);
    assert_eq!(e.signals(), vec![2, 0, 0, 0]);
}

#[test]
fn the_msix_table_reads_all_ones_drops_writes_and_the_pba_shows_pending_vectors() {
    let (_c, dev) = copy_engine().expect("copy engine");
    dev.set_bus_master(true).expect("bus master");
    let bar2 = dev.region(2).expect("bar2");
    let table = u64::from(ce::MSIX_TABLE_OFFSET);
    let pba = u64::from(ce::MSIX_PBA_OFFSET);
    assert_eq!(
        bar2.read_at::<u32>(table + 12).expect("vector control"),
        u32::MAX
    );
    bar2.write_at::<u32>(table + 12, 0).expect("dropped");
    assert_eq!(
        bar2.read_at::<u32>(table + 12).expect("vector control"),
        u32::MAX
    );
    assert_eq!(bar2.read_at::<u64>(pba).expect("pba"), 0);

    // Enable MSI-X with vector 1 allocated but unrouted: its message stays pending.
    let v0 = EventFd::nonblocking().expect("eventfd");
    let v1 = EventFd::nonblocking().expect("eventfd");
    let msix = dev.irq(index::MSIX).expect("msix");
    msix.set_eventfds(0, &[Some(v0.as_fd()), None])
        .expect("enable");
    let c = dev.region(0).expect("bar0");
    let src = 0x10_0000;
    let container = _c.clone();
    let _m = container
        .map_buffer(
            src,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    c.write_at::<u64>(reg::SRC, src).expect("src");
    c.write_at::<u64>(reg::DST, src + 0x800).expect("dst");
    c.write_at::<u32>(reg::LEN, 8).expect("len");
    c.write_at::<u32>(reg::VECTOR, 1).expect("vector");
    c.write_at::<u32>(reg::DOORBELL, reg::DOORBELL_GO)
        .expect("go");
    assert_eq!(
        bar2.read_at::<u64>(pba).expect("pba"),
        0b10,
        "vector 1 pending"
    );
    msix.set_eventfd(1, Some(v1.as_fd()))
        .expect("route vector 1");
    assert_eq!(
        (
            v0.take().expect("read eventfd"),
            v1.take().expect("read eventfd")
        ),
        (0, 1),
        "delivered once routed"
    );
    assert_eq!(bar2.read_at::<u64>(pba).expect("pba"), 0);

    // vfio-pci shows the MSI-X capability as the function has it (enabled
    // by SET_IRQS) and drops user writes to it: neither the function mask
    // nor the enable bit is the user's.
    let cap = dev
        .find_capability(cfg::CAP_ID_MSIX)
        .expect("walk")
        .expect("msix cap");
    let config = dev.config().expect("config");
    let ctrl = u64::from(cap.offset) + 2;
    let enabled = config.read_at::<u16>(ctrl).expect("ctrl");
    assert_eq!(enabled & 0x8000, 0x8000, "enable bit follows SET_IRQS");
    assert_eq!(enabled & 0x7ff, 3, "table size - 1");
    config
        .write_at::<u16>(ctrl, enabled | 0x4000)
        .expect("try to mask all");
    assert_eq!(
        config.read_at::<u16>(ctrl).expect("ctrl"),
        enabled,
        "dropped"
    );
    c.write_at::<u32>(reg::VECTOR, 0).expect("vector");
    c.write_at::<u32>(reg::DOORBELL, reg::DOORBELL_GO)
        .expect("go");
    assert_eq!(v0.take().expect("read eventfd"), 1, "not masked");
    config
        .write_at::<u16>(ctrl, 0)
        .expect("try to disable by hand");
    assert_eq!(config.read_at::<u16>(ctrl).expect("ctrl") & 0x8000, 0x8000);
}

#[test]
fn the_64bit_bar_sizes_in_two_halves() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let config = dev.config().expect("config");
    let lo = cfg::BAR0 + 8;
    config.write_at::<u32>(lo, u32::MAX).expect("size low");
    config.write_at::<u32>(lo + 4, u32::MAX).expect("size high");
    assert_eq!(config.read_at::<u32>(lo).expect("low"), 0xffff_8000 | 0xc);
    assert_eq!(config.read_at::<u32>(lo + 4).expect("high"), u32::MAX);
}

#[test]
fn plugging_too_many_vectors_is_refused() {
    let c = MockContainer::new();
    let e = c
        .plug("big", ce::CopyEngine::with_vectors(200))
        .expect_err("table overlaps the PBA");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    c.plug("ok", ce::CopyEngine::with_vectors(128))
        .expect("fits");
    let dev = c.open_device("ok").expect("open");
    assert_eq!(dev.irq(index::MSIX).expect("msix").info().count, 128);
}

#[test]
fn a_revocation_detaches_the_sram_mmaps_handed_out() {
    let e = Engine::new();
    let bar2 = e.dev.region(ce::SRAM_BAR.into()).expect("bar2");
    let areas = bar2.mmap().expect("mmap");
    areas[0].store::<u32>(0x10, 0x5151_5151).expect("store");
    let revoker = e.dev.revoker().expect("revoker");
    revoker.revoke().expect("revoke");
    // The window no longer aliases the device's SRAM: it reads zero pages,
    // and what the device's SRAM holds later does not show through it.
    assert_eq!(areas[0].load::<u32>(0x10).expect("load after"), 0);
    let again = e.c.open_device(DMA).expect("reopen");
    let sram = again.region(ce::SRAM_BAR.into()).expect("bar2 again");
    sram.write_at::<u32>(0x30, 0x1234_5678)
        .expect("write the SRAM");
    assert_eq!(
        areas[0].load::<u32>(0x30).expect("load"),
        0,
        "still aliased"
    );
    assert_eq!(
        bar2.mmap().expect_err("mmap after revoke").kind(),
        ErrorKind::DeviceGone
    );
}
