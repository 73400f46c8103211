//! Peer-to-peer DMA on the mock: one copy engine writes into another's
//! SRAM through a `PeerMapping`, and only while it is mapped.

mod common;

use std::sync::Arc;

use common::{reg32, set_reg32, set_reg64};
use vfio_hal::peer::PeerMapping;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind, Protection};
use vfio_hal_mock::models::copy_engine::{err, reg, CopyEngine, SRAM_BAR};
use vfio_hal_mock::{MockContainer, MockDevice};

const PEER: u64 = 0x10_0000;
const HOST: u64 = 0x20_0000;

fn copy(engine: &MockDevice, src: u64, dst: u64, len: u32) -> u32 {
    set_reg64(engine, reg::SRC, src);
    set_reg64(engine, reg::DST, dst);
    set_reg32(engine, reg::LEN, len);
    set_reg32(engine, reg::DOORBELL, reg::DOORBELL_GO);
    reg32(engine, reg::STATUS)
}

#[test]
fn a_device_writes_its_peers_sram_only_while_the_window_is_mapped() {
    let c = MockContainer::new();
    c.plug("engine", CopyEngine::new()).expect("plug");
    c.plug("peer", CopyEngine::new()).expect("plug");
    let engine = c.open_device("engine").expect("open");
    let peer = c.open_device("peer").expect("open");
    engine.set_bus_master(true).expect("bus master");
    let host = c
        .map_buffer(HOST, DmaBuffer::new(4096).expect("b"), DmaAccess::ReadOnly)
        .expect("map host");
    host.buffer().write(0, b"p2p").expect("fill");
    let sram = peer
        .region(SRAM_BAR.into())
        .and_then(|r| r.mmap_area(0, Protection::ReadWrite))
        .map(Arc::new)
        .expect("mmap the peer's SRAM");

    let window = PeerMapping::map(&c, PEER, Arc::clone(&sram), DmaAccess::ReadWrite)
        .expect("map the peer's window");
    assert_eq!((window.iova(), window.len()), (PEER, sram.len()));
    assert_eq!(copy(&engine, HOST, PEER + 0x40, 3), reg::STATUS_DONE);
    let mut seen = [0u8; 3];
    sram.read(0x40, &mut seen).expect("read the SRAM");
    assert_eq!(&seen, b"p2p");

    // Dropped, the window is unmapped: the same copy faults and writes nothing.
    drop(window);
    sram.write(0x40, &[0; 3]).expect("clear");
    set_reg32(&engine, reg::STATUS, reg::STATUS_ERROR | reg::STATUS_DONE);
    assert_eq!(copy(&engine, HOST, PEER + 0x40, 3), reg::STATUS_ERROR);
    assert_eq!(reg32(&engine, reg::ERROR), err::DST_FAULT);
    sram.read(0x40, &mut seen).expect("read the SRAM");
    assert_eq!(seen, [0; 3]);
}

#[test]
fn a_read_only_window_maps_only_for_device_reads() {
    let c = MockContainer::new();
    c.plug("peer", CopyEngine::new()).expect("plug");
    let peer = c.open_device("peer").expect("open");
    let sram = peer
        .region(SRAM_BAR.into())
        .and_then(|r| r.mmap_area(0, Protection::Read))
        .map(Arc::new)
        .expect("mmap");
    let e = PeerMapping::map(&c, PEER, Arc::clone(&sram), DmaAccess::ReadWrite)
        .expect_err("a read-only window is not device-writable");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let ro = PeerMapping::map(&c, PEER, sram, DmaAccess::ReadOnly).expect("read-only map");
    assert_eq!(ro.access(), DmaAccess::ReadOnly);
}
