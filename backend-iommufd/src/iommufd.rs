//! The `/dev/iommu` context: the file every iommufd object lives in.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use vfio_hal::{Error, Result, Target};

use crate::hwpt::{self, HwInfo};
use crate::ioas::Ioas;
use crate::sys;
use vfio_hal_linux::Host;

/// An open `/dev/iommu`.
///
/// Cheap to clone: clones share the file, which closes when the last clone
/// (and every [`Ioas`], HWPT and device holding one) is dropped — closing it
/// destroys every object still in it.
#[derive(Debug, Clone)]
pub struct Iommufd {
    fd: Arc<OwnedFd>,
}

/// How `RLIMIT_MEMLOCK` is charged for pinned pages (`IOMMU_OPTION_RLIMIT_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlimitMode {
    /// Charged to the user (the default, like type1).
    PerUser,
    /// Charged to the process (needs `CAP_SYS_RESOURCE` to select).
    PerProcess,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    ///
    /// A kernel without `CONFIG_IOMMUFD` has no such node:
    /// [`vfio_hal::ErrorKind::NotFound`], with the path in the error.
    pub fn open() -> Result<Self> {
        Self::open_in(&Host::default())
    }

    /// Opens `iommu` under the `/dev` of `host` (tests point it at a fake tree).
    pub fn open_in(host: &Host) -> Result<Self> {
        Self::open_path(&host.iommu_node())
    }

    /// Opens the iommufd node at `path`.
    pub fn open_path(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::from_io("open", Target::Path(path.display().to_string()), &e))?;
        Ok(Self {
            fd: Arc::new(file.into()),
        })
    }

    /// Wraps an already open iommufd (e.g. one passed in by a privileged parent).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd: Arc::new(fd) }
    }

    /// Allocates a new, empty IO address space.
    pub fn alloc_ioas(&self) -> Result<Ioas> {
        let id = sys::ioas_alloc(self.as_fd())?;
        Ok(Ioas::from_id(self.clone(), id))
    }

    /// What the IOMMU behind the device bound here as `dev_id` reports
    /// (`IOMMU_GET_HW_INFO`; [`crate::BoundDevice::hw_info`] is the typed way).
    pub fn hw_info(&self, dev_id: u32) -> Result<HwInfo> {
        hwpt::hw_info(self, dev_id)
    }

    /// Destroys the object `id` (`IOMMU_DESTROY`). Owned handles ([`Ioas`],
    /// [`crate::HwPagetable`]) do this on drop; this is for ids obtained elsewhere.
    pub fn destroy(&self, id: u32) -> Result<()> {
        sys::destroy(self.as_fd(), id)
    }

    /// The current `RLIMIT_MEMLOCK` accounting mode.
    pub fn rlimit_mode(&self) -> Result<RlimitMode> {
        let v = sys::option(
            self.as_fd(),
            sys::OPTION_RLIMIT_MODE,
            sys::OPTION_OP_GET,
            0,
            0,
        )?;
        Ok(if v == 0 {
            RlimitMode::PerUser
        } else {
            RlimitMode::PerProcess
        })
    }

    /// Selects the `RLIMIT_MEMLOCK` accounting mode (global to this iommufd).
    pub fn set_rlimit_mode(&self, mode: RlimitMode) -> Result<()> {
        let value = match mode {
            RlimitMode::PerUser => 0,
            RlimitMode::PerProcess => 1,
        };
        sys::option(
            self.as_fd(),
            sys::OPTION_RLIMIT_MODE,
            sys::OPTION_OP_SET,
            0,
            value,
        )
        .map(drop)
    }

    /// Whether `other` is a handle to the same open file.
    pub fn same_as(&self, other: &Iommufd) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }

    /// The raw fd, e.g. for a sandbox's keep list.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::ErrorKind;
    use vfio_hal_linux::fake::FakeHost;

    #[test]
    fn a_missing_dev_iommu_is_not_found_with_its_path() {
        let tree = FakeHost::new().expect("fake host");
        let e = Iommufd::open_in(&tree.host()).expect_err("no node");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let path = tree.path("dev/iommu").display().to_string();
        assert!(e.to_string().contains(&path), "{e}");
    }

    #[test]
    fn a_file_that_is_no_iommufd_refuses_ioctls_with_typed_errors() {
        let tree = FakeHost::new().expect("fake host");
        tree.add_node("iommu").expect("node");
        let fd = Iommufd::open_in(&tree.host()).expect("a plain file opens");
        let e = fd.alloc_ioas().expect_err("not an iommufd");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert!(e.to_string().contains("IOMMU_IOAS_ALLOC"), "{e}");
        let clone = fd.clone();
        assert!(clone.same_as(&fd));
        let other = Iommufd::open_in(&tree.host()).expect("open again");
        assert!(!other.same_as(&fd));
    }
}
