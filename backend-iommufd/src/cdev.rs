//! The VFIO device cdev lifecycle as a type transition.
//!
//! ```text
//! UnboundDevice ──bind(&Iommufd)──▶ BoundDevice ──attach(IOAS | HWPT)──▶ AttachedDevice
//!                                        ▲                                    │
//!                                        └──────────────detach()──────────────┘
//! ```
//!
//! Each state offers only what the kernel allows in it: an unbound cdev
//! refuses every device ioctl (`EINVAL`), so [`UnboundDevice`] has no device
//! methods at all; a bound one can describe its IOMMU ([`BoundDevice::hw_info`])
//! and allocate HWPTs for itself; only an [`AttachedDevice`] — whose DMA goes
//! through an address space — implements [`vfio_hal::Device`], through the
//! device-fd code of `vfio-hal-linux` ([`VfioDevice`]), since regions, irqs and
//! features are the same ioctls on a cdev fd as on a group-obtained one.
//!
//! A failed transition hands the device back in its previous state inside
//! the error ([`BindError`], [`AttachError`], [`DetachError`]).
//!
//! Closing the fd undoes everything (the kernel detaches and unbinds), so
//! dropping a device in any state is clean.

use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::migration::{MigrationData, MigrationState};
use vfio_hal::{Device, DeviceInfo, Error, FeatureOp, FeatureSupport, Result, Revoker, Target};
use vfio_hal_linux::devfd::{Backing, VfioDevice, VfioIrq, VfioRegion};

use crate::hwpt::{self, HwInfo, HwPagetable, HwptOptions};
use crate::ioas::Ioas;
use crate::iommufd::Iommufd;
use crate::sys;
use vfio_hal_linux::Host;

/// Gives an error that names no target the device's name.
fn on_device(error: Error, name: &str) -> Error {
    match error.target() {
        Some(Target::None) => error.with_target(Target::Device(name.to_owned())),
        _ => error,
    }
}

/// The error of `VFIO_DEVICE_BIND_IOMMUFD` on device `name`. The
/// arguments are always well formed, so EINVAL can only be
/// `vfio_df_open`'s refusal of a device already open through another file
/// (the cdev path allows one), and EBUSY the group's other owner
/// (`vfio_device_block_group`, `iommu_device_claim_dma_owner`).
fn bind_error(error: Error, name: &str) -> Error {
    let reason = match error.errno() {
        Some(libc::EINVAL) => {
            "another file of this device is open or bound (an earlier open of it whose device, region or irq handle is still alive, or another process): close it first"
        }
        Some(libc::EBUSY) => {
            "the device's IOMMU group has another owner (the group is open through /dev/vfio/N, e.g. by a legacy container, or another device of the group is bound to another iommufd)"
        }
        _ => return on_device(error, name),
    };
    Error::Busy {
        op: "VFIO_DEVICE_BIND_IOMMUFD",
        target: Target::Device(name.to_owned()),
        errno: error.errno().unwrap_or(libc::EBUSY),
        reason,
    }
}

/// An open cdev (`/dev/vfio/devices/vfioN`), not yet bound to an iommufd.
#[derive(Debug)]
pub struct UnboundDevice {
    fd: OwnedFd,
    name: String,
}

impl UnboundDevice {
    /// Opens the cdev of `device` (a PCI address or a sysfs path).
    pub fn open(device: &str) -> Result<Self> {
        Self::open_in(&Host::default(), device)
    }

    /// As [`UnboundDevice::open`], with sysfs and `/dev` of `host`.
    pub fn open_in(host: &Host, device: &str) -> Result<Self> {
        let loc = host.find_cdev(device)?;
        Self::open_node(&loc.node, loc.name)
    }

    /// Opens the cdev node at `node` for the device called `name`.
    pub fn open_node(node: &Path, name: impl Into<String>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(node)
            .map_err(|e| Error::from_io("open", Target::Path(node.display().to_string()), &e))?;
        Ok(Self {
            fd: file.into(),
            name: name.into(),
        })
    }

