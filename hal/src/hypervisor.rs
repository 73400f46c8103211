//! What a hypervisor must be told about the VFIO devices of its VM.
//!
//! KVM and the Microsoft Hypervisor (MSHV) each keep a VFIO pseudo device
//! per VM, and a VMM adds to it the VFIO file of every device it passes
//! through ([`Device::vfio_file`]: the group on the type1 path, the device
//! cdev on the iommufd path). The hypervisor takes from that file what it
//! needs: whether the device's DMA is cache-coherent (KVM then honours or
//! ignores the guest's memory types: `kvm_arch_register_noncoherent_dma`
//! when a file cannot enforce coherency, so the VMM has nothing else to
//! say about coherency), the VFIO–KVM association some drivers need
//! (GVT-g, s390 zPCI), and IRQ bypass.
//!
//! [`Hypervisor`] is that conversation, one implementation per hypervisor
//! (`vfio_hal_linux::kvm`, `vfio_hal_linux::mshv`, and a recording mock in
//! `vfio_hal_mock`); [`VfioFileRegistration`] adds a device's file and
//! removes it when dropped.
//!
//! ```
//! use vfio_hal::hypervisor::VfioFileRegistration;
//! use vfio_hal::prelude::*;
//! use vfio_hal_mock::{models::edu::Edu, MockContainer, MockHypervisor};
//!
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let edu = container.open_device("edu")?;
//! let vm = MockHypervisor::new();
//!
//! let registration = VfioFileRegistration::new(&vm, &edu)?;
//! assert_eq!(vm.files(), ["edu"]);
//! // Adding the same file twice is refused, as by KVM (EEXIST).
//! assert!(VfioFileRegistration::new(&vm, &edu).is_err());
//! drop(registration);
//! assert!(vm.files().is_empty());
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::{Device, Error, Result, Target};

/// A hypervisor's VFIO pseudo device of one VM.
pub trait Hypervisor {
    /// Which hypervisor (`"kvm"`, `"mshv"`, `"mock"`), for errors and logs.
    fn name(&self) -> &'static str;

    /// Adds a VFIO file — a group fd, or a bound device cdev fd — to the
    /// VM. A file that is not VFIO's is `InvalidArgument` (EINVAL), one
    /// added already is EEXIST.
    fn add_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()>;

    /// Removes a file added with [`Hypervisor::add_vfio_file`]; one never
    /// added is `NotFound` (ENOENT).
    fn remove_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()>;
}

/// `Hypervisor` for a pointer to one, forwarding every call.
macro_rules! forward_hypervisor {
    ($($ptr:ty),*) => {$(
        impl<H: Hypervisor + ?Sized> Hypervisor for $ptr {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn add_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
                (**self).add_vfio_file(file)
            }
            fn remove_vfio_file(&self, file: BorrowedFd<'_>) -> Result<()> {
                (**self).remove_vfio_file(file)
            }
        }
    )*};
}

forward_hypervisor!(&H, Arc<H>, Box<H>);

/// A device's VFIO file, added to a hypervisor for as long as this lives.
///
/// It keeps its own duplicate of the file, so the device may be closed
/// first (the hypervisor holds the file open while it is added anyway);
/// dropping it removes the file and closes the duplicate.
#[derive(Debug)]
pub struct VfioFileRegistration<H: Hypervisor> {
    hypervisor: H,
    file: Option<OwnedFd>,
    device: String,
}

impl<H: Hypervisor> VfioFileRegistration<H> {
    /// Adds `device`'s VFIO file ([`Device::vfio_file`]) to `hypervisor`.
    pub fn new<D: Device + ?Sized>(hypervisor: H, device: &D) -> Result<Self> {
        let name = device.info().name.clone();
        let file = device
            .vfio_file()?
            .try_clone_to_owned()
            .map_err(|e| Error::from_io("dup", Target::Device(name.clone()), &e))?;
        hypervisor
            .add_vfio_file(file.as_fd())
            .map_err(|e| e.with_target(Target::Device(name.clone())))?;
        Ok(Self {
            hypervisor,
            file: Some(file),
            device: name,
        })
    }

    /// The hypervisor the file was added to.
    pub fn hypervisor(&self) -> &H {
        &self.hypervisor
    }

    /// Removes the file now, with the hypervisor's answer (dropping
    /// removes it too, logging a refusal).
    pub fn remove(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        self.hypervisor
            .remove_vfio_file(file.as_fd())
            .map_err(|e| e.with_target(Target::Device(self.device.clone())))
    }
}

impl<H: Hypervisor> Drop for VfioFileRegistration<H> {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!(
                "{}: removing {}'s VFIO file failed: {e}",
                self.hypervisor.name(),
                self.device
            );
        }
    }
}
