//! Peer-to-peer DMA: another device's mmapped BAR in a container's IOVA
//! space, so a device can read and write it as it does host memory.
//!
//! VMMs do this for every mmapped BAR of a passed-through device (QEMU maps
//! RAM-device regions into the container), so that one device can reach
//! another's memory at the address the guest sees. Whether the IOMMU
//! backend accepts such memory is its own: type1 maps the PFNs behind a
//! `VM_PFNMAP` mapping; iommufd's `IOMMU_IOAS_MAP` pins pages and refuses
//! them (Linux 6.12 answers `EFAULT`), so there a map is refused with the
//! kernel's errno and no device can DMA to a peer.
//!
//! ```
//! use std::sync::Arc;
//! use vfio_hal::prelude::*;
//! use vfio_hal::{peer::PeerMapping, DmaAccess, DmaBuffer, Protection};
//! use vfio_hal_mock::models::copy_engine::{reg, CopyEngine, SRAM_BAR};
//! use vfio_hal_mock::MockContainer;
//!
//! let container = MockContainer::new();
//! container.plug("engine", CopyEngine::new())?;
//! container.plug("peer", CopyEngine::new())?;
//! let engine = container.open_device("engine")?;
//! let peer = container.open_device("peer")?;
//!
//! // The peer's SRAM (BAR2, first mmap area) at IOVA 0x10_0000, a host
//! // buffer at 0x20_0000.
//! let sram = peer.region(SRAM_BAR.into())?.mmap_area(0, Protection::ReadWrite)?;
//! let at_peer = PeerMapping::map(&container, 0x10_0000, Arc::new(sram), DmaAccess::ReadWrite)?;
//! let host = container.map_buffer(0x20_0000, DmaBuffer::new(4096)?, DmaAccess::ReadOnly)?;
//! host.buffer().write(0, b"peer to peer")?;
//!
//! // The engine copies from host memory into its peer's SRAM.
//! engine.set_bus_master(true)?;
//! let bar0 = engine.region(0)?;
//! bar0.write_at::<u64>(reg::SRC, 0x20_0000)?;
//! bar0.write_at::<u64>(reg::DST, at_peer.iova())?;
//! bar0.write_at::<u32>(reg::LEN, 12)?;
//! bar0.write_at::<u32>(reg::DOORBELL, reg::DOORBELL_GO)?;
//! assert_eq!(bar0.read_at::<u32>(reg::STATUS)?, reg::STATUS_DONE);
//!
//! let mut seen = [0u8; 12];
//! peer.region(SRAM_BAR.into())?.read(0, &mut seen)?;
//! assert_eq!(&seen, b"peer to peer");
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::container::{unmap_or_leak, Container, DmaAccess};
use crate::error::Result;
use crate::memory::MmapArea;

/// A peer device's mmapped window ([`MmapArea`]) mapped at an IOVA;
/// unmapped on drop, before the window may be unmapped from the process.
///
/// `H` reaches the container as for [`crate::DmaGuard`]: a borrow or an
/// `Arc`. The guard keeps the window alive while the IOMMU may point at
/// it: when an unmap fails (other than "nothing mapped there") the window
/// is leaked rather than unmapped under a live translation.
pub struct PeerMapping<H>
where
    H: Deref,
    H::Target: Container,
{
    container: H,
    iova: u64,
    access: DmaAccess,
    // Some until drop.
    area: Option<Arc<MmapArea>>,
}

impl<H> PeerMapping<H>
where
    H: Deref,
    H::Target: Container,
{
    /// Maps all of `area` at `iova` with `access` (a read-only area maps
    /// only [`DmaAccess::ReadOnly`]: the device may then only read it).
    pub fn map(container: H, iova: u64, area: Arc<MmapArea>, access: DmaAccess) -> Result<Self> {
        if !area.is_writable() && access != DmaAccess::ReadOnly {
            return Err(crate::Error::InvalidArgument {
                op: "map peer area",
                target: crate::Target::Iova {
                    iova,
                    len: area.len(),
                },
                reason: "the area is mapped read-only, so the device may only read it",
            });
        }
        // SAFETY: the window stays mapped while the IOMMU may reach it: the
        // guard owns a reference to it and unmaps the IOVA range before
        // letting go of it (or leaks it when that unmap fails); the guard
        // holds `container`, so the container outlives the mapping. Device
        // memory is not a Rust object: no reference to it is assumed
        // exclusive (MmapArea accesses are volatile).
        unsafe { container.map_dma_raw(iova, area.as_ptr(), area.len(), access) }?;
        Ok(Self {
            container,
            iova,
            access,
            area: Some(area),
        })
    }

    /// The IOVA at which devices reach the peer's window.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> u64 {
        self.area().len()
    }

    /// Always false: an area has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What devices may do with the window.
    pub fn access(&self) -> DmaAccess {
        self.access
    }

    /// The peer's window, for the CPU's own accesses.
    pub fn area(&self) -> &MmapArea {
        // Invariant: Some while the guard is alive.
        self.area
            .as_deref()
            .unwrap_or_else(|| unreachable!("area taken before drop"))
    }
}

impl<H> Drop for PeerMapping<H>
where
    H: Deref,
    H::Target: Container,
{
    fn drop(&mut self) {
        let Some(area) = self.area.take() else { return };
        let len = area.len();
        if let Err((e, None)) = unmap_or_leak(&*self.container, self.iova, len, area) {
            log::warn!(
                "peer mapping at {:#x}: unmap failed ({e}); its window stays mapped",
                self.iova
            );
        }
    }
}

impl<H> fmt::Debug for PeerMapping<H>
where
    H: Deref,
    H::Target: Container,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerMapping")
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.area.as_ref().map(|a| a.len()))
            .field("access", &self.access)
            .finish()
    }
}
