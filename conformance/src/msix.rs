//! A tiny generic MSI-X driver: routes vectors to eventfds and fires them by loopback.
//!
//! It knows nothing about the device behind the vectors, so the same code
//! runs on the mock's copy engine and on a QEMU `e1000e` or `nvme` in the
//! real-kernel lane: irq info for the vector count, `SET_IRQS` with eventfds,
//! the loopback trigger (`DATA_NONE | ACTION_TRIGGER`) to fire a vector from
//! software, and the MSI-X capability in config space
//! ([`vfio_hal::msix`]) to find the table.

use std::os::fd::BorrowedFd;

use vfio_hal::irq::index as irq_index;
use vfio_hal::{Device, Irq, PciConfig, Region};

use crate::edu::DriverError;
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// The most vectors the driver routes (enough to see per-vector behaviour,
/// few enough to stay cheap on devices with hundreds).
pub const MAX_VECTORS: u32 = 8;

pub use vfio_hal::msix::MsixLayout;

/// Reads the MSI-X capability of `device`, if it has one
/// ([`PciConfig::msix_layout`]: checked against the BAR sizes).
pub fn layout<D: Device + ?Sized>(device: &D) -> Result<Option<MsixLayout>, DriverError> {
    Ok(device.msix_layout()?)
}

/// Routes the first vectors of a device's MSI-X index to eventfds.
///
/// # Guarantees
/// - [`MsixDriver::route`] routes vectors `0..vectors()` in one request, or
///   none of them.
/// - Dropping the driver disables MSI-X before the eventfds close.
pub struct MsixDriver<D: Device> {
    irq: D::Irq,
    fds: Vec<EventFd>,
    routed: bool,
    device: D,
}

impl<D: Device> std::fmt::Debug for MsixDriver<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixDriver")
            .field("device", &self.device.info().name)
            .field("vectors", &self.fds.len())
            .field("routed", &self.routed)
            .finish()
    }
}

impl<D: Device> MsixDriver<D> {
    /// Takes a device whose MSI-X index has at least one vector.
    pub fn open(device: D) -> Result<Self, DriverError> {
        let irq = device.irq(irq_index::MSIX)?;
        let count = irq.info().count;
        if count == 0 {
            return Err(DriverError::Unexpected {
                what: "MSI-X vector count",
                expected: 1,
                got: 0,
            });
        }
        let vectors = count.min(MAX_VECTORS) as usize;
        let fds = (0..vectors)
            .map(|_| EventFd::nonblocking())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DriverError::Os {
                what: "create MSI-X eventfds",
                source,
            })?;
        Ok(Self {
            irq,
            fds,
            routed: false,
            device,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The MSI-X irq index.
    pub fn irq(&self) -> &D::Irq {
        &self.irq
    }

    /// How many vectors the driver handles.
    pub fn vectors(&self) -> u32 {
        self.fds.len() as u32
    }

    /// The eventfd of `vector` (kept after a de-assign, to watch it stay quiet).
    pub fn eventfd(&self, vector: u32) -> Option<&EventFd> {
        self.fds.get(vector as usize)
    }

    /// Routes every vector to its eventfd, in one request.
    pub fn route(&mut self) -> Result<(), DriverError> {
        let fds: Vec<Option<BorrowedFd<'_>>> = self.fds.iter().map(|f| Some(f.as_fd())).collect();
        self.irq.set_eventfds(0, &fds)?;
        self.routed = true;
        Ok(())
    }

    /// De-assigns `vector`; the others stay routed.
    pub fn deassign(&mut self, vector: u32) -> Result<(), DriverError> {
        Ok(self.irq.set_eventfd(vector, None)?)
    }

    /// Fires `vector` from software (loopback).
    pub fn trigger(&self, vector: u32) -> Result<(), DriverError> {
        Ok(self.irq.trigger(vector, 1)?)
    }

    /// Reads and resets every vector's counter.
    pub fn take_all(&self) -> Result<Vec<u64>, DriverError> {
        self.fds
            .iter()
            .map(EventFd::take)
            .collect::<Result<_, _>>()
            .map_err(|source| DriverError::Os {
                what: "read MSI-X eventfds",
                source,
            })
    }

    /// Tears every route down.
    pub fn disable(&mut self) -> Result<(), DriverError> {
        if self.routed {
            self.irq.disable()?;
            self.routed = false;
        }
        Ok(())
    }

    /// The region holding the MSI-X table, with the table's layout.
    pub fn table_region(&self) -> Result<Option<(MsixLayout, D::Region)>, DriverError> {
        let Some(layout) = layout(&self.device)? else {
            return Ok(None);
        };
        let region = self.device.region(layout.table_bar)?;
        Ok(Some((layout, region)))
    }
}

impl<D: Device> Drop for MsixDriver<D> {
    fn drop(&mut self) {
        if self.routed {
            if let Err(e) = self.irq.disable() {
                log::warn!("MSI-X driver: disabling on drop failed: {e}");
            }
        }
    }
}

/// Whether `[offset, offset + len)` of `region` overlaps any of its mappable areas.
pub fn overlaps_mappable<R: Region + ?Sized>(region: &R, offset: u64, len: u64) -> bool {
    let end = offset.saturating_add(len);
    region
        .info()
        .mappable_areas()
        .iter()
        .any(|a| a.offset < end && offset < a.offset.saturating_add(a.size))
}
