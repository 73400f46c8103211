//! Host memory for raw DMA maps, owned together with the container that maps it.
//!
//! The map/unmap cases need exact layouts (overlaps, splits, misaligned host
//! addresses) that [`Container::map_buffer`] cannot express, so they call
//! `map_dma_raw`. Its safety contract — the memory stays mapped until it is
//! unmapped or the container is gone — is kept here, once: a [`Scratch`]
//! owns both, empties the container and drops it before it frees the memory.

use vfio_hal::{Container, DmaAccess, DmaBuffer, Result};

use crate::outcome::{fail, CaseError, Context};

/// A container plus page-aligned host memory that only it maps.
///
/// Devices opened from [`Scratch::container`] must be dropped before the
/// scratch (declare them after it): with type1, an open device keeps its
/// container's mappings alive in the kernel.
#[derive(Debug)]
pub struct Scratch<C: Container> {
    // Some until dropped; always dropped before `mem`.
    container: Option<C>,
    // Some until dropped.
    mem: Option<DmaBuffer>,
    // Offset of the first IOMMU-page-aligned byte of `mem`.
    start: u64,
    page: u64,
    pages: u64,
}

impl<C: Container> Scratch<C> {
    /// Takes `container` and allocates `pages` IOMMU pages of host memory.
    pub fn new(container: C, pages: u64) -> Result<Self, CaseError> {
        let info = container.iommu_info().context("iommu_info")?;
        let page = info
            .min_page_size()
            .ok_or_else(|| fail("iommu_info reports no page size"))?;
        let len = pages
            .checked_add(1)
            .and_then(|n| n.checked_mul(page))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| fail(format!("{pages} pages of {page:#x} bytes do not fit")))?;
        let mem = DmaBuffer::new(len).context("allocate scratch memory")?;
        let addr = mem.as_ptr() as u64;
        let start = addr.next_multiple_of(page) - addr;
        Ok(Self {
            container: Some(container),
            mem: Some(mem),
            start,
            page,
            pages,
        })
    }

    /// The container.
    pub fn container(&self) -> &C {
        // Invariant: Some until drop.
        self.container
            .as_ref()
            .unwrap_or_else(|| unreachable!("container taken before drop"))
    }

    /// The IOMMU's smallest page size.
    pub fn page(&self) -> u64 {
        self.page
    }

    /// Maps `len` bytes of the scratch memory starting `host_offset` bytes
    /// into it (need not be aligned: misalignment is for the backend to
    /// refuse) at `iova`.
    pub fn map(&self, iova: u64, host_offset: u64, len: u64, access: DmaAccess) -> Result<()> {
        vfio_hal::error::check_bounds(
            "scratch map",
            vfio_hal::Target::None,
            host_offset,
            len,
            self.pages * self.page,
        )?;
        let host = self
            .mem()
            .as_ptr()
            .wrapping_add((self.start + host_offset) as usize);
        // SAFETY: [host, host + len) lies inside `mem` (checked above), which
        // outlives every mapping of it: `Drop` unmaps everything and drops
        // the container before `mem` is freed, and devices of the container
        // are dropped before the scratch (documented on the type).
        unsafe { self.container().map_dma_raw(iova, host, len, access) }
    }

    /// Maps pages `[first, first + count)` of the scratch at `iova`, read-write.
    pub fn map_pages(&self, iova: u64, first: u64, count: u64) -> Result<()> {
        self.map(
            iova,
            first * self.page,
            count * self.page,
            DmaAccess::ReadWrite,
        )
    }

    /// Writes bytes at `offset` into the scratch memory.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.mem().write(self.start + offset, data)
    }

    /// Reads bytes at `offset` from the scratch memory.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.mem().read(self.start + offset, out)
    }

    /// Drops the container with its mappings still in place (no unmap first),
    /// then hands back the memory, which the caller frees after every device.
    pub fn drop_container_with_mappings(mut self) -> DmaBuffer {
        drop(self.container.take());
        self.mem
            .take()
            .unwrap_or_else(|| unreachable!("memory taken before drop"))
    }

    fn mem(&self) -> &DmaBuffer {
        // Invariant: Some until drop.
        self.mem
            .as_ref()
            .unwrap_or_else(|| unreachable!("memory taken before drop"))
    }
}

impl<C: Container> Drop for Scratch<C> {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            if let Err(e) = container.unmap_all() {
                log::debug!("scratch teardown: unmap_all: {e}; dropping the container instead");
            }
        }
    }
}
