//! Owned host memory mappings: DMA buffers and mmapped device regions.
//!
//! This module is one of the few places with `unsafe`: it owns `mmap`/`munmap`
//! and the accesses to memory that a device may write concurrently. Nothing
//! here hands out `&[u8]` or `&mut [u8]` views of such memory, because a
//! device (or the mock's DMA engine) may write it at any time: byte copies
//! go through [`crate::shared_memory`] (relaxed atomic byte accesses, race-free
//! against a concurrent writer), and MMIO loads and stores are single
//! volatile accesses of the width asked.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use crate::error::{check_bounds, Error, Result, Target};
use crate::scalar::Scalar;
use crate::shared_memory;

/// The host page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(sz).unwrap_or(4096)
}

/// An owned `mmap` of `len` bytes, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain process memory (or a device window); it has no
// thread affinity, and all access goes through raw pointers.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent copies from several threads are relaxed atomic
// byte accesses (`shared_memory`), which do not race, and no Rust-visible
// state is mutated through `&self` except by the kernel (MAP_FIXED).
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(
        op: &'static str,
        len: usize,
        prot: i32,
        flags: i32,
        fd: i32,
        offset: u64,
    ) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidArgument {
                op,
                target: Target::None,
                reason: "length must not be zero",
            });
        }
        let off = libc::off_t::try_from(offset).map_err(|_| Error::InvalidArgument {
            op,
            target: Target::None,
            reason: "offset does not fit off_t",
        })?;
        // SAFETY: a fresh mapping at a kernel-chosen address (no MAP_FIXED)
        // cannot alias any existing Rust object; the result is checked.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os_error(op, Target::None));
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or(Error::sys(op, Target::None, libc::ENOMEM))?;
        Ok(Self { ptr, len })
    }

    /// Keeps the `len` bytes starting at the first `align`-aligned address
    /// and unmaps the rest of the mapping.
    fn trim_to_aligned(self, align: usize, len: usize) -> Result<Self> {
        let start = self.ptr.as_ptr() as usize;
        let head = start.next_multiple_of(align) - start;
        let tail = self.len - head - len;
        let this = std::mem::ManuallyDrop::new(self);
        let base = this.ptr.as_ptr();
        for (at, n) in [(0, head), (head + len, tail)] {
            if n == 0 {
                continue;
            }
            // SAFETY: [base + at, +n) is a page-aligned sub-range of our own
            // mapping outside the part we keep; nothing references it.
            if unsafe { libc::munmap(base.wrapping_add(at).cast(), n) } != 0 {
                log::error!(
                    "munmap of DmaBuffer padding failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        let ptr = NonNull::new(base.wrapping_add(head)).ok_or(Error::sys(
            "mmap(DmaBuffer)",
            Target::None,
            libc::ENOMEM,
        ))?;
        Ok(Self { ptr, len })
    }

    fn check(&self, op: &'static str, offset: u64, len: usize) -> Result<usize> {
        check_bounds(op, Target::None, offset, len as u64, self.len as u64)?;
        // In bounds of a usize-sized mapping, so it fits usize.
        Ok(offset as usize)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let at = self.check("memory read", offset, out.len())?;
        // SAFETY: [at, at+len) is inside the live, readable mapping (checked
        // above); nothing hands out references into it, and the other
        // accesses are `shared_memory` copies, the device, or volatile
        // register accesses (`load`/`store`, documented as not for memory
        // another Rust thread copies concurrently).
        unsafe { shared_memory::read(self.ptr.as_ptr().wrapping_add(at), out) };
        Ok(())
    }

    /// Callers check that the mapping is writable.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let at = self.check("memory write", offset, data.len())?;
        // SAFETY: as in `read`; callers only write writable mappings.
        unsafe { shared_memory::write(self.ptr.as_ptr().wrapping_add(at), data) };
        Ok(())
    }

    fn load<T: Scalar>(&self, offset: u64) -> Result<T> {
        let at = self.check("mmio load", offset, T::SIZE)?;
        if at % T::SIZE != 0 {
            return Err(Error::InvalidArgument {
                op: "mmio load",
                target: Target::None,
                reason: "offset not naturally aligned",
            });
        }
        // SAFETY: in bounds and naturally aligned (checked above; the mapping
        // is page aligned); a volatile load emits exactly one access of T's
        // width, which device registers need.
        Ok(unsafe { std::ptr::read_volatile(self.ptr.as_ptr().wrapping_add(at).cast::<T>()) })
    }

    fn store<T: Scalar>(&self, offset: u64, value: T) -> Result<()> {
        let at = self.check("mmio store", offset, T::SIZE)?;
        if at % T::SIZE != 0 {
            return Err(Error::InvalidArgument {
                op: "mmio store",
                target: Target::None,
                reason: "offset not naturally aligned",
            });
        }
        // SAFETY: as in `load`.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().wrapping_add(at).cast::<T>(), value) };
        Ok(())
    }

    /// Replaces every page, in place, with private zero-filled memory.
    fn replace_with_zero_pages(&self, op: &'static str) -> Result<()> {
        // SAFETY: MAP_FIXED over exactly this mapping's own range, which no
        // other mapping or Rust object shares; all access to it goes through
        // `shared_memory` copies and volatile accesses (no reference into it
        // exists), and the range stays mapped, so an access racing with the
        // replacement reads or writes valid memory either way.
        let ptr = unsafe {
            libc::mmap(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os_error(op, Target::None));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap that we own, and no
        // reference into it outlives `self`.
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) } != 0 {
            log::error!(
                "munmap({:p}, {}) failed: {}",
                self.ptr,
                self.len,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Page-aligned anonymous memory to hand to a device for DMA.
///
/// Owned: [`crate::Container::map_buffer`] takes it by value and gives it back
/// when the mapping is undone, so the memory cannot be freed while the IOMMU
/// still points at it. Access is by copy ([`DmaBuffer::read`],
/// [`DmaBuffer::write`]) because the device may write it concurrently; the
/// copies are [`crate::shared_memory`]'s, race-free against that writer.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{memory::page_size, DmaAccess, DmaBuffer, ErrorKind};
/// use vfio_hal_mock::MockContainer;
///
/// let buf = DmaBuffer::new(100)?; // rounded up to a page, zeroed
/// assert_eq!(buf.len() as u64, page_size());
/// buf.write(0, &[1, 2, 3])?;
/// let mut out = [0xffu8; 4];
/// buf.read(0, &mut out)?;
/// assert_eq!(out, [1, 2, 3, 0]);
/// // Past the end is an error, never a panic.
/// let err = buf.write(buf.len() as u64, &[0]).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::OutOfRange);
///
/// // Handed to a container by value; back when unmapped.
/// let container = MockContainer::new();
/// let mapping = container.map_buffer(0x10_0000, buf, DmaAccess::ReadOnly)?;
/// let buf = mapping.unmap()?;
/// assert_eq!(buf.to_vec()[..3], [1, 2, 3]);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
#[derive(Debug)]
pub struct DmaBuffer {
    map: Mapping,
    backing: PageBacking,
}

/// A huge page size of the kernel's hugetlb pools
/// (`/sys/kernel/mm/hugepages/hugepages-<kB>kB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HugePageSize {
    /// 2 MiB pages (x86-64 PMD size).
    Size2MiB,
    /// 1 GiB pages (x86-64 PUD size).
    Size1GiB,
}

impl HugePageSize {
    /// The page size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Self::Size2MiB => 2 << 20,
            Self::Size1GiB => 1 << 30,
        }
    }

    /// The sysfs directory of this size's pool: `nr_hugepages` sets its
    /// size, `free_hugepages` says how many pages are left.
    pub fn sysfs_dir(self) -> std::path::PathBuf {
        format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB",
            self.bytes() >> 10
        )
        .into()
    }

    /// How many pages of this size the pool has free (its sysfs
    /// `free_hugepages`): a [`DmaBuffer::with_huge_pages`] of more fails.
    ///
    /// # Errors
    /// [`Error::NotSupported`] when the kernel has no pool of this size; the
    /// errno of a failed read ([`Error::Sys`]); an unparsable count is
    /// [`crate::ErrorKind::Malformed`].
    pub fn free_pages(self) -> Result<u64> {
        const OP: &str = "read(free_hugepages)";
        let dir = self.sysfs_dir();
        if !dir.is_dir() {
            return Err(Error::NotSupported {
                op: OP,
                target: Target::None,
                reason: "the kernel has no hugetlb pool of this page size",
            });
        }
        let text = std::fs::read_to_string(dir.join("free_hugepages"))
            .map_err(|e| Error::from_io(OP, Target::None, &e))?;
        text.trim()
            .parse()
            .map_err(|e| Error::other(OP, Target::None, crate::ErrorKind::Malformed, e))
    }

    /// The `mmap` flags that ask the pool of this size for the pages.
    fn mmap_flags(self) -> i32 {
        // The kernel's uapi (`MAP_HUGE_SHIFT` = 26): log2 of the size in
        // the flag bits above it; libc lacks the constants on some targets.
        const MAP_HUGE_SHIFT: i32 = 26;
        libc::MAP_HUGETLB | ((self.bytes().trailing_zeros() as i32) << MAP_HUGE_SHIFT)
    }
}

