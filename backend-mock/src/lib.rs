//! # vfio-hal-mock
//!
//! An in-memory VFIO backend for [`vfio_hal`]: VMM code and user-space
//! drivers run against it with no `/dev/vfio`, and it is the conformance
//! suite's first implementer. It is a normal public crate for other
//! projects' tests, not a `#[cfg(test)]` fake.
//!
//! - [`MockContainer`] implements [`vfio_hal::Container`] over a
//!   kernel-faithful [`MockIommu`] (type1v2/iommufd rules and errnos,
//!   reserved IOVA holes, a mapping limit, read-only mappings enforced on
//!   device writes, faults recorded). Devices are plugged into it by name.
//! - [`MockDevice`], [`MockRegion`] and [`MockIrq`] implement the device
//!   traits with vfio-pci's layout (nine regions, five irq indices) and
//!   semantics (config-space virtualization, BAR sizing, INTx automasking,
//!   MSI/MSI-X exclusivity, the low-power device features with their
//!   wakeup eventfd); interrupts are delivered on real eventfds.
//! - A [`DeviceModel`] supplies the registers ([`model`]); [`models`] has
//!   QEMU's edu and a DMA copy engine. The PCI plumbing is shared: config
//!   space with read-only and write-1-to-clear masks, BAR sizing, the
//!   capability list, MSI and MSI-X capabilities with table and PBA, INTx
//!   with vfio-pci's mask/unmask/resample semantics, region info with
//!   capability chains (sparse mmap, region type).
//! - Time is virtual ([`clock`]): no test sleeps.
//!
//! The decorators that wrap any backend — fault injection and tracing —
//! are `vfio_hal::decorate`'s; the mock is their usual inner backend.
//!
//! # Deviations from vfio-pci
//! All deliberate, all documented where they apply:
//! - Handler-backed BARs (edu's registers) are not flagged `MMAP`: their
//!   accesses must reach the model. vfio-pci maps real BARs. RAM-like BAR
//!   areas are mmappable (memfd-backed).
//! - The MSI-X table page is left out of its BAR's sparse-mmap capability,
//!   as vfio-pci did before Linux 4.16; current kernels report
//!   `MSIX_MAPPABLE` instead. Region reads of the table return all ones and
//!   writes are dropped, exactly as vfio-pci's region read/write does.
//! - With memory decode off, BAR reads and writes fail with `EIO` as in
//!   vfio-pci, but existing mmaps of RAM areas keep working (vfio-pci zaps
//!   them and faults with SIGBUS).
//! - In low power (`LOW_POWER_ENTRY`, with or without wakeup) mmaps of RAM
//!   areas, old and new, keep working too, where vfio-pci zaps them at
//!   entry and faults them with SIGBUS until low power ends (exit, a
//!   wakeup, close); touching one neither resumes the device nor signals
//!   the wakeup eventfd (as on vfio-pci, where it only faults). Region
//!   reads and writes do behave as vfio-pci's: the register mirror is off
//!   in low power, so every one reaches the device and resumes it.
//! - A device in low power is runtime-suspended as soon as the call that
//!   engaged it (and each later access) returns. The kernel suspends it
//!   asynchronously, a moment later: an access made at once may find the
//!   real device not yet suspended, and then it signals no wakeup and
//!   leaves low power engaged.
//! - The INTx resample eventfd is checked whenever the device is touched
//!   (any region access or `SET_IRQS`), not from a kernel wait queue: a
//!   re-sent interrupt after a resample shows up at the next access.
//! - Region accesses are split into naturally aligned pieces of up to 8
//!   bytes, as vfio-pci does since it gained 8-byte accesses (Linux 6.13);
//!   older kernels split 8-byte accesses into two 4-byte ones.
//! - Of the device features only the low-power ones (see [`MockDevice`]);
//!   every other is `ENOTTY`, as vfio-pci answers for a device without
//!   SR-IOV or migration support. No file descriptors to keep
//!   ([`vfio_hal::Device::keep_fds`] is empty).
//!
//! ```
//! use vfio_hal::prelude::*;
//! use vfio_hal::{DmaAccess, DmaBuffer};
//! use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
//!
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let edu = container.open_device("edu")?;
//! edu.set_bus_master(true)?;
//!
//! // RAM -> device buffer -> RAM through the mock IOMMU.
//! let src = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadOnly)?;
//! let dst = container.map_buffer(0x20_0000, DmaBuffer::new(4096)?, DmaAccess::WriteOnly)?;
//! src.buffer().write(0, b"hello, edu")?;
//! let bar0 = edu.region(0)?;
//! for (from, to, cmd) in [(0x10_0000, reg::DMA_START, reg::EDU_DMA_RUN),
//!                         (reg::DMA_START, 0x20_0000, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR)] {
//!     bar0.write_at::<u64>(reg::DMA_SRC, from)?;
//!     bar0.write_at::<u64>(reg::DMA_DST, to)?;
//!     bar0.write_at::<u64>(reg::DMA_CNT, 10)?;
//!     bar0.write_at::<u64>(reg::DMA_CMD, cmd)?;
//!     while bar0.read_at::<u64>(reg::DMA_CMD)? & reg::EDU_DMA_RUN != 0 {}
//! }
//! let mut out = [0u8; 10];
//! dst.buffer().read(0, &mut out)?;
//! assert_eq!(&out, b"hello, edu");
//! # Ok::<(), vfio_hal::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

// mockall expectation mocks of the hal traits.
#[cfg(feature = "mockall")]
pub mod expect;

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod container;
mod device;
mod dma_log;
mod hypervisor;
pub mod iommu;
pub mod layout;
pub mod migration;
mod mirror;
pub mod model;
pub mod models;
mod pci;
mod sys;

pub use clock::MockClock;
pub use container::{MockContainer, INCIDENT_LOG_CAPACITY};
pub use device::{MockDevice, MockIrq, MockRegion};
pub use hypervisor::MockHypervisor;
pub use iommu::{
    ConfigError, DirtyReads, DmaDirection, FaultReason, IommuConfig, IommuFault, MappingInfo,
    MockIommu, FAULT_LOG_CAPACITY,
};
pub use layout::{BarKind, BarLayout, DeviceRegionLayout, MsiLayout, MsixLayout, PciLayout};
pub use model::{model_error, DeviceContext, DeviceModel, DmaError, Incident, ModelRefusal};
pub use pci::interrupts::IrqMode;