    /// The device's name (its PCI address for vfio-pci).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Binds the device to `iommufd` (`VFIO_DEVICE_BIND_IOMMUFD`).
    ///
    /// The kernel lets only one file of a device be bound at a time, and
    /// none while its IOMMU group has another owner; both refusals are
    /// [`Error::Busy`] saying what holds the device: another bound or open
    /// file of the device (EINVAL: an earlier open through this library
    /// whose device, region or irq handle is still alive, or another
    /// process), or the group (EBUSY: open through `/dev/vfio/N` by a
    /// legacy container, or another device of the group bound to another
    /// iommufd).
    pub fn bind(self, iommufd: &Iommufd) -> Result<BoundDevice, BindError> {
        match sys::device_bind_iommufd(self.fd.as_fd(), iommufd.as_fd()) {
            Ok(dev_id) => Ok(BoundDevice {
                fd: self.fd,
                name: self.name,
                iommufd: iommufd.clone(),
                dev_id,
            }),
            Err(error) => Err(BindError {
                error: bind_error(error, &self.name),
                device: self,
            }),
        }
    }
}

impl AsFd for UnboundDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A failed [`UnboundDevice::bind`]: why, and the device, still unbound.
#[derive(Debug)]
pub struct BindError {
    /// Why the bind failed.
    pub error: Error,
    /// The device, unchanged.
    pub device: UnboundDevice,
}

/// What a device can be attached to.
#[derive(Debug, Clone, Copy)]
pub enum PageTable<'a> {
    /// An IOAS: the kernel picks (or creates) a HWPT for it.
    Ioas(&'a Ioas),
    /// An explicitly allocated HWPT.
    Hwpt(&'a HwPagetable),
    /// A raw object id of the device's iommufd, managed by the caller:
    /// nothing keeps it alive, and an id that names no IOAS or HWPT is
    /// refused by the kernel.
    Id(u32),
}

impl<'a> From<&'a Ioas> for PageTable<'a> {
    fn from(ioas: &'a Ioas) -> Self {
        Self::Ioas(ioas)
    }
}

impl<'a> From<&'a HwPagetable> for PageTable<'a> {
    fn from(hwpt: &'a HwPagetable) -> Self {
        Self::Hwpt(hwpt)
    }
}

impl PageTable<'_> {
    fn id(&self) -> u32 {
        match self {
            Self::Ioas(ioas) => ioas.id(),
            Self::Hwpt(hwpt) => hwpt.id(),
            Self::Id(id) => *id,
        }
    }

    fn iommufd(&self) -> Option<&Iommufd> {
        match self {
            Self::Ioas(ioas) => Some(ioas.iommufd()),
            Self::Hwpt(hwpt) => Some(hwpt.iommufd()),
            Self::Id(_) => None,
        }
    }

    fn keep_alive(&self) -> KeepAlive {
        match self {
            Self::Ioas(ioas) => KeepAlive::Ioas((*ioas).clone()),
            Self::Hwpt(hwpt) => KeepAlive::Hwpt((*hwpt).clone()),
            Self::Id(_) => KeepAlive::Nothing,
        }
    }
}

/// The page table an attached device keeps alive.
#[derive(Debug)]
enum KeepAlive {
    Ioas(Ioas),
    Hwpt(HwPagetable),
    Nothing,
}

impl KeepAlive {
    /// The id of the page table held, if any.
    fn id(&self) -> Option<u32> {
        match self {
            Self::Ioas(ioas) => Some(ioas.id()),
            Self::Hwpt(hwpt) => Some(hwpt.id()),
            Self::Nothing => None,
        }
    }
}

/// A cdev bound to an iommufd, not attached to any address space (its DMA
/// is blocked).
#[derive(Debug)]
pub struct BoundDevice {
    fd: OwnedFd,
    name: String,
    iommufd: Iommufd,
    dev_id: u32,
}

impl BoundDevice {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id iommufd knows the device by (for `IOMMU_GET_HW_INFO`, HWPT allocation).
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// The iommufd the device is bound to.
    pub fn iommufd(&self) -> &Iommufd {
        &self.iommufd
    }

    /// What the IOMMU behind the device reports (`IOMMU_GET_HW_INFO`).
    pub fn hw_info(&self) -> Result<HwInfo> {
        hwpt::hw_info(&self.iommufd, self.dev_id).map_err(|e| on_device(e, &self.name))
    }

    /// Whether the IOMMU behind the device tracks dirty pages.
    pub fn dirty_tracking_supported(&self) -> Result<bool> {
        Ok(self.hw_info()?.dirty_tracking_supported())
    }

    /// Allocates a HWPT for this device over `ioas` (`IOMMU_HWPT_ALLOC`).
    pub fn alloc_hwpt(&self, ioas: &Ioas, options: HwptOptions) -> Result<HwPagetable> {
        check_same_iommufd("IOMMU_HWPT_ALLOC", &self.iommufd, Some(ioas.iommufd()))?;
        HwPagetable::alloc(self.dev_id, ioas, options).map_err(|e| on_device(e, &self.name))
    }

