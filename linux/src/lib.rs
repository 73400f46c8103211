//! # vfio-hal-linux
//!
//! The Linux kernel plumbing that `vfio-hal`'s real backends share. The
//! legacy (type1 container + group) and the iommufd (IOAS + device cdev)
//! backends differ only in how a device file is obtained and what keeps its
//! IOMMU context alive; everything a device file does afterwards, and the
//! ioctl layer under both, lives here once.
//!
//! | module | what |
//! |---|---|
//! | [`sys`] | VFIO ioctl numbers, the generic ioctl wrappers, argsz re-query, positioned I/O, the revocation placeholder: the only place that calls `ioctl` for VFIO |
//! | [`devfd`] | [`VfioDevice`], [`VfioRegion`], [`VfioIrq`]: a VFIO device fd as `Device`/`Region`/`Irq`, whichever backend opened it |
//! | [`info`] | argsz re-query of the VFIO info ioctls and their capability chains |
//! | [`host`] | [`Host`]: the sysfs and `/dev` trees, the nodes each backend opens, PCI devices, IOMMU groups, cdevs |
//! | [`fake`] | [`fake::FakeHost`]: a fake host tree for tests (public, for downstream tests too) |
//! | `kvm` (feature `kvm`) | the KVM-VFIO pseudo device: adds a group fd or a cdev fd to a VM |
//! | `mshv` (feature `mshv`) | the MSHV-VFIO pseudo device: the same for a VM on the Microsoft Hypervisor (built and unit-tested, never run here) |
//! | `crosvm` (feature `crosvm-ext`) | crosvm's out-of-tree extensions, opt-in |
//!
//! A backend crate builds on this one; no backend depends on another.
#![warn(missing_docs, missing_debug_implementations)]

#[cfg(feature = "crosvm-ext")]
pub mod crosvm;
pub mod devfd;
pub mod fake;
pub mod host;
pub mod info;
#[cfg(feature = "kvm")]
pub mod kvm;
pub mod migration;
#[cfg(feature = "mshv")]
pub mod mshv;
pub mod sys;

pub use devfd::{Backing, HotResetDevice, HotResetInfo, VfioDevice, VfioIrq, VfioRegion};
pub use host::{Blocker, Bus, CdevLocation, Host, HostDevice, LookupError, MdevType};
