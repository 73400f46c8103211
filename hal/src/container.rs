//! The `Container` trait: one IO address space and the DMA mappings in it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::caps::Capability;
use crate::device::Device;
use crate::dirty::DirtyBitmap;
use crate::error::{Error, ErrorKind, Result, Target};
use crate::memory::DmaBuffer;

/// An inclusive IOVA range `[start, end]`, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA (inclusive, so `u64::MAX` is expressible).
    pub end: u64,
}

impl IovaRange {
    /// Whether `[iova, iova + len)` lies inside the range (`len > 0`).
    pub fn contains(&self, iova: u64, len: u64) -> bool {
        len > 0
            && iova >= self.start
            && iova
                .checked_add(len - 1)
                .is_some_and(|last| last <= self.end)
    }

    /// Number of bytes in the range (may be 2^64, hence `u128`).
    pub fn size(&self) -> u128 {
        u128::from(self.end) - u128::from(self.start) + 1
    }
}

impl fmt::Display for IovaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.start, self.end)
    }
}

/// What the device may do with a DMA mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaAccess {
    /// The device may only read (a "read-only mapping": device writes fault).
    ReadOnly,
    /// The device may only write.
    WriteOnly,
    /// The device may read and write.
    ReadWrite,
}

impl DmaAccess {
    /// Whether the device may read the memory.
    pub fn device_reads(self) -> bool {
        matches!(self, Self::ReadOnly | Self::ReadWrite)
    }

    /// Whether the device may write the memory.
    pub fn device_writes(self) -> bool {
        matches!(self, Self::WriteOnly | Self::ReadWrite)
    }
}

/// What the IOMMU behind a container reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IommuInfo {
    /// Bitmap of supported page sizes (bit n set = 2^n bytes). Differs
    /// between kernels and IOMMU back ends: never assert an exact value.
    pub page_sizes: u64,
    /// Usable IOVA ranges, ascending; holes between them are reserved.
    pub iova_ranges: Vec<IovaRange>,
    /// How many more mappings the container accepts, where reported.
    pub dma_avail: Option<u32>,
    /// The full capability chain as reported.
    pub caps: Vec<Capability>,
}

impl IommuInfo {
    /// The smallest supported page size, or `None` if the bitmap is empty.
    pub fn min_page_size(&self) -> Option<u64> {
        (self.page_sizes != 0).then(|| 1u64 << self.page_sizes.trailing_zeros())
    }
}

