//! The KVM-VFIO pseudo device (`KVM_DEV_TYPE_VFIO`), through kvm-ioctls.
//!
//! KVM must know which VFIO files a VM uses: for coherent DMA
//! (`KVM_CAP_..._NOSNOOP` emulation), for the VFIO-KVM association some
//! drivers need (GVT-g, s390 zPCI), and for IRQ bypass. A VMM creates one
//! pseudo device per VM and adds every group fd (or, since Linux 6.6, every
//! cdev device fd) with `KVM_DEV_VFIO_FILE_ADD`.
//!
//! `KVM_DEV_VFIO_FILE` / `_ADD` / `_DEL` (Linux 6.6) are the renamed
//! `KVM_DEV_VFIO_GROUP` / `_ADD` / `_DEL` with the same numbers (1, 1, 2),
//! so one request works on old and new kernels; only the sPAPR-only
//! `KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE` (3) has no new name.
//!
//! It takes any VFIO file, so both backends use it: the legacy backend's
//! group fd and the iommufd backend's cdev device fd, each a device's
//! [`Device::vfio_file`](vfio_hal::Device::vfio_file). [`KvmVfioDevice`]
//! is a [`Hypervisor`], so a VMM registers a device with
//! [`VfioFileRegistration`](vfio_hal::hypervisor::VfioFileRegistration).
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use kvm_ioctls::Kvm;
//! use vfio_hal_linux::kvm::KvmVfioDevice;
//!
//! let vm = Kvm::new().expect("kvm").create_vm().expect("vm");
//! let kvm_vfio = KvmVfioDevice::new(&vm)?;
//! let group = std::fs::File::open("/dev/vfio/12").expect("group node");
//! kvm_vfio.add_file(group.as_fd())?;
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::os::fd::{AsRawFd, BorrowedFd};

use kvm_ioctls::{DeviceFd, VmFd};
use vfio_hal::hypervisor::Hypervisor;
use vfio_hal::{Error, Result, Target};

/// `KVM_DEV_TYPE_VFIO` (`enum kvm_device_type` in `include/uapi/linux/kvm.h`).
pub const KVM_DEV_TYPE_VFIO: u32 = 4;
/// `KVM_DEV_VFIO_FILE` (formerly `KVM_DEV_VFIO_GROUP`), the attribute group.
pub const KVM_DEV_VFIO_FILE: u32 = 1;
/// `KVM_DEV_VFIO_FILE_ADD` (formerly `KVM_DEV_VFIO_GROUP_ADD`).
pub const KVM_DEV_VFIO_FILE_ADD: u64 = 1;
/// `KVM_DEV_VFIO_FILE_DEL` (formerly `KVM_DEV_VFIO_GROUP_DEL`).
pub const KVM_DEV_VFIO_FILE_DEL: u64 = 2;

/// A default value of the struct a kvm-ioctls method takes by `&mut`.
///
/// kvm-ioctls takes kvm-bindings structs but does not re-export them; these
/// two helpers name them through the method signatures instead of adding a
/// direct kvm-bindings dependency (the structs are `#[derive(Default)]`).
fn default_mut_arg<S, A: Default, R>(_method: fn(&S, &mut A) -> R) -> A {
    A::default()
}

/// A default value of the struct a kvm-ioctls method takes by `&`.
fn default_ref_arg<S, A: Default, R>(_method: fn(&S, &A) -> R) -> A {
    A::default()
}

/// The KVM-VFIO pseudo device of one VM.
#[derive(Debug)]
pub struct KvmVfioDevice {
    device: DeviceFd,
}

impl KvmVfioDevice {
    /// Creates the pseudo device in `vm` (`KVM_CREATE_DEVICE`).
    pub fn new(vm: &VmFd) -> Result<Self> {
        let mut create = default_mut_arg(VmFd::create_device);
        create.type_ = KVM_DEV_TYPE_VFIO;
        let device = vm
            .create_device(&mut create)
            .map_err(|e| Error::sys("KVM_CREATE_DEVICE", Target::None, e.errno()))?;
        Ok(Self { device })
    }

