//! IOMMU groups (`/dev/vfio/N`): viability, attaching to a container, and
//! the device fds they hand out.
//!
//! A [`Group`] exists only attached to a container
//! ([`LegacyContainer::group`](crate::LegacyContainer::group)); it is
//! detached (`VFIO_GROUP_UNSET_CONTAINER`) and closed when the last handle
//! to it goes, and every device opened from it holds such a handle, so a
//! group never leaves its container under a live device fd.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE};
use vfio_hal::{Error, Result, Target, VfToken};

use crate::container::{lock, ContainerInner};
use vfio_hal_linux::devfd::{Backing, VfioDevice};
use vfio_hal_linux::host::check_name;
use vfio_hal_linux::sys::{self, Errno};

/// What `VFIO_GROUP_GET_STATUS` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupStatus {
    /// Every device in the group is bound to a VFIO driver (or none).
    pub viable: bool,
    /// The group is attached to a container.
    pub container_set: bool,
}

impl GroupStatus {
    fn from_flags(flags: u32) -> Self {
        Self {
            viable: flags & VFIO_GROUP_FLAGS_VIABLE != 0,
            container_set: flags & VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
        }
    }
}

/// An attached group: its fd and the container it is attached to.
pub(crate) struct GroupInner {
    id: u32,
    fd: OwnedFd,
    container: Arc<ContainerInner>,
}

impl fmt::Debug for GroupInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.id)
            .field("fd", &self.fd.as_raw_fd())
            .field("container_fd", &self.container.fd.as_raw_fd())
            .finish()
    }
}

/// The error of opening group `id`'s node at `path`.
///
/// The kernel allows one open file per group node and refuses a group one
/// of whose devices is open through its cdev (`vfio_group_fops_open`), so
/// `EBUSY` there means exactly that and the error says so.
fn group_open_error(id: u32, path: &std::path::Path, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EBUSY) => Error::Busy {
            op: "open",
            errno: libc::EBUSY,
            target: Target::Group(id),
            reason: "the group is already open (by another process, or by this one through a device, region or irq of it that is still alive: drop them to close it), or one of its devices is open through its cdev",
        },
        _ => Error::from_io("open", Target::Path(path.display().to_string()), e),
    }
}

impl GroupInner {
    /// Opens group `id`, checks viability, attaches it to `container` and,
    /// when it is the container's first group, sets the IOMMU type. On any
    /// failure the group is detached again and closed.
    ///
    /// Called with the container's group map locked.
    pub(crate) fn attach(
        container: &Arc<ContainerInner>,
        id: u32,
        first: bool,
    ) -> Result<Arc<Self>> {
        let path = container.config.host.group_node(id);
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| group_open_error(id, &path, &e))?
            .into();
        let flags = sys::group_get_status(fd.as_fd())
            .map_err(|e| e.into_error("VFIO_GROUP_GET_STATUS", Target::Group(id)))?;
        if !GroupStatus::from_flags(flags).viable {
            return Err(Error::NotViable { group: id });
        }
        sys::group_set_container(fd.as_fd(), container.fd.as_fd())
            .map_err(|e| e.into_error("VFIO_GROUP_SET_CONTAINER", Target::Group(id)))?;
        if first {
            let ty = container.config.iommu_type;
            if let Err(e) = sys::set_iommu(container.fd.as_fd(), ty.value()) {
                if let Err(undo) = sys::group_unset_container(fd.as_fd()) {
                    log::warn!("group {id}: unset container after a failed SET_IOMMU: {undo:?}");
                }
                return Err(e.into_error("VFIO_SET_IOMMU", Target::Group(id)));
            }
            log::debug!("group {id}: IOMMU set to {ty:?}");
        }
        log::debug!("group {id} attached ({})", path.display());
        Ok(Arc::new(Self {
            id,
            fd,
            container: Arc::clone(container),
        }))
    }
}

impl Backing for GroupInner {
    fn keep_fds(&self) -> Vec<RawFd> {
        vec![self.fd.as_raw_fd(), self.container.fd.as_raw_fd()]
    }

    /// The group: what KVM-VFIO takes on every kernel (device fds only
    /// since Linux 6.6).
    fn hypervisor_file(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        // Detach under the container's lock, so that an attach running at
        // the same time sees either this group or an empty container.
        let mut groups = lock(&self.container.groups);
        match sys::group_unset_container(self.fd.as_fd()) {
            Ok(()) => log::debug!("group {} detached", self.id),
            // Gone (hot-unplug) or still in use by an mmap that outlives its
            // device: closing the fd below lets the kernel clean up.
            Err(Errno(e @ (libc::ENODEV | libc::EBUSY))) => log::debug!(
                "group {}: unset container: {}",
                self.id,
                std::io::Error::from_raw_os_error(e)
            ),
            Err(Errno(e)) => log::warn!(
                "group {}: unset container failed: {}",
                self.id,
                std::io::Error::from_raw_os_error(e)
            ),
        }
        let me: *const Self = self;
        if groups
            .get(&self.id)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), me))
        {
            groups.remove(&self.id);
        }
    }
}