/// What pages back a [`DmaBuffer`]: what the IOMMU can map it with.
///
/// Type1 and iommufd pin the buffer's pages and map every physically
/// contiguous run with the largest IOMMU page that fits it
/// ([`crate::IommuInfo::page_sizes`]), so a buffer of huge pages is mapped
/// with far fewer, larger IOMMU entries (and pinned in far fewer steps)
/// than one of base pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageBacking {
    /// Whatever the kernel's transparent-huge-page policy gives anonymous
    /// memory ([`DmaBuffer::new`]).
    Default,
    /// Base pages only (`MADV_NOHUGEPAGE`).
    Base,
    /// Transparent huge pages, asked for (`MADV_HUGEPAGE`, 2 MiB-aligned
    /// start and length); the kernel gives them where it can, base pages
    /// elsewhere.
    Transparent,
    /// Pages of a hugetlb pool (`MAP_HUGETLB`), reserved when the buffer is
    /// made and returned to the pool when it is dropped.
    HugeTlb(HugePageSize),
}

/// Transparent huge pages are PMD-sized: 2 MiB on x86-64.
const THP_SIZE: usize = 2 << 20;

/// `MADV_POPULATE_WRITE` (Linux 5.14): fault every page in, writable.
const MADV_POPULATE_WRITE: i32 = 23;

