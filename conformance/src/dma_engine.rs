//! One driver interface for every device that copies memory by DMA, so the
//! DMA-engine cases (group H) are written once and run on each engine.
//!
//! It is the driver interface of the kernel's VFIO selftests
//! (`struct vfio_pci_driver_ops` in `tools/testing/selftests/vfio/lib`:
//! `memcpy_start`, `memcpy_wait`, `send_msi`, `max_memcpy_size`), over the
//! hal traits. A new engine is one file — its driver implementing
//! [`DmaEngine`] and a marker implementing [`EngineKind`] — plus one line
//! in the engine list of `__for_each_case!`.
//!
//! Engines today: QEMU's edu ([`crate::edu::EduEngine`], copying through
//! its 4 KiB device buffer) and the mock's MSI-X copy engine
//! ([`crate::copy_engine::CopyEngine`]).

use std::time::Duration;

use vfio_hal::Device;

use crate::edu::DriverError;
use crate::fixture::Fixture;
use vfio_hal::eventfd::EventFd;

/// How a copy ended, as the engine saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The engine finished the copy.
    Done,
    /// The engine stopped the copy on an IOMMU fault (or refused it), with
    /// its engine-specific error code.
    Faulted(u32),
}

/// A driver for a device that copies memory by DMA.
///
/// All addresses are IOVAs the caller has mapped (or deliberately left
/// unmapped) in the container the device was opened through. One request
/// is in flight at a time: [`DmaEngine::memcpy_start`], then
/// [`DmaEngine::memcpy_wait`]. Every wait is bounded by the driver's
/// timeout and fails with [`DriverError::Timeout`].
pub trait DmaEngine {
    /// The largest copy, in bytes, that one request may ask for.
    fn max_memcpy_size(&self) -> u64;

    /// Whether the engine observes IOMMU faults and reports them as
    /// [`Completion::Faulted`]. An engine that does not (edu) completes a
    /// faulted request as [`Completion::Done`].
    fn reports_faults(&self) -> bool;

    /// Starts copying `len` bytes from IOVA `src` to IOVA `dst`.
    ///
    /// Guarantees:
    /// - with `len` outside `1..=max_memcpy_size()`, returns
    ///   [`DriverError::InvalidRequest`] and starts nothing;
    /// - on `Ok`, the device has accepted the request, and every memory
    ///   write the caller made before the call is visible to it;
    /// - nothing is consumed from [`DmaEngine::msi_eventfd`].
    fn memcpy_start(&mut self, src: u64, dst: u64, len: u64) -> Result<(), DriverError>;

    /// Waits until the request started last has ended, and says how.
    ///
    /// Guarantees, when it returns `Ok`:
    /// - the device is idle and ready for the next request;
    /// - [`Completion::Done`] from an engine that reports faults: the
    ///   destination holds the source's bytes, all of them, and every write
    ///   of the copy is visible to the CPU;
    /// - a completed request raises exactly one MSI on
    ///   [`DmaEngine::msi_eventfd`] (its signal may land a moment after the
    ///   return); the driver consumes none of them;
    /// - an unmapped (or read-only destination) IOVA never lets the device
    ///   write memory outside `dst..dst + len`. An engine that
    ///   [reports faults](DmaEngine::reports_faults) checks the whole range
    ///   first: it returns [`Completion::Faulted`], writes no byte of the
    ///   destination and raises no MSI. One that does not returns
    ///   [`Completion::Done`] and raises its MSI; what it wrote to a mapped
    ///   destination after a faulted read is unspecified.
    fn memcpy_wait(&mut self) -> Result<Completion, DriverError>;

    /// Makes the device itself raise one MSI, moving no data.
    ///
    /// Guarantees, when it returns `Ok`: the device has raised exactly one
    /// MSI on [`DmaEngine::msi_eventfd`] (its signal may land a moment
    /// later); no memory mapped for the caller was read or written.
    fn send_msi(&mut self) -> Result<(), DriverError>;

    /// The eventfd the engine's completion MSI and [`DmaEngine::send_msi`]
    /// signal, while the driver has it routed ([`EngineKind::open`] routes it).
    fn msi_eventfd(&self) -> Option<&EventFd>;
}

/// How the cases find and open an engine on a fixture: the one thing a new
/// engine adds besides its driver.
pub trait EngineKind {
    /// The engine's name in messages, e.g. `"edu"`.
    const NAME: &'static str;

    /// The engine's driver for a device of type `D`.
    type Driver<D: Device>: DmaEngine;

    /// The fixture's device of this kind, if it has one.
    fn device_name<F: Fixture>(fixture: &F) -> Option<&str>;

    /// Opens the driver on `device`: checks the identity, enables bus
    /// mastering and routes the MSI [`DmaEngine::msi_eventfd`] reports.
    fn open<D: Device>(device: D, timeout: Duration) -> Result<Self::Driver<D>, DriverError>;
}
