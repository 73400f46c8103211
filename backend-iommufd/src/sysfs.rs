//! Finding a device's VFIO cdev (`/dev/vfio/devices/vfioN`) through sysfs.
//!
//! A device bound to a VFIO driver on a kernel with `VFIO_DEVICE_CDEV` has a
//! directory `vfio-dev/vfioN` in its sysfs directory; `N` names the node
//! under `/dev/vfio/devices`. Both roots are injectable ([`SysRoots`]) so the
//! lookup — and [`crate::choose_backend`] — can be tested on a fake tree.

use std::path::PathBuf;

use vfio_hal::Result;
use vfio_hal_legacy::sysfs::Sysfs;

/// Where sysfs and `/dev` are; `/sys` and `/dev` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoots {
    /// The sysfs mount (`/sys`).
    pub sys: PathBuf,
    /// The device directory (`/dev`).
    pub dev: PathBuf,
}

impl Default for SysRoots {
    fn default() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// A device's cdev, as found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdevLocation {
    /// The device's name: the last component of its sysfs directory (the
    /// PCI address for vfio-pci).
    pub name: String,
    /// Its sysfs directory.
    pub sysfs_dir: PathBuf,
    /// The node's name, `vfioN`.
    pub cdev: String,
    /// The node's path, `<dev>/vfio/devices/vfioN`.
    pub node: PathBuf,
}

impl SysRoots {
    /// Roots at `sys` and `dev` instead of `/sys` and `/dev`.
    pub fn new(sys: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Self {
            sys: sys.into(),
            dev: dev.into(),
        }
    }

    /// `<dev>/iommu`, the iommufd node.
    pub fn iommu_node(&self) -> PathBuf {
        self.dev.join("iommu")
    }

    /// `<dev>/vfio/vfio`, the legacy container node.
    pub fn container_node(&self) -> PathBuf {
        self.dev.join("vfio").join("vfio")
    }

    /// The sysfs tree, for the legacy backend's lookups.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.sys)
    }

    /// Finds the cdev of `device`: a PCI address such as `0000:00:01.0`
    /// (looked up under `<sys>/bus/pci/devices`) or the absolute path of its
    /// sysfs directory.
    ///
    /// `NotFound` when the device has no `vfio-dev/vfioN` entry: the kernel
    /// lacks `VFIO_DEVICE_CDEV`, the device is not bound to a VFIO driver,
    /// or it does not exist. The `/dev` node itself is not checked here:
    /// opening it reports its absence with the path.
    pub fn find_cdev(&self, device: &str) -> Result<CdevLocation> {
        let sysfs = self.sysfs();
        // The sysfs walk is the legacy backend's, shared rather than repeated.
        let (sysfs_dir, name) = sysfs.device(device)?;
        let cdev = sysfs.vfio_cdev(device)?;
        let node = self.dev.join("vfio/devices").join(&cdev);
        Ok(CdevLocation {
            name,
            sysfs_dir,
            cdev,
            node,
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake sysfs + /dev tree in a temporary directory, removed on drop.

    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::SysRoots;

    /// A temporary tree with `sys/` and `dev/` below it.
    #[derive(Debug)]
    pub struct FakeTree {
        root: PathBuf,
    }

    impl FakeTree {
        pub fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "vfio-hal-iommufd-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(root.join("sys/bus/pci/devices")).expect("create fake sysfs");
            fs::create_dir_all(root.join("dev/vfio/devices")).expect("create fake /dev");
            Self { root }
        }

        pub fn roots(&self) -> SysRoots {
            SysRoots::new(self.root.join("sys"), self.root.join("dev"))
        }

        pub fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// A PCI device directory; with `cdev`, bound to vfio with that node.
        pub fn add_pci_device(&self, bdf: &str, cdev: Option<&str>) -> PathBuf {
            let dir = self.root.join("sys/bus/pci/devices").join(bdf);
            fs::create_dir_all(&dir).expect("create device dir");
            if let Some(cdev) = cdev {
                fs::create_dir_all(dir.join("vfio-dev").join(cdev)).expect("create vfio-dev");
                touch(&self.root.join("dev/vfio/devices").join(cdev));
            }
            dir
        }

        pub fn add_iommu_node(&self) {
            touch(&self.root.join("dev/iommu"));
        }
    }

    pub fn touch(path: &Path) {
        fs::write(path, b"").expect("create fake node");
    }

    impl Drop for FakeTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTree;
    use super::*;
    use std::fs;
    use vfio_hal::ErrorKind;

    #[test]
    fn finds_the_cdev_node_from_a_bdf_and_from_a_sysfs_path() {
        let tree = FakeTree::new();
        let dir = tree.add_pci_device("0000:00:01.0", Some("vfio3"));
        let roots = tree.roots();
        let by_bdf = roots.find_cdev("0000:00:01.0").expect("by BDF");
        assert_eq!(by_bdf.name, "0000:00:01.0");
        assert_eq!(by_bdf.cdev, "vfio3");
        assert_eq!(by_bdf.node, tree.path("dev/vfio/devices/vfio3"));
        let by_path = roots
            .find_cdev(dir.to_str().expect("utf-8 temp path"))
            .expect("by path");
        assert_eq!(by_path.name, "0000:00:01.0");
        assert_eq!(by_path.node, by_bdf.node);
    }

    #[test]
    fn entries_that_are_not_vfio_nodes_are_skipped() {
        let tree = FakeTree::new();
        let dir = tree.add_pci_device("0000:00:02.0", Some("vfio12"));
        fs::create_dir_all(dir.join("vfio-dev/power")).expect("mkdir");
        let loc = tree.roots().find_cdev("0000:00:02.0").expect("found");
        assert_eq!(loc.cdev, "vfio12");
    }

    #[test]
    fn a_device_without_a_cdev_is_not_found() {
        let tree = FakeTree::new();
        tree.add_pci_device("0000:00:03.0", None);
        let e = tree.roots().find_cdev("0000:00:03.0").expect_err("no cdev");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("0000:00:03.0"), "{e}");
        let e = tree.roots().find_cdev("../etc").expect_err("not a name");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn nodes_live_under_the_dev_root() {
        let roots = SysRoots::new("/x/sys", "/x/dev");
        assert_eq!(roots.iommu_node(), PathBuf::from("/x/dev/iommu"));
        assert_eq!(roots.container_node(), PathBuf::from("/x/dev/vfio/vfio"));
        assert_eq!(
            SysRoots::default().iommu_node(),
            PathBuf::from("/dev/iommu")
        );
    }
}
