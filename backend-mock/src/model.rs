//! The device-model API: what a model implements, and the context it acts through.
//!
//! The shape follows rust-vmm vfio-user's `ServerBackend` and openvmm's
//! `EmulatedDevice`: the model answers region reads and writes (fallibly),
//! resets, and declares its PCI resources once ([`DeviceModel::layout`]).
//! Everything PCI-generic — config space, BAR sizing, capabilities, MSI and
//! MSI-X capabilities with table and PBA, INTx masking, region info and
//! capability chains, eventfd delivery — is done by the plumbing, so a model
//! contains only its registers. Through [`DeviceContext`] it raises
//! interrupts, performs DMA through the container's IOMMU, reads virtual
//! time and reports refused requests.
//!
//! A minimal model, a 4 KiB scratch register file:
//!
//! ```
//! use vfio_hal::prelude::*;
//! use vfio_hal_mock::{BarLayout, DeviceContext, DeviceModel, MockContainer, PciLayout};
//!
//! #[derive(Debug)]
//! struct Scratch([u8; 4096]);
//!
//! impl DeviceModel for Scratch {
//!     fn layout(&self) -> PciLayout {
//!         let mut l = PciLayout::new(0x1234, 0x5678);
//!         l.bars[0] = Some(BarLayout::memory32(4096));
//!         l
//!     }
//!     fn read(&mut self, _: &mut DeviceContext<'_>, _region: u32, offset: u64, data: &mut [u8]) -> vfio_hal::Result<()> {
//!         let at = offset as usize; // the plumbing checked the bounds
//!         data.copy_from_slice(&self.0[at..at + data.len()]);
//!         Ok(())
//!     }
//!     fn write(&mut self, _: &mut DeviceContext<'_>, _region: u32, offset: u64, data: &[u8]) -> vfio_hal::Result<()> {
//!         let at = offset as usize;
//!         self.0[at..at + data.len()].copy_from_slice(data);
//!         Ok(())
//!     }
//!     fn reset(&mut self, _: &mut DeviceContext<'_>) {
//!         self.0 = [0; 4096];
//!     }
//! }
//!
//! let container = MockContainer::new();
//! container.plug("scratch", Scratch([0; 4096]))?;
//! let dev = container.open_device("scratch")?;
//! let bar = dev.region(0)?;
//! bar.write_at::<u64>(8, 0x1122_3344_5566_7788)?;
//! assert_eq!(bar.read_at::<u32>(12)?, 0x1122_3344);
//! assert_eq!(dev.vendor_id()?, 0x1234);
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::fmt;
use std::time::Duration;

use vfio_hal::pci::cfg;
use vfio_hal::{Error, ErrorKind, Result, Target};

use crate::container::Shared;
use crate::dma_log::DmaLog;
use crate::iommu::{DmaDirection, IommuFault};
use crate::layout::PciLayout;
use crate::pci::interrupts::IrqMode;
use crate::pci::PciFunction;

