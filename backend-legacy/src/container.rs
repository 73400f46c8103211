//! The type1 container (`/dev/vfio/vfio`): one IO address space, the IOMMU
//! type, DMA mappings, and the groups attached to it.
//!
//! The same code drives iommufd's compat mode, where iommufd serves
//! `/dev/vfio/vfio`: it answers the same ioctls, with its own page sizes and
//! its own errno for unmapping nothing (ENOENT, where type1 reports success
//! with 0 bytes). [`LegacyContainer::unmap_dma`] normalises both to the
//! HAL's `NotMapped`.
//!
//! A type1 container has no IOMMU until its first group is attached: IOMMU
//! info and DMA maps need an attached group, either through
//! [`LegacyContainer::attach`] (kept for the container's lifetime) or
//! through a device opened from it (kept for the device's lifetime).
//!
//! ```no_run
//! use vfio_hal::prelude::*;
//! use vfio_hal::{DmaAccess, DmaBuffer};
//! use vfio_hal_legacy::LegacyContainer;
//!
//! let container = LegacyContainer::open()?; // type1v2
//! let edu = container.open_device("0000:00:01.0")?; // group found in sysfs, attached
//! let info = container.iommu_info()?;
//! let ring = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadWrite)?;
//! # let _ = (edu, info, ring);
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use vfio_bindings::bindings::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_INFO_PGSIZES, VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL,
};
use vfio_hal::caps::ChainKind;
use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::error::Buffer;
use vfio_hal::{
    Capability, Container, DmaAccess, Error, IommuInfo, IovaRange, Result, Target, VfToken,
};

use crate::group::{Group, GroupInner};
use vfio_hal_linux::devfd::VfioDevice;
use vfio_hal_linux::info::{self, Fields};
use vfio_hal_linux::sys::{self, ArgszRequest, Errno};
use vfio_hal_linux::Host;

/// `VFIO_CHECK_EXTENSION` numbers (`include/uapi/linux/vfio.h`).
pub mod extension {
    /// The type1 IOMMU (v1: unmaps may split mappings).
    pub const TYPE1_IOMMU: u32 = 1;
    /// The sPAPR TCE IOMMU.
    pub const SPAPR_TCE_IOMMU: u32 = 2;
    /// The type1 IOMMU, v2 semantics (no split unmaps).
    pub const TYPE1V2_IOMMU: u32 = 3;
    /// The IOMMU enforces DMA cache coherence.
    pub const DMA_CC_IOMMU: u32 = 4;
    /// EEH (PowerPC).
    pub const EEH: u32 = 5;
    /// The sPAPR TCE v2 IOMMU.
    pub const SPAPR_TCE_V2_IOMMU: u32 = 7;
    /// No-IOMMU mode (unsafe, taints the kernel).
    pub const NOIOMMU_IOMMU: u32 = 8;
    /// `VFIO_DMA_UNMAP_FLAG_ALL` is supported.
    pub const UNMAP_ALL: u32 = 9;
    /// The vaddr flag of map and unmap is supported.
    pub const UPDATE_VADDR: u32 = 10;
}

/// Which type1 flavour `VFIO_SET_IOMMU` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IommuType {
    /// Type1 v1: an unmap may split a mapping (legacy; huge pages limited).
    Type1,
    /// Type1 v2 (the default): an unmap that would split a mapping is refused.
    #[default]
    Type1v2,
}

impl IommuType {
    /// The `VFIO_*_IOMMU` number.
    pub fn value(self) -> u32 {
        match self {
            Self::Type1 => VFIO_TYPE1_IOMMU,
            Self::Type1v2 => VFIO_TYPE1v2_IOMMU,
        }
    }

    /// Whether unmaps may split a mapping.
    pub fn allows_split_unmap(self) -> bool {
        self == Self::Type1
    }
}

