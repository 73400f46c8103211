//! The crate's only unsafe code: the few ioctls and termios calls the guest
//! tests need, as safe functions on borrowed file descriptors.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use vfio_bindings::bindings::vfio::{VFIO_BASE, VFIO_TYPE};

/// `_IO(type, nr)` from `<asm-generic/ioctl.h>`: no direction, no size.
pub const fn io(ty: u8, nr: u32) -> libc::c_ulong {
    ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `VFIO_GET_API_VERSION`: `_IO(VFIO_TYPE, VFIO_BASE + 0)`.
pub const VFIO_GET_API_VERSION: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE);
/// `VFIO_CHECK_EXTENSION`: `_IO(VFIO_TYPE, VFIO_BASE + 1)`.
pub const VFIO_CHECK_EXTENSION: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 1);

/// Turns a negative ioctl return into the errno it left.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `VFIO_GET_API_VERSION` on a container (`/dev/vfio/vfio`).
///
/// # Errors
/// The ioctl's errno.
pub fn vfio_get_api_version(container: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: this ioctl takes no argument and only returns a value; the fd is
    // valid for the borrow.
    check(unsafe { libc::ioctl(container.as_raw_fd(), VFIO_GET_API_VERSION as _) })
}

/// `VFIO_CHECK_EXTENSION` on a container: > 0 when `extension` is supported.
///
/// # Errors
/// The ioctl's errno.
pub fn vfio_check_extension(container: BorrowedFd<'_>, extension: u32) -> io::Result<libc::c_int> {
    // SAFETY: the argument is passed by value (an integer), nothing is read or
    // written through it; the fd is valid for the borrow.
    check(unsafe {
        libc::ioctl(
            container.as_raw_fd(),
            VFIO_CHECK_EXTENSION as _,
            libc::c_ulong::from(extension),
        )
    })
}

/// Puts a tty into raw mode; reads then return after at most `timeout_ds`
/// tenths of a second without data (`VMIN = 0`, `VTIME`). The speed stays as
/// it is (QEMU's UART ignores it; and `cfsetspeed` does not link statically
/// with the libc crate's versioned glibc symbol).
///
/// # Errors
/// The errno of `tcgetattr`/`tcsetattr`.
pub fn make_raw(tty: BorrowedFd<'_>, timeout_ds: u8) -> io::Result<()> {
    let fd = tty.as_raw_fd();
    let mut termios = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a whole termios into the buffer we own and
    // reads nothing else; the fd is valid for the borrow.
    check(unsafe { libc::tcgetattr(fd, termios.as_mut_ptr()) })?;
    // SAFETY: tcgetattr succeeded, so it initialised the struct.
    let mut termios = unsafe { termios.assume_init() };
    // SAFETY: only changes flags in the struct we own.
    unsafe { libc::cfmakeraw(&mut termios) };
    termios.c_cflag |= libc::CLOCAL | libc::CREAD;
    termios.c_cc[libc::VMIN] = 0;
    termios.c_cc[libc::VTIME] = timeout_ds;
    // SAFETY: reads the termios we own; the fd is valid for the borrow.
    check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) })?;
    // SAFETY: discards pending input of a valid fd; no memory is involved.
    check(unsafe { libc::tcflush(fd, libc::TCIFLUSH) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // <linux/vfio.h>: VFIO_TYPE ';', VFIO_BASE 100.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
    }
}
