//! Leak probes: what the process holds, before and after an operation.
//!
//! File descriptors are counted in `/proc/self/fd` (every backend's devices,
//! groups, containers and eventfds are fds), and mmaps of device files in
//! `/proc/self/maps`. Both are process-wide, so the suite holds one global
//! lock while a case runs ([`crate::runner::serial`]); other threads of the
//! test binary that open files at the same time would still disturb them,
//! which is why the runner serialises every case of the crate.

use std::fmt;

use crate::outcome::{fail, CaseError};

/// The process resources a leak would show up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Open file descriptors.
    pub fds: usize,
    /// Mappings of device files (`vfio` in their path).
    pub device_maps: usize,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fds, {} device mmaps", self.fds, self.device_maps)
    }
}

impl Snapshot {
    /// Counts now.
    pub fn take() -> Result<Self, CaseError> {
        let fds = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| fail(format!("cannot list /proc/self/fd: {e}")))?
            .count();
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| fail(format!("cannot read /proc/self/maps: {e}")))?;
        let device_maps = maps.lines().filter(|l| l.contains("vfio")).count();
        Ok(Self { fds, device_maps })
    }

    /// Fails unless the process holds exactly what it held at `self`.
    pub fn expect_unchanged(&self, after: &str) -> Result<(), CaseError> {
        let now = Self::take()?;
        if now == *self {
            Ok(())
        } else {
            Err(fail(format!(
                "leak after {after}: before {self}, now {now}"
            )))
        }
    }
}

/// How many references this process holds to VFIO *device* files: open
/// fds and mmaps of a device fd from a group (`anon_inode:[vfio-device]`)
/// or of a device cdev (`/dev/vfio/devices/…`). Groups, containers and
/// iommufds are not counted: the kernel lets a device go while they stay.
pub fn device_file_refs() -> Result<usize, CaseError> {
    fn is_device_file(name: &str) -> bool {
        name.contains("[vfio-device]") || name.contains("/dev/vfio/devices/")
    }
    let mut refs = 0;
    for entry in std::fs::read_dir("/proc/self/fd")
        .map_err(|e| fail(format!("cannot list /proc/self/fd: {e}")))?
        .flatten()
    {
        // An fd closed since the listing has no link any more: not counted.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            refs += usize::from(is_device_file(&target.to_string_lossy()));
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| fail(format!("cannot read /proc/self/maps: {e}")))?;
    Ok(refs + maps.lines().filter(|l| is_device_file(l)).count())
}

/// Whether `fd` is an open descriptor of this process.
pub fn is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed or invalid
    // descriptor makes it fail with EBADF, touching nothing.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_shows_up() {
        let _serial = crate::runner::serial();
        let before = Snapshot::take().expect("snapshot");
        let f = std::fs::File::open("/dev/null").expect("open");
        assert!(is_open(std::os::fd::AsRawFd::as_raw_fd(&f)));
        let err = before.expect_unchanged("opening /dev/null");
        assert!(err.is_err(), "an extra fd must be seen");
        drop(f);
        before
            .expect_unchanged("closing it")
            .expect("back to before");
    }
}
