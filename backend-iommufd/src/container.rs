//! [`IoasContainer`]: one IOAS as a [`vfio_hal::Container`].

use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::{Capability, Container, DmaAccess, Error, IommuInfo, Result, Target};

use crate::cdev::{AttachedDevice, BoundDevice, UnboundDevice};
use crate::hwpt::{HwPagetable, HwptOptions, MAX_DIRTY_BITMAP_WORDS};
use crate::ioas::Ioas;
use crate::iommufd::Iommufd;
use vfio_hal_linux::Host;

/// An iommufd IOAS behind the [`Container`] trait: devices opened through it
/// are bound to its iommufd and attached to its IOAS.
///
/// # Normalised behaviour
/// - `map_dma_raw` checks, before the kernel does, that `len` is not zero,
///   that neither `iova + len` nor `host + len` wraps (`Overflow`) and that `iova`, `len` and
///   the host address are multiples of the host page size
///   (`InvalidArgument`). iommufd itself only enforces the IOAS alignment,
///   which is 1 byte until a device is attached; the contract of
///   [`Container`] is the same on every backend.
/// - `unmap_dma` returns the bytes unmapped; nothing mapped there — or a
///   range that would split a mapping — is `NotMapped` (the kernel's
///   ENOENT). `unmap_all` is `IOMMU_IOAS_UNMAP` over `[0, u64::MAX]`,
///   which succeeds with 0 on an empty IOAS.
/// - [`IommuInfo::page_sizes`]: iommufd maps any multiple of the IOAS's
///   IOVA alignment and does not expose the IOMMU's page-size bitmap
///   (`IOMMU_GET_HW_INFO` carries only vendor registers), so the bitmap is
///   every power of two from the granule on, the granule being the larger
///   of the reported alignment and the host page size. Like the kernel's
///   own VFIO compatibility layer, this differs from type1's bitmap: never
///   compare exact values.
///
/// # Dirty tracking
/// An IOAS tracks nothing itself: its HWPTs do, when allocated for it.
/// A container made [`with_dirty_tracking`](IoasContainer::with_dirty_tracking)
/// attaches every device it opens to such a HWPT — one it already holds
/// where the device's IOMMU accepts it, else a new one, as QEMU's iommufd
/// backend does — and refuses a device whose IOMMU cannot track
/// (`NotSupported`), so no device's writes escape the bitmap.
/// `set_dirty_tracking` then starts or stops every HWPT, and `read_dirty`
/// merges their bitmaps (`IOMMU_HWPT_GET_DIRTY_BITMAP`, `keep` as
/// `NO_CLEAR`); with tracking off a read is `InvalidArgument`, as the
/// kernel answers. The IOMMU info carries a [`Capability::Migration`]
/// then. Without it, both calls are `NotSupported`.
#[derive(Debug)]
pub struct IoasContainer {
    ioas: Ioas,
    host: Host,
    page_size: u64,
    dirty: Option<Mutex<DirtyTracking>>,
}

/// The dirty-tracking HWPTs of a container, and whether they track now.
#[derive(Debug, Default)]
struct DirtyTracking {
    hwpts: Vec<HwPagetable>,
    enabled: bool,
}

const TRACKING: HwptOptions = HwptOptions {
    dirty_tracking: true,
    nest_parent: false,
};

impl IoasContainer {
    /// Opens `/dev/iommu` and allocates a fresh IOAS.
    pub fn open() -> Result<Self> {
        Self::open_in(Host::default())
    }

    /// As [`IoasContainer::open`], with sysfs and `/dev` of `host` (used
    /// for `/dev/iommu` and to find the cdevs of opened devices).
    pub fn open_in(host: Host) -> Result<Self> {
        let iommufd = Iommufd::open_in(&host)?;
        Ok(Self::with_ioas(iommufd.alloc_ioas()?, host))
    }

    /// A container over an existing IOAS (shared with other users of it).
    pub fn with_ioas(ioas: Ioas, host: Host) -> Self {
        Self {
            ioas,
            host,
            page_size: vfio_hal::memory::page_size(),
            dirty: None,
        }
    }

    /// Attaches devices opened from now on to dirty-tracking HWPTs, and
    /// makes `set_dirty_tracking`/`read_dirty` work on them (see the type's
    /// docs). Devices already attached to the IOAS stay untracked.
    pub fn with_dirty_tracking(mut self) -> Self {
        self.dirty = Some(Mutex::default());
        self
    }

    /// Adds a HWPT the caller attached devices to (through
    /// [`open_unattached`](Self::open_unattached) or by other means) to the
    /// ones dirty tracking covers; it starts tracking now if tracking is on.
    /// `NotSupported` on a container without dirty tracking;
    /// `InvalidArgument` for a HWPT allocated without
    /// [`HwptOptions::dirty_tracking`] or over another IOAS.
    pub fn add_dirty_hwpt(&self, hwpt: &HwPagetable) -> Result<()> {
        const OP: &str = "add_dirty_hwpt";
        let mut dirty = self.tracking(OP)?;
        let refuse = |reason| Error::InvalidArgument {
            op: OP,
            target: Target::None,
            reason,
        };
        if !hwpt.options().dirty_tracking {
            return Err(refuse("HWPT was not allocated with dirty tracking"));
        }
        if hwpt.ioas().id() != self.ioas.id() || !self.iommufd().same_as(hwpt.iommufd()) {
            return Err(refuse("HWPT is over another IOAS"));
        }
        if dirty.hwpts.iter().any(|h| h.id() == hwpt.id()) {
            return Ok(());
        }
        if dirty.enabled {
            hwpt.set_dirty_tracking(true)?;
        }
        dirty.hwpts.push(hwpt.clone());
        Ok(())
    }

