//! Revocation: letting go of a device everywhere at once, from any thread.
//!
//! When the host wants a device back (hot-unplug, a driver unbind), vfio-pci
//! signals the device's REQ interrupt and then *waits*: the device fd, its
//! regions, interrupt routes and BAR mmaps keep working until the user has
//! closed every last one of them, and the removal blocks until then. A VMM
//! keeps such handles spread over threads — regions in the vCPUs' MMIO
//! dispatch, irqs with the interrupt controller — and cannot drop them all
//! from the thread that sees REQ.
//!
//! A [`Revoker`], taken from the device with [`Device::revoker`] before its
//! handles spread, does that from the REQ handler in one call:
//!
//! - every later operation on the device and on every region and irq handle
//!   of it fails with [`Error::Revoked`] (kind [`ErrorKind::DeviceGone`]),
//!   and an operation racing with the revocation either completes before it
//!   or fails so;
//! - the backend lets go of the device itself: interrupt routes are torn
//!   down and, on a real kernel, this process no longer references the
//!   device file, so the host's removal completes while the handles still
//!   exist;
//! - dropping the handles afterwards is clean and quiet.
//!
//! Mmaps of the device the caller took with
//! [`Region::mmap`](crate::Region::mmap) stay the caller's, but a backend's
//! revocation reaches them too, through an
//! [`MmapDetacher`](crate::MmapDetacher): they keep their addresses and
//! become zero pages ([`MmapArea::detach`](crate::MmapArea::detach)), since
//! the kernel counts a mapping as a use of the device.
//!
//! A revoker does not keep the device open: once every handle is dropped,
//! revoking does nothing and succeeds.
//!
//! In generic driver code (a runnable version on the mock backend is in
//! `vfio_hal_mock::MockDevice`'s docs):
//!
//! ```
//! use vfio_hal::prelude::*;
//! use vfio_hal::ErrorKind;
//! # fn demo<D: Device>(device: D) -> vfio_hal::Result<()> {
//! let revoker = device.revoker()?; // hand this to the thread watching REQ
//! let bar0 = device.region(0)?; // and this to a vCPU
//!
//! revoker.revoke()?; // REQ arrived
//! assert_eq!(bar0.read_at::<u32>(0).unwrap_err().kind(), ErrorKind::DeviceGone);
//! assert!(revoker.is_revoked());
//! # Ok(()) }
//! ```
//!
//! [`Device::revoker`]: crate::Device::revoker
//! [`Error::Revoked`]: crate::Error::Revoked
//! [`ErrorKind::DeviceGone`]: crate::ErrorKind::DeviceGone

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use crate::error::{Error, Result, Target};

/// What a backend implements to make its devices revocable: the state that
/// a device and all its handles share (typically holding a [`RevokedFlag`]
/// that every operation checks).
pub trait Revoke: fmt::Debug + Send + Sync {
    /// Refuses every later operation of the device and its handles, then
    /// lets go of the device (interrupt routes, device fd, cached mmaps).
    ///
    /// Idempotent. An error means the refusal is in force but something
    /// could not be let go (the device is released when the handles drop).
    fn revoke(&self) -> Result<()>;

    /// Whether [`revoke`](Self::revoke) has run.
    fn is_revoked(&self) -> bool;
}

/// The flag a backend's operations check: set once, by the first
/// revocation, and never cleared.
#[derive(Debug, Default)]
pub struct RevokedFlag(AtomicBool);

impl RevokedFlag {
    /// Not revoked.
    pub const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Sets the flag (sequentially consistent, so that it is ordered before
    /// whatever the revocation does next); true if this call set it.
    pub fn set(&self) -> bool {
        !self.0.swap(true, Ordering::SeqCst)
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// [`Error::Revoked`] for `op` on `target` once the flag is set.
    #[inline]
    pub fn check(&self, op: &'static str, target: impl FnOnce() -> Target) -> Result<()> {
        if self.is_set() {
            Err(Error::Revoked {
                op,
                target: target(),
            })
        } else {
            Ok(())
        }
    }
}

/// Revokes one open device and every handle of it; cheap to clone and to
/// send to another thread. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Revoker {
    target: Weak<dyn Revoke>,
}

impl Revoker {
    /// A revoker of the device whose shared state is `state`; it holds the
    /// state weakly, so it never keeps the device open.
    pub fn new<T: Revoke + 'static>(state: &Arc<T>) -> Self {
        let weak: Weak<T> = Arc::downgrade(state);
        Self { target: weak }
    }

    /// Revokes the device (see [`Revoke::revoke`]); `Ok` and nothing to do
    /// when every handle of it is already dropped.
    pub fn revoke(&self) -> Result<()> {
        match self.target.upgrade() {
            Some(state) => state.revoke(),
            None => Ok(()),
        }
    }

    /// Whether the device can no longer be used: it was revoked, or every
    /// handle of it is dropped.
    pub fn is_revoked(&self) -> bool {
        self.target.upgrade().is_none_or(|state| state.is_revoked())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[derive(Debug, Default)]
    struct Flag {
        revoked: RevokedFlag,
        calls: AtomicU32,
    }

    impl Revoke for Flag {
        fn revoke(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.revoked.set();
            Ok(())
        }
        fn is_revoked(&self) -> bool {
            self.revoked.is_set()
        }
    }

    #[test]
    fn the_flag_is_set_once_and_refuses_with_the_operation_and_target() {
        let flag = RevokedFlag::new();
        flag.check("pread", || Target::Region(0)).expect("not yet");
        assert!(flag.set(), "the first set");
        assert!(!flag.set(), "a second set reports it was set already");
        let err = flag
            .check("pread", || Target::Region(2))
            .expect_err("revoked");
        assert_eq!(err.kind(), crate::ErrorKind::DeviceGone);
        assert!(err.to_string().contains("pread on region 2"), "{err}");
    }

    #[test]
    fn a_revoker_reaches_the_shared_state_from_its_clones() {
        let state = Arc::new(Flag::default());
        let revoker = Revoker::new(&state);
        let other = revoker.clone();
        assert!(!revoker.is_revoked());
        other.revoke().expect("revoke");
        assert!(revoker.is_revoked() && state.is_revoked());
        assert_eq!(state.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_revoker_does_not_keep_the_device_alive() {
        let state = Arc::new(Flag::default());
        let revoker = Revoker::new(&state);
        assert_eq!(Arc::strong_count(&state), 1);
        drop(state);
        assert!(revoker.is_revoked(), "nothing left to use");
        revoker.revoke().expect("nothing to do is fine");
    }
}
