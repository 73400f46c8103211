//! crosvm's out-of-tree VFIO extensions, behind an explicit opt-in.
//!
//! ChromeOS kernels carry two VFIO additions that upstream Linux does not
//! have:
//! - `VFIO_DEVICE_ACPI_DSM`, `_IO(';', 100 + 18)`: evaluate the device's
//!   ACPI `_DSM` method with an argument buffer
//!   (`struct vfio_acpi_dsm { u32 argsz; u32 padding; u8 args[]; }`);
//! - the ACPI notification interrupt, irq index 5 (`VFIO_PCI_ACPI_NTFY_IRQ_INDEX`).
//!
//! Both collide with upstream: request `100 + 18` is
//! `VFIO_DEVICE_BIND_IOMMUFD` (`_IO` carries no size, so the numbers are
//! identical), and index 5 is `VFIO_PCI_NUM_IRQS`, one past the last
//! upstream vfio-pci index. Sending the `_DSM` request to an upstream kernel
//! would ask it to bind the device to whatever fd the argument bytes name.
//! Every call therefore takes a [`KernelAbi`], and with
//! [`KernelAbi::Upstream`] it is refused with `NotSupported` before any
//! system call. Only pass [`KernelAbi::CrosvmPatched`] when the running
//! kernel is known to carry crosvm's patches.

use vfio_hal::{Device, Error, Result, Target};

use crate::devfd::{VfioDevice, VfioIrq};
use crate::sys::{self, Request};

/// crosvm's `VFIO_DEVICE_ACPI_DSM`: the same number as upstream
/// [`sys::VFIO_DEVICE_BIND_IOMMUFD`].
pub const VFIO_DEVICE_ACPI_DSM: Request = Request::vfio("VFIO_DEVICE_ACPI_DSM (crosvm)", 18);

/// crosvm's `VFIO_PCI_ACPI_NTFY_IRQ_INDEX` (upstream's `VFIO_PCI_NUM_IRQS`).
pub const ACPI_NOTIFICATION_IRQ_INDEX: u32 = 5;

/// Which VFIO ABI the running kernel speaks, as asserted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelAbi {
    /// Upstream Linux: crosvm's extensions are refused.
    #[default]
    Upstream,
    /// A kernel with crosvm's VFIO patches: the extensions are sent.
    CrosvmPatched,
}

impl KernelAbi {
    fn require_crosvm(self, op: &'static str, target: Target) -> Result<()> {
        match self {
            Self::CrosvmPatched => Ok(()),
            Self::Upstream => Err(Error::NotSupported {
                op,
                target,
                reason: "crosvm extension: on upstream kernels this request number means \
                         VFIO_DEVICE_BIND_IOMMUFD (or irq index 5 does not exist); \
                         pass KernelAbi::CrosvmPatched only on a crosvm-patched kernel",
            }),
        }
    }
}

/// crosvm's device extensions, opt-in per call.
pub trait CrosvmExt {
    /// Evaluates the device's ACPI `_DSM` with `args` (in and out).
    fn acpi_dsm(&self, abi: KernelAbi, args: &mut [u8]) -> Result<()>;

    /// The ACPI notification interrupt (irq index 5): route it with
    /// [`vfio_hal::Irq::set_eventfd`].
    fn acpi_notification_irq(&self, abi: KernelAbi) -> Result<VfioIrq>;
}

impl CrosvmExt for VfioDevice {
    fn acpi_dsm(&self, abi: KernelAbi, args: &mut [u8]) -> Result<()> {
        let target = Target::Device(self.name().into());
        abi.require_crosvm(VFIO_DEVICE_ACPI_DSM.name, target.clone())?;
        sys::crosvm_acpi_dsm(self.fd(), args)
            .map(drop)
            .map_err(|e| e.into_error(VFIO_DEVICE_ACPI_DSM.name, target))
    }

    fn acpi_notification_irq(&self, abi: KernelAbi) -> Result<VfioIrq> {
        abi.require_crosvm(
            "VFIO_DEVICE_GET_IRQ_INFO",
            Target::Irq(ACPI_NOTIFICATION_IRQ_INDEX),
        )?;
        self.irq(ACPI_NOTIFICATION_IRQ_INDEX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::ErrorKind;

    #[test]
    fn the_dsm_request_is_upstream_bind_iommufd() {
        assert_eq!(
            VFIO_DEVICE_ACPI_DSM.code,
            sys::VFIO_DEVICE_BIND_IOMMUFD.code
        );
    }

    #[test]
    fn upstream_is_refused_before_any_call() {
        let e = KernelAbi::Upstream
            .require_crosvm("VFIO_DEVICE_ACPI_DSM (crosvm)", Target::None)
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert!(e.to_string().contains("VFIO_DEVICE_BIND_IOMMUFD"), "{e}");
        KernelAbi::CrosvmPatched
            .require_crosvm("x", Target::None)
            .expect("opted in");
        assert_eq!(KernelAbi::default(), KernelAbi::Upstream);
    }
}