/// One IO address space (a type1 container, an iommufd IOAS, a mock IOMMU).
///
/// # Contract
/// - `iova`, `len` and the host address of a map must be aligned to the
///   smallest page size; otherwise [`ErrorKind::InvalidArgument`].
/// - Overlap with an existing mapping is [`ErrorKind::AlreadyMapped`];
///   `iova + len` wrapping is [`ErrorKind::Overflow`]; a range outside
///   [`IommuInfo::iova_ranges`] is refused ([`ErrorKind::InvalidArgument`] or
///   [`ErrorKind::OutOfRange`], as the kernel says).
/// - [`Container::unmap_dma`] unmaps whole mappings inside the range and
///   returns the bytes unmapped; a range holding no mapping is
///   [`ErrorKind::NotMapped`]; a range that would split a mapping is refused
///   (type1v2 and the mock: [`ErrorKind::InvalidArgument`]; iommufd cannot
///   tell it from an unmapped range and says [`ErrorKind::NotMapped`]).
///
/// # Safety
/// An unsafe trait because [`DmaMapping`] — safe code — frees its buffer on
/// what an implementation answers, and a device writing freed memory is
/// undefined behaviour. Implementations promise: once `unmap_dma(iova, len)`
/// returns `Ok` or an error of kind [`ErrorKind::NotMapped`], or
/// `unmap_all()` returns `Ok`, no mapping made by a `map_dma_raw` of exactly
/// `[iova, iova + len)` (or of anything, for `unmap_all`) still translates:
/// the device can no longer reach that memory. Every other answer must be
/// an error of another kind. (Refusing to split a *different*, larger
/// mapping with `NotMapped`, as iommufd does, keeps the promise: no mapping
/// of exactly that range exists.)
///
/// # Example
/// Drivers map through [`Container::map_buffer`], which is safe; the guard
/// it returns unmaps on drop.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind};
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// let info = container.iommu_info()?;
/// assert!(!info.iova_ranges.is_empty());
///
/// let ring = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadWrite)?;
/// // The same IOVA again overlaps: refused, and the second buffer comes back.
/// let err = container
///     .map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadOnly)
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::AlreadyMapped);
/// drop(ring); // unmapped here
/// assert_eq!(container.unmap_all()?, 0, "nothing left");
///
/// container.plug("edu", Edu::new())?;
/// let edu = container.open_device("edu")?;
/// assert_eq!(edu.vendor_id()?, 0x1234);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub unsafe trait Container {
    /// The device type this container opens.
    type Device: Device;

    /// Page sizes, IOVA ranges and capabilities of the IOMMU.
    fn iommu_info(&self) -> Result<IommuInfo>;

    /// Maps `len` bytes of host memory at `host` to `iova`.
    ///
    /// # Safety
    /// `[host, host + len)` must be memory of this process that stays mapped
    /// (not freed, not `munmap`ped) until the range is unmapped from this
    /// container or the container is dropped. The device may read and (unless
    /// `access` is `ReadOnly`) write it at any time, so the caller must not
    /// hold Rust references to it that assume exclusive access.
    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()>;

    /// Unmaps every mapping inside `[iova, iova + len)`; returns the bytes unmapped.
    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64>;

    /// Unmaps everything; returns the bytes unmapped (0 when already empty).
    fn unmap_all(&self) -> Result<u64>;

    /// Opens the device with this name (a PCI address such as `0000:00:01.0`
    /// for vfio-pci) and attaches it to this address space.
    fn open_device(&self, name: &str) -> Result<Self::Device>;

    /// Starts or stops tracking which pages devices write through this
    /// address space (type1's `VFIO_IOMMU_DIRTY_PAGES` start and stop; the
    /// mock IOMMU). Starting forgets what was marked before.
    /// `NotSupported` where the address space cannot track (the default;
    /// an iommufd IOAS tracks only through a HWPT allocated for it).
    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        let _ = enable;
        Err(Error::NotSupported {
            op: "set_dirty_tracking",
            target: Target::None,
            reason: "this address space does not track dirty pages",
        })
    }

    /// Which `page_size` pages of `[iova, iova + len)` devices wrote since
    /// tracking started or since the last read, which clears them unless
    /// `keep` is set. The range follows [`DirtyBitmap::new`]'s rules.
    /// `InvalidArgument` for `keep` where reads always clear (type1) and
    /// while tracking is off; `NotSupported` as for
    /// [`set_dirty_tracking`](Self::set_dirty_tracking).
    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        let _ = (iova, len, page_size, keep);
        Err(Error::NotSupported {
            op: "read_dirty",
            target: Target::Iova { iova, len },
            reason: "this address space does not track dirty pages",
        })
    }

    /// Maps an owned buffer; the returned guard unmaps it when dropped.
    ///
    /// The guard borrows the container; [`Container::map_buffer_owned`]
    /// makes one that can live next to the container in a struct.
    /// On failure the buffer comes back inside the error.
    fn map_buffer(
        &self,
        iova: u64,
        buffer: DmaBuffer,
        access: DmaAccess,
    ) -> Result<DmaMapping<'_, Self>, MapBufferError>
    where
        Self: Sized,
    {
        DmaGuard::map(self, iova, buffer, access)
    }

    /// Maps an owned buffer; the returned guard holds a clone of the `Arc`,
    /// so it has no lifetime and can be kept in long-lived state (a VMM's
    /// guest-RAM mappings beside the container). It unmaps when dropped,
    /// like [`Container::map_buffer`]'s guard, and is `Send`/`Sync` when
    /// the container is both.
    ///
    /// On failure the buffer comes back inside the error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vfio_hal::{Container, DmaAccess, DmaBuffer, OwnedDmaMapping};
    ///
    /// /// What a VMM keeps: the container and the mappings into it.
    /// struct Vm<C: Container> {
    ///     container: Arc<C>,
    ///     ram: Vec<OwnedDmaMapping<C>>,
    /// }
    ///
    /// fn boot<C: Container>(container: C) -> vfio_hal::Result<Vm<C>> {
    ///     let container = Arc::new(container);
    ///     let low = container.map_buffer_owned(0, DmaBuffer::new(0x1000)?, DmaAccess::ReadWrite)?;
    ///     Ok(Vm { ram: vec![low], container })
    /// }
    /// # let _ = boot::<vfio_hal::dynamic::DynContainer>;
    /// ```
    fn map_buffer_owned(
        self: &Arc<Self>,
        iova: u64,
        buffer: DmaBuffer,
        access: DmaAccess,
    ) -> Result<OwnedDmaMapping<Self>, MapBufferError>
    where
        Self: Sized,
    {
        DmaGuard::map(Arc::clone(self), iova, buffer, access)
    }
}

