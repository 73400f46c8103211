//! Hardware page tables (HWPT), the IOMMU's own description, and dirty tracking.
//!
//! An IOAS says *what* is mapped; a HWPT is one IOMMU domain that realises
//! it for the devices attached to it. Attaching a device straight to an IOAS
//! makes the kernel pick or create a HWPT; allocating one explicitly is how
//! user space asks for properties such as dirty tracking, which the IOMMU
//! either provides or refuses — it is probed, never emulated.

use std::os::fd::AsFd;
use std::sync::Arc;

use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::{Error, Result, Target};

use crate::ioas::Ioas;
use crate::iommufd::Iommufd;
use crate::sys;

/// Which IOMMU driver reported [`HwInfo`] (`enum iommu_hw_info_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IommuType {
    /// The driver reports no vendor data.
    None,
    /// Intel VT-d (`struct iommu_hw_info_vtd`).
    IntelVtd,
    /// ARM SMMUv3 (`struct iommu_hw_info_arm_smmuv3`).
    ArmSmmuV3,
    /// NVIDIA Tegra241 CMDQV.
    Tegra241Cmdqv,
    /// AMD IOMMU (`struct iommu_hw_info_amd`).
    Amd,
    /// A type this crate does not know.
    Other(u32),
}

impl IommuType {
    fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::None,
            1 => Self::IntelVtd,
            2 => Self::ArmSmmuV3,
            3 => Self::Tegra241Cmdqv,
            4 => Self::Amd,
            other => Self::Other(other),
        }
    }
}

/// What `IOMMU_GET_HW_INFO` reports about the IOMMU behind a bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwInfo {
    /// The IOMMU driver, which says how to decode [`HwInfo::data`].
    pub iommu_type: IommuType,
    /// `IOMMU_HW_CAP_*` bits.
    pub capabilities: u64,
    /// Width of PASIDs (0: none, or a kernel before 6.14).
    pub max_pasid_log2: u8,
    /// The vendor structure, e.g. VT-d's capability registers.
    pub data: Vec<u8>,
}

impl HwInfo {
    /// Whether the IOMMU tracks dirty pages (`IOMMU_HW_CAP_DIRTY_TRACKING`),
    /// i.e. whether [`HwptOptions::dirty_tracking`] can succeed.
    pub fn dirty_tracking_supported(&self) -> bool {
        self.capabilities & sys::HW_CAP_DIRTY_TRACKING != 0
    }
}

/// Reads [`HwInfo`] for the device bound to `iommufd` as `dev_id`.
pub(crate) fn hw_info(iommufd: &Iommufd, dev_id: u32) -> Result<HwInfo> {
    // Vendor structures are 8 to 40 bytes today; ask again only if larger.
    let mut data = vec![0u8; 64];
    let mut raw = sys::get_hw_info(iommufd.as_fd(), dev_id, &mut data)?;
    if raw.data_len as usize > data.len() {
        let len = raw.data_len.min(sys::MAX_HW_INFO_DATA) as usize;
        data = vec![0u8; len];
        raw = sys::get_hw_info(iommufd.as_fd(), dev_id, &mut data)?;
    }
    data.truncate(raw.data_len as usize);
    Ok(HwInfo {
        iommu_type: IommuType::from_raw(raw.data_type),
        capabilities: raw.capabilities,
        max_pasid_log2: raw.max_pasid_log2,
        data,
    })
}

/// What to ask of a new HWPT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwptOptions {
    /// Require dirty tracking (`IOMMU_HWPT_ALLOC_DIRTY_TRACKING`); an IOMMU
    /// without it refuses the allocation with `NotSupported` (EOPNOTSUPP).
    pub dirty_tracking: bool,
    /// Allocate a parent for nested translation (`IOMMU_HWPT_ALLOC_NEST_PARENT`).
    pub nest_parent: bool,
}

impl HwptOptions {
    fn flags(self) -> u32 {
        let mut flags = 0;
        if self.dirty_tracking {
            flags |= sys::HWPT_ALLOC_DIRTY_TRACKING;
        }
        if self.nest_parent {
            flags |= sys::HWPT_ALLOC_NEST_PARENT;
        }
        flags
    }
}

/// A kernel-managed hardware page table over an IOAS; destroyed when the
/// last clone drops (after every device attached to it, which hold clones).
#[derive(Debug, Clone)]
pub struct HwPagetable {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: u32,
    options: HwptOptions,
    // Keeps the IOAS (and the iommufd) alive while the HWPT refers to it.
    ioas: Ioas,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = sys::destroy(self.ioas.iommufd().as_fd(), self.id) {
            log::error!("destroying HWPT {}: {e}", self.id);
        }
    }
}