/// Where a container finds its nodes and which IOMMU type it selects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerConfig {
    /// The IOMMU type set when the first group is attached.
    pub iommu_type: IommuType,
    /// The host trees: the container is [`Host::container_node`], the
    /// groups [`Host::group_node`], devices are looked up in its sysfs.
    /// Default `/sys` and `/dev`.
    pub host: Host,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The container's state, shared with its groups (which keep it alive).
pub(crate) struct ContainerInner {
    pub(crate) fd: OwnedFd,
    pub(crate) config: ContainerConfig,
    /// `VFIO_UNMAP_ALL` is offered.
    unmap_all: bool,
    /// The host page size: the least alignment of every map and unmap.
    page: u64,
    /// Attached groups. An entry is removed only when its group has been
    /// detached (in the group's drop, under this lock), so "empty" means
    /// the kernel holds no group and therefore no IOMMU for this container.
    pub(crate) groups: Mutex<HashMap<u32, Weak<GroupInner>>>,
}

impl fmt::Debug for ContainerInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerInner")
            .field("fd", &self.fd)
            .field("config", &self.config)
            .field("unmap_all", &self.unmap_all)
            .finish_non_exhaustive()
    }
}

impl ContainerInner {
    fn has_groups(&self) -> bool {
        !lock(&self.groups).is_empty()
    }
}

/// A type1 container: `/dev/vfio/vfio` with its groups and DMA mappings.
///
/// Cheap to share by reference; devices opened from it keep the container
/// (and their group) open through their [`Backing`](vfio_hal_linux::devfd::Backing),
/// so dropping the container while devices live only drops this handle.
///
/// type1 keeps DMA mappings only while a group is attached: when the last
/// device of the last group closes, the group detaches and the kernel
/// drops every mapping with the IOMMU (unmapping them afterwards is
/// `NotMapped`). A user that closes every device and opens another maps
/// again; an iommufd IOAS keeps its mappings without devices.
#[derive(Debug)]
pub struct LegacyContainer {
    inner: Arc<ContainerInner>,
    /// Groups attached with [`LegacyContainer::attach`], kept until this
    /// handle drops (groups hold the container, never the other way round).
    held: Mutex<Vec<Group>>,
}

impl LegacyContainer {
    /// Opens `/dev/vfio/vfio` for type1v2 with the real sysfs.
    pub fn open() -> Result<Self> {
        Self::open_with(ContainerConfig::default())
    }

