//! Peer-to-peer DMA in the lane: edu writes, by DMA through the IOMMU,
//! into another edu's BAR 0 mapped into the same container. One scenario
//! for every backend's lane test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_hal::peer::PeerMapping;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, Protection, Result};

/// Where the peer's BAR 0 is mapped: inside edu's 28-bit DMA window.
pub const PEER_IOVA: u64 = 0x200_0000;
/// Where the staging buffer edu reads the value from is mapped.
const STAGE_IOVA: u64 = 0x10_0000;
/// edu's DMA buffer in its own address space.
const EDU_BUFFER: u64 = 0x4_0000;
/// edu's liveness register: a write of `v` reads back `!v`.
const LIVENESS: u64 = 0x04;
/// How long one edu DMA may take under TCG (a 100 ms virtual-time timer).
const DMA_TIMEOUT: Duration = Duration::from_secs(20);

/// Maps `peer`'s BAR 0 (its whole mmap) at [`PEER_IOVA`]: the mapping, or
/// the backend's refusal.
pub fn map_peer_bar<'c, C: Container>(
    container: &'c C,
    peer: &C::Device,
) -> Result<PeerMapping<&'c C>> {
    let bar0 = peer.region(0)?.mmap_area(0, Protection::ReadWrite)?;
    PeerMapping::map(container, PEER_IOVA, Arc::new(bar0), DmaAccess::ReadWrite)
}

/// With `window` (the peer's BAR 0) mapped, has `edu` DMA `value` from
/// host memory into the peer's liveness register and returns what the
/// peer's register then reads: `!value` when the write went device →
/// IOMMU → peer device.
///
/// # Panics
/// On a failed step (the test's failure).
pub fn edu_dma_into_peer_liveness<C: Container>(
    container: &C,
    edu: &C::Device,
    window: &PeerMapping<&C>,
    value: u32,
) -> u32 {
    edu.set_bus_master(true).expect("bus master");
    let stage = container
        .map_buffer(
            STAGE_IOVA,
            DmaBuffer::new(4096).expect("staging buffer"),
            DmaAccess::ReadOnly,
        )
        .expect("map the staging buffer");
    stage.buffer().write(0, &value.to_le_bytes()).expect("fill");
    let bar0 = edu.region(0).expect("edu BAR 0");
    let dma = |src: u64, dst: u64, cmd: u64| {
        bar0.write_at::<u64>(0x80, src).expect("src");
        bar0.write_at::<u64>(0x88, dst).expect("dst");
        bar0.write_at::<u64>(0x90, 4).expect("count");
        bar0.write_at::<u64>(0x98, cmd).expect("start");
        let deadline = Instant::now() + DMA_TIMEOUT;
        while bar0.read_at::<u64>(0x98).expect("command") & 1 != 0 {
            assert!(Instant::now() < deadline, "edu DMA did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    dma(stage.iova(), EDU_BUFFER, 0b01); // RAM -> edu
    dma(EDU_BUFFER, window.iova() + LIVENESS, 0b11); // edu -> peer's register
    window.area().load::<u32>(LIVENESS).expect("read the peer")
}