    /// Attaches the device to an IOAS or HWPT (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`)
    /// and reads its info; the result is a usable [`vfio_hal::Device`] that
    /// keeps the page table alive.
    ///
    /// An id naming no page table is `NotFound` (ENOENT); a page table of
    /// another iommufd is refused before the kernel could mistake its id for
    /// one of this iommufd's objects.
    pub fn attach<'a>(self, pt: impl Into<PageTable<'a>>) -> Result<AttachedDevice, AttachError> {
        let pt = pt.into();
        if let Err(error) =
            check_same_iommufd("VFIO_DEVICE_ATTACH_IOMMUFD_PT", &self.iommufd, pt.iommufd())
        {
            return Err(AttachError {
                error,
                device: self,
            });
        }
        let attached_pt = match sys::device_attach_pt(self.fd.as_fd(), pt.id()) {
            Ok(id) => id,
            Err(error) => {
                return Err(AttachError {
                    error: on_device(error, &self.name),
                    device: self,
                })
            }
        };
        // VfioDevice takes the fd; a second descriptor of the same open file
        // keeps the binding for the error path (the kernel unbinds only when
        // the last descriptor closes).
        let spare = match self.fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                let error = Error::from_io("dup", Target::Device(self.name.clone()), &e);
                return Err(AttachError {
                    error: undo_attach(error, &self),
                    device: self,
                });
            }
        };
        let backing = Arc::new(CdevBacking {
            iommufd: self.iommufd.clone(),
            page_table: pt.keep_alive(),
        });
        match VfioDevice::new(self.fd, self.name.clone(), backing) {
            Ok(device) => Ok(AttachedDevice {
                device,
                iommufd: self.iommufd,
                dev_id: self.dev_id,
                pt_id: attached_pt,
            }),
            Err(error) => {
                let bound = BoundDevice {
                    fd: spare,
                    name: self.name,
                    iommufd: self.iommufd,
                    dev_id: self.dev_id,
                };
                Err(AttachError {
                    error: undo_attach(error, &bound),
                    device: bound,
                })
            }
        }
    }
}

/// Detaches again after a failure that followed a successful attach; a
/// detach failure is logged (the caller's error is the interesting one).
fn undo_attach(error: Error, device: &BoundDevice) -> Error {
    if let Err(e) = sys::device_detach_pt(device.fd.as_fd()) {
        log::error!("{}: detaching after a failed attach: {e}", device.name);
    }
    error
}

fn check_same_iommufd(op: &'static str, ours: &Iommufd, theirs: Option<&Iommufd>) -> Result<()> {
    match theirs {
        Some(theirs) if !ours.same_as(theirs) => Err(Error::InvalidArgument {
            op,
            target: Target::None,
            reason: "the page table belongs to another iommufd than the device",
        }),
        _ => Ok(()),
    }
}

impl AsFd for BoundDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A failed [`BoundDevice::attach`]: why, and the device, still bound.
#[derive(Debug)]
pub struct AttachError {
    /// Why the attach failed.
    pub error: Error,
    /// The device, still bound and not attached.
    pub device: BoundDevice,
}

/// Display and `source` for the transition errors: the message is the
/// underlying [`Error`]'s.
macro_rules! transition_error {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.error, f)
            }
        }

        impl std::error::Error for $t {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.error)
            }
        }
    };
}

transition_error!(BindError);
transition_error!(AttachError);
transition_error!(DetachError);

impl From<AttachError> for Error {
    fn from(e: AttachError) -> Self {
        e.error
    }
}

impl From<BindError> for Error {
    fn from(e: BindError) -> Self {
        e.error
    }
}

/// What keeps an attached device usable: the iommufd and the page table.
struct CdevBacking {
    iommufd: Iommufd,
    page_table: KeepAlive,
}

impl fmt::Debug for CdevBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdevBacking")
            .field("iommufd", &self.iommufd.raw_fd())
            .field("page_table", &self.page_table.id())
            .finish()
    }
}

impl Backing for CdevBacking {
    fn keep_fds(&self) -> Vec<RawFd> {
        vec![self.iommufd.raw_fd()]
    }
}

