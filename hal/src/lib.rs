//! # vfio-hal
//!
//! One trait-based hardware abstraction layer for Linux VFIO devices, so that
//! VMMs and user-space drivers are written once and run on the kernel's type1
//! container API, on iommufd, or on an in-memory mock in unit tests.
//!
//! A driver's whole life in one example — an address space, a device in it,
//! DMA memory the device writes, and the interrupt that says it is done —
//! here on the mock (`vfio-hal-mock`) with QEMU's `edu` device:
//!
//! ```
//! use std::time::Duration;
//! use vfio_hal::prelude::*;
//! use vfio_hal::{irq::index, DmaAccess, DmaBuffer};
//! use vfio_hal::eventfd::{EventFd, EventFdExt};
//! use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
//!
//! // Container: one IO address space. Device: opened into it.
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let edu = container.open_device("edu")?;
//!
//! // DMA: a buffer the device may write, at IOVA 1 MiB while `dst` lives.
//! let dst = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::WriteOnly)?;
//! dst.buffer().fill(0xff);
//!
//! // Interrupt: MSI vector 0 signals an eventfd. Bus mastering must be on,
//! // or the device can neither DMA nor send the MSI (dropped silently).
//! let done = EventFd::nonblocking()?;
//! edu.irq(index::MSI)?.set_eventfd(0, Some(done.as_fd()))?;
//! edu.set_bus_master(true)?;
//!
//! // Copy 4 bytes of edu's buffer to RAM, with an interrupt when finished.
//! let bar0 = edu.region(0)?;
//! bar0.write_at::<u64>(reg::DMA_SRC, reg::DMA_START)?;
//! bar0.write_at::<u64>(reg::DMA_DST, dst.iova())?;
//! bar0.write_at::<u64>(reg::DMA_CNT, 4)?;
//! bar0.write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN | reg::EDU_DMA_DIR | reg::EDU_DMA_IRQ)?;
//! assert_eq!(done.wait(Duration::from_secs(5))?, 1, "one MSI");
//! assert_eq!(bar0.read_at::<u32>(reg::IRQ_STATUS)?, reg::DMA_IRQ);
//! bar0.write_at::<u32>(reg::IRQ_ACK, reg::DMA_IRQ)?;
//!
//! let mut head = [0u8; 5];
//! dst.buffer().read(0, &mut head)?;
//! assert_eq!(head, [0, 0, 0, 0, 0xff], "edu's zeroed buffer, 4 bytes of it");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The four traits mirror the kernel objects:
//!
//! | trait | kernel object | required methods |
//! |---|---|---|
//! | [`Container`] | type1 container / iommufd IOAS | map, unmap, unmap-all, info, open device |
//! | [`Device`] | VFIO device fd | info, region, irq, reset, feature, keep_fds |
//! | [`Region`] | one region of the device fd | info, read, write, mmap |
//! | [`Irq`] | one irq index | info, set_irqs |
//!
//! Everything else is a provided method or an extension trait over these
//! ([`RegionExt`] for typed access, [`PciConfig`] for config space), so a
//! backend — or a test double — implements a small core.
//!
//! Errors: every fallible call returns [`Error`], whose [`Error::kind`] is the
//! backend-independent [`ErrorKind`] that generic code matches on; the variant
//! keeps the errno, the ioctl name and the index or IOVA range.
//!
//! Dispatch: generic code (`fn drive<D: Device>(d: &D)`) is the zero-cost
//! default; [`dynamic`] erases a backend for run-time choice.
//!
//! Passthrough: [`hypervisor`] tells a VM's hypervisor (KVM, MSHV) about a
//! device's VFIO file.
//!
//! # IOVA allocation
//!
//! [`IovaAllocator`] hands out IOVA ranges inside what the IOMMU reports.
//!
//! ```
//! use vfio_hal::{Error, ErrorKind, IovaAllocator, IovaRange};
//!
//! // IOVA space as an x86 IOMMU reports it: the MSI window is a hole.
//! let ranges = [
//!     IovaRange { start: 0, end: 0xfedf_ffff },
//!     IovaRange { start: 0xfef0_0000, end: 0xff_ffff_ffff },
//! ];
//! let mut iova = IovaAllocator::new(&ranges)?;
//! let ring = iova.alloc(0x4000, 0x1000, "tx-ring")?;
//! assert_eq!(iova.get(&"tx-ring").map(|r| r.start), Some(ring));
//! let err = iova.alloc(0x1000, 3, "bad").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidArgument);
//! # Ok::<(), Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod bytes;
pub mod caps;
pub mod container;
pub mod decorate;
pub mod device;
pub mod dirty;
pub mod dynamic;
pub mod error;
pub mod eventfd;
mod forward;
pub mod hypervisor;
pub mod iova;
pub mod irq;
pub mod memory;
pub mod migration;
pub mod msix;
pub mod pci;
pub mod peer;
pub mod region;
pub mod revoke;
pub mod scalar;
pub mod shared_memory;

pub use bytes::Reader;
pub use caps::{Capability, ChainKind, SparseArea};
pub use container::{
    Container, DmaAccess, DmaGuard, DmaMapping, IommuInfo, IovaRange, MapBufferError,
    OwnedDmaMapping, UnmapError,
};
pub use device::{Device, DeviceExt, DeviceInfo, DeviceKind, FeatureOp, FeatureSupport, VfToken};
pub use error::{Error, ErrorKind, Result, Target};
pub use iova::IovaAllocator;
pub use irq::{Irq, IrqAction, IrqData, IrqInfo, IrqSet};
pub use memory::{DmaBuffer, HugePageSize, MmapArea, MmapDetacher, PageBacking};
pub use pci::PciConfig;
pub use region::{Protection, Region, RegionExt, RegionInfo};
pub use revoke::Revoker;
pub use scalar::Scalar;

/// Everything a driver needs in scope: the traits and their extensions.
pub mod prelude {
    pub use crate::{Container, Device, DeviceExt, Irq, PciConfig, Region, RegionExt};
}