    /// Opens the container node of `config.host`: checks the API version and
    /// that the kernel offers the requested IOMMU type. The IOMMU itself is
    /// set when the first group is attached (the kernel needs a group first).
    pub fn open_with(config: ContainerConfig) -> Result<Self> {
        let path = config.host.container_node();
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::from_io("open", Target::Path(path.display().to_string()), &e))?
            .into();
        let target = || Target::Path(path.display().to_string());
        let version = sys::get_api_version(fd.as_fd())
            .map_err(|e| e.into_error("VFIO_GET_API_VERSION", target()))?;
        if version != vfio_bindings::bindings::vfio::VFIO_API_VERSION as i32 {
            log::error!("{}: VFIO API version {version}, expected 0", path.display());
            return Err(Error::NotSupported {
                op: "VFIO_GET_API_VERSION",
                target: target(),
                reason: "unknown VFIO API version",
            });
        }
        let offered = |ext: u32| {
            sys::check_extension(fd.as_fd(), ext)
                .map(|r| r > 0)
                .map_err(|e| e.into_error("VFIO_CHECK_EXTENSION", target()))
        };
        if !offered(config.iommu_type.value())? {
            return Err(Error::NotSupported {
                op: "VFIO_CHECK_EXTENSION",
                target: target(),
                reason: "the kernel does not offer the requested type1 IOMMU flavour",
            });
        }
        let unmap_all = offered(VFIO_UNMAP_ALL)?;
        log::debug!(
            "opened {} ({:?}, unmap-all {})",
            path.display(),
            config.iommu_type,
            unmap_all
        );
        Ok(Self {
            inner: Arc::new(ContainerInner {
                fd,
                config,
                unmap_all,
                page: vfio_hal::memory::page_size(),
                groups: Mutex::new(HashMap::new()),
            }),
            held: Mutex::new(Vec::new()),
        })
    }

    /// The container fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &ContainerConfig {
        &self.inner.config
    }

    /// `VFIO_CHECK_EXTENSION`: whether `extension` (see [`extension`]) is offered.
    pub fn check_extension(&self, extension: u32) -> Result<bool> {
        sys::check_extension(self.fd(), extension)
            .map(|r| r > 0)
            .map_err(|e| e.into_error("VFIO_CHECK_EXTENSION", Target::None))
    }

    /// Whether `VFIO_DMA_UNMAP_FLAG_ALL` is used by [`Container::unmap_all`].
    pub fn has_unmap_all(&self) -> bool {
        self.inner.unmap_all
    }

    /// The group `id`, attached to this container: returns the attached
    /// one, or opens the group node `<dev>/vfio/<id>`, checks that it is viable
    /// (`NotViable` otherwise), sets this container and, for the first
    /// group, sets the IOMMU type.
    pub fn group(&self, id: u32) -> Result<Group> {
        let mut groups = lock(&self.inner.groups);
        if let Some(live) = groups.get(&id).and_then(Weak::upgrade) {
            return Ok(Group::from_inner(live));
        }
        let first = groups.is_empty();
        let inner = GroupInner::attach(&self.inner, id, first)?;
        groups.insert(id, Arc::downgrade(&inner));
        Ok(Group::from_inner(inner))
    }

    /// The group of `device` (a PCI address or a sysfs path), attached.
    pub fn group_of(&self, device: &str) -> Result<Group> {
        let id = self.inner.config.host.iommu_group(device)?;
        self.group(id)
    }

    /// Attaches the group of `device` and keeps it attached for as long as
    /// this handle lives (plus as long as any device of it lives).
    ///
    /// A type1 container has no IOMMU until its first group is attached, so
    /// [`Container::iommu_info`] and DMA maps need one. Opening a device
    /// attaches its group too, but only for the device's lifetime; attach
    /// first to use the address space before (or between) devices.
    pub fn attach(&self, device: &str) -> Result<Group> {
        let group = self.group_of(device)?;
        let mut held = lock(&self.held);
        if !held.iter().any(|g| g.id() == group.id()) {
            held.push(group.clone());
        }
        Ok(group)
    }

    /// The error for an IOMMU request the kernel refused while no group was
    /// attached: there is no IOMMU to ask yet.
    fn no_iommu_yet(&self, op: &'static str, target: Target, errno: Errno) -> Error {
        if self.inner.has_groups() {
            return errno.into_error(op, target);
        }
        log::debug!("{op} without an attached group: errno {}", errno.0);
        Error::NotSupported {
            op,
            target,
            reason: "no group is attached, so the container has no IOMMU yet: \
                     attach one first (LegacyContainer::attach or open_device)",
        }
    }

    /// [`Container::open_device`] with the VF token of an SR-IOV PF bound to
    /// vfio-pci ([`Group::open_device_with_vf_token`]): how a virtual
    /// function of such a PF opens.
    pub fn open_device_with_vf_token(&self, name: &str, token: &VfToken) -> Result<VfioDevice> {
        let (_, device_name) = self.inner.config.host.device_dir(name)?;
        self.group_of(name)?
            .open_device_with_vf_token(&device_name, token)
    }

    /// PCI hot reset (secondary bus or slot reset) of `device` and every
    /// device that shares its bus or slot, proving ownership with this
    /// container's groups: each group the reset affects
    /// ([`VfioDevice::pci_hot_reset_info`]) must be attached here, or the
    /// reset is refused with [`Error::Busy`] naming the first missing
    /// group before the kernel is asked. `NotSupported` when neither a
    /// slot nor a bus reset reaches the device (a device on a root bus).
    ///
    /// The kernel saves and restores each device's config space around the
    /// reset and zaps its BAR mmaps (they fault back in on the next access);
    /// the device's own state is whatever its reset leaves.
    pub fn pci_hot_reset(&self, device: &VfioDevice) -> Result<()> {
        const OP: &str = "VFIO_DEVICE_PCI_HOT_RESET";
        let info = device.pci_hot_reset_info()?;
        let mut ids: Vec<u32> = info.devices.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let groups = {
            let attached = lock(&self.inner.groups);
            ids.iter()
                .map(|&id| {
                    attached
                        .get(&id)
                        .and_then(Weak::upgrade)
                        .map(Group::from_inner)
                        .ok_or(Error::Busy {
                            op: OP,
                            target: Target::Group(id),
                            errno: libc::EINVAL,
                            reason: "the reset also resets a device of this group, which is not \
                                     attached to this container: attach it (or open its devices) \
                                     first",
                        })
                })
                .collect::<Result<Vec<Group>>>()?
        };
        let fds: Vec<BorrowedFd<'_>> = groups.iter().map(Group::fd).collect();
        device.pci_hot_reset(&fds)
    }

    /// The ids of the groups attached now.
    pub fn group_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = lock(&self.inner.groups).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Unmaps every valid IOVA range one by one and returns the bytes
    /// unmapped: what [`Container::unmap_all`] does where the kernel lacks
    /// `VFIO_UNMAP_ALL` (before 5.13). Mappings never straddle the holes
    /// between ranges, so this covers all of them.
    pub fn unmap_each_range(&self) -> Result<u64> {
        let info = self.iommu_info()?;
        let page = info.min_page_size().unwrap_or(4096);
        let mut total = 0u64;
        for (iova, len) in cover_ranges(&info.iova_ranges, page) {
            let n = sys::unmap_dma(self.fd(), iova, len, false)
                .map_err(|e| e.into_error("VFIO_IOMMU_UNMAP_DMA", Target::Iova { iova, len }))?;
            total = total.saturating_add(n);
        }
        Ok(total)
    }
}