/// An IOMMU group attached to a [`LegacyContainer`](crate::LegacyContainer).
///
/// Clones share the group; it is detached when the last clone and the last
/// device opened from it are gone.
#[derive(Debug, Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
}

impl Group {
    pub(crate) fn from_inner(inner: Arc<GroupInner>) -> Self {
        Self { inner }
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The group fd (e.g. for [`KvmVfioDevice`](vfio_hal_linux::kvm::KvmVfioDevice)
    /// or as proof of ownership for a PCI hot reset).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupStatus> {
        sys::group_get_status(self.fd())
            .map(GroupStatus::from_flags)
            .map_err(|e| e.into_error("VFIO_GROUP_GET_STATUS", Target::Group(self.id())))
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (as listed in
    /// `/sys/kernel/iommu_groups/<id>/devices/`), wrapped as a device that
    /// keeps this group and its container alive.
    pub fn open_device(&self, name: &str) -> Result<VfioDevice> {
        self.get_device_fd(name, None)
    }

    /// [`open_device`](Self::open_device) for an SR-IOV virtual function
    /// whose PF is bound to vfio-pci, presenting the PF's VF token
    /// (`"<name> vf_token=<uuid>"`), or for such a PF, setting the token
    /// while no VF is open. A missing or wrong token is refused by the
    /// kernel with `EACCES` ([`ErrorKind::PermissionDenied`](vfio_hal::ErrorKind)),
    /// a token for a device that is neither with `EINVAL`.
    pub fn open_device_with_vf_token(&self, name: &str, token: &VfToken) -> Result<VfioDevice> {
        self.get_device_fd(name, Some(token))
    }

    fn get_device_fd(&self, name: &str, token: Option<&VfToken>) -> Result<VfioDevice> {
        let cname = device_fd_request(name, token)?;
        let fd = sys::group_get_device_fd(self.fd(), &cname)
            .map_err(|e| e.into_error(GET_DEVICE_FD, Target::Device(name.into())))?;
        let backing: Arc<dyn Backing> = self.inner.clone();
        VfioDevice::new(fd, name, backing)
    }
}

const GET_DEVICE_FD: &str = "VFIO_GROUP_GET_DEVICE_FD";

/// The string `VFIO_GROUP_GET_DEVICE_FD` takes: the device name, then the
/// VF token option when there is one.
fn device_fd_request(name: &str, token: Option<&VfToken>) -> Result<CString> {
    check_name(GET_DEVICE_FD, name)?;
    let invalid = |reason| Error::InvalidArgument {
        op: GET_DEVICE_FD,
        target: Target::Device(name.into()),
        reason,
    };
    if name.contains(char::is_whitespace) {
        // The kernel reads what follows a space as options (vf_token=).
        return Err(invalid(
            "a device name has no white space (the VF token is an argument of its own)",
        ));
    }
    let request = match token {
        Some(token) => format!("{name} vf_token={token}"),
        None => name.to_owned(),
    };
    CString::new(request).map_err(|_| invalid("device name contains NUL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::ErrorKind;

    #[test]
    fn the_device_fd_request_carries_the_vf_token_as_an_option_and_refuses_smuggled_ones() {
        let token = VfToken::from_bytes([0x11; 16]);
        assert_eq!(
            device_fd_request("0000:01:10.0", Some(&token)).expect("request"),
            CString::new("0000:01:10.0 vf_token=11111111-1111-1111-1111-111111111111")
                .expect("no NUL")
        );
        assert_eq!(
            device_fd_request("0000:01:10.0", None).expect("request"),
            CString::new("0000:01:10.0").expect("no NUL")
        );
        for bad in ["0000:01:10.0 vf_token=x", "a\tb", "a\0b", ""] {
            let e = device_fd_request(bad, None).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}: {e}");
        }
    }

    #[test]
    fn ebusy_opening_a_group_node_says_the_group_is_open() {
        let path = std::path::Path::new("/dev/vfio/7");
        let busy = group_open_error(7, path, &std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(
            (busy.kind(), busy.errno()),
            (ErrorKind::Busy, Some(libc::EBUSY))
        );
        assert_eq!(busy.target(), Some(&Target::Group(7)));
        let message = busy.to_string();
        assert!(
            message.contains("already open") && message.contains("region or irq"),
            "{message}"
        );
        // Any other errno stays the plain system error about the node.
        let missing = group_open_error(7, path, &std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(missing.errno(), Some(libc::ENOENT));
        assert_eq!(missing.target(), Some(&Target::Path("/dev/vfio/7".into())));
    }
}