/// A failed [`Container::map_buffer`]: the error, and the buffer handed back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct MapBufferError {
    /// Why the map failed.
    #[source]
    pub error: Error,
    /// The buffer, unharmed.
    pub buffer: DmaBuffer,
}

impl From<MapBufferError> for Error {
    fn from(e: MapBufferError) -> Self {
        e.error
    }
}

impl MapBufferError {
    /// The kind of the underlying error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

/// A live DMA mapping of a [`DmaBuffer`]; unmapped on drop.
///
/// `H` is how the guard reaches its container: a borrow
/// ([`DmaMapping`], from [`Container::map_buffer`]) or a shared owner
/// ([`OwnedDmaMapping`], from [`Container::map_buffer_owned`]). Both behave
/// the same: [`DmaGuard::unmap`] hands the buffer back, drop unmaps before
/// it frees, and a buffer the IOMMU may still point at is leaked.
pub struct DmaGuard<H>
where
    H: Deref,
    H::Target: Container,
{
    container: H,
    iova: u64,
    access: DmaAccess,
    // Always Some until `unmap` or drop takes it.
    buffer: Option<DmaBuffer>,
}

/// A [`DmaGuard`] that borrows its container.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{DmaAccess, DmaBuffer};
/// use vfio_hal_mock::MockContainer;
///
/// let container = MockContainer::new();
/// let mapping = container.map_buffer(0x20_0000, DmaBuffer::new(4096)?, DmaAccess::WriteOnly)?;
/// assert_eq!((mapping.iova(), mapping.access()), (0x20_0000, DmaAccess::WriteOnly));
/// assert_eq!(mapping.len(), mapping.buffer().len() as u64);
/// mapping.buffer().write(0, b"descriptor")?;
///
/// // Unmap now and take the buffer back, e.g. to map it somewhere else.
/// let buffer = mapping.unmap()?;
/// let again = container.map_buffer(0x30_0000, buffer, DmaAccess::ReadWrite)?;
/// let mut out = [0u8; 10];
/// again.buffer().read(0, &mut out)?;
/// assert_eq!(&out, b"descriptor");
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub type DmaMapping<'c, C> = DmaGuard<&'c C>;

/// A [`DmaGuard`] that shares ownership of its container.
pub type OwnedDmaMapping<C> = DmaGuard<Arc<C>>;

impl<H> fmt::Debug for DmaGuard<H>
where
    H: Deref,
    H::Target: Container,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMapping")
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.len())
            .field("access", &self.access)
            .finish()
    }
}