/// Splits the valid IOVA ranges into page-aligned `(iova, len)` pieces
/// that the kernel accepts (a length fits `u64`, nothing wraps).
pub fn cover_ranges(ranges: &[IovaRange], page: u64) -> Vec<(u64, u64)> {
    let page = u128::from(page.max(1));
    let mut out = Vec::new();
    for r in ranges {
        let start = u128::from(r.start).div_ceil(page) * page;
        let end = (u128::from(r.end) + 1) / page * page; // exclusive
        let mut at = start;
        while at < end {
            // At most 2^63 per piece, so that the length fits a u64 and
            // iova + len - 1 never wraps.
            let len = (end - at).min(1u128 << 63);
            out.push((at as u64, len as u64));
            at += len;
        }
    }
    out
}

/// The checks every map and unmap passes before the kernel sees it: a
/// non-zero length, no wrap past 2^64, and host-page alignment (which both
/// type1 and iommufd's compat mode require; the kernel checks the IOMMU's
/// own, possibly larger, page size). Checking alignment here also gives one
/// answer where the kernels differ: iommufd's compat IOAS accepts any
/// alignment until a device is attached, and answers a misaligned unmap
/// with ENOENT where type1 says EINVAL.
fn check_iova(op: &'static str, iova: u64, len: u64, page: u64) -> Result<()> {
    let target = || Target::Iova { iova, len };
    if len == 0 {
        return Err(Error::InvalidArgument {
            op,
            target: target(),
            reason: "length must not be zero",
        });
    }
    if iova.checked_add(len - 1).is_none() {
        return Err(Error::Overflow {
            op,
            target: target(),
            offset: iova,
            len,
        });
    }
    if iova % page != 0 || len % page != 0 {
        return Err(Error::InvalidArgument {
            op,
            target: target(),
            reason: "IOVA and length must be multiples of the host page size",
        });
    }
    Ok(())
}

