//! Finding a device's IOMMU group (and VFIO cdev) in sysfs.
//!
//! A device is named either by its bus address (`0000:00:01.0`, looked up
//! under `<root>/bus/pci/devices/`) or by the absolute path of its sysfs
//! directory (any bus). Its group is the last component of the
//! `iommu_group` symlink in that directory; its VFIO cdev (6.6+), used by
//! the iommufd backend, is the `vfioN` entry of its `vfio-dev` directory.
//!
//! The sysfs root is injectable so that the lookups are tested against a
//! fake tree.

use std::path::{Path, PathBuf};

use vfio_hal::{Error, Result, Target};

/// A sysfs tree: the real one at `/sys`, or a fake one in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl Sysfs {
    /// The tree rooted at `root` (normally `/sys`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sysfs directory of `device` and the name VFIO knows it by.
    ///
    /// `device` is a PCI address (no `/`), resolved under
    /// `<root>/bus/pci/devices/`, or an absolute path to a device directory,
    /// whose last component (after resolving symlinks) is the name.
    pub fn device(&self, device: &str) -> Result<(PathBuf, String)> {
        const OP: &str = "sysfs device lookup";
        if device.starts_with('/') {
            let dir = std::fs::canonicalize(device)
                .map_err(|e| Error::from_io("realpath", Target::Path(device.into()), &e))?;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or(Error::InvalidArgument {
                    op: OP,
                    target: Target::Path(device.into()),
                    reason: "the path has no UTF-8 final component to name the device",
                })?;
            return Ok((dir, name));
        }
        check_name(OP, device)?;
        Ok((
            self.root.join("bus/pci/devices").join(device),
            device.to_owned(),
        ))
    }

    /// The IOMMU group number of `device` (see [`Sysfs::device`]).
    pub fn iommu_group(&self, device: &str) -> Result<u32> {
        const OP: &str = "iommu group lookup";
        let (dir, name) = self.device(device)?;
        if !dir.exists() {
            return Err(Error::sys(
                "stat",
                Target::Path(path_string(&dir)),
                libc::ENOENT,
            ));
        }
        let link = dir.join("iommu_group");
        let target = std::fs::read_link(&link).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound {
                op: OP,
                target: Target::Device(name.clone()),
                reason: "the device has no iommu_group link: no IOMMU, or the IOMMU is off",
            },
            _ => Error::from_io("readlink", Target::Path(path_string(&link)), &e),
        })?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(Error::InvalidArgument {
                op: OP,
                target: Target::Path(path_string(&link)),
                reason: "the iommu_group link does not end in a group number",
            })
    }

    /// The VFIO cdev name (`vfioN`) of `device`, for `/dev/vfio/devices/`.
    ///
    /// `NotFound` when the device is not bound to a VFIO driver or the
    /// kernel lacks `CONFIG_VFIO_DEVICE_CDEV`.
    pub fn vfio_cdev(&self, device: &str) -> Result<String> {
        const OP: &str = "vfio cdev lookup";
        let (dir, name) = self.device(device)?;
        let vfio_dev = dir.join("vfio-dev");
        let entries = std::fs::read_dir(&vfio_dev).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound {
                op: OP,
                target: Target::Device(name.clone()),
                reason: "no vfio-dev directory: not bound to vfio-pci, or no VFIO cdev support",
            },
            _ => Error::from_io("readdir", Target::Path(path_string(&vfio_dev)), &e),
        })?;
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| {
                n.strip_prefix("vfio")
                    .is_some_and(|d| d.parse::<u32>().is_ok())
            })
            .ok_or(Error::NotFound {
                op: OP,
                target: Target::Device(name),
                reason: "the vfio-dev directory holds no vfioN entry",
            })
    }
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Refuses names that would escape the devices directory or cannot be
/// passed to the kernel.
pub(crate) fn check_name(op: &'static str, name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0');
    if bad {
        return Err(Error::InvalidArgument {
            op,
            target: Target::Device(name.into()),
            reason: "a device name is a bus address such as 0000:00:01.0 (no '/', no NUL)",
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use vfio_hal::ErrorKind;

    /// A directory under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "vfio-hal-legacy-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("create temp dir");
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake sysfs with edu at 0000:00:01.0 in group 5 (bound, with a cdev)
    /// and a device without IOMMU at 0000:00:02.0.
    pub(crate) fn fake_sysfs() -> TempDir {
        let t = TempDir::new("sysfs");
        let root = &t.0;
        let real = root.join("devices/pci0000:00/0000:00:01.0");
        std::fs::create_dir_all(real.join("vfio-dev/vfio3")).expect("mkdir");
        std::fs::create_dir_all(root.join("kernel/iommu_groups/5")).expect("mkdir");
        symlink("../../../kernel/iommu_groups/5", real.join("iommu_group")).expect("symlink");
        std::fs::create_dir_all(root.join("devices/pci0000:00/0000:00:02.0")).expect("mkdir");
        let bus = root.join("bus/pci/devices");
        std::fs::create_dir_all(&bus).expect("mkdir");
        symlink(&real, bus.join("0000:00:01.0")).expect("symlink");
        symlink(
            root.join("devices/pci0000:00/0000:00:02.0"),
            bus.join("0000:00:02.0"),
        )
        .expect("symlink");
        t
    }

    #[test]
    fn group_from_a_bdf() {
        let t = fake_sysfs();
        assert_eq!(
            Sysfs::new(&t.0).iommu_group("0000:00:01.0").expect("group"),
            5
        );
    }

    #[test]
    fn group_from_a_sysfs_path_names_the_device_by_its_last_component() {
        let t = fake_sysfs();
        let sysfs = Sysfs::new(&t.0);
        let path = t.0.join("bus/pci/devices/0000:00:01.0");
        let (dir, name) = sysfs.device(path.to_str().expect("utf-8")).expect("device");
        assert_eq!(name, "0000:00:01.0");
        assert!(dir.ends_with("devices/pci0000:00/0000:00:01.0"));
        assert_eq!(
            sysfs
                .iommu_group(path.to_str().expect("utf-8"))
                .expect("group"),
            5
        );
    }

    #[test]
    fn a_missing_device_is_not_found_with_its_path() {
        let t = fake_sysfs();
        let e = Sysfs::new(&t.0)
            .iommu_group("0000:00:09.0")
            .expect_err("absent");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("0000:00:09.0"), "{e}");
    }

    #[test]
    fn a_device_without_iommu_is_not_found_with_a_reason() {
        let t = fake_sysfs();
        let e = Sysfs::new(&t.0)
            .iommu_group("0000:00:02.0")
            .expect_err("no iommu");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("iommu_group"), "{e}");
    }

    #[test]
    fn traversal_and_nul_are_refused() {
        let sysfs = Sysfs::default();
        for bad in ["", ".", "..", "../../etc", "a\0b"] {
            let e = sysfs.iommu_group(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn a_link_that_does_not_end_in_a_number_is_invalid() {
        let t = fake_sysfs();
        let dev = t.0.join("bus/pci/devices/0000:00:02.0");
        symlink(
            "../../../kernel/iommu_groups/noiommu",
            dev.join("iommu_group"),
        )
        .expect("symlink");
        let e = Sysfs::new(&t.0)
            .iommu_group("0000:00:02.0")
            .expect_err("bad");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn cdev_lookup() {
        let t = fake_sysfs();
        let sysfs = Sysfs::new(&t.0);
        assert_eq!(sysfs.vfio_cdev("0000:00:01.0").expect("cdev"), "vfio3");
        let e = sysfs.vfio_cdev("0000:00:02.0").expect_err("not bound");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