/// A cdev attached to an address space: a usable [`vfio_hal::Device`].
///
/// Regions and irqs are `vfio-hal-linux`'s [`VfioRegion`] and [`VfioIrq`]
/// (mmap fast path, checked `SET_IRQS`); they keep the device fd, the
/// iommufd and the page table alive for as long as they live.
#[derive(Debug)]
pub struct AttachedDevice {
    device: VfioDevice,
    iommufd: Iommufd,
    dev_id: u32,
    pt_id: u32,
}

impl AttachedDevice {
    /// The id iommufd knows the device by.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// The page table the kernel attached the device to: the HWPT itself,
    /// or for an IOAS the HWPT it created or reused for it.
    pub fn pt_id(&self) -> u32 {
        self.pt_id
    }

    /// The iommufd the device is bound to.
    pub fn iommufd(&self) -> &Iommufd {
        &self.iommufd
    }

    /// The shared device-fd implementation (hot reset, migration flags, …).
    pub fn vfio_device(&self) -> &VfioDevice {
        &self.device
    }

    /// PCI hot reset (secondary bus or slot reset) of this device and every
    /// device sharing its bus or slot, in the iommufd-owned form (no group
    /// fds): the kernel allows it when each affected device is bound to
    /// this device's iommufd, or sits in an IOMMU group one of whose
    /// devices is — [`VfioDevice::pci_hot_reset_info`] tells
    /// ([`HotResetInfo::DEV_ID_OWNED`](vfio_hal_linux::devfd::HotResetInfo::DEV_ID_OWNED)).
    /// Refused with the kernel's `EINVAL` otherwise, `NotSupported` when no
    /// slot or bus reset reaches the device.
    ///
    /// The kernel saves and restores each device's config space around the
    /// reset and zaps its BAR mmaps (they fault back in on the next access).
    pub fn pci_hot_reset(&self) -> Result<()> {
        self.device.pci_hot_reset(&[])
    }

    /// Refuses an iommufd call about a revoked device: its binding (the
    /// dev_id) ends when the kernel releases the device file.
    fn live(&self, op: &'static str) -> Result<()> {
        self.device.check_not_revoked(op)
    }

    /// What the IOMMU behind the device reports (`IOMMU_GET_HW_INFO`).
    pub fn hw_info(&self) -> Result<HwInfo> {
        self.live("IOMMU_GET_HW_INFO")?;
        hwpt::hw_info(&self.iommufd, self.dev_id).map_err(|e| on_device(e, self.device.name()))
    }

    /// Whether the IOMMU behind the device tracks dirty pages.
    pub fn dirty_tracking_supported(&self) -> Result<bool> {
        Ok(self.hw_info()?.dirty_tracking_supported())
    }

    /// Allocates a HWPT for this device over `ioas` (`IOMMU_HWPT_ALLOC`).
    pub fn alloc_hwpt(&self, ioas: &Ioas, options: HwptOptions) -> Result<HwPagetable> {
        check_same_iommufd("IOMMU_HWPT_ALLOC", &self.iommufd, Some(ioas.iommufd()))?;
        self.live("IOMMU_HWPT_ALLOC")?;
        HwPagetable::alloc(self.dev_id, ioas, options).map_err(|e| on_device(e, self.device.name()))
    }

    /// Detaches the device from its page table (`VFIO_DEVICE_DETACH_IOMMUFD_PT`);
    /// its DMA is blocked afterwards. Region and irq handles taken from it
    /// stay usable (the binding remains) and keep the old page table alive
    /// until they are dropped.
    pub fn detach(self) -> Result<BoundDevice, DetachError> {
        if let Err(error) = self.live("VFIO_DEVICE_DETACH_IOMMUFD_PT") {
            return Err(DetachError {
                error,
                device: Box::new(self),
            });
        }
        let name = self.device.name().to_owned();
        // Another descriptor of the same open file, for the bound state: the
        // VfioDevice (and any region handles) close theirs independently.
        let fd = match self.device.fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                return Err(DetachError {
                    error: Error::from_io("dup", Target::Device(name), &e),
                    device: Box::new(self),
                })
            }
        };
        if let Err(error) = sys::device_detach_pt(fd.as_fd()) {
            return Err(DetachError {
                error: on_device(error, &name),
                device: Box::new(self),
            });
        }
        Ok(BoundDevice {
            fd,
            name,
            iommufd: self.iommufd,
            dev_id: self.dev_id,
        })
    }
}

impl AsFd for AttachedDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.fd()
    }
}

