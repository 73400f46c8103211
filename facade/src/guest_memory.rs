//! vm-memory interop: a guest's RAM mapped for device DMA at IOVA = GPA.
//!
//! A VMM passing a device through maps all of guest memory into the
//! device's IO address space at the guest-physical addresses, so that the
//! addresses the guest driver programs into the device are IOVAs that
//! translate to the right host memory. [`map_guest_memory`] does that for a
//! vm-memory [`GuestMemoryMmap`], one mapping per region, and returns a
//! guard that unmaps them all when dropped.
//!
//! The guard holds a clone of the `GuestMemoryMmap` (a vector of `Arc`ed
//! regions), so the host memory cannot be unmapped from the process while
//! the IOMMU still points at it — whatever the VMM does with its own
//! handle. If an unmap fails, that region's memory is deliberately leaked,
//! as [`vfio_hal::DmaMapping`] does: freeing memory a device may still
//! write would let it scribble over whatever reuses it.
//!
//! ```
//! # #[cfg(feature = "mock")]
//! # fn main() -> Result<(), vfio_hal_facade::Error> {
//! use vfio_hal_facade::guest_memory::map_guest_memory;
//! use vfio_hal_facade::mock::MockContainer;
//! use vfio_hal_facade::DmaAccess;
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[
//!     (GuestAddress(0), 0x10_0000),
//!     (GuestAddress(0x1000_0000), 0x4_0000),
//! ]).expect("guest memory");
//! let container = MockContainer::new();
//! let dma = map_guest_memory(&container, &ram, DmaAccess::ReadWrite)?;
//! assert_eq!(dma.mappings(), [(0, 0x10_0000), (0x1000_0000, 0x4_0000)]);
//! assert_eq!(container.mapping_count(), 2);
//! drop(dma);
//! assert_eq!(container.mapping_count(), 0);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use vfio_hal::{Container, DmaAccess, Error, ErrorKind, Result, Target};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

/// Every region of a guest's memory mapped into a container at IOVA = GPA;
/// unmapped on drop.
///
/// `H` is how the guard reaches its container: a borrow
/// ([`GuestMemoryDma`], from [`map_guest_memory`]) or a shared owner
/// ([`OwnedGuestMemoryDma`], from [`map_guest_memory_owned`]); both behave
/// the same.
pub struct GuestMemoryGuard<H, B: Bitmap = ()>
where
    H: Deref,
    H::Target: Container,
{
    container: H,
    /// Keeps the host memory alive while it is mapped; `None` once
    /// [`GuestMemoryGuard::unmap`] has run.
    memory: Option<GuestMemoryMmap<B>>,
    /// `(iova, len)` of each live mapping, ascending.
    mapped: Vec<(u64, u64)>,
    access: DmaAccess,
}

/// A [`GuestMemoryGuard`] that borrows its container.
pub type GuestMemoryDma<'c, C, B = ()> = GuestMemoryGuard<&'c C, B>;

/// A [`GuestMemoryGuard`] that shares ownership of its container: no
/// lifetime, so a VMM keeps it beside the container in its own state
/// (`Send`/`Sync` when the container is both).
pub type OwnedGuestMemoryDma<C, B = ()> = GuestMemoryGuard<Arc<C>, B>;

impl<H, B: Bitmap> fmt::Debug for GuestMemoryGuard<H, B>
where
    H: Deref,
    H::Target: Container,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemoryDma")
            .field("mapped", &self.mapped)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Maps every region of `memory` into `container` at its guest address.
///
/// Regions must be aligned to the IOMMU's page size (vm-memory's are
/// page-aligned mmaps; the guest addresses are the VMM's choice) and lie in
/// the container's usable IOVA ranges; otherwise the container's error
/// comes back. On any failure, the regions mapped so far are unmapped again
/// before returning.
pub fn map_guest_memory<'c, C, B>(
    container: &'c C,
    memory: &GuestMemoryMmap<B>,
    access: DmaAccess,
) -> Result<GuestMemoryDma<'c, C, B>>
where
    C: Container + ?Sized,
    B: Bitmap,
{
    GuestMemoryGuard::map(container, memory, access)
}

/// [`map_guest_memory`] with a guard that holds a clone of the `Arc`
/// instead of a borrow, to keep in long-lived VMM state.
///
/// ```
/// # #[cfg(feature = "mock")]
/// # fn main() -> Result<(), vfio_hal_facade::Error> {
/// use std::sync::Arc;
/// use vfio_hal_facade::guest_memory::{map_guest_memory_owned, OwnedGuestMemoryDma};
/// use vfio_hal_facade::mock::MockContainer;
/// use vfio_hal_facade::DmaAccess;
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// struct Vm {
///     container: Arc<MockContainer>,
///     dma: OwnedGuestMemoryDma<MockContainer>,
/// }
///
/// fn boot() -> Result<Vm, vfio_hal_facade::Error> {
///     let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)])
///         .expect("guest memory");
///     let container = Arc::new(MockContainer::new());
///     let dma = map_guest_memory_owned(&container, &ram, DmaAccess::ReadWrite)?;
///     Ok(Vm { container, dma })
/// }
///
/// let vm = boot()?;
/// assert_eq!(vm.dma.mappings(), [(0, 0x10_0000)]);
/// let container = Arc::clone(&vm.container);
/// drop(vm);
/// assert_eq!(container.mapping_count(), 0);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "mock"))]
/// # fn main() {}
/// ```
pub fn map_guest_memory_owned<C, B>(
    container: &Arc<C>,
    memory: &GuestMemoryMmap<B>,
    access: DmaAccess,
) -> Result<OwnedGuestMemoryDma<C, B>>
where
    C: Container + ?Sized,
    B: Bitmap,
{
    GuestMemoryGuard::map(Arc::clone(container), memory, access)
}