impl<H> DmaGuard<H>
where
    H: Deref,
    H::Target: Container,
{
    fn map(
        container: H,
        iova: u64,
        buffer: DmaBuffer,
        access: DmaAccess,
    ) -> Result<Self, MapBufferError> {
        let len = buffer.len() as u64;
        // SAFETY: the buffer is moved into the guard, which unmaps before it
        // frees the memory; the guard holds `container` (a borrow or a
        // shared owner), so the container outlives the mapping.
        match unsafe { container.map_dma_raw(iova, buffer.as_ptr(), len, access) } {
            Ok(()) => Ok(Self {
                container,
                iova,
                access,
                buffer: Some(buffer),
            }),
            Err(error) => Err(MapBufferError { error, buffer }),
        }
    }

    /// The container the buffer is mapped in.
    pub fn container(&self) -> &H::Target {
        &self.container
    }

    /// The IOVA the device uses.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.len() as u64)
    }

    /// Always false: a mapping holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What the device may do with it.
    pub fn access(&self) -> DmaAccess {
        self.access
    }

    /// The mapped buffer (access is by copy; the device may write it concurrently).
    pub fn buffer(&self) -> &DmaBuffer {
        // Invariant: Some while the guard is alive.
        self.buffer
            .as_ref()
            .unwrap_or_else(|| unreachable!("buffer taken before drop"))
    }

    /// Unmaps now and returns the buffer.
    ///
    /// On failure the buffer comes back inside the error only when the
    /// backend answered [`ErrorKind::NotMapped`] (the mapping was already
    /// gone, e.g. after [`Container::unmap_all`]): then the device can no
    /// longer reach it, as when the guard is dropped. On any other failure
    /// it is leaked on purpose: the IOMMU may still point at it, so freeing
    /// it would let the device scribble over reused memory.
    pub fn unmap(mut self) -> Result<DmaBuffer, UnmapError> {
        self.release()
            .unwrap_or_else(|| unreachable!("buffer taken twice"))
    }

    /// Unmaps and takes the buffer — the one rule `unmap` and drop share:
    /// unmapped, or NotMapped (nothing of the range is mapped any more), and
    /// the buffer is handed back; any other failure leaks it, because the
    /// IOMMU may still point at it. `None` once the buffer is taken.
    fn release(&mut self) -> Option<Result<DmaBuffer, UnmapError>> {
        let buffer = self.buffer.take()?;
        let len = buffer.len() as u64;
        Some(
            unmap_or_leak(&*self.container, self.iova, len, buffer)
                .map_err(|(error, buffer)| UnmapError { error, buffer }),
        )
    }
}

/// Unmaps `[iova, iova + len)` and hands `memory` back when the device can
/// no longer reach it: unmapped, or [`ErrorKind::NotMapped`] (nothing of
/// the range is mapped any more; the memory comes back beside the error).
/// On any other failure `memory` is leaked on purpose, because the IOMMU
/// may still point at it and freeing it would let the device write into
/// reused memory. The one rule of every mapping guard's release.
pub(crate) fn unmap_or_leak<C: Container + ?Sized, M>(
    container: &C,
    iova: u64,
    len: u64,
    memory: M,
) -> std::result::Result<M, (Error, Option<M>)> {
    match container.unmap_dma(iova, len) {
        Ok(_) => Ok(memory),
        Err(error) if error.kind() == ErrorKind::NotMapped => Err((error, Some(memory))),
        Err(error) => {
            std::mem::forget(memory);
            Err((error, None))
        }
    }
}

/// A failed [`DmaGuard::unmap`]: the error, and the buffer where it is
/// provably no longer mapped.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct UnmapError {
    /// Why the unmap failed.
    #[source]
    pub error: Error,
    /// The buffer when the error is [`ErrorKind::NotMapped`] (the device
    /// can no longer reach it); `None` when it had to be leaked.
    pub buffer: Option<DmaBuffer>,
}

impl From<UnmapError> for Error {
    fn from(e: UnmapError) -> Self {
        e.error
    }
}

impl UnmapError {
    /// The kind of the underlying error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl<H> Drop for DmaGuard<H>
where
    H: Deref,
    H::Target: Container,
{
    fn drop(&mut self) {
        let (iova, len) = (self.iova, self.len());
        match self.release() {
            // Unmapped, or already gone (unmap_all, container reset): the
            // buffer is dropped here, its memory free to release.
            None
            | Some(Ok(_))
            | Some(Err(UnmapError {
                buffer: Some(_), ..
            })) => {}
            Some(Err(UnmapError {
                error,
                buffer: None,
            })) => log::error!(
                "DMA unmap of {} failed in drop, leaking the buffer: {error}",
                Target::Iova { iova, len }
            ),
        }
    }
}
