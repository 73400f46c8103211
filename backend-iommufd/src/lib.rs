//! # vfio-hal-iommufd
//!
//! The iommufd backend of `vfio-hal`: `/dev/iommu` address spaces and the
//! VFIO device cdev (`/dev/vfio/devices/vfioN`, Linux 6.6+).
//!
//! | type | kernel object |
//! |---|---|
//! | [`Iommufd`] | an open `/dev/iommu` |
//! | [`Ioas`] | an IO address space (`IOMMU_IOAS_*`) |
//! | [`HwPagetable`] | a hardware page table (`IOMMU_HWPT_*`, dirty tracking) |
//! | [`UnboundDevice`] → [`BoundDevice`] → [`AttachedDevice`] | the cdev lifecycle, as types |
//! | [`IoasContainer`] | one IOAS as a [`vfio_hal::Container`] |
//!
//! [`AttachedDevice`] implements [`vfio_hal::Device`] through the device-fd
//! code of `vfio-hal-linux`: region, irq and feature ioctls are the same on
//! a cdev fd and on a group-obtained one, so they live in one place. Which
//! of this backend and the legacy one serves a device is the facade's
//! choice (`vfio_hal_facade::open`), where both are visible.
//!
//! ```no_run
//! use vfio_hal::prelude::*;
//! use vfio_hal::{DmaAccess, DmaBuffer};
//! use vfio_hal_iommufd::IoasContainer;
//!
//! let container = IoasContainer::open()?;
//! let edu = container.open_device("0000:00:01.0")?; // open + bind + attach
//! let ring = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadWrite)?;
//! let id: u32 = edu.region(0)?.read_at(0)?;
//! # let _ = (ring, id);
//! # Ok::<(), vfio_hal::Error>(())
//! ```
//!
//! The step-by-step lifecycle, with an explicitly allocated HWPT:
//!
//! ```no_run
//! use vfio_hal_iommufd::{HwptOptions, Iommufd, UnboundDevice};
//!
//! let iommufd = Iommufd::open()?;
//! let ioas = iommufd.alloc_ioas()?;
//! let bound = UnboundDevice::open("0000:00:01.0")?.bind(&iommufd)?;
//! let dirty = bound.dirty_tracking_supported()?;
//! let hwpt = bound.alloc_hwpt(&ioas, HwptOptions { dirty_tracking: dirty, ..Default::default() })?;
//! let device = bound.attach(&hwpt)?;
//! let bound_again = device.detach()?;
//! # let _ = bound_again;
//! # Ok::<(), vfio_hal::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod cdev;
pub mod container;
pub mod hwpt;
pub mod ioas;
pub mod iommufd;
pub mod sys;

pub use cdev::{
    AttachError, AttachedDevice, BindError, BoundDevice, DetachError, PageTable, UnboundDevice,
};
pub use container::IoasContainer;
pub use hwpt::{HwInfo, HwPagetable, HwptOptions, IommuType};
pub use ioas::Ioas;
pub use iommufd::{Iommufd, RlimitMode};
pub use sys::IovaRanges;
