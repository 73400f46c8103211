//! The few system calls the mock needs: eventfd routes and memfd-backed RAM.
//!
//! Together with the DMA copy in [`crate::iommu`], this is where the crate's
//! `unsafe` lives.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::{Error, MmapArea, Result, Target};

/// The kernel's name for an eventfd's anonymous inode, as `/proc/self/fd` shows it.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// An interrupt route: our own dup of an eventfd the user handed to `SET_IRQS`.
///
/// Holding a dup keeps the route valid when the caller closes its copy, as
/// the kernel's `eventfd_ctx` reference does; dropping it closes the dup.
#[derive(Debug)]
pub(crate) struct EventRoute {
    efd: EventFd,
}

impl EventRoute {
    /// Duplicates `fd`. Like `eventfd_ctx_fdget`, a bad fd is `EBADF` and a
    /// file that is not an eventfd is `EINVAL`.
    pub(crate) fn dup(op: &'static str, target: &Target, fd: BorrowedFd<'_>) -> Result<Self> {
        let owned = fd
            .try_clone_to_owned()
            .map_err(|e| Error::from_io(op, target.clone(), &e))?;
        Self::checked(op, target, owned)
    }

    /// Duplicates the descriptor numbered `fd`, which a request's payload
    /// named: like [`EventRoute::dup`], a number that names no open file is
    /// `EBADF` and a file that is not an eventfd `EINVAL`.
    pub(crate) fn dup_raw(op: &'static str, target: &Target, fd: RawFd) -> Result<Self> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers; it makes a new
        // descriptor for the file `fd` names (or fails with EBADF) and
        // leaves `fd` itself, and whoever owns it, alone.
        let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if raw < 0 {
            return Err(Error::last_os_error(op, target.clone()));
        }
        // SAFETY: fcntl just returned this new descriptor and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::checked(op, target, owned)
    }

    /// Keeps `owned` if it is an eventfd; `EINVAL` if it is another file.
    fn checked(op: &'static str, target: &Target, owned: OwnedFd) -> Result<Self> {
        // Where /proc is missing the check is skipped rather than failing.
        if let Some(link) = fd_link(owned.as_fd()) {
            if link.as_os_str() != EVENTFD_LINK {
                return Err(Error::sys(op, target.clone(), libc::EINVAL));
            }
        }
        // SAFETY: `into_raw_fd` hands over sole ownership of a descriptor
        // that is open, and (unless /proc is missing) checked to be an eventfd.
        let efd = unsafe { EventFd::from_raw_fd(owned.into_raw_fd()) };
        Ok(Self { efd })
    }

    /// Adds 1 to the counter, as `eventfd_signal` does.
    pub(crate) fn signal(&self) {
        if let Err(e) = self.efd.write(1) {
            // Only a counter at its maximum with O_NONBLOCK can fail.
            log::warn!("mock: eventfd signal failed: {e}");
        }
    }

    /// Consumes the counter if it is non-zero; true if it was. Never blocks.
    ///
    /// Used for the INTx resample (unmask) eventfd, which the kernel watches
    /// with a wait-queue callback; the mock checks it instead whenever the
    /// device is touched.
    pub(crate) fn consume(&self) -> bool {
        self.efd.take().is_ok_and(|n| n > 0)
    }
}

/// The prefix of a mock device file's name: `/proc/self/fd` shows it as
/// `/memfd:vfio-hal-mock:<device> (deleted)`.
pub(crate) const DEVICE_FILE_PREFIX: &str = "vfio-hal-mock:";

/// An empty memfd named `name`.
fn memfd(name: &CStr) -> Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the
    // call; memfd_create has no other memory-safety preconditions.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::last_os_error("memfd_create", Target::None));
    }
    // SAFETY: memfd_create just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The file that stands for an open mock device where a hypervisor wants
/// the device's VFIO file: an empty memfd named after the device.
pub(crate) fn device_file(device: &str) -> Result<OwnedFd> {
    let name = std::ffi::CString::new(format!("{DEVICE_FILE_PREFIX}{device}")).map_err(|_| {
        Error::InvalidArgument {
            op: "vfio_file",
            target: Target::Device(device.to_owned()),
            reason: "the device name contains a NUL byte",
        }
    })?;
    memfd(&name)
}

/// What `/proc/self/fd` shows `fd` as (`None` where /proc is missing).
pub(crate) fn fd_link(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// The mock device a file stands for, from its [`fd_link`], if it is a
/// mock device file.
pub(crate) fn device_of_link(link: &std::path::Path) -> Option<String> {
    let name = link
        .to_str()?
        .strip_prefix("/memfd:")?
        .strip_prefix(DEVICE_FILE_PREFIX)?;
    Some(name.strip_suffix(" (deleted)").unwrap_or(name).to_owned())
}

/// Device memory that a model and the user's mmaps share: a sealed-size memfd.
#[derive(Debug)]
pub(crate) struct SharedRam {
    fd: OwnedFd,
    /// The device's own view of the whole file.
    view: MmapArea,
}

impl SharedRam {
    /// A zeroed memfd of `len` bytes (a whole number of host pages), mapped once for the device.
    pub(crate) fn new(name: &CStr, len: u64) -> Result<Self> {
        let file = File::from(memfd(name)?);
        file.set_len(len)
            .map_err(|e| Error::from_io("ftruncate", Target::None, &e))?;
        let fd = OwnedFd::from(file);
        let view = MmapArea::map_fd(fd.as_fd(), 0, len, 0, true)?;
        Ok(Self { fd, view })
    }

    /// Copies out of the RAM at `offset`.
    pub(crate) fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.view.read(offset, out)
    }

    /// Copies into the RAM at `offset`.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.view.write(offset, data)
    }

    /// A new shared mapping of `[offset, offset + len)` for the user; it
    /// reports `offset` as its region offset.
    pub(crate) fn map(&self, offset: u64, len: u64, writable: bool) -> Result<MmapArea> {
        MmapArea::map_fd(self.fd.as_fd(), offset, len, offset, writable)
    }
}
