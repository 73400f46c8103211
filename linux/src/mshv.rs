//! The MSHV-VFIO pseudo device (Microsoft Hypervisor, `/dev/mshv`), through
//! rust-vmm's mshv-ioctls: the [`Hypervisor`] of a VMM running on MSHV, as
//! vfio-ioctls' `mshv` feature and cloud-hypervisor use it.
//!
//! Its interface is KVM-VFIO's: one pseudo device per VM
//! (`MSHV_CREATE_DEVICE` of type `MSHV_DEV_TYPE_VFIO`), to which every
//! VFIO group fd or device cdev fd is added (`MSHV_DEV_VFIO_FILE_ADD`) and
//! from which it is removed (`MSHV_DEV_VFIO_FILE_DEL`); the attribute's
//! `addr` points at the fd as an `s32` the kernel reads during the call.
//!
//! MSHV cannot run where this crate is tested (no `/dev/mshv`): this module
//! is built and clippy-checked there, its attribute encoding is unit-tested
//! against a recording double of the pseudo device, and VMM code written
//! against [`Hypervisor`] is tested with the mock backend's
//! `MockHypervisor`. It has not run against a real MSHV.
//!
//! ```no_run
//! use mshv_ioctls::Mshv;
//! use vfio_hal::hypervisor::VfioFileRegistration;
//! use vfio_hal_linux::mshv::MshvVfioDevice;
//! # fn device() -> vfio_hal_linux::devfd::VfioDevice { unimplemented!() }
//!
//! let vm = Mshv::new().expect("/dev/mshv").create_vm().expect("vm");
//! let mshv_vfio = MshvVfioDevice::new(&vm)?;
//! let device = device(); // from either real backend
//! let _added = VfioFileRegistration::new(&mshv_vfio, &device)?;
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::os::fd::{AsRawFd, BorrowedFd};

use mshv_bindings::{
    mshv_create_device, mshv_device_attr, MSHV_DEV_TYPE_VFIO, MSHV_DEV_VFIO_FILE,
    MSHV_DEV_VFIO_FILE_ADD, MSHV_DEV_VFIO_FILE_DEL,
};
use mshv_ioctls::{DeviceFd, VmFd};
use vfio_hal::hypervisor::Hypervisor;
use vfio_hal::{Error, Result, Target};

/// What the pseudo device does with one attribute: `MSHV_SET_DEVICE_ATTR`
/// on the real one, a record in the unit tests' double.
trait SetAttr {
    /// Sets `attr`; the errno on failure.
    fn set_attr(&self, attr: &mshv_device_attr) -> std::result::Result<(), i32>;
}

impl SetAttr for DeviceFd {
    fn set_attr(&self, attr: &mshv_device_attr) -> std::result::Result<(), i32> {
        self.set_device_attr(attr).map_err(|e| e.errno())
    }
}

/// The MSHV-VFIO pseudo device of one VM.
pub struct MshvVfioDevice {
    device: Box<dyn SetAttr + Send + Sync>,
}

impl std::fmt::Debug for MshvVfioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MshvVfioDevice").finish_non_exhaustive()
    }
}

impl MshvVfioDevice {
    /// Creates the pseudo device in `vm` (`MSHV_CREATE_DEVICE`).
    pub fn new(vm: &VmFd) -> Result<Self> {
        let mut create = mshv_create_device {
            type_: MSHV_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let device = vm
            .create_device(&mut create)
            .map_err(|e| Error::sys("MSHV_CREATE_DEVICE", Target::None, e.errno()))?;
        Ok(Self {
            device: Box::new(device),
        })
    }

    fn set(&self, op: &'static str, attr: u32, file: BorrowedFd<'_>) -> Result<()> {
        let fd: i32 = file.as_raw_fd();
        let a = mshv_device_attr {
            flags: 0,
            group: MSHV_DEV_VFIO_FILE,
            attr: u64::from(attr),
            // The kernel reads one s32 fd from this address during the call.
            addr: std::ptr::from_ref(&fd) as u64,
        };
        self.device
            .set_attr(&a)
            .map_err(|errno| Error::sys(op, Target::None, errno))
    }
}

impl Hypervisor for MshvVfioDevice {
    fn name(&self) -> &'static str {
        "mshv"
    }

    fn add_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.set("MSHV_DEV_VFIO_FILE_ADD", MSHV_DEV_VFIO_FILE_ADD, file)
    }

    fn remove_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.set("MSHV_DEV_VFIO_FILE_DEL", MSHV_DEV_VFIO_FILE_DEL, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::{Arc, Mutex};
    use vfio_hal::ErrorKind;

    /// Records each attribute with the fd its `addr` pointed at, read
    /// during the call as the kernel reads it; answers with `errno`.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(u32, u32, u64, i32)>>,
        errno: Option<i32>,
    }

    impl SetAttr for Arc<Recorder> {
        fn set_attr(&self, attr: &mshv_device_attr) -> std::result::Result<(), i32> {
            // SAFETY: `MshvVfioDevice::set` points `addr` at an i32 on its
            // stack that lives across this call.
            let fd = unsafe { *(attr.addr as *const i32) };
            let mut seen = self.seen.lock().expect("lock");
            seen.push((attr.flags, attr.group, attr.attr, fd));
            self.errno.map_or(Ok(()), Err)
        }
    }

    fn device(recorder: &Arc<Recorder>) -> MshvVfioDevice {
        MshvVfioDevice {
            device: Box::new(Arc::clone(recorder)),
        }
    }

    #[test]
    fn add_and_remove_send_the_file_attribute_with_the_fd() {
        let recorder = Arc::new(Recorder::default());
        let mshv = device(&recorder);
        let file = std::fs::File::open("/dev/null").expect("open");
        mshv.add_vfio_file(file.as_fd()).expect("add");
        mshv.remove_vfio_file(file.as_fd()).expect("remove");
        let fd = file.as_raw_fd();
        assert_eq!(
            *recorder.seen.lock().expect("lock"),
            [
                (0, MSHV_DEV_VFIO_FILE, u64::from(MSHV_DEV_VFIO_FILE_ADD), fd),
                (0, MSHV_DEV_VFIO_FILE, u64::from(MSHV_DEV_VFIO_FILE_DEL), fd),
            ]
        );
        assert_eq!(
            (
                MSHV_DEV_VFIO_FILE,
                MSHV_DEV_VFIO_FILE_ADD,
                MSHV_DEV_VFIO_FILE_DEL
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_refusal_is_a_typed_error_naming_the_request() {
        let recorder = Arc::new(Recorder {
            errno: Some(libc::EINVAL),
            ..Recorder::default()
        });
        let mshv = device(&recorder);
        let file = std::fs::File::open("/dev/null").expect("open");
        let e = mshv.add_vfio_file(file.as_fd()).expect_err("refused");
        assert_eq!(
            (e.kind(), e.errno()),
            (ErrorKind::InvalidArgument, Some(libc::EINVAL))
        );
        assert!(e.to_string().contains("MSHV_DEV_VFIO_FILE_ADD"), "{e}");
    }
}