impl DmaBuffer {
    /// Allocates `len` zeroed bytes, rounded up to whole pages.
    pub fn new(len: usize) -> Result<Self> {
        let page = page_size() as usize;
        let rounded = len.checked_next_multiple_of(page).ok_or(Error::Overflow {
            op: "DmaBuffer::new",
            target: Target::None,
            offset: 0,
            len: len as u64,
        })?;
        let map = Mapping::new(
            "mmap(DmaBuffer)",
            rounded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        Ok(Self {
            map,
            backing: PageBacking::Default,
        })
    }

    /// Allocates `len` zeroed bytes (rounded up to whole pages of the
    /// backing) backed as `backing` asks.
    ///
    /// A VMM backs guest RAM with huge pages so that the IOMMU maps it with
    /// huge pages too: see [`PageBacking`].
    ///
    /// # Errors
    /// - [`PageBacking::HugeTlb`] with a size the kernel offers no pool of
    ///   (no [`HugePageSize::sysfs_dir`]): [`Error::NotSupported`].
    /// - A pool with fewer free pages than the buffer needs: the kernel's
    ///   `ENOMEM` ([`Error::Sys`], [`crate::ErrorKind::Exhausted`]); the
    ///   pool's size is `vm.nr_hugepages` (or the size's `nr_hugepages`).
    /// - [`PageBacking::Transparent`] or [`PageBacking::Base`] on a kernel
    ///   without transparent huge pages: the kernel's `EINVAL` from
    ///   `madvise` ([`Error::Sys`]).
    pub fn with_backing(len: usize, backing: PageBacking) -> Result<Self> {
        const OP: &str = "DmaBuffer::with_backing";
        let overflow = |align: usize| Error::Overflow {
            op: OP,
            target: Target::None,
            offset: align as u64,
            len: len as u64,
        };
        if len == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                target: Target::None,
                reason: "length must not be zero",
            });
        }
        let map = match backing {
            PageBacking::Default => return Self::new(len),
            PageBacking::Base => {
                let buf = Self::new(len)?;
                buf.advise("madvise(MADV_NOHUGEPAGE)", libc::MADV_NOHUGEPAGE)?;
                buf.map
            }
            PageBacking::Transparent => {
                let rounded = len
                    .checked_next_multiple_of(THP_SIZE)
                    .ok_or_else(|| overflow(THP_SIZE))?;
                let buf = Self::with_alignment(rounded, THP_SIZE)?;
                buf.advise("madvise(MADV_HUGEPAGE)", libc::MADV_HUGEPAGE)?;
                buf.map
            }
            PageBacking::HugeTlb(size) => {
                if !size.sysfs_dir().is_dir() {
                    return Err(Error::NotSupported {
                        op: OP,
                        target: Target::None,
                        reason: "the kernel has no hugetlb pool of this page size",
                    });
                }
                let rounded = len
                    .checked_next_multiple_of(size.bytes())
                    .ok_or_else(|| overflow(size.bytes()))?;
                // A private hugetlb mapping reserves its pages here: a pool
                // too small fails now (ENOMEM), not at the first touch.
                Mapping::new(
                    "mmap(DmaBuffer, MAP_HUGETLB)",
                    rounded,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | size.mmap_flags(),
                    -1,
                    0,
                )?
            }
        };
        Ok(Self { map, backing })
    }

    /// [`DmaBuffer::with_backing`] with pages of the hugetlb pool of `size`.
    ///
    /// ```
    /// use vfio_hal::prelude::*;
    /// use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind, HugePageSize, PageBacking};
    /// use vfio_hal_mock::MockContainer;
    ///
    /// // Guest RAM from the 2 MiB pool when there is one, else base pages.
    /// let ram = match DmaBuffer::with_huge_pages(4 << 20, HugePageSize::Size2MiB) {
    ///     Ok(ram) => {
    ///         assert_eq!(ram.backing(), PageBacking::HugeTlb(HugePageSize::Size2MiB));
    ///         assert_eq!(ram.as_ptr() as usize % (2 << 20), 0, "huge-page aligned");
    ///         ram
    ///     }
    ///     // No pool of that size, or too few free pages in it.
    ///     Err(e) if matches!(e.kind(), ErrorKind::NotSupported | ErrorKind::Exhausted) => {
    ///         DmaBuffer::new(4 << 20)?
    ///     }
    ///     Err(e) => return Err(e),
    /// };
    /// assert_eq!(ram.len(), 4 << 20);
    /// let container = MockContainer::new();
    /// let ram = container.map_buffer(0x4000_0000, ram, DmaAccess::ReadWrite)?;
    /// assert_eq!(ram.unmap()?.len(), 4 << 20);
    /// # Ok::<(), vfio_hal::Error>(())
    /// ```
    pub fn with_huge_pages(len: usize, size: HugePageSize) -> Result<Self> {
        Self::with_backing(len, PageBacking::HugeTlb(size))
    }

    /// What pages were asked for to back the buffer.
    pub fn backing(&self) -> PageBacking {
        self.backing
    }

    /// Faults every page in, writable (`MADV_POPULATE_WRITE`), so that
    /// pinning it for a DMA map finds the pages present instead of
    /// allocating and zeroing them: the cost moves from the map call to
    /// here. Kernels before 5.14 lack the advice: `EINVAL` ([`Error::Sys`]).
    pub fn populate(&self) -> Result<()> {
        self.advise("madvise(MADV_POPULATE_WRITE)", MADV_POPULATE_WRITE)
    }

    fn advise(&self, op: &'static str, advice: i32) -> Result<()> {
        // SAFETY: the whole range is this buffer's own anonymous mapping;
        // these advices change neither its contents (NOHUGEPAGE, HUGEPAGE)
        // nor its validity (POPULATE_WRITE faults zero pages in), and no
        // reference into it exists.
        if unsafe { libc::madvise(self.map.ptr.as_ptr().cast(), self.map.len, advice) } != 0 {
            return Err(Error::last_os_error(op, Target::None));
        }
        Ok(())
    }

    /// Allocates `len` zeroed bytes (rounded up to whole pages) whose host
    /// address is aligned to `align`, a power of two.
    ///
    /// Needed when the IOMMU's smallest page is larger than the host page
    /// (e.g. 64 KiB): the kernel refuses a map whose host address is not
    /// aligned to it.
    pub fn with_alignment(len: usize, align: usize) -> Result<Self> {
        let page = page_size() as usize;
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument {
                op: "DmaBuffer::with_alignment",
                target: Target::None,
                reason: "alignment must be a power of two",
            });
        }
        if align <= page {
            return Self::new(len);
        }
        let overflow = || Error::Overflow {
            op: "DmaBuffer::with_alignment",
            target: Target::None,
            offset: align as u64,
            len: len as u64,
        };
        let rounded = len.checked_next_multiple_of(page).ok_or_else(overflow)?;
        let padded = rounded.checked_add(align).ok_or_else(overflow)?;
        let map = Mapping::new(
            "mmap(DmaBuffer)",
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        Ok(Self {
            map: map.trim_to_aligned(align, rounded)?,
            backing: PageBacking::Default,
        })
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Always false: a buffer holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Host address of the first byte, for a raw DMA map.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Copies `out.len()` bytes starting at `offset` out of the buffer.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.map.read(offset, out)
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.map.write(offset, data)
    }

    /// Copies the whole buffer out.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        // In bounds by construction.
        let _ = self.read(0, &mut v);
        v
    }

    /// Fills the whole buffer with `byte`.
    pub fn fill(&self, byte: u8) {
        let _ = self.write(0, &vec![byte; self.len()]);
    }
}