fn not_mapped(iova: u64, len: u64) -> Error {
    Error::sys(
        "VFIO_IOMMU_UNMAP_DMA",
        Target::Iova { iova, len },
        libc::ENOENT,
    )
}

// SAFETY: unmap answers are the kernel's: type1 reports bytes unmapped only
// after removing those translations, and "0 bytes" (NotMapped here) only when
// no mapping lies in the range; type1v2 refuses a split with EINVAL. Without
// a group there is no IOMMU and nothing mapped. iommufd's compat container
// says ENOENT (NotMapped) for a split of a larger mapping, which is not one
// made at exactly the range (see the trait's Safety).
unsafe impl Container for LegacyContainer {
    type Device = VfioDevice;

    /// `VFIO_IOMMU_GET_INFO` with its capability chain. Needs an attached
    /// group (the IOMMU is set with the first one). Without the IOVA-range
    /// capability (kernels before 5.4) the whole 64-bit space is reported,
    /// which is what those kernels enforce.
    fn iommu_info(&self) -> Result<IommuInfo> {
        const OP: &str = "VFIO_IOMMU_GET_INFO";
        let buf = info::query(
            ArgszRequest::IommuGetInfo.fixed_size(),
            |_| {},
            |b| sys::argsz_ioctl(self.fd(), ArgszRequest::IommuGetInfo, b),
        )
        .map_err(|e| match e {
            info::QueryError::Sys(errno) => self.no_iommu_yet(OP, Target::None, errno),
            e => e.into_error(OP, Target::None, Buffer::IommuInfo),
        })?;
        let fields = Fields::new(&buf, Buffer::IommuInfo);
        let flags = fields.u32(4)?;
        let page_sizes = if flags & VFIO_IOMMU_INFO_PGSIZES != 0 {
            fields.u64(8)?
        } else {
            0
        };
        let caps = if flags & VFIO_IOMMU_INFO_CAPS != 0 {
            info::caps(ChainKind::Iommu, &buf, fields.u32(16)?, Buffer::IommuInfo)?
        } else {
            Vec::new()
        };
        let mut iova_ranges = caps
            .iter()
            .find_map(|c| match c {
                Capability::IovaRanges(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| {
                vec![IovaRange {
                    start: 0,
                    end: u64::MAX,
                }]
            });
        iova_ranges.sort_unstable();
        // iommufd's compat mode reports a constant u32::MAX, not a count
        // (its limit is the memory cgroup's): that is "not reported".
        let dma_avail = caps.iter().find_map(|c| match c {
            Capability::DmaAvail { avail } if *avail != u32::MAX => Some(*avail),
            _ => None,
        });
        Ok(IommuInfo {
            page_sizes,
            iova_ranges,
            dma_avail,
            caps,
        })
    }

    /// `VFIO_IOMMU_MAP_DMA`. Before the call: a zero length, or an IOVA,
    /// length or host address not aligned to the host page, is
    /// `InvalidArgument`; a range that wraps is `Overflow`. The kernel checks
    /// the IOMMU page size, overlap and the IOVA ranges.
    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        const OP: &str = "VFIO_IOMMU_MAP_DMA";
        check_iova(OP, iova, len, self.inner.page)?;
        let vaddr = host as u64;
        if vaddr.checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                op: OP,
                target: Target::Iova { iova, len },
                offset: vaddr,
                len,
            });
        }
        if vaddr % self.inner.page != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                target: Target::Iova { iova, len },
                reason: "the host address must be page aligned",
            });
        }
        let mut flags = 0;
        if access.device_reads() {
            flags |= VFIO_DMA_MAP_FLAG_READ;
        }
        if access.device_writes() {
            flags |= VFIO_DMA_MAP_FLAG_WRITE;
        }
        // SAFETY: the caller upholds map_dma_raw's contract (the memory
        // stays valid until unmapped), which is sys::map_dma's contract.
        unsafe { sys::map_dma(self.fd(), flags, vaddr, iova, len) }
            .map_err(|e| self.no_iommu_yet(OP, Target::Iova { iova, len }, e))
    }

    /// `VFIO_IOMMU_UNMAP_DMA`; returns the bytes the kernel unmapped.
    ///
    /// type1 reports "nothing mapped there" as success with 0 bytes; that
    /// becomes `ENOENT` on the IOVA range (kind `NotMapped`), as iommufd
    /// reports it. With no group attached there is no IOMMU and nothing is
    /// mapped (type1 releases every mapping with the last group), so the
    /// kernel's error is `NotMapped` too. An unmap that would split a
    /// mapping keeps the kernel's answer: type1v2 refuses it with `EINVAL`
    /// (`InvalidArgument`); type1 v1 splits.
    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        const OP: &str = "VFIO_IOMMU_UNMAP_DMA";
        check_iova(OP, iova, len, self.inner.page)?;
        match sys::unmap_dma(self.fd(), iova, len, false) {
            Ok(0) => Err(not_mapped(iova, len)),
            Ok(n) => Ok(n),
            Err(Errno(libc::EINVAL | libc::ENODEV | libc::ENOTTY)) if !self.inner.has_groups() => {
                Err(not_mapped(iova, len))
            }
            Err(e) => Err(e.into_error(OP, Target::Iova { iova, len })),
        }
    }

    /// Unmaps everything: one `VFIO_DMA_UNMAP_FLAG_ALL` call where the
    /// kernel offers `VFIO_UNMAP_ALL`, else [`unmap_each_range`](Self::unmap_each_range).
    ///
    /// With no group attached, type1 has no IOMMU and nothing mapped; the
    /// kernel's error is then answered with 0 bytes. (iommufd's compat
    /// IOAS outlives its groups and answers normally.)
    fn unmap_all(&self) -> Result<u64> {
        let result = if self.inner.unmap_all {
            sys::unmap_dma(self.fd(), 0, 0, true)
                .map_err(|e| e.into_error("VFIO_IOMMU_UNMAP_DMA", Target::None))
        } else {
            self.unmap_each_range()
        };
        match result {
            Err(_) if !self.inner.has_groups() => Ok(0),
            r => r,
        }
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` start or stop. Needs an attached group.
    /// iommufd's compat container has no type1 dirty tracking:
    /// `NotSupported` (`ENOTTY`).
    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        const OP: &str = "VFIO_IOMMU_DIRTY_PAGES";
        sys::dirty_pages_start_stop(self.fd(), enable)
            .map_err(|e| self.no_iommu_yet(OP, Target::None, e))
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` `GET_BITMAP`; `page_size` must be the
    /// IOMMU's smallest page (the kernel's rule, `EINVAL` otherwise), and
    /// the range must not split a mapping. type1 clears what it reports,
    /// so `keep` is `InvalidArgument`. For a group whose devices do not
    /// pin pages (vfio-pci's), type1 cannot tell what a device wrote and
    /// reports every page of every mapping in the range dirty.
    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        const OP: &str = "VFIO_IOMMU_DIRTY_PAGES";
        if keep {
            return Err(Error::InvalidArgument {
                op: OP,
                target: Target::Iova { iova, len },
                reason: "type1 clears the dirty bitmap on every read",
            });
        }
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        sys::dirty_pages_get(self.fd(), iova, len, page_size, bitmap.words_mut())
            .map_err(|e| self.no_iommu_yet(OP, Target::Iova { iova, len }, e))?;
        Ok(bitmap)
    }

    /// Finds the device's group in sysfs, attaches it if needed (see
    /// [`group`](Self::group)) and gets the device fd by name. `name` is a
    /// PCI address or an absolute sysfs device path.
    fn open_device(&self, name: &str) -> Result<VfioDevice> {
        let (_, device_name) = self.inner.config.host.device_dir(name)?;
        self.group_of(name)?.open_device(&device_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::ErrorKind;
    use vfio_hal_linux::fake::TempDir;

    #[test]
    fn opening_an_absent_container_is_not_found_with_the_path() {
        let t = TempDir::new("nodev").expect("temp dir");
        let e = LegacyContainer::open_with(ContainerConfig {
            host: Host::new(t.path().join("sys"), t.path()),
            ..ContainerConfig::default()
        })
        .expect_err("no node");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(
            e.to_string()
                .contains(&t.path().join("vfio/vfio").display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_node_that_is_not_vfio_fails_typed() {
        // A regular file answers ioctls with ENOTTY.
        let t = TempDir::new("notvfio").expect("temp dir");
        std::fs::create_dir_all(t.path().join("vfio")).expect("mkdir");
        std::fs::write(t.path().join("vfio/vfio"), b"").expect("create");
        let e = LegacyContainer::open_with(ContainerConfig {
            host: Host::new(t.path().join("sys"), t.path()),
            ..ContainerConfig::default()
        })
        .expect_err("not a container");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert_eq!(e.errno(), Some(libc::ENOTTY));
        assert!(e.to_string().contains("VFIO_GET_API_VERSION"), "{e}");
    }

    #[test]
    fn iova_checks_happen_before_the_call() {
        const OP: &str = "VFIO_IOMMU_MAP_DMA";
        let e = check_iova(OP, 0x1000, 0, 0x1000).expect_err("zero");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = check_iova(OP, u64::MAX - 0xfff, 0x2000, 0x1000).expect_err("wraps");
        assert_eq!(e.kind(), ErrorKind::Overflow);
        let e = check_iova(OP, 0x1001, 0x1000, 0x1000).expect_err("misaligned IOVA");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = check_iova(OP, 0x1000, 0x1800, 0x1000).expect_err("misaligned length");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        // The last page of the address space is fine.
        check_iova(OP, u64::MAX - 0xfff, 0x1000, 0x1000).expect("last page");
    }

    #[test]
    fn nothing_mapped_is_not_mapped() {
        assert_eq!(not_mapped(0, 0x1000).kind(), ErrorKind::NotMapped);
    }

    #[test]
    fn cover_ranges_is_page_aligned_and_complete() {
        let ranges = [
            IovaRange {
                start: 0,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: 0xff_ffff_ffff,
            },
        ];
        assert_eq!(
            cover_ranges(&ranges, 0x1000),
            vec![
                (0, 0xfee0_0000),
                (0xfef0_0000, 0x100_0000_0000 - 0xfef0_0000)
            ]
        );
        // The whole space: two halves, no wrap, the last page included.
        let all = cover_ranges(
            &[IovaRange {
                start: 0,
                end: u64::MAX,
            }],
            0x1000,
        );
        assert_eq!(all, vec![(0, 1 << 63), (1 << 63, 1 << 63)]);
        // Unaligned ends are trimmed to whole pages; a sub-page range vanishes.
        assert_eq!(
            cover_ranges(
                &[IovaRange {
                    start: 0x10,
                    end: 0x2fff
                }],
                0x1000
            ),
            vec![(0x1000, 0x2000)]
        );
        assert!(cover_ranges(
            &[IovaRange {
                start: 0x10,
                end: 0x20
            }],
            0x1000
        )
        .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn cover_pieces_never_wrap_and_stay_inside(start: u64, end: u64, shift in 12u32..22) {
            let (start, end) = (start.min(end), start.max(end));
            let page = 1u64 << shift;
            for (iova, len) in cover_ranges(&[IovaRange { start, end }], page) {
                proptest::prop_assert!(len > 0 && len % page == 0 && iova % page == 0);
                proptest::prop_assert!(iova.checked_add(len - 1).is_some());
                proptest::prop_assert!(iova >= start && iova + (len - 1) <= end);
            }
        }
    }
}
