//! [`IoasContainer`]: one IOAS as a [`vfio_hal::Container`].

use std::os::fd::AsFd;

use vfio_hal::{Capability, Container, DmaAccess, Error, IommuInfo, Result, Target};

use crate::cdev::{AttachedDevice, UnboundDevice};
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
#[derive(Debug)]
pub struct IoasContainer {
    ioas: Ioas,
    host: Host,
    page_size: u64,
}

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
        }
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
        Ok(IommuInfo {
            page_sizes: !(granule - 1),
            caps: vec![Capability::IovaRanges(ranges.ranges.clone())],
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
        Ok(bound.attach(&self.ioas)?)
    }
}

impl AsFd for IoasContainer {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.iommufd().as_fd()
    }
}
