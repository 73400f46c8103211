//! Choosing between iommufd and the legacy type1 backend for a device.
//!
//! iommufd is the kernel's current interface; the legacy container is what
//! kernels without `CONFIG_IOMMUFD` or `CONFIG_VFIO_DEVICE_CDEV` offer (every
//! Debian kernel, for one). The choice is made by probing what the running
//! kernel offers for *this* device — never by version number — and it says
//! why, so that a VMM can log it.

use std::fmt;

use vfio_hal::dynamic::{erase_container, DynContainer};
use vfio_hal::Result;
use vfio_hal_legacy::container::ContainerConfig;
use vfio_hal_legacy::LegacyContainer;

use crate::container::IoasContainer;
use crate::iommufd::Iommufd;
use crate::sysfs::SysRoots;

/// A backend [`choose_backend`] can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `/dev/iommu` and the device cdev ([`IoasContainer`]).
    Iommufd,
    /// The type1 container and the device's group ([`LegacyContainer`]).
    Legacy,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Iommufd => "iommufd",
            Self::Legacy => "legacy",
        })
    }
}

/// The backend picked for a device, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub backend: Backend,
    /// A sentence naming what was found (or what was missing, with the error).
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.reason)
    }
}

/// Picks the backend for `device` (a PCI address or a sysfs path) on the
/// running kernel; see [`choose_backend_in`].
pub fn choose_backend(device: &str) -> Choice {
    choose_backend_in(&SysRoots::default(), device)
}

/// Picks iommufd when the device has a VFIO cdev (`vfio-dev/vfioN` in sysfs
/// and its node under `<dev>/vfio/devices`) and `<dev>/iommu` opens; else the
/// legacy backend, with the first missing piece as the reason.
///
/// The legacy choice is not a promise that the legacy backend will work
/// (the device may not be bound to vfio-pci at all): it is the only
/// remaining candidate, and opening it reports its own errors.
pub fn choose_backend_in(roots: &SysRoots, device: &str) -> Choice {
    let legacy = |reason: String| Choice {
        backend: Backend::Legacy,
        reason,
    };
    let loc = match roots.find_cdev(device) {
        Ok(loc) => loc,
        Err(e) => return legacy(format!("no VFIO device cdev ({e})")),
    };
    if let Err(e) = std::fs::metadata(&loc.node) {
        return legacy(format!(
            "sysfs lists cdev {} but {} is missing ({e})",
            loc.cdev,
            loc.node.display()
        ));
    }
    if let Err(e) = Iommufd::open_in(roots) {
        return legacy(format!("the device has cdev {}, but {e}", loc.cdev));
    }
    Choice {
        backend: Backend::Iommufd,
        reason: format!(
            "{} has cdev {} and {} opens",
            loc.name,
            loc.node.display(),
            roots.iommu_node().display()
        ),
    }
}

/// A container of the chosen backend, type-erased, and why it was chosen.
pub struct ChosenContainer {
    /// The container; open the device with [`vfio_hal::Container::open_device`].
    pub container: DynContainer,
    /// The backend and the reason.
    pub choice: Choice,
}

impl fmt::Debug for ChosenContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChosenContainer")
            .field("choice", &self.choice)
            .finish_non_exhaustive()
    }
}

/// Opens a container of the backend chosen for `device` on the running
/// kernel (see [`choose_backend_in`]).
pub fn open_container(device: &str) -> Result<ChosenContainer> {
    open_container_in(&SysRoots::default(), device)
}

/// As [`open_container`], with sysfs and `/dev` at `roots`. The legacy
/// container is type1v2.
pub fn open_container_in(roots: &SysRoots, device: &str) -> Result<ChosenContainer> {
    let choice = choose_backend_in(roots, device);
    let container = match choice.backend {
        Backend::Iommufd => erase_container(IoasContainer::open_in(roots.clone())?),
        Backend::Legacy => erase_container(LegacyContainer::open_with(ContainerConfig {
            dev_dir: roots.dev.join("vfio"),
            sysfs: roots.sysfs(),
            ..ContainerConfig::default()
        })?),
    };
    log::info!("{device}: {choice}");
    Ok(ChosenContainer { container, choice })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeTree;

    #[test]
    fn cdev_and_iommu_node_pick_iommufd() {
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:01.0", Some("vfio0"));
        tree.add_iommu_node();
        let choice = choose_backend_in(&tree.roots(), "0000:00:01.0");
        assert_eq!(choice.backend, Backend::Iommufd, "{choice}");
        assert!(choice.reason.contains("vfio0"), "{choice}");
    }

    #[test]
    fn no_cdev_picks_legacy_and_says_so() {
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:01.0", None);
        tree.add_iommu_node();
        let choice = choose_backend_in(&tree.roots(), "0000:00:01.0");
        assert_eq!(choice.backend, Backend::Legacy, "{choice}");
        assert!(choice.reason.contains("no VFIO device cdev"), "{choice}");
        assert!(choice.reason.contains("vfio-dev"), "{choice}");
    }

    #[test]
    fn no_dev_iommu_picks_legacy_and_names_the_node() {
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:01.0", Some("vfio0"));
        let choice = choose_backend_in(&tree.roots(), "0000:00:01.0");
        assert_eq!(choice.backend, Backend::Legacy, "{choice}");
        let iommu = tree.path("dev/iommu");
        assert!(
            choice.reason.contains(&iommu.display().to_string()),
            "{choice}"
        );
    }

    #[test]
    fn a_hidden_cdev_node_picks_legacy() {
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:01.0", Some("vfio0"));
        tree.add_iommu_node();
        std::fs::remove_file(tree.path("dev/vfio/devices/vfio0")).expect("hide node");
        let choice = choose_backend_in(&tree.roots(), "0000:00:01.0");
        assert_eq!(choice.backend, Backend::Legacy, "{choice}");
        assert!(choice.reason.contains("is missing"), "{choice}");
    }

    #[test]
    fn a_sysfs_path_works_like_a_bdf() {
        let tree = FakeTree::new();
        let dir = tree.add_pci_device("0000:00:07.0", Some("vfio4"));
        tree.add_iommu_node();
        let path = dir.to_str().expect("utf-8 temp path");
        assert_eq!(
            choose_backend_in(&tree.roots(), path).backend,
            Backend::Iommufd
        );
    }

    #[test]
    fn open_container_reports_the_legacy_nodes_absence() {
        // No cdev, no /dev/vfio/vfio: legacy is chosen and its open fails
        // with the container node's path.
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:01.0", None);
        let e = open_container_in(&tree.roots(), "0000:00:01.0").expect_err("no nodes");
        assert_eq!(e.kind(), vfio_hal::ErrorKind::NotFound);
        assert!(e.to_string().contains("vfio/vfio"), "{e}");
    }
}
