//! # vfio-hal
//!
//! One trait-based hardware abstraction layer for Linux VFIO devices, so that
//! VMMs and user-space drivers are written once and run on the kernel's type1
//! container API, on iommufd, or on an in-memory mock in unit tests.
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
pub mod dynamic;
pub mod error;
mod forward;
pub mod iova;
pub mod irq;
pub mod memory;
pub mod pci;
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
pub use device::{Device, DeviceInfo, DeviceKind, FeatureOp, FeatureSupport};
pub use error::{Error, ErrorKind, Result, Target};
pub use iova::IovaAllocator;
pub use irq::{Irq, IrqAction, IrqData, IrqInfo, IrqSet};
pub use memory::{DmaBuffer, MmapArea, MmapDetacher};
pub use pci::PciConfig;
pub use region::{Region, RegionExt, RegionInfo};
pub use revoke::Revoker;
pub use scalar::Scalar;

/// Everything a driver needs in scope: the traits and their extensions.
pub mod prelude {
    pub use crate::{Container, Device, Irq, PciConfig, Region, RegionExt};
}
