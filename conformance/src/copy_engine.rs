//! A driver for the mock's MSI-X DMA copy engine, written against the hal traits.
//!
//! The engine (the mock's `vfio_hal_mock::models::copy_engine`, whose
//! module docs describe the device) has the contract of the DMA engines the kernel
//! selftests drive: a copy succeeds with exactly one MSI-X interrupt; a copy
//! from or to an unmapped IOVA corrupts nothing and raises no interrupt.
//! Only fixtures that name a copy engine ([`crate::Fixture::copy_engine`])
//! run the cases that use it.

use std::time::{Duration, Instant};

use vfio_hal::{Container, Device, PciConfig, RegionExt};

use crate::dma_engine::{Completion, DmaEngine, DriverMemory, EngineKind};
use crate::edu::DriverError;
use crate::fixture::Fixture;
use crate::msix::MsixDriver;
use vfio_hal::eventfd::EventFd;

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
    /// Doorbell: the source is an SRAM offset in BAR2.
    pub const DOORBELL_SRC_SRAM: u32 = 1 << 1;
    /// Doorbell: the destination is an SRAM offset in BAR2.
    pub const DOORBELL_DST_SRAM: u32 = 1 << 2;
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

/// Largest copy, in bytes.
pub const MAX_LEN: u32 = 1 << 20;
/// The MSI-X vector the driver asks for on completion.
pub const COMPLETION_VECTOR: u32 = 0;

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

    /// Writes one request and rings the doorbell with `doorbell` flags.
    fn start(&self, src: u64, dst: u64, len: u32, doorbell: u32) -> Result<(), DriverError> {
        self.bar.write_at(reg::SRC, src)?;
        self.bar.write_at(reg::DST, dst)?;
        self.bar.write_at(reg::LEN, len)?;
        self.bar.write_at(reg::VECTOR, COMPLETION_VECTOR)?;
        self.bar
            .write_at(reg::DOORBELL, reg::DOORBELL_GO | doorbell)?;
        Ok(())
    }

    /// Waits until the engine is idle, reads how the request ended and
    /// clears the status.
    fn wait(&self) -> Result<Completion, DriverError> {
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
            Completion::Faulted(self.bar.read_at::<u32>(reg::ERROR)?)
        } else if status & reg::STATUS_DONE != 0 {
            Completion::Done
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

/// The copy engine as a [`DmaEngine`]: it checks the whole source and
/// destination in the IOMMU before a byte moves, and raises
/// [`COMPLETION_VECTOR`] when a copy completes.
impl<D: Device> DmaEngine for CopyEngineDriver<D> {
    fn max_memcpy_size(&self) -> u64 {
        u64::from(MAX_LEN)
    }

    fn reports_faults(&self) -> bool {
        true
    }

    fn memcpy_start(&mut self, src: u64, dst: u64, len: u64) -> Result<(), DriverError> {
        let len = u32::try_from(len)
            .ok()
            .filter(|l| (1..=MAX_LEN).contains(l))
            .ok_or(DriverError::InvalidRequest(
                "a copy-engine copy moves 1 byte to 1 MiB",
            ))?;
        self.start(src, dst, len, 0)
    }

    fn memcpy_wait(&mut self) -> Result<Completion, DriverError> {
        self.wait()
    }

    /// A one-byte copy inside the engine's SRAM: the completion MSI with no
    /// memory access through the IOMMU.
    fn send_msi(&mut self) -> Result<(), DriverError> {
        self.start(0, 1, 1, reg::DOORBELL_SRC_SRAM | reg::DOORBELL_DST_SRAM)?;
        match self.wait()? {
            Completion::Done => Ok(()),
            Completion::Faulted(code) => Err(DriverError::Unexpected {
                what: "copy engine SRAM copy for an MSI",
                expected: 0,
                got: u64::from(code),
            }),
        }
    }

    fn msi_eventfd(&self) -> Option<&EventFd> {
        self.msix.eventfd(COMPLETION_VECTOR)
    }
}

/// The fixture's copy engine as a DMA engine of the H cases.
#[derive(Debug, Clone, Copy)]
pub struct CopyEngine;

impl EngineKind for CopyEngine {
    const NAME: &'static str = "copy engine";

    type Driver<'c, C: Container + 'c> = CopyEngineDriver<C::Device>;

    fn device_name<F: Fixture>(fixture: &F) -> Option<&str> {
        fixture.copy_engine()
    }

    /// The engine takes its requests in registers: no driver memory.
    fn open<'c, C: Container>(
        device: C::Device,
        _memory: DriverMemory<'c, C>,
        timeout: Duration,
    ) -> Result<CopyEngineDriver<C::Device>, DriverError> {
        CopyEngineDriver::open(device, timeout)
    }
}
