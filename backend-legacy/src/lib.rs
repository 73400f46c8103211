//! VFIO type1 backend for `vfio-hal`: the container/group API of
//! `/dev/vfio/vfio` and `/dev/vfio/N`, and the device-fd code that the
//! iommufd backend shares.
//!
//! | module | what |
//! |---|---|
//! | [`container`] | [`LegacyContainer`]: API version, extensions, IOMMU type, IOMMU info, map/unmap, groups |
//! | [`group`] | [`Group`]: viability, attach/detach, device fds by name |
//! | [`devfd`] | [`VfioDevice`], [`VfioRegion`], [`VfioIrq`]: the device fd, reused unchanged by vfio-hal-iommufd |
//! | [`sysfs`] | a device's IOMMU group (and VFIO cdev) from its PCI address or sysfs path |
//! | [`sys`] | ioctl numbers and wrappers: the only place that calls `ioctl` |
//! | `kvm` (feature `kvm`) | the KVM-VFIO pseudo device |
//! | `crosvm` (feature `crosvm-ext`) | crosvm's out-of-tree extensions, opt-in |
//!
//! The same code runs against iommufd's compat mode (iommufd serving
//! `/dev/vfio/vfio`); nothing in it assumes type1's exact page sizes.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use vfio_hal::prelude::*;
//! use vfio_hal::irq::index::MSI;
//! use vfio_hal_legacy::{sys, LegacyContainer};
//!
//! let container = LegacyContainer::open()?;
//! let edu = container.open_device("0000:00:01.0")?;
//! assert_eq!(edu.vendor_id()?, 0x1234);
//! let bar0 = edu.region(0)?;
//! bar0.write_at(0x04, 0x1234_5678u32)?; // liveness register: reads back inverted
//! assert_eq!(bar0.read_at::<u32>(0x04)?, !0x1234_5678);
//! let efd = sys::eventfd().map_err(|e| e.into_error("eventfd", vfio_hal::Target::None))?;
//! edu.irq(MSI)?.set_eventfd(0, Some(efd.as_fd()))?;
//! # Ok::<(), vfio_hal::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod container;
#[cfg(feature = "crosvm-ext")]
pub mod crosvm;
pub mod devfd;
pub mod group;
mod info;
#[cfg(feature = "kvm")]
pub mod kvm;
pub mod sys;
pub mod sysfs;

pub use container::{ContainerConfig, IommuType, LegacyContainer};
pub use devfd::{Backing, HotResetDevice, HotResetInfo, VfioDevice, VfioIrq, VfioRegion};
pub use group::{Group, GroupStatus};
pub use sysfs::Sysfs;