impl<H, B: Bitmap> GuestMemoryGuard<H, B>
where
    H: Deref,
    H::Target: Container,
{
    fn map(container: H, memory: &GuestMemoryMmap<B>, access: DmaAccess) -> Result<Self> {
        let mut guard = Self {
            container,
            memory: Some(memory.clone()),
            mapped: Vec::with_capacity(memory.num_regions()),
            access,
        };
        for region in memory.iter() {
            let iova = region.start_addr().0;
            let len = region.len();
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|_| Error::NotSupported {
                    op: "map_guest_memory",
                    target: Target::Iova { iova, len },
                    reason: "the region has no host mapping",
                })?;
            // SAFETY: `host` is the start of this region's mmap of `len` bytes.
            // The guard owns a clone of the collection, which keeps every
            // region's mmap alive until the guard has unmapped it (or, if the
            // unmap fails, forever), and holds the container (borrow or
            // shared owner) as long. The device may read and write guest
            // memory at any time; vm-memory accesses it only through volatile
            // slices, never through references assuming exclusivity.
            unsafe { guard.container.map_dma_raw(iova, host, len, access) }?;
            guard.mapped.push((iova, len));
        }
        Ok(guard)
    }

    /// `(iova, len)` of every mapping, in the order the regions come.
    pub fn mappings(&self) -> &[(u64, u64)] {
        &self.mapped
    }

    /// What the device may do with guest memory.
    pub fn access(&self) -> DmaAccess {
        self.access
    }

    /// The container guest memory is mapped in.
    pub fn container(&self) -> &H::Target {
        &self.container
    }

    /// Unmaps everything now; the first error is returned after every
    /// region has been tried (the memory of a region whose unmap failed is
    /// leaked).
    pub fn unmap(mut self) -> Result<()> {
        self.unmap_all()
    }

    fn unmap_all(&mut self) -> Result<()> {
        let mut first_error = None;
        let mut leak = false;
        for (iova, len) in std::mem::take(&mut self.mapped) {
            match self.container.unmap_dma(iova, len) {
                Ok(_) => {}
                // Already gone (unmap_all, container reset): nothing points there.
                Err(e) if e.kind() == ErrorKind::NotMapped => {}
                Err(e) => {
                    log::error!(
                        "unmapping guest memory {} failed, leaking it: {e}",
                        Target::Iova { iova, len }
                    );
                    leak = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(memory) = self.memory.take() {
            if leak {
                std::mem::forget(memory);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl<H, B: Bitmap> Drop for GuestMemoryGuard<H, B>
where
    H: Deref,
    H::Target: Container,
{
    fn drop(&mut self) {
        // Errors are logged (and the memory leaked) inside.
        let _ = self.unmap_all();
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use vfio_hal::prelude::*;
    use vfio_hal_mock::models::edu::{reg, Edu};
    use vfio_hal_mock::MockContainer;
    use vm_memory::{Bytes, GuestAddress};

    fn guest() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0x10_0000), 0x1_0000),
            (GuestAddress(0x20_0000), 0x4000),
        ])
        .expect("guest memory")
    }

    #[test]
    fn every_region_is_mapped_at_its_guest_address_and_unmapped_on_drop() {
        let container = MockContainer::new();
        let ram = guest();
        let dma = map_guest_memory(&container, &ram, DmaAccess::ReadWrite).expect("maps");
        assert_eq!(dma.mappings(), [(0x10_0000, 0x1_0000), (0x20_0000, 0x4000)]);
        let iovas: Vec<(u64, u64)> = container
            .mappings()
            .iter()
            .map(|m| (m.iova, m.len))
            .collect();
        assert_eq!(iovas, dma.mappings());
        drop(dma);
        assert_eq!(container.mapping_count(), 0);
    }

    #[test]
    fn a_device_dmas_guest_memory_by_guest_physical_address() {
        let container = MockContainer::new();
        container.plug("edu", Edu::new()).expect("plug");
        let ram = guest();
        let _dma = map_guest_memory(&container, &ram, DmaAccess::ReadWrite).expect("maps");
        ram.write_slice(b"guest data", GuestAddress(0x10_0040))
            .expect("write guest memory");

        let edu = container.open_device("edu").expect("open");
        edu.set_bus_master(true).expect("bus master");
        let bar0 = edu.region(0).expect("bar0");
        // GPA 0x10_0040 -> edu's buffer -> GPA 0x20_0100, both by IOVA = GPA.
        for (src, dst, cmd) in [
            (0x10_0040, reg::DMA_START, reg::EDU_DMA_RUN),
            (
                reg::DMA_START,
                0x20_0100,
                reg::EDU_DMA_RUN | reg::EDU_DMA_DIR,
            ),
        ] {
            bar0.write_at::<u64>(reg::DMA_SRC, src).expect("src");
            bar0.write_at::<u64>(reg::DMA_DST, dst).expect("dst");
            bar0.write_at::<u64>(reg::DMA_CNT, 10).expect("count");
            bar0.write_at::<u64>(reg::DMA_CMD, cmd).expect("cmd");
            while bar0.read_at::<u64>(reg::DMA_CMD).expect("poll") & reg::EDU_DMA_RUN != 0 {}
        }
        let mut out = [0u8; 10];
        ram.read_slice(&mut out, GuestAddress(0x20_0100))
            .expect("read guest memory");
        assert_eq!(&out, b"guest data");
        assert!(container.faults().is_empty(), "{:?}", container.faults());
    }

    #[test]
    fn a_failed_region_unmaps_the_ones_before_it() {
        let container = MockContainer::new();
        // The second region overlaps an existing mapping.
        let blocker = container
            .map_buffer(
                0x20_0000,
                vfio_hal::DmaBuffer::new(0x1000).expect("buffer"),
                DmaAccess::ReadWrite,
            )
            .expect("blocker");
        let e = map_guest_memory(&container, &guest(), DmaAccess::ReadOnly).expect_err("overlap");
        assert_eq!(e.kind(), ErrorKind::AlreadyMapped);
        assert_eq!(container.mapping_count(), 1, "only the blocker is left");
        drop(blocker);
    }

    #[test]
    fn explicit_unmap_tolerates_an_emptied_container() {
        let container = MockContainer::new();
        let ram = guest();
        let dma = map_guest_memory(&container, &ram, DmaAccess::ReadOnly).expect("maps");
        assert_eq!(dma.access(), DmaAccess::ReadOnly);
        container.unmap_all().expect("unmap all");
        dma.unmap().expect("NotMapped is not an error here");
    }

    #[test]
    fn a_misaligned_guest_address_is_refused_by_the_container() {
        let container = MockContainer::new();
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0800), 0x1000)])
            .expect("guest memory");
        let e = map_guest_memory(&container, &ram, DmaAccess::ReadWrite).expect_err("misaligned");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(container.mapping_count(), 0);
    }

    /// What a VMM keeps: the container and guest memory's mappings into it.
    struct Vm<C: Container> {
        container: Arc<C>,
        dma: OwnedGuestMemoryDma<C>,
    }

    fn boot<C: Container>(container: C, ram: &GuestMemoryMmap) -> Vm<C> {
        let container = Arc::new(container);
        let dma = map_guest_memory_owned(&container, ram, DmaAccess::ReadWrite).expect("maps");
        Vm { container, dma }
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_owned_guard_lives_beside_its_container_and_unmaps_on_drop() {
        assert_send_sync::<Vm<MockContainer>>();
        let mock = MockContainer::new();
        let vm = boot(mock.clone(), &guest());
        assert_eq!(mock.mapping_count(), 2, "the mappings outlive boot()");
        assert_eq!(
            vm.dma.mappings(),
            [(0x10_0000, 0x1_0000), (0x20_0000, 0x4000)]
        );
        assert!(std::ptr::eq(vm.dma.container(), &*vm.container));
        std::thread::spawn(move || drop(vm)).join().expect("thread");
        assert_eq!(mock.mapping_count(), 0);
        let again = map_guest_memory(&mock, &guest(), DmaAccess::ReadOnly)
            .expect("the dropped guard's ranges are free again");
        assert_eq!(again.mappings().len(), 2);
    }

    #[test]
    fn a_failed_unmap_leaks_guest_memory_instead_of_freeing_it() {
        use vfio_hal::decorate::inject::{FaultInjector, Plan};
        use vfio_hal::decorate::Op;

        let mock = MockContainer::new();
        let ram = guest();
        let vm = boot(
            FaultInjector::with_plan(mock.clone(), Plan::fail_every(Op::UnmapDma)),
            &ram,
        );
        ram.write_slice(b"still here", GuestAddress(0x20_0000))
            .expect("write guest memory");
        drop(ram);
        let e = vm.dma.unmap().expect_err("unmaps fail");
        assert_eq!(e.kind(), Plan::DEFAULT_KIND);
        assert_eq!(mock.mapping_count(), 2, "the unmaps failed");
        // The guard held the last handle on guest memory; had it freed the
        // regions, this device read of a still-mapped one would touch
        // unmapped memory.
        let mut seen = [0u8; 10];
        mock.iommu()
            .dma_read("test", 0x20_0000, &mut seen)
            .expect("the mapping still translates");
        assert_eq!(&seen, b"still here");
    }
}
