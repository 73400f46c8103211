//! An IO address space (IOAS): the IOVA → memory mappings devices attach to.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use vfio_hal::{DmaAccess, Error, IovaRange, Result, Target};

use crate::iommufd::Iommufd;
use crate::sys::{self, IovaRanges};

/// One iommufd IOAS, destroyed (`IOMMU_DESTROY`) when the last clone drops.
///
/// Clones share the object: a device attached to it, or a HWPT built on it,
/// holds a clone, so the IOAS outlives everything that uses it (the kernel
/// refuses to destroy an IOAS in use).
#[derive(Debug, Clone)]
pub struct Ioas {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    iommufd: Iommufd,
    id: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = sys::destroy(self.iommufd.as_fd(), self.id) {
            // Still freed when the iommufd closes; nothing else to do here.
            log::error!("destroying IOAS {}: {e}", self.id);
        }
    }
}

/// The `IOMMU_IOAS_MAP_*` permission flags for `access`.
pub(crate) fn access_flags(access: DmaAccess) -> u32 {
    let mut flags = 0;
    if access.device_reads() {
        flags |= sys::MAP_READABLE;
    }
    if access.device_writes() {
        flags |= sys::MAP_WRITEABLE;
    }
    flags
}

impl Ioas {
    /// Takes ownership of the IOAS `id` in `iommufd`.
    pub(crate) fn from_id(iommufd: Iommufd, id: u32) -> Self {
        Self {
            inner: Arc::new(Inner { iommufd, id }),
        }
    }

    /// The object id, for `VFIO_DEVICE_ATTACH_IOMMUFD_PT` and `IOMMU_HWPT_ALLOC`.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The iommufd the IOAS lives in.
    pub fn iommufd(&self) -> &Iommufd {
        &self.inner.iommufd
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.iommufd.as_fd()
    }

    /// Maps `len` bytes at `host` to exactly `iova` (`IOMMU_IOAS_MAP_FIXED_IOVA`).
    ///
    /// Overlap with a mapping is `AlreadyMapped` (EEXIST); an IOVA in a
    /// reserved hole or misaligned for the attached IOMMUs is
    /// `InvalidArgument`; a wrap is `Overflow`.
    ///
    /// # Safety
    /// As [`vfio_hal::Container::map_dma_raw`]: the memory must stay mapped
    /// until unmapped from this IOAS (and every IOAS it is copied into), and
    /// devices may access it at any time.
    pub unsafe fn map_fixed(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        let flags = sys::MAP_FIXED_IOVA | access_flags(access);
        // SAFETY: the caller upholds the lifetime contract, passed on unchanged.
        unsafe { sys::ioas_map(self.fd(), self.id(), flags, host as u64, len, iova) }.map(drop)
    }

    /// Maps `len` bytes at `host` at an IOVA the kernel chooses (inside the
    /// allowed ranges, aligned like the host address); returns that IOVA.
    ///
    /// # Safety
    /// As [`Ioas::map_fixed`].
    pub unsafe fn map(&self, host: *mut u8, len: u64, access: DmaAccess) -> Result<u64> {
        let flags = access_flags(access);
        // SAFETY: the caller upholds the lifetime contract, passed on unchanged.
        unsafe { sys::ioas_map(self.fd(), self.id(), flags, host as u64, len, 0) }
    }

    /// Maps `len` bytes of the memfd `file` from byte `offset`, at `iova`
    /// (`None`: the kernel chooses); returns the IOVA (`IOMMU_IOAS_MAP_FILE`).
    ///
    /// Kernels before 6.13 lack the call: [`vfio_hal::ErrorKind::NotSupported`]
    /// (ENOTTY). [`Ioas::map_file_supported`] asks without mapping anything.
    pub fn map_file(
        &self,
        file: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        access: DmaAccess,
        iova: Option<u64>,
    ) -> Result<u64> {
        let (flags, iova) = match iova {
            Some(iova) => (sys::MAP_FIXED_IOVA | access_flags(access), iova),
            None => (access_flags(access), 0),
        };
        sys::ioas_map_file(self.fd(), self.id(), flags, file, offset, len, iova)
    }

    /// Whether the kernel has `IOMMU_IOAS_MAP_FILE`: probed with a request it
    /// must refuse (no fd, no access), which an older kernel answers `ENOTTY`.
    pub fn map_file_supported(&self) -> Result<bool> {
        sys::ioas_map_file_supported(self.fd(), self.id())
    }

