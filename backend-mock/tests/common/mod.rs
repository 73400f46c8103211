//! Helpers shared by the integration tests: fixtures and register access.
#![allow(dead_code)] // each test binary uses a different subset

use vfio_hal::prelude::*;
use vfio_hal::Result;
use vfio_hal_mock::models::{CopyEngine, Edu};
use vfio_hal_mock::{MockContainer, MockDevice};

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

pub const EDU: &str = "0000:00:04.0";
pub const DMA: &str = "0000:00:05.0";

/// A container with edu plugged, and the opened device.
pub fn edu() -> Result<(MockContainer, MockDevice)> {
    let c = MockContainer::new();
    c.plug(EDU, Edu::new())?;
    let d = c.open_device(EDU)?;
    Ok((c, d))
}

/// A container with the copy engine plugged, and the opened device.
pub fn copy_engine() -> Result<(MockContainer, MockDevice)> {
    let c = MockContainer::new();
    c.plug(DMA, CopyEngine::new())?;
    let d = c.open_device(DMA)?;
    Ok((c, d))
}

/// Reads a u32 register of BAR0.
pub fn reg32(dev: &MockDevice, offset: u64) -> u32 {
    dev.region(0)
        .and_then(|r| r.read_at::<u32>(offset))
        .expect("BAR0 read")
}

/// Writes a u32 register of BAR0.
pub fn set_reg32(dev: &MockDevice, offset: u64, value: u32) {
    dev.region(0)
        .and_then(|r| r.write_at::<u32>(offset, value))
        .expect("BAR0 write");
}

/// Writes a u64 register of BAR0.
pub fn set_reg64(dev: &MockDevice, offset: u64, value: u64) {
    dev.region(0)
        .and_then(|r| r.write_at::<u64>(offset, value))
        .expect("BAR0 write");
}
