//! A device-model thread doing DMA into a buffer while the CPU copies the
//! same bytes: both sides go through `vfio_hal::shared_memory`, so under
//! Miri (which checks every thread for data races) this runs race-free, and
//! each copy sees, byte by byte, values the other side really wrote.

use vfio_hal::{Container, DmaAccess, DmaBuffer};
use vfio_hal_mock::MockContainer;

const DEVICE: &str = "racer";
const IOVA: u64 = 0x10_000;
/// A descriptor-sized payload: spans several machine words, unaligned ends.
const LEN: usize = 40;
const ROUNDS: u8 = if cfg!(miri) { 12 } else { 200 };

/// Checks one copy taken while round values `0..=ROUNDS` were being written:
/// every byte is a value some round wrote, and no byte went back to an
/// older round than the previous copy showed (per-byte coherence).
fn check_copy(copy: &[u8], last: &mut [u8]) {
    for (byte, seen) in copy.iter().zip(last.iter_mut()) {
        assert!(*byte <= ROUNDS, "a value no round wrote: {copy:?}");
        assert!(*byte >= *seen, "a byte went back in time: {copy:?}");
        *seen = *byte;
    }
}

/// Maps a fresh buffer at `IOVA`, runs `device` on a thread of its own
/// against `cpu` on this one, and returns the first `LEN` bytes afterwards as
/// the CPU and as the device see them.
fn race(
    device: impl FnOnce(&MockContainer) + Send,
    cpu: impl FnOnce(&DmaBuffer),
) -> ([u8; LEN], [u8; LEN]) {
    let c = MockContainer::new();
    let buffer = DmaBuffer::new(4096).expect("buffer");
    let guard = c
        .map_buffer(IOVA, buffer, DmaAccess::ReadWrite)
        .expect("map");
    std::thread::scope(|s| {
        let device = s.spawn(|| device(&c));
        cpu(guard.buffer());
        device.join().expect("device thread");
    });
    let (mut seen_by_cpu, mut seen_by_device) = ([0u8; LEN], [0u8; LEN]);
    guard.buffer().read(0, &mut seen_by_cpu).expect("read");
    c.iommu()
        .dma_read(DEVICE, IOVA, &mut seen_by_device)
        .expect("mapped");
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    (seen_by_cpu, seen_by_device)
}

#[test]
fn device_writes_racing_cpu_reads_of_the_same_bytes() {
    let after = race(
        |c| {
            for round in 1..=ROUNDS {
                c.iommu()
                    .dma_write(DEVICE, IOVA, &[round; LEN])
                    .expect("mapped");
            }
        },
        |buffer| {
            let mut whole = [0u8; LEN];
            let mut last = [0u8; LEN];
            let mut tail = [0u8; 3];
            for _ in 0..ROUNDS {
                buffer.read(0, &mut whole).expect("read");
                check_copy(&whole, &mut last);
                // A read of part of a word the device writes whole.
                buffer.read(LEN as u64 - 3, &mut tail).expect("read");
                assert!(tail.iter().all(|&b| b <= ROUNDS), "{tail:?}");
            }
        },
    );
    assert_eq!(
        after,
        ([ROUNDS; LEN], [ROUNDS; LEN]),
        "the last round landed"
    );
}

#[test]
fn cpu_writes_racing_device_reads_of_the_same_bytes() {
    let after = race(
        |c| {
            let mut copy = [0u8; LEN];
            let mut last = [0u8; LEN];
            for _ in 0..ROUNDS {
                c.iommu().dma_read(DEVICE, IOVA, &mut copy).expect("mapped");
                check_copy(&copy, &mut last);
            }
        },
        |buffer| {
            for round in 1..=ROUNDS {
                buffer.write(0, &[round; LEN]).expect("write");
            }
        },
    );
    assert_eq!(
        after,
        ([ROUNDS; LEN], [ROUNDS; LEN]),
        "the last round landed"
    );
}
