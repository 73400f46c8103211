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
}

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
        Ok(Self { map })
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
