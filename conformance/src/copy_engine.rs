//! A driver for the mock's MSI-X DMA copy engine, written against the hal traits.
//!
//! The engine (the mock's `vfio_hal_mock::models::copy_engine`, whose
//! module docs describe the device) has the contract of the DMA engines the kernel
//! selftests drive: a copy succeeds with exactly one MSI-X interrupt; a copy
//! from or to an unmapped IOVA corrupts nothing and raises no interrupt.
//! Only fixtures that name a copy engine ([`crate::Fixture::copy_engine`])
//! run the cases that use it.

use std::time::{Duration, Instant};

use vfio_hal::{Device, PciConfig, RegionExt};

use crate::edu::DriverError;
use crate::msix::MsixDriver;

/// PCI vendor id of the copy engine.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device id of the copy engine.
pub const DEVICE_ID: u16 = 0x0c0e;
/// Value of the identification register.
pub const ID_VALUE: u32 = 0x0c0e_0001;

/// BAR 0 register offsets and bits: the driver's own copy, read from the
/// device's documentation as for real hardware (the test `register_maps`
/// checks it against the model's).
pub mod reg {
    /// Identification (RO u32).
    pub const ID: u64 = 0x00;
    /// Source IOVA (RW u64).
    pub const SRC: u64 = 0x08;
    /// Destination IOVA (RW u64).
    pub const DST: u64 = 0x10;
    /// Length in bytes (RW u32).
    pub const LEN: u64 = 0x18;
    /// MSI-X vector raised on completion (RW u32).
    pub const VECTOR: u64 = 0x1c;
    /// Doorbell (WO u32).
    pub const DOORBELL: u64 = 0x20;
    /// Status (RW u32).
    pub const STATUS: u64 = 0x24;
    /// Error code of the last failed request (RO u32), one of [`super::err`].
    pub const ERROR: u64 = 0x28;

    /// Doorbell: start the copy.
    pub const DOORBELL_GO: u32 = 1 << 0;
    /// Status: a copy is in progress.
    pub const STATUS_BUSY: u32 = 1 << 0;
    /// Status: the last copy completed (write 1 to clear).
    pub const STATUS_DONE: u32 = 1 << 1;
    /// Status: the last copy failed (write 1 to clear).
    pub const STATUS_ERROR: u32 = 1 << 2;
}

/// Error codes of the error register.
pub mod err {
    /// Reading the source faulted in the IOMMU.
    pub const SRC_FAULT: u32 = 1;
    /// Writing the destination faulted in the IOMMU.
    pub const DST_FAULT: u32 = 2;
}

/// How a copy request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStatus {
    /// The data was copied.
    Done,
    /// The engine refused or faulted, with its error code
    /// ([`err`]).
    Failed(u32),
}

/// A driver for one copy engine: its registers plus its MSI-X vectors.
pub struct CopyEngineDriver<D: Device> {
    bar: D::Region,
    timeout: Duration,
    msix: MsixDriver<D>,
}

impl<D: Device> std::fmt::Debug for CopyEngineDriver<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyEngineDriver")
            .field("msix", &self.msix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<D: Device> CopyEngineDriver<D> {
    /// Checks the identity, enables bus mastering and routes every vector.
    pub fn open(device: D, timeout: Duration) -> Result<Self, DriverError> {
        let ids = (device.vendor_id()?, device.device_id()?);
        if ids != (VENDOR_ID, DEVICE_ID) {
            return Err(DriverError::Unexpected {
                what: "copy engine vendor:device id",
                expected: (u64::from(VENDOR_ID) << 16) | u64::from(DEVICE_ID),
                got: (u64::from(ids.0) << 16) | u64::from(ids.1),
            });
        }
        let bar = device.region(0)?;
        let id = bar.read_at::<u32>(reg::ID)?;
        if id != ID_VALUE {
            return Err(DriverError::Unexpected {
                what: "copy engine identification",
                expected: u64::from(ID_VALUE),
                got: u64::from(id),
            });
        }
        device.set_bus_master(true)?;
        let mut msix = MsixDriver::open(device)?;
        msix.route()?;
        Ok(Self { bar, timeout, msix })
    }

    /// The MSI-X side (eventfds per vector).
    pub fn msix(&self) -> &MsixDriver<D> {
        &self.msix
    }

    /// Copies `len` bytes from IOVA `src` to IOVA `dst`, asking for
    /// `vector` on completion, and waits until the engine is idle.
    pub fn copy(
        &self,
        src: u64,
        dst: u64,
        len: u32,
        vector: u32,
    ) -> Result<CopyStatus, DriverError> {
        self.bar.write_at(reg::SRC, src)?;
        self.bar.write_at(reg::DST, dst)?;
        self.bar.write_at(reg::LEN, len)?;
        self.bar.write_at(reg::VECTOR, vector)?;
        self.bar.write_at(reg::DOORBELL, reg::DOORBELL_GO)?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            let status = self.bar.read_at::<u32>(reg::STATUS)?;
            if status & reg::STATUS_BUSY == 0 {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    what: "copy engine request",
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let outcome = if status & reg::STATUS_ERROR != 0 {
            CopyStatus::Failed(self.bar.read_at::<u32>(reg::ERROR)?)
        } else if status & reg::STATUS_DONE != 0 {
            CopyStatus::Done
        } else {
            return Err(DriverError::Unexpected {
                what: "copy engine status after a request (neither done nor error)",
                expected: u64::from(reg::STATUS_DONE),
                got: u64::from(status),
            });
        };
        self.bar
            .write_at(reg::STATUS, reg::STATUS_DONE | reg::STATUS_ERROR)?;
        Ok(outcome)
    }
}
