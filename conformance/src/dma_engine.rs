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
//! its 4 KiB device buffer), the mock's MSI-X copy engine
//! ([`crate::copy_engine::CopyEngine`]) and QEMU's igb NIC looping frames
//! back to itself ([`crate::igb::IgbEngine`]).
//!
//! Like the selftests' `driver.region`, a driver may need memory of its own
//! that the device reaches (descriptor rings, packet headers): the case
//! lends it a [`DriverMemory`], the container the device was opened through
//! and an IOVA window the case maps nothing in.

use std::time::Duration;

use vfio_hal::Container;

use crate::edu::DriverError;
use crate::fixture::{Fixture, IOVA_WINDOW};
use vfio_hal::eventfd::EventFd;

/// Bytes of IOVA space a case lends an engine's driver ([`DriverMemory`]).
pub const DRIVER_IOVA_LEN: u64 = 1 << 20;

/// How a copy ended, as the engine saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The engine finished the copy.
    Done,
    /// The engine stopped the copy on an IOMMU fault (or refused it), with
    /// its engine-specific error code.
    Faulted(u32),
}

/// What a case lends an engine's driver at [`EngineKind::open`]: the
/// container the device was opened through, and the IOVA window
/// `[iova, iova + len)` of it in which the case maps nothing.
///
/// A driver may map memory of its own there (and only there) for as long
/// as it lives; it unmaps it when dropped, after quiescing the device.
#[derive(Debug)]
pub struct DriverMemory<'c, C> {
    /// The container the device was opened through.
    pub container: &'c C,
    /// Start of the window, aligned to the IOMMU page size.
    pub iova: u64,
    /// Bytes in the window.
    pub len: u64,
}

impl<'c, C: Container> DriverMemory<'c, C> {
    /// The window a case lends on fixture `f`: the last
    /// [`DRIVER_IOVA_LEN`] bytes of the fixture's [`IOVA_WINDOW`], which no
    /// case maps anything in.
    pub fn for_fixture<F: Fixture<Container = C>>(f: &F, container: &'c C) -> Self {
        Self {
            container,
            iova: f.capabilities().iova_base + IOVA_WINDOW - DRIVER_IOVA_LEN,
            len: DRIVER_IOVA_LEN,
        }
    }
}

/// A driver for a device that copies memory by DMA.
///
/// All addresses are IOVAs the caller has mapped (or deliberately left
/// unmapped) in the container the device was opened through. One request
/// is in flight at a time: [`DmaEngine::memcpy_start`], then
/// [`DmaEngine::memcpy_wait`]. Every wait is bounded by the driver's
/// timeout and fails with [`DriverError::Timeout`].
///
/// A request is *faulted* when its source range holds an IOVA the device
/// cannot read (unmapped, or write-only) or its destination range one it
/// cannot write (unmapped, or read-only).
pub trait DmaEngine {
    /// The largest copy, in bytes, that one request may ask for.
    fn max_memcpy_size(&self) -> u64;

    /// Whether the engine sees every fault and ends every faulted request
    /// as [`Completion::Faulted`] (the copy engine). One that does not may
    /// end a faulted request either way: edu sees none (it copies out what
    /// its buffer holds), igb sees a source it cannot read at all but not a
    /// destination it cannot write ([`crate::igb`] says where the line runs).
    fn reports_faults(&self) -> bool;

    /// Starts copying `len` bytes from IOVA `src` to IOVA `dst`.
    ///
    /// Guarantees:
    /// - with `len` outside `1..=max_memcpy_size()`, or an address the
    ///   engine cannot take (its driver's docs say which: igb cannot
    ///   receive to IOVA 0), returns [`DriverError::InvalidRequest`] and
    ///   starts nothing;
    /// - on `Ok`, the device has accepted the request, and every memory
    ///   write the caller made before the call is visible to it;
    /// - nothing is consumed from [`DmaEngine::msi_eventfd`].
    fn memcpy_start(&mut self, src: u64, dst: u64, len: u64) -> Result<(), DriverError>;

    /// Waits until the request started last has ended, and says how.
    ///
    /// Guarantees, when it returns `Ok`:
    /// - the device is idle and ready for the next request;
    /// - [`Completion::Done`]: the request raises exactly one MSI on
    ///   [`DmaEngine::msi_eventfd`] (its signal may land a moment after the
    ///   return); the driver consumes none of them. From a request that was
    ///   not faulted, the destination holds the source's bytes, all of
    ///   them, and every write of the copy is visible to the CPU;
    /// - [`Completion::Faulted`]: the device wrote no byte of the
    ///   destination and raises no MSI for the request;
    /// - a faulted request never lets the device write memory outside
    ///   `dst..dst + len`. An engine that
    ///   [reports faults](DmaEngine::reports_faults) checks the whole range
    ///   first and ends it as [`Completion::Faulted`]. One that does not may
    ///   end it as [`Completion::Done`], with its MSI; what it wrote to the
    ///   mapped part of the destination is then unspecified.
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

    /// The engine's driver for a device of container type `C`, borrowing
    /// the container for `'c` (for memory of its own; edu and the copy
    /// engine need none).
    type Driver<'c, C: Container + 'c>: DmaEngine;

    /// The fixture's device of this kind, if it has one.
    fn device_name<F: Fixture>(fixture: &F) -> Option<&str>;

    /// Opens the driver on `device`, opened through `memory.container`:
    /// checks the identity, enables bus mastering, sets up what it keeps in
    /// `memory` and routes the MSI [`DmaEngine::msi_eventfd`] reports.
    fn open<'c, C: Container>(
        device: C::Device,
        memory: DriverMemory<'c, C>,
        timeout: Duration,
    ) -> Result<Self::Driver<'c, C>, DriverError>;
}