/// A mmapped window of a device region (one sparse-mmap area), unmapped on drop.
///
/// Loads and stores are volatile and of exactly the requested width, so they
/// reach device registers as single accesses.
#[derive(Debug)]
pub struct MmapArea {
    // Shared only with `MmapDetacher`s, which hold it weakly.
    map: Arc<Mapping>,
    region_offset: u64,
    writable: bool,
}

impl MmapArea {
    /// Maps `len` bytes of `fd` at `file_offset`; the area covers
    /// `[region_offset, region_offset + len)` of its region.
    pub fn map_fd(
        fd: BorrowedFd<'_>,
        file_offset: u64,
        len: u64,
        region_offset: u64,
        writable: bool,
    ) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::Overflow {
            op: "mmap",
            target: Target::None,
            offset: file_offset,
            len,
        })?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let map = Mapping::new(
            "mmap",
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            file_offset,
        )?;
        Ok(Self {
            map: Arc::new(map),
            region_offset,
            writable,
        })
    }

    /// Offset of this window from the start of its region.
    pub fn region_offset(&self) -> u64 {
        self.region_offset
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.map.len as u64
    }

    /// Always false: an area has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether stores are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Host address of the window, e.g. for a KVM user memory region.
    ///
    /// Dereferencing it is the caller's responsibility (and `unsafe`).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Whether `[region_offset, +len)` of the region lies inside this window.
    pub fn covers(&self, region_offset: u64, len: u64) -> bool {
        region_offset >= self.region_offset
            && region_offset
                .checked_add(len)
                .is_some_and(|end| end <= self.region_offset + self.len())
    }

    /// One volatile load of `T` at `offset` from the window's start.
    ///
    /// For device registers. Memory another Rust thread writes concurrently
    /// (a mock RAM BAR its device model writes) wants [`Self::read`]: see
    /// [`crate::shared_memory`].
    pub fn load<T: Scalar>(&self, offset: u64) -> Result<T> {
        self.map.load(offset)
    }

    /// One volatile store of `T` at `offset` from the window's start.
    pub fn store<T: Scalar>(&self, offset: u64, value: T) -> Result<()> {
        if !self.writable {
            return Err(Error::NotSupported {
                op: "mmio store",
                target: Target::None,
                reason: "area is mapped read-only",
            });
        }
        self.map.store(offset, value)
    }

    /// Lets go of the device behind the window, keeping the address range:
    /// the pages become private zero-filled memory, so the process no longer
    /// references the device file (the kernel counts a mapping as a use of
    /// the device, and a removal waits for it), while an access racing with
    /// this — or any later one — reads zeros and writes nowhere instead of
    /// faulting. Idempotent; what [`crate::revoke`] does to cached mmaps.
    pub fn detach(&self) -> Result<()> {
        self.map.replace_with_zero_pages("mmap(detach)")
    }

    /// A handle that can [`detach`](Self::detach) this window later without
    /// owning it: how a backend's revocation reaches the mmaps it handed
    /// out. It holds the window weakly, so dropping the area still unmaps.
    pub fn detacher(&self) -> MmapDetacher {
        MmapDetacher(Arc::downgrade(&self.map))
    }

    /// Copies bytes out of the window, one [`crate::shared_memory`] byte access
    /// each (no width guarantee: for RAM-like BARs; registers want [`Self::load`]).
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.map.read(offset, out)
    }

    /// Copies bytes into the window, one [`crate::shared_memory`] byte access
    /// each (no width guarantee: for RAM-like BARs; registers want [`Self::store`]).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::NotSupported {
                op: "mmio store",
                target: Target::None,
                reason: "area is mapped read-only",
            });
        }
        self.map.write(offset, data)
    }
}

