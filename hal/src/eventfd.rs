//! The eventfd interrupts are delivered on: vmm-sys-util's [`EventFd`], plus
//! what drivers and tests need that it lacks.
//!
//! vfio-pci signals an interrupt by adding 1 to an eventfd's counter; reading
//! the counter returns the number of signals since the last read and resets
//! it. That makes "exactly once per raise" checkable: wait until the fd is
//! readable, read the count, compare. [`EventFdExt`] adds the pieces for
//! that — a non-blocking close-on-exec constructor, a [`BorrowedFd`] for
//! [`IrqSet`](crate::IrqSet) and the `set_eventfd` family, a read that never
//! blocks, and waits with a timeout — so the whole project, and the VMMs using
//! it, share one type that kvm-ioctls' irqfd API also takes.
//!
//! ```
//! use std::time::Duration;
//! use vfio_hal::eventfd::{EventFd, EventFdExt};
//! # if cfg!(miri) { return Ok(()); } // Miri has no poll(2)
//!
//! let efd = EventFd::nonblocking()?;
//! assert_eq!(efd.take()?, 0);
//! efd.write(1)?;
//! efd.write(2)?;
//! assert!(efd.poll(Duration::ZERO)?);
//! assert_eq!(efd.wait(Duration::from_millis(10))?, 3);
//! assert_eq!(efd.wait(Duration::from_millis(1))?, 0);
//! let _route = Some(efd.as_fd()); // what `Irq::set_eventfd` takes
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

pub use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

/// What vmm-sys-util's [`EventFd`] lacks for interrupt routing and checking.
pub trait EventFdExt {
    /// A new eventfd with counter 0, non-blocking and close-on-exec.
    ///
    /// `EventFd::new` passes its flags to `eventfd(2)` unchanged, so
    /// close-on-exec has to be asked for; this asks for both.
    fn nonblocking() -> io::Result<Self>
    where
        Self: Sized;

    /// The descriptor, borrowed for as long as `self` is.
    fn as_fd(&self) -> BorrowedFd<'_>;

    /// Reads and resets the counter without waiting: 0 if nothing was
    /// signalled. Never blocks, whatever flags the fd was made with.
    fn take(&self) -> io::Result<u64>;

    /// Waits up to `timeout` for the counter to become non-zero, without
    /// reading it; false if it stayed zero.
    fn poll(&self, timeout: Duration) -> io::Result<bool>;

    /// Waits up to `timeout` for the counter to become non-zero, then reads
    /// and resets it: 0 means nothing arrived in time.
    fn wait(&self, timeout: Duration) -> io::Result<u64> {
        if self.poll(timeout)? {
            self.take()
        } else {
            Ok(0)
        }
    }
}

impl EventFdExt for EventFd {
    fn nonblocking() -> io::Result<Self> {
        EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by the `File` inside `self` and
        // stays open until `self` drops, which the returned lifetime, tied
        // to the borrow of `self`, cannot outlive.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }

    fn take(&self) -> io::Result<u64> {
        if !self.poll(Duration::ZERO)? {
            return Ok(0);
        }
        match self.read() {
            Ok(n) => Ok(n),
            // Another reader emptied it between the poll and the read.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn poll(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round a sub-millisecond remainder up, so a short wait still waits.
            let ms = i32::try_from(left.as_millis().max(u128::from(!left.is_zero())))
                .unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd {
                fd: self.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid, initialised pollfd that outlives
            // the call, matching nfds = 1.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            match n {
                n if n > 0 => return Ok(pfd.revents & libc::POLLIN != 0),
                0 if Instant::now() >= deadline => return Ok(false),
                0 => continue,
                _ => match io::Error::last_os_error() {
                    e if e.kind() == io::ErrorKind::Interrupted => continue,
                    e => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_flags(efd: &EventFd) -> (i32, i32) {
        // SAFETY: F_GETFD and F_GETFL take no pointer argument.
        let fd = unsafe { libc::fcntl(efd.as_raw_fd(), libc::F_GETFD) };
        // SAFETY: as above.
        let fl = unsafe { libc::fcntl(efd.as_raw_fd(), libc::F_GETFL) };
        (fd, fl)
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's fcntl has no F_GETFL for eventfds")]
    fn nonblocking_is_close_on_exec_and_non_blocking() {
        let efd = EventFd::nonblocking().expect("eventfd");
        let (fd, fl) = fd_flags(&efd);
        assert_ne!(fd & libc::FD_CLOEXEC, 0, "close-on-exec");
        assert_ne!(fl & libc::O_NONBLOCK, 0, "non-blocking");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no poll(2)")]
    fn take_never_blocks_even_on_a_blocking_fd() {
        let efd = EventFd::new(0).expect("eventfd");
        assert_eq!(efd.take().expect("take"), 0);
        efd.write(4).expect("write");
        assert_eq!(efd.take().expect("take"), 4);
        assert_eq!(efd.take().expect("take"), 0);
    }

    #[test]
    fn as_fd_names_the_same_file() {
        let efd = EventFd::nonblocking().expect("eventfd");
        assert_eq!(efd.as_fd().as_raw_fd(), efd.as_raw_fd());
    }
}
