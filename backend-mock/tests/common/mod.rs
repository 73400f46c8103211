//! Helpers shared by the integration tests: real eventfds and fixtures.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use vfio_hal::prelude::*;
use vfio_hal::Result;
use vfio_hal_mock::models::{CopyEngine, Edu};
use vfio_hal_mock::{MockContainer, MockDevice};

/// A non-blocking eventfd, as a VMM would create for an irq route.
#[derive(Debug)]
pub struct EventFd(File);

impl EventFd {
    pub fn new() -> Self {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: eventfd just returned this fd and nothing else owns it.
        Self(File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Reads and resets the counter; 0 if it was not signalled.
    pub fn take(&self) -> u64 {
        let mut b = [0u8; 8];
        match (&self.0).read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            Ok(n) => panic!("short eventfd read of {n} bytes"),
            Err(e) if e.kind() == IoErrorKind::WouldBlock => 0,
            Err(e) => panic!("eventfd read: {e}"),
        }
    }

    /// Adds `n` to the counter (what KVM does to a resample fd).
    pub fn signal(&self, n: u64) {
        (&self.0)
            .write_all(&n.to_ne_bytes())
            .expect("eventfd write");
    }
}

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
