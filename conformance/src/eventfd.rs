//! A minimal eventfd: what interrupts are delivered on, for tests and drivers.
//!
//! vfio-pci signals an interrupt by adding 1 to an eventfd's counter; reading
//! the counter returns the number of signals since the last read and resets
//! it. That makes "exactly once per raise" checkable: wait until the fd is
//! readable, read the count, compare.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A non-blocking, close-on-exec eventfd, closed on drop.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with counter 0.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Adds `n` to the counter (what the kernel does when an interrupt fires).
    pub fn signal(&self, n: u64) -> io::Result<()> {
        let bytes = n.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array to a descriptor we own.
        let done = unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        match done {
            8 => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::other("short eventfd write")),
        }
    }

    /// Reads and resets the counter without waiting: 0 if nothing was signalled.
    pub fn take(&self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local array from a descriptor we own.
        let done =
            unsafe { libc::read(self.fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
        match done {
            8 => Ok(u64::from_ne_bytes(bytes)),
            n if n < 0 => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                e => Err(e),
            },
            _ => Err(io::Error::other("short eventfd read")),
        }
    }

    /// Waits up to `timeout` for the fd to become readable, then reads and
    /// resets the counter: 0 means nothing arrived in time.
    pub fn wait(&self, timeout: Duration) -> io::Result<u64> {
        if self.poll(timeout)? {
            self.take()
        } else {
            Ok(0)
        }
    }

    /// Waits up to `timeout` for the fd to become readable, without reading it.
    pub fn poll(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis().max(u128::from(!left.is_zero())))
                .unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack, count 1.
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

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_and_reset_on_read() {
        let _serial = crate::runner::serial();
        let e = EventFd::new().expect("eventfd");
        assert_eq!(e.take().expect("read"), 0);
        e.signal(1).expect("signal");
        e.signal(2).expect("signal");
        assert_eq!(e.wait(Duration::from_millis(10)).expect("wait"), 3);
        assert_eq!(e.wait(Duration::from_millis(1)).expect("wait"), 0);
    }
}