/// A device model: its registers and behaviour, behind the PCI plumbing.
///
/// Region callbacks get one naturally aligned access of 1, 2, 4 or 8 bytes
/// (a longer or unaligned user access is split the way vfio-pci splits it),
/// always inside the region and outside its RAM areas and MSI-X structures.
/// `region` is the vfio region index: 0–5 for BARs, 9 and up for
/// device-specific regions.
pub trait DeviceModel: Send + fmt::Debug + 'static {
    /// The PCI identity and resources. Read once, when the model is plugged.
    fn layout(&self) -> PciLayout;

    /// A read of `data.len()` bytes at `offset` of `region`.
    fn read(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<()>;

    /// A write of `data` at `offset` of `region`.
    fn write(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<()>;

    /// Function-level reset, called on `VFIO_DEVICE_RESET` and whenever the
    /// device is closed: back to power-on register state, or, for a device
    /// with no reset handler (QEMU's edu), only what the PCI core does
    /// (lower INTx).
    fn reset(&mut self, ctx: &mut DeviceContext<'_>);

    /// The virtual instant of the model's next scheduled work, if any.
    fn deadline(&self) -> Option<Duration> {
        None
    }

    /// The naturally aligned 4-byte registers, as `(region, offset)`, whose
    /// read has no side effect and returns a value that depends only on
    /// the model's own state (not on the clock). Read once, when the model
    /// is plugged.
    ///
    /// A 4-byte read of one may be answered without calling
    /// [`DeviceModel::read`], from the value an earlier read returned, as
    /// long as nothing has happened to the device since (no write, reset,
    /// due work, config or interrupt change) and no work is scheduled: such
    /// reads take no lock. Declaring a register whose read does change
    /// something makes the mock skip that change. Default: none.
    fn pure_registers(&self) -> Vec<(u32, u64)> {
        Vec::new()
    }

    /// Runs the work due at [`DeviceModel::deadline`]; the clock has reached it.
    fn on_deadline(&mut self, ctx: &mut DeviceContext<'_>) {
        let _ = ctx;
    }

    /// The model's complete state, for VFIO migration
    /// ([`crate::migration`]): registers, data, interrupt state and
    /// scheduled work (as time left from [`DeviceContext::now`], so that
    /// another device's clock can pick it up). `None`, the default, for a
    /// model that cannot migrate: its device then has no migration
    /// features (`ENOTTY`, as vfio-pci answers for a device without a
    /// migration driver).
    fn save_state(&self, ctx: &DeviceContext<'_>) -> Option<Vec<u8>> {
        let _ = ctx;
        None
    }

    /// Replaces the model's state with one [`save_state`](Self::save_state)
    /// produced, on this or another device of the same model. Untrusted
    /// bytes: a state the model does not accept is refused with a reason,
    /// and the model is left as it was.
    fn load_state(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        state: &[u8],
    ) -> std::result::Result<(), String> {
        let _ = (ctx, state);
        Err("the model cannot migrate".into())
    }
}

impl<M: DeviceModel + ?Sized> DeviceModel for Box<M> {
    fn layout(&self) -> PciLayout {
        (**self).layout()
    }
    fn read(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<()> {
        (**self).read(ctx, region, offset, data)
    }
    fn write(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        (**self).write(ctx, region, offset, data)
    }
    fn reset(&mut self, ctx: &mut DeviceContext<'_>) {
        (**self).reset(ctx)
    }
    fn deadline(&self) -> Option<Duration> {
        (**self).deadline()
    }
    fn pure_registers(&self) -> Vec<(u32, u64)> {
        (**self).pure_registers()
    }
    fn on_deadline(&mut self, ctx: &mut DeviceContext<'_>) {
        (**self).on_deadline(ctx)
    }
    fn save_state(&self, ctx: &DeviceContext<'_>) -> Option<Vec<u8>> {
        (**self).save_state(ctx)
    }
    fn load_state(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        state: &[u8],
    ) -> std::result::Result<(), String> {
        (**self).load_state(ctx, state)
    }
}

/// Why a model's DMA did not happen. Nothing was transferred in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmaError {
    /// The command register's bus-master bit is clear (recorded as an [`Incident`]).
    BusMasterDisabled,
    /// The IOMMU refused the access (recorded as a fault).
    Fault(IommuFault),
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BusMasterDisabled => f.write_str("DMA with bus mastering disabled"),
            Self::Fault(fault) => fault.fmt(f),
        }
    }
}

impl std::error::Error for DmaError {}

/// Something a device did that a test may want to assert on, other than
/// IOMMU faults ([`crate::MockContainer::faults`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Incident {
    /// The device tried DMA with bus mastering disabled; nothing moved.
    DmaWithoutBusMaster {
        /// The device's plug name.
        device: String,
        /// First IOVA of the attempted access.
        iova: u64,
        /// Its length.
        len: u64,
        /// Read or write.
        direction: DmaDirection,
    },
    /// The device raised MSI or MSI-X with bus mastering disabled: an MSI
    /// is a memory write by the device, so it was dropped (as on QEMU).
    MsiWithoutBusMaster {
        /// The device's plug name.
        device: String,
        /// The vector.
        vector: u32,
    },
    /// The model refused a request it cannot carry out safely.
    Refused {
        /// The device's plug name.
        device: String,
        /// What was refused and why.
        reason: String,
    },
}

/// The model's handle on its device and container, valid during one callback.
pub struct DeviceContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) pci: &'a mut PciFunction,
    pub(crate) shared: &'a Shared,
    pub(crate) dma_log: &'a mut DmaLog,
}

impl fmt::Debug for DeviceContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceContext")
            .field("device", &self.name)
            .field("command", &format_args!("{:#06x}", self.pci.command()))
            .field("irq_mode", &self.pci.irqs.mode())
            .finish()
    }
}