    /// Maps the pages behind the whole mapping `[src_iova, src_iova + len)`
    /// of `src` into this IOAS at `iova` (`None`: the kernel chooses), without
    /// pinning them again (`IOMMU_IOAS_COPY`); returns the IOVA.
    ///
    /// # Safety
    /// The host memory behind the source mapping must stay mapped until it
    /// is unmapped from both IOASes (see [`Ioas::map_fixed`]).
    pub unsafe fn copy_from(
        &self,
        src: &Ioas,
        src_iova: u64,
        len: u64,
        access: DmaAccess,
        iova: Option<u64>,
    ) -> Result<u64> {
        if !self.iommufd().same_as(src.iommufd()) {
            return Err(Error::InvalidArgument {
                op: "IOMMU_IOAS_COPY",
                target: Target::Iova {
                    iova: src_iova,
                    len,
                },
                reason: "source IOAS belongs to another iommufd",
            });
        }
        let (flags, dst_iova) = match iova {
            Some(iova) => (sys::MAP_FIXED_IOVA | access_flags(access), iova),
            None => (access_flags(access), 0),
        };
        // SAFETY: the caller upholds the lifetime contract, passed on unchanged.
        unsafe {
            sys::ioas_copy(
                self.fd(),
                self.id(),
                src.id(),
                flags,
                src_iova,
                len,
                dst_iova,
            )
        }
    }

    /// Unmaps every mapping inside `[iova, iova + len)`; returns the bytes
    /// unmapped. Nothing there, or a range that would split a mapping, is
    /// [`vfio_hal::ErrorKind::NotMapped`].
    ///
    /// `IOMMU_IOAS_UNMAP` answers ENOENT both for an empty range and when
    /// looking up the IOAS fails (which the kernel's fault injection does),
    /// and only the first means nothing is mapped. An ENOENT is therefore
    /// confirmed by a second call before it is reported, so that `NotMapped`
    /// never stands for a translation that is still there (the
    /// [`vfio_hal::DmaMapping`] guard frees its buffer on that answer). The
    /// extra call costs only on this error path.
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        match sys::ioas_unmap(self.fd(), self.id(), iova, len) {
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                sys::ioas_unmap(self.fd(), self.id(), iova, len)
            }
            other => other,
        }
    }

    /// Unmaps everything; returns the bytes unmapped (0 when already empty).
    pub fn unmap_all(&self) -> Result<u64> {
        self.unmap(0, u64::MAX)
    }

    /// The usable IOVA ranges and the current IOVA alignment. Both change
    /// as devices attach and detach: query after each.
    pub fn iova_ranges(&self) -> Result<IovaRanges> {
        sys::ioas_iova_ranges(self.fd(), self.id())
    }

    /// Guarantees that `ranges` stay usable: later attaches that would
    /// reserve any part of them fail, and kernel-chosen IOVAs come only from
    /// them. Replaces the previous list; an empty list removes it.
    pub fn allow_iovas(&self, ranges: &[IovaRange]) -> Result<()> {
        sys::ioas_allow_iovas(self.fd(), self.id(), ranges)
    }

    /// Whether contiguous pages may be combined into huge IOMMU pages
    /// (`IOMMU_OPTION_HUGE_PAGES`, default on).
    pub fn huge_pages(&self) -> Result<bool> {
        sys::option(
            self.fd(),
            sys::OPTION_HUGE_PAGES,
            sys::OPTION_OP_GET,
            self.id(),
            0,
        )
        .map(|v| v != 0)
    }

    /// Allows or forbids huge IOMMU pages for this IOAS. The kernel refuses
    /// to disable them (`InvalidArgument`) once an attached domain holds mappings.
    pub fn set_huge_pages(&self, enable: bool) -> Result<()> {
        sys::option(
            self.fd(),
            sys::OPTION_HUGE_PAGES,
            sys::OPTION_OP_SET,
            self.id(),
            u64::from(enable),
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_maps_to_the_iommufd_permission_bits() {
        assert_eq!(access_flags(DmaAccess::ReadOnly), sys::MAP_READABLE);
        assert_eq!(access_flags(DmaAccess::WriteOnly), sys::MAP_WRITEABLE);
        assert_eq!(
            access_flags(DmaAccess::ReadWrite),
            sys::MAP_READABLE | sys::MAP_WRITEABLE
        );
    }
}
