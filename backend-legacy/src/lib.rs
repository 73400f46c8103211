//! VFIO type1 backend for `vfio-hal`: the container/group API of
//! `/dev/vfio/vfio` and `/dev/vfio/N`.
//!
//! | module | what |
//! |---|---|
//! | [`container`] | [`LegacyContainer`]: API version, extensions, IOMMU type, IOMMU info, map/unmap, groups |
//! | [`group`] | [`Group`]: viability, attach/detach, device fds by name |
//!
//! Devices are [`vfio_hal_linux::VfioDevice`]s: the device fd, its regions
//! and irqs are the same whichever backend opened it, so they live in
//! `vfio-hal-linux` with the ioctl layer and sysfs discovery.
//!
//! The same code runs against iommufd's compat mode (iommufd serving
//! `/dev/vfio/vfio`); nothing in it assumes type1's exact page sizes.
//!
//! ```no_run
//! use vfio_hal::prelude::*;
//! use vfio_hal::irq::index::MSI;
//! use vfio_hal_legacy::LegacyContainer;
//! use vfio_hal::eventfd::{EventFd, EventFdExt};
//! use vfio_hal::Target;
//!
//! let container = LegacyContainer::open()?;
//! let edu = container.open_device("0000:00:01.0")?;
//! assert_eq!(edu.vendor_id()?, 0x1234);
//! let bar0 = edu.region(0)?;
//! bar0.write_at(0x04, 0x1234_5678u32)?; // liveness register: reads back inverted
//! assert_eq!(bar0.read_at::<u32>(0x04)?, !0x1234_5678);
//! let efd = EventFd::nonblocking().map_err(|e| vfio_hal::Error::from_io("eventfd", Target::None, &e))?;
//! edu.irq(MSI)?.set_eventfd(0, Some(efd.as_fd()))?;
//! # Ok::<(), vfio_hal::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod container;
pub mod group;

pub use container::{ContainerConfig, IommuType, LegacyContainer};
pub use group::{Group, GroupStatus};