impl DeviceContext<'_> {
    /// The device's plug name.
    pub fn device_name(&self) -> &str {
        self.name
    }

    /// Current virtual time ([`crate::MockClock`]).
    pub fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    /// The PCI command register.
    pub fn command(&self) -> u16 {
        self.pci.command()
    }

    /// Whether the command register allows DMA.
    pub fn bus_master(&self) -> bool {
        self.command() & cfg::CMD_BUS_MASTER != 0
    }

    /// Whether MSI is enabled in config space (QEMU's `msi_enabled`).
    pub fn msi_enabled(&self) -> bool {
        self.pci.msi_enabled()
    }

    /// Whether MSI-X is enabled in config space.
    pub fn msix_enabled(&self) -> bool {
        self.pci.msix_enabled()
    }

    /// The interrupt mode the user set up with `SET_IRQS`.
    pub fn irq_mode(&self) -> IrqMode {
        self.pci.irqs.mode()
    }

    /// Sends MSI vector `vector`; true if it reached an eventfd. Dropped
    /// (and recorded) with bus mastering off: an MSI is a DMA write.
    pub fn signal_msi(&mut self, vector: u32) -> bool {
        self.msi_allowed(IrqMode::Msi, vector) && self.pci.irqs.signal_msi(vector)
    }

    /// Sends MSI-X vector `vector`; true if it reached an eventfd (a masked
    /// or unrouted vector sets its PBA bit instead). Dropped (and recorded)
    /// with bus mastering off.
    pub fn signal_msix(&mut self, vector: u32) -> bool {
        self.msi_allowed(IrqMode::Msix, vector) && self.pci.irqs.signal_msix(vector)
    }

    fn msi_allowed(&mut self, mode: IrqMode, vector: u32) -> bool {
        if self.bus_master() {
            return true;
        }
        self.pci
            .irqs
            .dropped_without_bus_master(self.name, mode, vector);
        log::debug!(
            "{}: MSI vector {vector} with bus mastering off, dropped",
            self.name
        );
        self.shared.record(Incident::MsiWithoutBusMaster {
            device: self.name.to_owned(),
            vector,
        });
        false
    }

    /// Drives the INTx line (level triggered).
    pub fn set_intx(&mut self, asserted: bool) {
        self.pci.set_intx(asserted);
    }

    fn dma_allowed(&self, iova: u64, len: u64, direction: DmaDirection) -> Result<(), DmaError> {
        if self.bus_master() {
            return Ok(());
        }
        log::debug!(
            "{}: DMA {direction:?} {iova:#x}+{len:#x} with bus mastering off",
            self.name
        );
        self.shared.record(Incident::DmaWithoutBusMaster {
            device: self.name.to_owned(),
            iova,
            len,
            direction,
        });
        Err(DmaError::BusMasterDisabled)
    }

    /// Device reads `buf.len()` bytes of host memory at `iova`, through the IOMMU.
    /// On failure `buf` is untouched.
    pub fn dma_read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.dma_allowed(iova, buf.len() as u64, DmaDirection::Read)?;
        self.shared
            .iommu
            .dma_read(self.name, iova, buf)
            .map_err(DmaError::Fault)
    }

    /// Device writes `data` to host memory at `iova`, through the IOMMU.
    /// On failure no byte is written.
    pub fn dma_write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        self.dma_allowed(iova, data.len() as u64, DmaDirection::Write)?;
        self.shared
            .iommu
            .dma_write(self.name, iova, data)
            .map_err(DmaError::Fault)?;
        self.dma_log.wrote(iova, data.len() as u64);
        Ok(())
    }

    /// Reads the RAM area of `bar` at `offset` (BAR-relative; must lie in
    /// one RAM area, else `OutOfRange`).
    pub fn ram_read(&self, bar: u8, offset: u64, out: &mut [u8]) -> Result<()> {
        self.check_ram(bar, offset, out.len())?;
        self.ram_of(bar)?.read(offset, out)
    }

    /// Writes the RAM area of `bar` at `offset` (BAR-relative; must lie in one RAM area).
    pub fn ram_write(&self, bar: u8, offset: u64, data: &[u8]) -> Result<()> {
        self.check_ram(bar, offset, data.len())?;
        self.ram_of(bar)?.write(offset, data)
    }

    fn check_ram(&self, bar: u8, offset: u64, len: usize) -> Result<()> {
        if self.pci.in_ram(bar, offset, len as u64) {
            Ok(())
        } else {
            Err(Error::OutOfRange {
                op: "ram access",
                target: Target::Region(u32::from(bar)),
                offset,
                len: len as u64,
                size: self.pci.bar_size(bar),
            })
        }
    }

    fn ram_of(&self, bar: u8) -> Result<&crate::sys::SharedRam> {
        self.pci.ram(bar).ok_or(Error::NotFound {
            op: "ram access",
            target: Target::Region(u32::from(bar)),
            reason: "BAR has no RAM area",
        })
    }

    /// Records that the model refused a request ([`Incident::Refused`]).
    pub fn refuse(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        log::info!("{}: refused: {reason}", self.name);
        self.shared.record(Incident::Refused {
            device: self.name.to_owned(),
            reason,
        });
    }
}

/// Why a device model refused an access: the source of a [`model_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device model refused: {reason}")]
pub struct ModelRefusal {
    /// The model's explanation.
    pub reason: String,
}

impl ModelRefusal {
    /// The refusal behind `err`, if a device model produced it.
    pub fn of(err: &Error) -> Option<&Self> {
        std::error::Error::source(err)?.downcast_ref()
    }
}

/// An error of `kind` about `region` for a model callback to return; its
/// source is a [`ModelRefusal`] with `reason`.
pub fn model_error(
    op: &'static str,
    region: u32,
    kind: ErrorKind,
    reason: impl Into<String>,
) -> Error {
    Error::other(
        op,
        Target::Region(region),
        kind,
        ModelRefusal {
            reason: reason.into(),
        },
    )
}