    /// The pseudo device's fd.
    pub fn device_fd(&self) -> &DeviceFd {
        &self.device
    }

    fn set(&self, op: &'static str, attr: u64, file: BorrowedFd<'_>) -> Result<()> {
        let fd: i32 = file.as_raw_fd();
        let mut a = default_ref_arg(DeviceFd::set_device_attr);
        a.group = KVM_DEV_VFIO_FILE;
        a.attr = attr;
        // The kernel reads one s32 fd from this address during the call.
        a.addr = std::ptr::from_ref(&fd) as u64;
        self.device
            .set_device_attr(&a)
            .map_err(|e| Error::sys(op, Target::None, e.errno()))
    }

    /// Adds a VFIO file (a group fd, or a bound cdev device fd) to the VM.
    /// A file that is not VFIO's is `InvalidArgument` (the kernel's EINVAL).
    pub fn add_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.set("KVM_DEV_VFIO_FILE_ADD", KVM_DEV_VFIO_FILE_ADD, file)
    }

    /// Removes a VFIO file added with [`add_file`](Self::add_file); one
    /// that was never added is `NotFound` (the kernel's ENOENT).
    pub fn del_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.set("KVM_DEV_VFIO_FILE_DEL", KVM_DEV_VFIO_FILE_DEL, file)
    }
}

impl Hypervisor for KvmVfioDevice {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn add_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.add_file(file)
    }

    fn remove_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.del_file(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use vfio_hal::ErrorKind;

    /// A VM on this machine's /dev/kvm; `None` only where there is no
    /// /dev/kvm and `VFIO_HAL_REQUIRE_KVM=1` is not set (it makes a missing
    /// /dev/kvm a failure).
    fn vm() -> Option<VmFd> {
        if !std::path::Path::new("/dev/kvm").exists() {
            let required = std::env::var_os("VFIO_HAL_REQUIRE_KVM").is_some_and(|v| v == "1");
            assert!(
                !required,
                "no /dev/kvm, and VFIO_HAL_REQUIRE_KVM=1 requires it"
            );
            eprintln!("SKIPPED: no /dev/kvm: KVM-VFIO tests not run");
            return None;
        }
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm exists but cannot be opened");
        Some(kvm.create_vm().expect("KVM_CREATE_VM"))
    }

    #[test]
    fn the_pseudo_device_is_created() {
        let Some(vm) = vm() else { return };
        let dev = KvmVfioDevice::new(&vm).expect("KVM_CREATE_DEVICE(VFIO)");
        assert!(dev.device_fd().as_raw_fd() >= 0);
    }

    #[test]
    fn adding_a_file_that_is_not_vfio_is_a_typed_einval() {
        let Some(vm) = vm() else { return };
        let dev = KvmVfioDevice::new(&vm).expect("KVM_CREATE_DEVICE(VFIO)");
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let e = dev.add_file(null.as_fd()).expect_err("not a VFIO file");
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("KVM_DEV_VFIO_FILE_ADD"), "{e}");
        // Removing a file that was never added: the kernel's ENOENT.
        let e = dev.del_file(null.as_fd()).expect_err("never added");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn the_hypervisor_trait_speaks_to_the_same_pseudo_device() {
        let Some(vm) = vm() else { return };
        let dev = KvmVfioDevice::new(&vm).expect("KVM_CREATE_DEVICE(VFIO)");
        let kvm: &dyn Hypervisor = &dev;
        assert_eq!(kvm.name(), "kvm");
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let e = kvm
            .add_vfio_file(null.as_fd())
            .expect_err("not a VFIO file");
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        let e = kvm.remove_vfio_file(null.as_fd()).expect_err("never added");
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    }

    #[test]
    fn only_one_vfio_pseudo_device_per_vm() {
        let Some(vm) = vm() else { return };
        let _first = KvmVfioDevice::new(&vm).expect("first");
        // KVM allows a single VFIO device per VM (kvm_vfio_create: EBUSY).
        let e = KvmVfioDevice::new(&vm).expect_err("second");
        assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
    }
}