/// A failed [`AttachedDevice::detach`]: why, and the device, still attached.
#[derive(Debug)]
pub struct DetachError {
    /// Why the detach failed.
    pub error: Error,
    /// The device, unchanged (boxed: it is much larger than the error).
    pub device: Box<AttachedDevice>,
}

impl From<DetachError> for Error {
    fn from(e: DetachError) -> Self {
        e.error
    }
}

impl Device for AttachedDevice {
    type Region = VfioRegion;
    type Irq = VfioIrq;

    fn info(&self) -> &DeviceInfo {
        self.device.info()
    }
    fn region(&self, index: u32) -> Result<VfioRegion> {
        self.device.region(index)
    }
    fn irq(&self, index: u32) -> Result<VfioIrq> {
        self.device.irq(index)
    }
    fn reset(&self) -> Result<()> {
        self.device.reset()
    }
    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        self.device.feature(op, feature, data)
    }
    fn keep_fds(&self) -> Vec<RawFd> {
        self.device.keep_fds()
    }
    fn revoker(&self) -> Result<Revoker> {
        self.device.revoker()
    }
    /// The device cdev: KVM-VFIO takes it since Linux 6.6.
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        self.device.vfio_file()
    }
    fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> {
        self.device.probe_feature(feature)
    }
    fn low_power_entry(&self) -> Result<()> {
        self.device.low_power_entry()
    }
    fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> {
        self.device.low_power_entry_with_wakeup(wakeup)
    }
    fn low_power_exit(&self) -> Result<()> {
        self.device.low_power_exit()
    }
    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        self.device.set_migration_state(state)
    }
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        self.device.dma_logging_start(page_size, ranges)
    }
    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        self.device.dma_logging_report(iova, len, page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::ErrorKind;
    use vfio_hal_linux::fake::FakeHost;

    #[test]
    fn opening_a_missing_cdev_names_the_path() {
        let tree = FakeHost::new().expect("fake host");
        tree.add_device("0000:00:05.0", Some("vfio-pci"), Some(1), Some("vfio7"))
            .expect("device");
        tree.add_node("vfio/devices/vfio7").expect("node");
        std::fs::remove_file(tree.path("dev/vfio/devices/vfio7")).expect("rm node");
        let e = UnboundDevice::open_in(&tree.host(), "0000:00:05.0").expect_err("no node");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("dev/vfio/devices/vfio7"), "{e}");
    }

    #[test]
    fn the_kernels_refusals_of_a_bind_say_what_holds_the_device() {
        let name = "0000:00:04.0";
        let bind = |errno| {
            bind_error(
                Error::sys("VFIO_DEVICE_BIND_IOMMUFD", Target::None, errno),
                name,
            )
        };
        let e = bind(libc::EINVAL);
        assert_eq!((e.kind(), e.errno()), (ErrorKind::Busy, Some(libc::EINVAL)));
        assert!(e.to_string().contains("another file of this device"), "{e}");
        assert!(e.to_string().contains(name), "{e}");
        let e = bind(libc::EBUSY);
        assert_eq!((e.kind(), e.errno()), (ErrorKind::Busy, Some(libc::EBUSY)));
        assert!(
            e.to_string().contains("IOMMU group has another owner"),
            "{e}"
        );
        let e = bind(libc::EPERM);
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert_eq!(e.target(), Some(&Target::Device(name.to_owned())));
    }

    #[test]
    fn binding_a_file_that_is_no_cdev_is_a_typed_error() {
        // The fake tree's node is a regular file: the ioctl fails with ENOTTY,
        // and the device comes back unbound, its name in the error.
        let tree = FakeHost::new().expect("fake host");
        tree.add_device("0000:00:06.0", Some("vfio-pci"), Some(1), Some("vfio8"))
            .expect("device");
        tree.add_node("vfio/devices/vfio8").expect("node");
        tree.add_node("iommu").expect("node");
        let dev = UnboundDevice::open_in(&tree.host(), "0000:00:06.0").expect("open file");
        let not_iommufd = Iommufd::open_in(&tree.host()).expect("open file");
        let err = dev.bind(&not_iommufd).expect_err("not a cdev");
        assert_eq!(err.error.kind(), ErrorKind::NotSupported);
        assert_eq!(err.error.errno(), Some(libc::ENOTTY));
        assert!(err.error.to_string().contains("VFIO_DEVICE_BIND_IOMMUFD"));
        assert!(err.error.to_string().contains("0000:00:06.0"));
        assert_eq!(err.device.name(), "0000:00:06.0");
    }
}