/// Most 64-bit words one dirty-bitmap read allocates (8 MiB: 256 GiB of
/// 4 KiB pages); read larger ranges in pieces.
pub const MAX_DIRTY_BITMAP_WORDS: u64 = 1 << 20;

impl HwPagetable {
    /// Allocates a HWPT over `ioas` for the device bound to the same
    /// iommufd as `dev_id` ([`crate::BoundDevice::alloc_hwpt`] is the typed
    /// way; this is for devices bound by other means).
    ///
    /// With [`HwptOptions::dirty_tracking`], an IOMMU without it refuses:
    /// `NotSupported` (EOPNOTSUPP).
    pub fn alloc(dev_id: u32, ioas: &Ioas, options: HwptOptions) -> Result<Self> {
        let id = sys::hwpt_alloc(ioas.iommufd().as_fd(), dev_id, ioas.id(), options.flags())?;
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                options,
                ioas: ioas.clone(),
            }),
        })
    }

    /// The object id, for `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The IOAS whose mappings this HWPT holds.
    pub fn ioas(&self) -> &Ioas {
        &self.inner.ioas
    }

    /// The iommufd it lives in.
    pub fn iommufd(&self) -> &Iommufd {
        self.inner.ioas.iommufd()
    }

    /// The options it was allocated with.
    pub fn options(&self) -> HwptOptions {
        self.inner.options
    }

    /// Starts (`true`) or stops dirty tracking. Only a HWPT allocated with
    /// [`HwptOptions::dirty_tracking`] can track; others are refused here
    /// with `NotSupported` rather than by the kernel.
    pub fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        if !self.inner.options.dirty_tracking {
            return Err(not_tracking("IOMMU_HWPT_SET_DIRTY_TRACKING"));
        }
        sys::hwpt_set_dirty_tracking(self.iommufd().as_fd(), self.id(), enable)
    }

    /// Reads which `page_size` pages of `[iova, iova + len)` the device
    /// wrote since the last read, and clears those bits unless `keep` is set
    /// (`IOMMU_HWPT_GET_DIRTY_BITMAP[_NO_CLEAR]`). The range must be
    /// page aligned ([`DirtyBitmap::new`]'s rules).
    pub fn read_dirty(
        &self,
        iova: u64,
        len: u64,
        page_size: u64,
        keep: bool,
    ) -> Result<DirtyBitmap> {
        const OP: &str = "IOMMU_HWPT_GET_DIRTY_BITMAP";
        if !self.inner.options.dirty_tracking {
            return Err(not_tracking(OP));
        }
        let target = Target::Iova { iova, len };
        let words = sys::bitmap_words(len, page_size).ok_or(Error::InvalidArgument {
            op: OP,
            target: target.clone(),
            reason: "page size must be a power of two and the range not empty",
        })?;
        if words > MAX_DIRTY_BITMAP_WORDS {
            return Err(Error::Exhausted {
                op: OP,
                target,
                reason: "bitmap larger than MAX_DIRTY_BITMAP_WORDS; read in pieces",
            });
        }
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        let flags = if keep {
            sys::GET_DIRTY_BITMAP_NO_CLEAR
        } else {
            0
        };
        sys::hwpt_get_dirty_bitmap(
            self.iommufd().as_fd(),
            self.id(),
            iova,
            len,
            page_size,
            flags,
            bitmap.words_mut(),
        )?;
        Ok(bitmap)
    }
}

fn not_tracking(op: &'static str) -> Error {
    Error::NotSupported {
        op,
        target: Target::None,
        reason: "HWPT was not allocated with dirty tracking",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwpt_flags_and_iommu_types() {
        assert_eq!(HwptOptions::default().flags(), 0);
        let both = HwptOptions {
            dirty_tracking: true,
            nest_parent: true,
        };
        assert_eq!(
            both.flags(),
            sys::HWPT_ALLOC_DIRTY_TRACKING | sys::HWPT_ALLOC_NEST_PARENT
        );
        assert_eq!(IommuType::from_raw(1), IommuType::IntelVtd);
        assert_eq!(IommuType::from_raw(99), IommuType::Other(99));
        let info = HwInfo {
            iommu_type: IommuType::IntelVtd,
            capabilities: sys::HW_CAP_DIRTY_TRACKING,
            max_pasid_log2: 0,
            data: vec![],
        };
        assert!(info.dirty_tracking_supported());
    }
}
