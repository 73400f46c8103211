//! `MockHypervisor`: a hypervisor's VFIO pseudo device, in memory, for
//! unit tests of VMM code written against [`vfio_hal::hypervisor::Hypervisor`].

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};

use vfio_hal::hypervisor::Hypervisor;
use vfio_hal::{Error, Result, Target};

/// One added file: its identity (device and inode numbers) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Added {
    id: (u64, u64),
    name: String,
}

/// KVM-VFIO's bookkeeping without KVM: the VFIO files added to one VM.
///
/// It answers as `virt/kvm/vfio.c` does: a file that is not a VFIO file is
/// EINVAL (a mock device's file, [`vfio_hal::Device::vfio_file`] of a
/// [`crate::MockDevice`], counts as one, as do the real `/dev/vfio` nodes),
/// adding a file twice is EEXIST, removing one never added is ENOENT. A
/// file is known by its inode, so a duplicate of an added fd is the same
/// file. Cloning shares the same VM.
#[derive(Debug, Clone, Default)]
pub struct MockHypervisor {
    files: Arc<Mutex<Vec<Added>>>,
}

impl MockHypervisor {
    /// A VM with no VFIO file added.
    pub fn new() -> Self {
        Self::default()
    }

    /// The files added, oldest first: a mock device's name, or the path of
    /// a real VFIO file.
    pub fn files(&self) -> Vec<String> {
        self.lock().iter().map(|a| a.name.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Added>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The identity of `file` (device and inode numbers), or EBADF.
fn identity(op: &'static str, file: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| Error::sys(op, Target::None, libc::EBADF))?;
    Ok((meta.dev(), meta.ino()))
}

/// What `file` is, if it is a VFIO file: a mock device's name, or the
/// path of a real `/dev/vfio` node.
fn vfio_name(file: BorrowedFd<'_>) -> Option<String> {
    let link = crate::sys::fd_link(file)?;
    crate::sys::device_of_link(&link).or_else(|| {
        link.starts_with("/dev/vfio")
            .then(|| link.display().to_string())
    })
}

impl Hypervisor for MockHypervisor {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn add_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        const OP: &str = "KVM_DEV_VFIO_FILE_ADD";
        let id = identity(OP, file)?;
        let name = vfio_name(file).ok_or(Error::sys(OP, Target::None, libc::EINVAL))?;
        let added = Added { id, name };
        let mut files = self.lock();
        if files.iter().any(|a| a.id == added.id) {
            return Err(Error::sys(OP, Target::None, libc::EEXIST));
        }
        files.push(added);
        Ok(())
    }

    fn remove_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        const OP: &str = "KVM_DEV_VFIO_FILE_DEL";
        let id = identity(OP, file)?;
        let mut files = self.lock();
        let at = files.iter().position(|a| a.id == id).ok_or(Error::sys(
            OP,
            Target::None,
            libc::ENOENT,
        ))?;
        files.remove(at);
        Ok(())
    }
}
