//! The kernel's migration data fd behind a
//! [`MigrationData`](vfio_hal::migration::MigrationData): reads and
//! writes go to the fd (the driver's stream), `VFIO_MIG_GET_PRECOPY_INFO`
//! is an ioctl on it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vfio_hal::device::feature;
use vfio_hal::migration::{DataStream, PrecopyInfo};
use vfio_hal::{Result, Target};

use crate::sys;

/// A data fd from `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`.
#[derive(Debug)]
pub struct KernelDataStream {
    file: File,
}

impl KernelDataStream {
    /// Wraps the fd the kernel handed out.
    pub fn new(fd: OwnedFd) -> Self {
        Self { file: fd.into() }
    }
}

impl Read for KernelDataStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for KernelDataStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataStream for KernelDataStream {
    fn precopy_info(&self) -> Result<PrecopyInfo> {
        let (initial_bytes, dirty_bytes) =
            sys::migration_precopy_info(self.file.as_fd()).map_err(|e| {
                e.into_error(
                    "VFIO_MIG_GET_PRECOPY_INFO",
                    Target::Feature(feature::MIG_DEVICE_STATE),
                )
            })?;
        Ok(PrecopyInfo {
            initial_bytes,
            dirty_bytes,
        })
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}