/// Detaches an [`MmapArea`] that someone else owns; see
/// [`MmapArea::detacher`].
#[derive(Debug, Clone)]
pub struct MmapDetacher(Weak<Mapping>);

impl MmapDetacher {
    /// Detaches the window ([`MmapArea::detach`]); `Ok` and nothing to do
    /// once the area is dropped (its pages are unmapped then).
    pub fn detach(&self) -> Result<()> {
        // The upgrade keeps the mapping alive for the call: an owner
        // dropping the area meanwhile unmaps it only afterwards.
        match self.0.upgrade() {
            Some(map) => map.replace_with_zero_pages("mmap(detach)"),
            None => Ok(()),
        }
    }

    /// Whether the area it detaches is dropped.
    pub fn is_dropped(&self) -> bool {
        self.0.strong_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn dma_buffer_rounds_to_pages_and_is_zeroed() {
        let b = DmaBuffer::new(10).expect("alloc");
        assert_eq!(b.len() as u64, page_size());
        assert!(b.to_vec().iter().all(|&x| x == 0));
    }

    #[test]
    fn dma_buffer_access_is_bounds_checked() {
        let b = DmaBuffer::new(4096).expect("alloc");
        b.write(4090, &[1, 2, 3]).expect("in bounds");
        let mut out = [0u8; 3];
        b.read(4090, &mut out).expect("in bounds");
        assert_eq!(out, [1, 2, 3]);
        let e = b
            .read(b.len() as u64 - 1, &mut [0u8; 2])
            .expect_err("past end");
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
        let e = b.write(u64::MAX, &[1]).expect_err("wraps");
        assert_eq!(e.kind(), ErrorKind::Overflow);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's munmap frees only whole mappings; with_alignment trims its padding"
    )]
    fn aligned_buffers_are_aligned_and_usable() {
        for align in [4096usize, 1 << 16, 1 << 21] {
            let b = DmaBuffer::with_alignment(8192, align).expect("alloc");
            assert_eq!(b.as_ptr() as usize % align, 0, "align {align}");
            assert_eq!(b.len(), 8192);
            b.write(8191, &[7]).expect("last byte writable");
        }
        assert!(DmaBuffer::with_alignment(4096, 3).is_err());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "memfd_create and MAP_FIXED are system calls Miri lacks"
    )]
    fn a_detached_area_keeps_its_address_and_lets_go_of_the_file() {
        use std::io::Write;
        use std::os::fd::{AsFd, FromRawFd, OwnedFd};
        let name = c"vfio-hal-detach-test";
        // SAFETY: memfd_create takes a valid C string; the result is checked.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(
            raw >= 0,
            "memfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(fd);
        file.write_all(&[0xab; 4096]).expect("fill the file");
        let area = MmapArea::map_fd(file.as_fd(), 0, 4096, 0x1000, true).expect("map");
        let in_maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .expect("maps")
                .lines()
                .any(|l| l.contains("vfio-hal-detach-test"))
        };
        assert_eq!(area.load::<u32>(0).expect("load"), 0xabab_abab);
        assert!(in_maps(), "the file is mapped");
        let ptr = area.as_ptr();

        area.detach().expect("detach");
        assert!(!in_maps(), "the mapping still references the file");
        assert_eq!(area.as_ptr(), ptr, "same address");
        assert_eq!(area.load::<u32>(0).expect("load after"), 0, "zero pages");
        area.store(8, 7u64).expect("store after");
        area.detach().expect("idempotent");
        let detacher = area.detacher();
        assert!(!detacher.is_dropped());
        detacher.detach().expect("through the detacher");
        drop(area);
        assert!(detacher.is_dropped());
        detacher.detach().expect("nothing left to detach");
        let mut back = [0u8; 4];
        std::os::unix::fs::FileExt::read_at(&file, &mut back, 8).expect("read the file");
        assert_eq!(back, [0xab; 4], "a store after detach reached the file");
    }

    #[test]
    #[cfg_attr(miri, ignore = "madvise is a system call Miri lacks")]
    fn base_and_transparent_backings_are_usable_and_populate() {
        let base = DmaBuffer::with_backing(10, PageBacking::Base).expect("base");
        assert_eq!(base.len() as u64, page_size());
        assert_eq!(base.backing(), PageBacking::Base);
        base.populate().expect("populate");
        assert!(base.to_vec().iter().all(|&x| x == 0), "zeroed");

        let thp = DmaBuffer::with_backing(THP_SIZE + 1, PageBacking::Transparent).expect("thp");
        assert_eq!(thp.len(), 2 * THP_SIZE, "whole huge pages");
        assert_eq!(thp.as_ptr() as usize % THP_SIZE, 0, "huge-page aligned");
        assert_eq!(thp.backing(), PageBacking::Transparent);
        thp.populate().expect("populate");
        thp.write(thp.len() as u64 - 1, &[9]).expect("last byte");
    }

    #[test]
    #[cfg_attr(miri, ignore = "MAP_HUGETLB and sysfs are outside Miri")]
    fn huge_tlb_buffers_come_from_the_pool_or_say_why_not() {
        for size in [HugePageSize::Size2MiB, HugePageSize::Size1GiB] {
            match DmaBuffer::with_huge_pages(100, size) {
                Ok(b) => {
                    assert_eq!(b.len(), size.bytes(), "one whole huge page");
                    assert_eq!(b.as_ptr() as usize % size.bytes(), 0);
                    assert_eq!(b.backing(), PageBacking::HugeTlb(size));
                    b.write(b.len() as u64 - 1, &[1]).expect("last byte");
                }
                Err(e) if !size.sysfs_dir().is_dir() => {
                    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
                    let e = size.free_pages().expect_err("no pool");
                    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
                }
                // An empty pool (the usual host) refuses the reservation.
                Err(e) => {
                    size.free_pages().expect("the pool's count reads");
                    assert_eq!(e.kind(), ErrorKind::Exhausted, "{e}");
                    assert!(
                        matches!(
                            e,
                            Error::Sys {
                                errno: libc::ENOMEM,
                                ..
                            }
                        ),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn huge_page_sizes_and_their_pools() {
        assert_eq!(HugePageSize::Size2MiB.bytes(), 2 << 20);
        assert_eq!(HugePageSize::Size1GiB.bytes(), 1 << 30);
        assert_eq!(
            HugePageSize::Size2MiB.sysfs_dir(),
            std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB")
        );
        // MAP_HUGE_2MB and MAP_HUGE_1GB of the kernel's uapi.
        assert_eq!(
            HugePageSize::Size2MiB.mmap_flags(),
            libc::MAP_HUGETLB | 21 << 26
        );
        assert_eq!(
            HugePageSize::Size1GiB.mmap_flags(),
            libc::MAP_HUGETLB | 30 << 26
        );
    }

    #[test]
    fn backed_buffers_refuse_zero_length_and_overflow() {
        for backing in [
            PageBacking::Default,
            PageBacking::Base,
            PageBacking::Transparent,
            PageBacking::HugeTlb(HugePageSize::Size2MiB),
        ] {
            let e = DmaBuffer::with_backing(0, backing).expect_err("zero");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{backing:?}");
        }
        let e = DmaBuffer::with_backing(usize::MAX, PageBacking::Transparent).expect_err("huge");
        assert_eq!(e.kind(), ErrorKind::Overflow);
    }

    #[test]
    fn zero_length_buffer_is_refused_and_huge_one_overflows() {
        assert_eq!(
            DmaBuffer::new(0).expect_err("zero").kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            DmaBuffer::new(usize::MAX).expect_err("huge").kind(),
            ErrorKind::Overflow
        );
    }
}