    fn tracking(&self, op: &'static str) -> Result<MutexGuard<'_, DirtyTracking>> {
        match &self.dirty {
            Some(dirty) => Ok(dirty.lock().unwrap_or_else(PoisonError::into_inner)),
            None => Err(Error::NotSupported {
                op,
                target: Target::None,
                reason: "the container was not made with_dirty_tracking",
            }),
        }
    }

    /// Attaches `bound` to a dirty-tracking HWPT: the first held one its
    /// IOMMU accepts, else a new one.
    fn attach_tracked(&self, mut bound: BoundDevice) -> Result<AttachedDevice> {
        let mut dirty = self.tracking("open_device")?;
        for hwpt in &dirty.hwpts {
            match bound.attach(hwpt) {
                Ok(device) => return Ok(device),
                // Another IOMMU, or one whose domains differ: try the next.
                Err(e) => bound = e.device,
            }
        }
        if !bound.dirty_tracking_supported()? {
            return Err(Error::NotSupported {
                op: "open_device",
                target: Target::Device(bound.name().to_owned()),
                reason: "the device's IOMMU does not track dirty pages",
            });
        }
        let hwpt = bound.alloc_hwpt(&self.ioas, TRACKING)?;
        if dirty.enabled {
            hwpt.set_dirty_tracking(true)?;
        }
        let device = bound.attach(&hwpt).map_err(|e| e.error)?;
        dirty.hwpts.push(hwpt);
        Ok(device)
    }

    /// The IOAS: for kernel-chosen IOVAs, `IOAS_COPY`, `MAP_FILE`, options.
    pub fn ioas(&self) -> &Ioas {
        &self.ioas
    }

    /// The iommufd the IOAS lives in.
    pub fn iommufd(&self) -> &Iommufd {
        self.ioas.iommufd()
    }

    /// Opens `device`'s cdev and binds it to this container's iommufd,
    /// without attaching it — for callers that want a HWPT of their own.
    pub fn open_unattached(&self, device: &str) -> Result<crate::cdev::BoundDevice> {
        Ok(UnboundDevice::open_in(&self.host, device)?.bind(self.iommufd())?)
    }

    fn check_map(&self, iova: u64, host: *mut u8, len: u64) -> Result<()> {
        const OP: &str = "IOMMU_IOAS_MAP";
        let target = || Target::Iova { iova, len };
        if len == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                target: target(),
                reason: "length must not be zero",
            });
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                op: OP,
                target: target(),
                offset: iova,
                len,
            });
        }
        if (host as u64).checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                op: OP,
                target: target(),
                offset: host as u64,
                len,
            });
        }
        let mask = self.page_size - 1;
        if (iova | len | host as u64) & mask != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                target: target(),
                reason: "IOVA, length and host address must be multiples of the page size",
            });
        }
        Ok(())
    }
}

// SAFETY: unmap answers are the kernel's (`IOMMU_IOAS_UNMAP`): success only
// after the areas inside the range are unmapped, ENOENT (NotMapped) when no
// area lies wholly inside it — a larger area it would split is not a mapping
// made at exactly the range, and stays whole (see the trait's Safety).
unsafe impl Container for IoasContainer {
    type Device = AttachedDevice;

    fn iommu_info(&self) -> Result<IommuInfo> {
        let ranges = self.ioas.iova_ranges()?;
        let granule = ranges
            .alignment
            .max(self.page_size)
            .checked_next_power_of_two()
            .unwrap_or(self.page_size);
        let page_sizes = !(granule - 1);
        let mut caps = vec![Capability::IovaRanges(ranges.ranges.clone())];
        if self.dirty.is_some() {
            caps.push(Capability::Migration {
                flags: 0,
                pgsize_bitmap: page_sizes,
                max_dirty_bitmap_size: MAX_DIRTY_BITMAP_WORDS * 8,
            });
        }
        Ok(IommuInfo {
            page_sizes,
            caps,
            iova_ranges: ranges.ranges,
            dma_avail: None,
        })
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        self.check_map(iova, host, len)?;
        // SAFETY: the caller upholds map_dma_raw's contract, which is the
        // IOAS's map contract for this container's IOAS.
        unsafe { self.ioas.map_fixed(iova, host, len, access) }
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        self.ioas.unmap(iova, len)
    }

    fn unmap_all(&self) -> Result<u64> {
        self.ioas.unmap_all()
    }

    fn open_device(&self, name: &str) -> Result<AttachedDevice> {
        let bound = UnboundDevice::open_in(&self.host, name)?.bind(self.iommufd())?;
        if self.dirty.is_some() {
            return self.attach_tracked(bound);
        }
        Ok(bound.attach(&self.ioas)?)
    }

    /// All HWPTs or none: on a failure the ones already switched are
    /// switched back (best effort) and the error is returned.
    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        let mut dirty = self.tracking("set_dirty_tracking")?;
        for (done, hwpt) in dirty.hwpts.iter().enumerate() {
            if let Err(e) = hwpt.set_dirty_tracking(enable) {
                for switched in &dirty.hwpts[..done] {
                    let _ = switched.set_dirty_tracking(dirty.enabled);
                }
                return Err(e);
            }
        }
        dirty.enabled = enable;
        Ok(())
    }

    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        const OP: &str = "IOMMU_HWPT_GET_DIRTY_BITMAP";
        let dirty = self.tracking(OP)?;
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        if !dirty.enabled {
            return Err(Error::InvalidArgument {
                op: OP,
                target: Target::Iova { iova, len },
                reason: "dirty tracking is off",
            });
        }
        for hwpt in &dirty.hwpts {
            bitmap.merge(&hwpt.read_dirty(iova, len, page_size, keep)?)?;
        }
        Ok(bitmap)
    }
}

impl AsFd for IoasContainer {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.iommufd().as_fd()
    }
}
