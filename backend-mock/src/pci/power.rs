//! vfio-pci's runtime power management: the three low-power device features.
//!
//! Mirrors `drivers/vfio/pci/vfio_pci_core.c` (Linux 6.12) for every mock
//! device, whatever its model:
//! - `LOW_POWER_ENTRY` (3), `LOW_POWER_ENTRY_WITH_WAKEUP` (4) and
//!   `LOW_POWER_EXIT` (5) support SET only (`vfio_check_feature`): a probe
//!   of SET succeeds, a probe of GET and a GET are `EINVAL`. Entry and exit
//!   take no payload; entry with wakeup takes `{ s32 wakeup_eventfd; u32
//!   reserved; }`, and a shorter one is `EINVAL`.
//! - Entry with wakeup refuses a negative fd with `EINVAL`, then takes its
//!   own reference to the eventfd as `eventfd_ctx_fdget` does (a bad fd is
//!   `EBADF`, a file that is not an eventfd `EINVAL`). Either entry while
//!   low power is engaged is `EINVAL`; exit while it is not is a no-op.
//! - While engaged, the device is runtime-suspended between accesses. Every
//!   access through the device fd — each ioctl, the feature ioctls
//!   included, and each region read or write — resumes it first and lets
//!   it suspend again afterwards, as the pm wrappers around vfio's ioctl
//!   and `vfio_pci_rw` do. A resume with a wakeup eventfd signals it once
//!   and ends low power (`vfio_pci_core_runtime_resume`); without one the
//!   device stays in low power. A suspend masks an enabled, unmasked INTx
//!   and the next resume unmasks it (`pm_intx_masked`).
//! - Closing the device ends low power without a signal: the reference to
//!   the eventfd is dropped before the device is resumed
//!   (`vfio_pci_core_disable`). A reset is one more ioctl: it resumes the
//!   device like any other, and leaves low power engaged when entered
//!   without wakeup (`vfio_pci_ioctl_reset` does not touch it).
//!
//! The mmap side — vfio-pci zaps BAR mmaps at entry and faults them with
//! SIGBUS while engaged — is the region's to honour; see
//! [`RuntimePm::engaged`].

use std::os::fd::RawFd;

use vfio_hal::device::feature;
use vfio_hal::{Error, FeatureOp, Result, Target};

use super::interrupts::Interrupts;
use crate::sys::EventRoute;

const OP: &str = "VFIO_DEVICE_FEATURE";

/// Bytes of `struct vfio_device_low_power_entry_with_wakeup`.
const WAKEUP_PAYLOAD: usize = 8;

fn einval(feature: u32) -> Error {
    Error::sys(OP, Target::Feature(feature), libc::EINVAL)
}

/// The runtime power state vfio-pci keeps for one open device.
#[derive(Debug, Default)]
pub(crate) struct RuntimePm {
    /// A low-power entry was accepted and has not ended (`pm_runtime_engaged`).
    engaged: bool,
    /// Our own dup of the entry's wakeup eventfd (`pm_wake_eventfd_ctx`).
    wakeup: Option<EventRoute>,
    /// Runtime-suspended: engaged and no access under way.
    suspended: bool,
    /// The suspend masked INTx, and the resume unmasks it (`pm_intx_masked`).
    intx_masked: bool,
}

impl RuntimePm {
    /// Whether low power is engaged: vfio-pci refuses BAR mmap faults
    /// (SIGBUS) exactly then, so no access may bypass the device fd.
    pub(crate) fn engaged(&self) -> bool {
        self.engaged
    }

    /// Before an access through the device fd
    /// (`pm_runtime_resume_and_get`): resumes a suspended device, which with
    /// a wakeup eventfd signals it and ends low power.
    #[inline]
    pub(crate) fn resume(&mut self, irqs: &mut Interrupts) {
        if self.suspended {
            self.resume_now(irqs);
        }
    }

    #[inline(never)]
    fn resume_now(&mut self, irqs: &mut Interrupts) {
        self.suspended = false;
        if let Some(wakeup) = self.wakeup.take() {
            wakeup.signal();
            self.engaged = false;
        }
        if std::mem::take(&mut self.intx_masked) {
            irqs.intx_unmask();
        }
    }

    /// After the access (`pm_runtime_put`): an engaged device suspends
    /// again, masking INTx if it is enabled and unmasked.
    #[inline]
    pub(crate) fn suspend(&mut self, irqs: &mut Interrupts) {
        if self.engaged && !self.suspended {
            self.suspended = true;
            self.intx_masked = irqs.intx_mask();
        }
    }

    /// Device close (`vfio_pci_core_disable`): low power ends and the
    /// wakeup eventfd is let go of without a signal; routes are torn down
    /// by the caller, so a mask the suspend set goes with them.
    pub(crate) fn disable(&mut self) {
        *self = Self::default();
    }

    /// One of the three low-power features, or `None` for any other
    /// feature. Runs between [`RuntimePm::resume`] and
    /// [`RuntimePm::suspend`], as the ioctl does.
    pub(crate) fn feature(
        &mut self,
        op: FeatureOp,
        feature: u32,
        data: &[u8],
    ) -> Option<Result<()>> {
        let minsz = match feature {
            feature::LOW_POWER_ENTRY | feature::LOW_POWER_EXIT => 0,
            feature::LOW_POWER_ENTRY_WITH_WAKEUP => WAKEUP_PAYLOAD,
            _ => return None,
        };
        Some(match op {
            // vfio_check_feature: only SET is supported.
            FeatureOp::ProbeGet | FeatureOp::Get => Err(einval(feature)),
            FeatureOp::ProbeSet => Ok(()),
            FeatureOp::Set if data.len() < minsz => Err(einval(feature)),
            FeatureOp::Set => match feature {
                feature::LOW_POWER_ENTRY => self.enter(None),
                feature::LOW_POWER_EXIT => {
                    self.exit();
                    Ok(())
                }
                // LOW_POWER_ENTRY_WITH_WAKEUP
                _ => Self::wakeup_route(data).and_then(|route| self.enter(Some(route))),
            },
        })
    }

    /// `vfio_pci_core_pm_entry_with_wakeup`'s fd checks: negative is
    /// `EINVAL`, then our own reference as `eventfd_ctx_fdget` takes one.
    fn wakeup_route(data: &[u8]) -> Result<EventRoute> {
        let target = Target::Feature(feature::LOW_POWER_ENTRY_WITH_WAKEUP);
        let Some(&fd) = data.first_chunk::<4>() else {
            return Err(Error::sys(OP, target, libc::EINVAL));
        };
        let fd = RawFd::from_ne_bytes(fd);
        if fd < 0 {
            return Err(Error::sys(OP, target, libc::EINVAL));
        }
        EventRoute::dup_raw(OP, &target, fd)
    }

    /// `vfio_pci_runtime_pm_entry`: refused while engaged (a wakeup
    /// reference offered then is dropped again).
    fn enter(&mut self, wakeup: Option<EventRoute>) -> Result<()> {
        if self.engaged {
            let feature = if wakeup.is_some() {
                feature::LOW_POWER_ENTRY_WITH_WAKEUP
            } else {
                feature::LOW_POWER_ENTRY
            };
            return Err(einval(feature));
        }
        self.engaged = true;
        self.wakeup = wakeup;
        Ok(())
    }

    /// `vfio_pci_runtime_pm_exit`: ends low power if engaged (the resume
    /// before it has already signalled and ended a wakeup entry).
    fn exit(&mut self) {
        self.engaged = false;
        self.wakeup = None;
    }
}
