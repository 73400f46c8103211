//! Raw iommufd and VFIO-cdev ioctls: request numbers and one small wrapper per call.
//!
//! Every iommufd command is `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_*)` with
//! `IOMMUFD_TYPE = ';'` and the commands numbered from `0x80`, and its argument
//! starts with its own `size` (so the kernel can grow the structs): see
//! `include/uapi/linux/iommufd.h` (checked against Linux 6.12 — the lane's
//! guest kernel — and against upstream, where `IOMMUFD_CMD_IOAS_MAP_FILE =
//! 0x8f` arrived in 6.13; `iommufd-bindings` 0.2, generated from 7.1, carries
//! the same `IOMMUFD_CMD_*` values, which the tests compare). The cdev
//! commands are `_IO(VFIO_TYPE, VFIO_BASE + 18..=20)` from
//! `include/uapi/linux/vfio.h`, with `VFIO_TYPE = ';'` and `VFIO_BASE = 100`;
//! their request numbers, `_IO` and the generic ioctl wrapper are the kernel
//! plumbing's ([`vfio_hal_linux::sys`]), shared rather than repeated.
//!
//! The argument structs come from `iommufd-bindings` and `vfio-bindings`.
//! Where a struct grew after 6.12, the wrappers send the size of the part
//! every kernel since the call's introduction understands, so old kernels do
//! not refuse them with `E2BIG`/`EINVAL`.
//!
//! Every wrapper returns [`vfio_hal::Error::Sys`] with the ioctl's name; the
//! errno is kept, so [`vfio_hal::ErrorKind`] follows the kernel's documented
//! meanings (ENOTTY: no such command; EOPNOTSUPP: a value the kernel does not
//! support; ENOENT: no such object, or nothing mapped at an IOVA).

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use iommufd_bindings as iommu;
use vfio_bindings::bindings::vfio;
use vfio_hal::{Error, IovaRange, Result, Target};
use vfio_hal_linux::sys::{io, ioctl_with_mut_ref, Errno, Request};
pub use vfio_hal_linux::sys::{
    VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT,
};

/// The ioctl type byte of iommufd (the same `';'` as VFIO's).
pub const IOMMUFD_TYPE: u8 = b';';

/// The iommufd request `_IO(IOMMUFD_TYPE, nr)`.
const fn iommufd(name: &'static str, nr: u8) -> Request {
    Request::new(name, io(IOMMUFD_TYPE, nr))
}

/// `IOMMU_DESTROY`: destroy any object by id.
pub const IOMMU_DESTROY: Request = iommufd("IOMMU_DESTROY", 0x80);
/// `IOMMU_IOAS_ALLOC`: allocate an IO address space.
pub const IOMMU_IOAS_ALLOC: Request = iommufd("IOMMU_IOAS_ALLOC", 0x81);
/// `IOMMU_IOAS_ALLOW_IOVAS`: pin the IOVA ranges an IOAS must keep usable.
pub const IOMMU_IOAS_ALLOW_IOVAS: Request = iommufd("IOMMU_IOAS_ALLOW_IOVAS", 0x82);
/// `IOMMU_IOAS_COPY`: copy a mapping from one IOAS into another.
pub const IOMMU_IOAS_COPY: Request = iommufd("IOMMU_IOAS_COPY", 0x83);
/// `IOMMU_IOAS_IOVA_RANGES`: the usable IOVA ranges and the IOVA alignment.
pub const IOMMU_IOAS_IOVA_RANGES: Request = iommufd("IOMMU_IOAS_IOVA_RANGES", 0x84);
/// `IOMMU_IOAS_MAP`: map user memory.
pub const IOMMU_IOAS_MAP: Request = iommufd("IOMMU_IOAS_MAP", 0x85);
/// `IOMMU_IOAS_UNMAP`: unmap whole mappings inside a range.
pub const IOMMU_IOAS_UNMAP: Request = iommufd("IOMMU_IOAS_UNMAP", 0x86);
/// `IOMMU_OPTION`: get or set a global or per-object option.
pub const IOMMU_OPTION: Request = iommufd("IOMMU_OPTION", 0x87);
/// `IOMMU_VFIO_IOAS`: the IOAS the VFIO compatibility container uses.
pub const IOMMU_VFIO_IOAS: Request = iommufd("IOMMU_VFIO_IOAS", 0x88);
/// `IOMMU_HWPT_ALLOC`: allocate a hardware page table.
pub const IOMMU_HWPT_ALLOC: Request = iommufd("IOMMU_HWPT_ALLOC", 0x89);
/// `IOMMU_GET_HW_INFO`: the IOMMU behind a bound device.
pub const IOMMU_GET_HW_INFO: Request = iommufd("IOMMU_GET_HW_INFO", 0x8a);
/// `IOMMU_HWPT_SET_DIRTY_TRACKING`: start or stop dirty tracking (Linux 6.7).
pub const IOMMU_HWPT_SET_DIRTY_TRACKING: Request = iommufd("IOMMU_HWPT_SET_DIRTY_TRACKING", 0x8b);
/// `IOMMU_HWPT_GET_DIRTY_BITMAP`: read (and clear) the dirty bits (Linux 6.7).
pub const IOMMU_HWPT_GET_DIRTY_BITMAP: Request = iommufd("IOMMU_HWPT_GET_DIRTY_BITMAP", 0x8c);
/// `IOMMU_IOAS_MAP_FILE`: map a range of a memfd (Linux 6.13).
pub const IOMMU_IOAS_MAP_FILE: Request = iommufd("IOMMU_IOAS_MAP_FILE", 0x8f);

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the given IOVA rather than a kernel-chosen one.
pub const MAP_FIXED_IOVA: u32 = iommu::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA;
/// `IOMMU_IOAS_MAP_WRITEABLE`: the device may write.
pub const MAP_WRITEABLE: u32 = iommu::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
/// `IOMMU_IOAS_MAP_READABLE`: the device may read.
pub const MAP_READABLE: u32 = iommu::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;
/// `IOMMU_HWPT_ALLOC_NEST_PARENT`.
pub const HWPT_ALLOC_NEST_PARENT: u32 =
    iommu::iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT;
/// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: refuse the allocation unless the IOMMU tracks dirty pages.
pub const HWPT_ALLOC_DIRTY_TRACKING: u32 =
    iommu::iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
/// `IOMMU_HW_CAP_DIRTY_TRACKING` in `out_capabilities` of `IOMMU_GET_HW_INFO`.
pub const HW_CAP_DIRTY_TRACKING: u64 =
    iommu::iommufd_hw_capabilities_IOMMU_HW_CAP_DIRTY_TRACKING as u64;
/// `IOMMU_HWPT_DIRTY_TRACKING_ENABLE`.
pub const DIRTY_TRACKING_ENABLE: u32 =
    iommu::iommufd_hwpt_set_dirty_tracking_flags_IOMMU_HWPT_DIRTY_TRACKING_ENABLE;
/// `IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR`: read without clearing.
pub const GET_DIRTY_BITMAP_NO_CLEAR: u32 =
    iommu::iommufd_hwpt_get_dirty_bitmap_flags_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR;
/// `IOMMU_OPTION_RLIMIT_MODE` (global: object id 0).
pub const OPTION_RLIMIT_MODE: u32 = iommu::iommufd_option_IOMMU_OPTION_RLIMIT_MODE;
/// `IOMMU_OPTION_HUGE_PAGES` (per IOAS).
pub const OPTION_HUGE_PAGES: u32 = iommu::iommufd_option_IOMMU_OPTION_HUGE_PAGES;
/// `IOMMU_OPTION_OP_SET`.
pub const OPTION_OP_SET: u16 = iommu::iommufd_option_ops_IOMMU_OPTION_OP_SET as u16;
/// `IOMMU_OPTION_OP_GET`.
pub const OPTION_OP_GET: u16 = iommu::iommufd_option_ops_IOMMU_OPTION_OP_GET as u16;

/// Most IOVA ranges [`ioas_iova_ranges`] accepts from the kernel (x86 reports
/// a handful; the bound keeps a confused kernel from making us allocate).
pub const MAX_IOVA_RANGES: u32 = 1 << 16;
/// Most bytes of vendor data [`get_hw_info`] reads (VT-d: 24, SMMUv3: 40).
pub const MAX_HW_INFO_DATA: u32 = 4096;

/// The `size` (or `argsz`) field value for `T`.
fn size32<T>() -> u32 {
    // Every uAPI struct here is tens of bytes.
    size_of::<T>() as u32
}

/// Issues `req` on `fd` with a pointer to `arg`; on failure the typed error
/// names the request and `target`.
///
/// # Safety
/// As [`ioctl_with_mut_ref`]: `req` must take a `T` (iommufd and the VFIO
/// cdev calls read and write it in place, sized by its first field), and
/// every user pointer inside `arg` must be valid for what the kernel does
/// with it for that request.
unsafe fn call<T>(fd: BorrowedFd<'_>, req: Request, arg: &mut T, target: Target) -> Result<()> {
    // SAFETY: passed on unchanged from this function's contract.
    match unsafe { ioctl_with_mut_ref(fd, req, arg) } {
        Ok(_) => Ok(()),
        Err(errno) => Err(errno.into_error(req.name, target)),
    }
}

/// As [`call`], but hands back the raw errno for callers that branch on it.
///
/// # Safety
/// As [`call`].
unsafe fn call_errno<T>(fd: BorrowedFd<'_>, req: Request, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: passed on unchanged from this function's contract.
    unsafe { ioctl_with_mut_ref(fd, req, arg) }.map(drop)
}

// ---------------------------------------------------------------------------
// iommufd objects
// ---------------------------------------------------------------------------

/// `IOMMU_DESTROY`: destroys the object `id` (IOAS, HWPT, …).
pub fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> Result<()> {
    let mut cmd = iommu::iommu_destroy {
        size: size32::<iommu::iommu_destroy>(),
        id,
    };
    // SAFETY: IOMMU_DESTROY takes a struct iommu_destroy, which has no pointers.
    unsafe { call(iommufd, IOMMU_DESTROY, &mut cmd, Target::None) }
}

/// `IOMMU_IOAS_ALLOC`: allocates an IOAS and returns its id.
pub fn ioas_alloc(iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut cmd = iommu::iommu_ioas_alloc {
        size: size32::<iommu::iommu_ioas_alloc>(),
        ..Default::default()
    };
    // SAFETY: IOMMU_IOAS_ALLOC takes a struct iommu_ioas_alloc, which has no pointers.
    unsafe { call(iommufd, IOMMU_IOAS_ALLOC, &mut cmd, Target::None) }?;
    Ok(cmd.out_ioas_id)
}

/// What `IOMMU_IOAS_IOVA_RANGES` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovaRanges {
    /// The usable ranges, ascending.
    pub ranges: Vec<IovaRange>,
    /// `out_iova_alignment`: IOVA and length of a map must be multiples of it
    /// (1 until a device narrows it; never above the host page size).
    pub alignment: u64,
}

/// `IOMMU_IOAS_IOVA_RANGES`, with the kernel's two-call size protocol.
///
/// The first call offers a small array; if the kernel answers `EMSGSIZE` with
/// a larger count, the call is repeated with that many (the ranges can change
/// between calls when devices attach, hence a few tries). Counts above
/// [`MAX_IOVA_RANGES`] are refused rather than allocated.
pub fn ioas_iova_ranges(iommufd: BorrowedFd<'_>, ioas: u32) -> Result<IovaRanges> {
    const OP: &str = "IOMMU_IOAS_IOVA_RANGES";
    const TRIES: usize = 4;
    let mut capacity: u32 = 8;
    for _ in 0..TRIES {
        let mut buf = vec![iommu::iommu_iova_range::default(); capacity as usize];
        let mut cmd = iommu::iommu_ioas_iova_ranges {
            size: size32::<iommu::iommu_ioas_iova_ranges>(),
            ioas_id: ioas,
            num_iovas: capacity,
            __reserved: 0,
            allowed_iovas: buf.as_mut_ptr() as u64,
            out_iova_alignment: 0,
        };
        // SAFETY: IOMMU_IOAS_IOVA_RANGES takes a struct iommu_ioas_iova_ranges;
        // allowed_iovas points to `buf`, which holds num_iovas (= its length)
        // entries, and the kernel writes at most num_iovas of them.
        match unsafe { call_errno(iommufd, IOMMU_IOAS_IOVA_RANGES, &mut cmd) } {
            Ok(()) => {
                let n = (cmd.num_iovas as usize).min(buf.len());
                let ranges = buf[..n]
                    .iter()
                    .map(|r| IovaRange {
                        start: r.start,
                        end: r.last,
                    })
                    .collect();
                return Ok(IovaRanges {
                    ranges,
                    alignment: cmd.out_iova_alignment,
                });
            }
            Err(Errno(libc::EMSGSIZE)) if cmd.num_iovas > capacity => {
                if cmd.num_iovas > MAX_IOVA_RANGES {
                    return Err(Error::Exhausted {
                        op: OP,
                        target: Target::None,
                        reason: "the kernel reports more IOVA ranges than MAX_IOVA_RANGES",
                    });
                }
                capacity = cmd.num_iovas;
            }
            Err(e) => return Err(e.into_error(OP, Target::None)),
        }
    }
    Err(Errno(libc::EMSGSIZE).into_error(OP, Target::None))
}

/// `IOMMU_IOAS_ALLOW_IOVAS`: replaces the IOAS's allowed list with `ranges`.
pub fn ioas_allow_iovas(iommufd: BorrowedFd<'_>, ioas: u32, ranges: &[IovaRange]) -> Result<()> {
    const OP: &str = "IOMMU_IOAS_ALLOW_IOVAS";
    let num_iovas = u32::try_from(ranges.len()).map_err(|_| Error::InvalidArgument {
        op: OP,
        target: Target::None,
        reason: "more than u32::MAX ranges",
    })?;
    let raw: Vec<iommu::iommu_iova_range> = ranges
        .iter()
        .map(|r| iommu::iommu_iova_range {
            start: r.start,
            last: r.end,
        })
        .collect();
    let mut cmd = iommu::iommu_ioas_allow_iovas {
        size: size32::<iommu::iommu_ioas_allow_iovas>(),
        ioas_id: ioas,
        num_iovas,
        __reserved: 0,
        allowed_iovas: raw.as_ptr() as u64,
    };
    // SAFETY: IOMMU_IOAS_ALLOW_IOVAS takes a struct iommu_ioas_allow_iovas;
    // allowed_iovas points to `raw`, num_iovas entries, which the kernel only reads.
    unsafe { call(iommufd, IOMMU_IOAS_ALLOW_IOVAS, &mut cmd, Target::None) }
}

/// `IOMMU_IOAS_MAP`: maps `[user_va, user_va + len)` into `ioas`.
///
/// With [`MAP_FIXED_IOVA`] in `flags` the mapping lands at `iova`; without,
/// the kernel picks an IOVA (inside the allowed ranges) and it is returned.
///
/// # Safety
/// The memory must stay mapped in this process until the range is unmapped
/// from `ioas` (and from every IOAS it is copied into), and the caller must
/// accept that a device may read or write it at any time (see
/// [`vfio_hal::Container::map_dma_raw`]).
pub unsafe fn ioas_map(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    flags: u32,
    user_va: u64,
    len: u64,
    iova: u64,
) -> Result<u64> {
    let mut cmd = iommu::iommu_ioas_map {
        size: size32::<iommu::iommu_ioas_map>(),
        flags,
        ioas_id: ioas,
        __reserved: 0,
        user_va,
        length: len,
        iova,
    };
    // SAFETY: IOMMU_IOAS_MAP takes a struct iommu_ioas_map. The kernel pins
    // the user range (it fails with EFAULT if it is not mapped); what devices
    // then do with it is the caller's contract above.
    unsafe {
        call(
            iommufd,
            IOMMU_IOAS_MAP,
            &mut cmd,
            Target::Iova { iova, len },
        )
    }?;
    Ok(cmd.iova)
}

/// `IOMMU_IOAS_MAP_FILE`: maps `len` bytes of the memfd `file` from offset
/// `start` into `ioas` (Linux 6.13; older kernels answer `ENOTTY`).
///
/// Safe, unlike [`ioas_map`]: the kernel pins the file's pages itself, so no
/// memory of this process can be freed underneath the mapping.
pub fn ioas_map_file(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    flags: u32,
    file: BorrowedFd<'_>,
    start: u64,
    len: u64,
    iova: u64,
) -> Result<u64> {
    let mut cmd = iommu::iommu_ioas_map_file {
        size: size32::<iommu::iommu_ioas_map_file>(),
        flags,
        ioas_id: ioas,
        fd: file.as_raw_fd(),
        start,
        length: len,
        iova,
    };
    // SAFETY: IOMMU_IOAS_MAP_FILE takes a struct iommu_ioas_map_file, which
    // carries an fd and offsets but no pointers into this process.
    unsafe {
        call(
            iommufd,
            IOMMU_IOAS_MAP_FILE,
            &mut cmd,
            Target::Iova { iova, len },
        )
    }?;
    Ok(cmd.iova)
}

/// Whether the kernel has `IOMMU_IOAS_MAP_FILE` (Linux 6.13).
///
/// Sends a request every kernel with the call must refuse — no access flags,
/// fd -1, length 0 — so nothing is ever mapped: a kernel without the command
/// answers `ENOTTY` (6.12 and older route unknown numbers to the VFIO
/// compatibility handler, which does the same), one with it `EINVAL` or
/// `EBADF`. Any other errno (e.g. `ENOENT` for a destroyed IOAS) is an error.
pub fn ioas_map_file_supported(iommufd: BorrowedFd<'_>, ioas: u32) -> Result<bool> {
    let mut cmd = iommu::iommu_ioas_map_file {
        size: size32::<iommu::iommu_ioas_map_file>(),
        flags: 0,
        ioas_id: ioas,
        fd: -1,
        start: 0,
        length: 0,
        iova: 0,
    };
    // SAFETY: IOMMU_IOAS_MAP_FILE takes a struct iommu_ioas_map_file, which
    // has no pointers; this request maps nothing (no permission flags).
    match unsafe { call_errno(iommufd, IOMMU_IOAS_MAP_FILE, &mut cmd) } {
        Err(Errno(libc::ENOTTY | libc::EOPNOTSUPP)) => Ok(false),
        Ok(()) | Err(Errno(libc::EBADF | libc::EINVAL)) => Ok(true),
        Err(e) => Err(e.into_error(IOMMU_IOAS_MAP_FILE.name, Target::None)),
    }
}

/// `IOMMU_IOAS_COPY`: maps the pages behind `[src_iova, src_iova + len)` of
/// `src` (which must be exactly one earlier map) into `dst`; returns the
/// destination IOVA (chosen by the kernel unless [`MAP_FIXED_IOVA`]).
///
/// # Safety
/// The host memory behind the source mapping must honour [`ioas_map`]'s
/// contract for `dst` too: it must stay mapped until unmapped from both.
#[allow(clippy::too_many_arguments)]
pub unsafe fn ioas_copy(
    iommufd: BorrowedFd<'_>,
    dst: u32,
    src: u32,
    flags: u32,
    src_iova: u64,
    len: u64,
    dst_iova: u64,
) -> Result<u64> {
    let mut cmd = iommu::iommu_ioas_copy {
        size: size32::<iommu::iommu_ioas_copy>(),
        flags,
        dst_ioas_id: dst,
        src_ioas_id: src,
        length: len,
        dst_iova,
        src_iova,
    };
    let target = Target::Iova {
        iova: src_iova,
        len,
    };
    // SAFETY: IOMMU_IOAS_COPY takes a struct iommu_ioas_copy, which has no
    // pointers; the lifetime of the shared pages is the caller's contract.
    unsafe { call(iommufd, IOMMU_IOAS_COPY, &mut cmd, target) }?;
    Ok(cmd.dst_iova)
}

/// `IOMMU_IOAS_UNMAP`: unmaps every mapping inside `[iova, iova + len)` and
/// returns the bytes unmapped. `(0, u64::MAX)` unmaps everything and then
/// succeeds with 0 on an empty IOAS; any other range holding no mapping (or
/// one that would split a mapping) fails with `ENOENT`
/// ([`vfio_hal::ErrorKind::NotMapped`]).
pub fn ioas_unmap(iommufd: BorrowedFd<'_>, ioas: u32, iova: u64, len: u64) -> Result<u64> {
    let mut cmd = iommu::iommu_ioas_unmap {
        size: size32::<iommu::iommu_ioas_unmap>(),
        ioas_id: ioas,
        iova,
        length: len,
    };
    // SAFETY: IOMMU_IOAS_UNMAP takes a struct iommu_ioas_unmap, which has no pointers.
    unsafe {
        call(
            iommufd,
            IOMMU_IOAS_UNMAP,
            &mut cmd,
            Target::Iova { iova, len },
        )
    }?;
    Ok(cmd.length)
}

/// `IOMMU_OPTION`: `op` ([`OPTION_OP_GET`] or [`OPTION_OP_SET`]) on option
/// `option` of `object` (0 for global options); returns the value.
pub fn option(
    iommufd: BorrowedFd<'_>,
    option: u32,
    op: u16,
    object: u32,
    value: u64,
) -> Result<u64> {
    let mut cmd = iommu::iommu_option {
        size: size32::<iommu::iommu_option>(),
        option_id: option,
        op,
        __reserved: 0,
        object_id: object,
        val64: value,
    };
    // SAFETY: IOMMU_OPTION takes a struct iommu_option, which has no pointers.
    unsafe { call(iommufd, IOMMU_OPTION, &mut cmd, Target::None) }?;
    Ok(cmd.val64)
}

/// Bytes of `struct iommu_hwpt_alloc` up to `data_uptr` — the 6.7 layout.
/// Later kernels appended `fault_id`, meaningful only with a flag we never set.
const HWPT_ALLOC_V1_SIZE: u32 = 40;

/// `IOMMU_HWPT_ALLOC` of a kernel-managed page table (`IOMMU_HWPT_DATA_NONE`)
/// for device `dev_id` over the IOAS `pt_id`; returns the HWPT id.
pub fn hwpt_alloc(iommufd: BorrowedFd<'_>, dev_id: u32, pt_id: u32, flags: u32) -> Result<u32> {
    let mut cmd = iommu::iommu_hwpt_alloc {
        size: HWPT_ALLOC_V1_SIZE,
        flags,
        dev_id,
        pt_id,
        ..Default::default()
    };
    // SAFETY: IOMMU_HWPT_ALLOC takes a struct iommu_hwpt_alloc; `size` covers
    // a prefix of it, and with data_type NONE data_uptr is null and unused.
    unsafe { call(iommufd, IOMMU_HWPT_ALLOC, &mut cmd, Target::None) }?;
    Ok(cmd.out_hwpt_id)
}

/// What `IOMMU_GET_HW_INFO` reports besides the vendor data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHwInfo {
    /// Bytes of vendor data the kernel has (may exceed what was read).
    pub data_len: u32,
    /// `enum iommu_hw_info_type` (1 = Intel VT-d, 2 = ARM SMMUv3, …).
    pub data_type: u32,
    /// `IOMMU_HW_CAP_*` bits.
    pub capabilities: u64,
    /// PASID width (0 on kernels before 6.14 or without PASID).
    pub max_pasid_log2: u8,
}

/// `IOMMU_GET_HW_INFO` for the bound device `dev_id`; the vendor data is
/// written into `data` (trailing bytes zeroed by the kernel).
pub fn get_hw_info(iommufd: BorrowedFd<'_>, dev_id: u32, data: &mut [u8]) -> Result<RawHwInfo> {
    const OP: &str = "IOMMU_GET_HW_INFO";
    let data_len = u32::try_from(data.len())
        .ok()
        .filter(|&n| n <= MAX_HW_INFO_DATA)
        .ok_or(Error::InvalidArgument {
            op: OP,
            target: Target::None,
            reason: "hardware-info buffer larger than MAX_HW_INFO_DATA",
        })?;
    let mut cmd = iommu::iommu_hw_info {
        size: size32::<iommu::iommu_hw_info>(),
        dev_id,
        data_len,
        data_uptr: if data.is_empty() {
            0
        } else {
            data.as_mut_ptr() as u64
        },
        ..Default::default()
    };
    // SAFETY: IOMMU_GET_HW_INFO takes a struct iommu_hw_info (the same 40
    // bytes since 6.7; flags 0 means no input type); data_uptr points to
    // `data`, data_len bytes, and the kernel writes at most data_len bytes.
    unsafe { call(iommufd, IOMMU_GET_HW_INFO, &mut cmd, Target::None) }?;
    // SAFETY: both union members are u32; after the call it holds out_data_type.
    let data_type = unsafe { cmd.__bindgen_anon_1.out_data_type };
    Ok(RawHwInfo {
        data_len: cmd.data_len,
        data_type,
        capabilities: cmd.out_capabilities,
        max_pasid_log2: cmd.out_max_pasid_log2,
    })
}

/// `IOMMU_HWPT_SET_DIRTY_TRACKING`: starts or stops dirty tracking on `hwpt`.
pub fn hwpt_set_dirty_tracking(iommufd: BorrowedFd<'_>, hwpt: u32, enable: bool) -> Result<()> {
    let mut cmd = iommu::iommu_hwpt_set_dirty_tracking {
        size: size32::<iommu::iommu_hwpt_set_dirty_tracking>(),
        flags: if enable { DIRTY_TRACKING_ENABLE } else { 0 },
        hwpt_id: hwpt,
        __reserved: 0,
    };
    // SAFETY: IOMMU_HWPT_SET_DIRTY_TRACKING takes a struct
    // iommu_hwpt_set_dirty_tracking, which has no pointers.
    unsafe {
        call(
            iommufd,
            IOMMU_HWPT_SET_DIRTY_TRACKING,
            &mut cmd,
            Target::None,
        )
    }
}

/// `IOMMU_HWPT_GET_DIRTY_BITMAP` for `[iova, iova + len)` at `page_size`
/// granularity into `bitmap` (bit `n` = page `n` of the range).
///
/// `bitmap` must hold at least `ceil(len / page_size)` bits; a shorter one is
/// refused here, because the kernel would write past it.
pub fn hwpt_get_dirty_bitmap(
    iommufd: BorrowedFd<'_>,
    hwpt: u32,
    iova: u64,
    len: u64,
    page_size: u64,
    flags: u32,
    bitmap: &mut [u64],
) -> Result<()> {
    const OP: &str = "IOMMU_HWPT_GET_DIRTY_BITMAP";
    let target = Target::Iova { iova, len };
    let words = bitmap_words(len, page_size).ok_or(Error::InvalidArgument {
        op: OP,
        target: target.clone(),
        reason: "page size must be a power of two and the range not empty",
    })?;
    if (bitmap.len() as u64) < words {
        return Err(Error::InvalidArgument {
            op: OP,
            target,
            reason: "bitmap too short for the range",
        });
    }
    let mut cmd = iommu::iommu_hwpt_get_dirty_bitmap {
        size: size32::<iommu::iommu_hwpt_get_dirty_bitmap>(),
        hwpt_id: hwpt,
        flags,
        __reserved: 0,
        iova,
        length: len,
        page_size,
        data: bitmap.as_mut_ptr() as u64,
    };
    // SAFETY: IOMMU_HWPT_GET_DIRTY_BITMAP takes a struct
    // iommu_hwpt_get_dirty_bitmap; `data` points to `bitmap`, 8-byte aligned
    // and checked above to hold one bit per page of the range, which is all
    // the kernel writes.
    unsafe { call(iommufd, IOMMU_HWPT_GET_DIRTY_BITMAP, &mut cmd, target) }
}

/// 64-bit words needed for one bit per `page_size` page of `len` bytes;
/// `None` for an empty range or a page size that is not a power of two.
pub fn bitmap_words(len: u64, page_size: u64) -> Option<u64> {
    if len == 0 || !page_size.is_power_of_two() {
        return None;
    }
    let pages = len.div_ceil(page_size);
    Some(pages.div_ceil(64))
}

// ---------------------------------------------------------------------------
// VFIO device cdev
// ---------------------------------------------------------------------------

/// `argsz` of `vfio_device_bind_iommufd` up to `out_devid` (6.6 layout; 6.17
/// appended a token pointer that is only read with a flag we never set).
const BIND_V1_SIZE: u32 = 16;
/// `argsz` of `vfio_device_attach_iommufd_pt` up to `pt_id` (6.6 layout;
/// `pasid` came later, read only with `VFIO_DEVICE_ATTACH_PASID`).
const ATTACH_V1_SIZE: u32 = 12;
/// `argsz` of `vfio_device_detach_iommufd_pt` up to `flags` (6.6 layout).
const DETACH_V1_SIZE: u32 = 8;

/// `VFIO_DEVICE_BIND_IOMMUFD`: binds the cdev `device` to `iommufd`; returns
/// the device id for iommufd commands. A second bind — of the same fd or of
/// another fd of a device already opened — fails with `EINVAL`.
pub fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut cmd = vfio::vfio_device_bind_iommufd {
        argsz: BIND_V1_SIZE,
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_BIND_IOMMUFD takes a struct vfio_device_bind_iommufd;
    // argsz covers a prefix of it and the token pointer is not used without
    // VFIO_DEVICE_BIND_FLAG_TOKEN.
    unsafe { call(device, VFIO_DEVICE_BIND_IOMMUFD, &mut cmd, Target::None) }?;
    Ok(cmd.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches the bound `device` to the IOAS
/// or HWPT `pt_id`; returns the page table it ended up on (for an IOAS, the
/// HWPT the kernel created or reused for it).
pub fn device_attach_pt(device: BorrowedFd<'_>, pt_id: u32) -> Result<u32> {
    let mut cmd = vfio::vfio_device_attach_iommufd_pt {
        argsz: ATTACH_V1_SIZE,
        flags: 0,
        pt_id,
        pasid: 0,
    };
    // SAFETY: VFIO_DEVICE_ATTACH_IOMMUFD_PT takes a struct
    // vfio_device_attach_iommufd_pt, which has no pointers.
    unsafe {
        call(
            device,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            &mut cmd,
            Target::None,
        )
    }?;
    Ok(cmd.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detaches `device`; its DMA is blocked afterwards.
pub fn device_detach_pt(device: BorrowedFd<'_>) -> Result<()> {
    let mut cmd = vfio::vfio_device_detach_iommufd_pt {
        argsz: DETACH_V1_SIZE,
        flags: 0,
        pasid: 0,
    };
    // SAFETY: VFIO_DEVICE_DETACH_IOMMUFD_PT takes a struct
    // vfio_device_detach_iommufd_pt, which has no pointers.
    unsafe {
        call(
            device,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            &mut cmd,
            Target::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The values `_IO(';', nr)` yields in `include/uapi/linux/iommufd.h`
    /// and `vfio.h` (x86 and every architecture but powerpc, mips and
    /// sparc, which add a direction bit), written out as numbers.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn request_numbers_match_the_uapi_headers() {
        let expected = [
            (IOMMU_DESTROY, 0x3b80),
            (IOMMU_IOAS_ALLOC, 0x3b81),
            (IOMMU_IOAS_ALLOW_IOVAS, 0x3b82),
            (IOMMU_IOAS_COPY, 0x3b83),
            (IOMMU_IOAS_IOVA_RANGES, 0x3b84),
            (IOMMU_IOAS_MAP, 0x3b85),
            (IOMMU_IOAS_UNMAP, 0x3b86),
            (IOMMU_OPTION, 0x3b87),
            (IOMMU_VFIO_IOAS, 0x3b88),
            (IOMMU_HWPT_ALLOC, 0x3b89),
            (IOMMU_GET_HW_INFO, 0x3b8a),
            (IOMMU_HWPT_SET_DIRTY_TRACKING, 0x3b8b),
            (IOMMU_HWPT_GET_DIRTY_BITMAP, 0x3b8c),
            (IOMMU_IOAS_MAP_FILE, 0x3b8f),
            (VFIO_DEVICE_BIND_IOMMUFD, 0x3b76),
            (VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77),
            (VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78),
        ];
        for (req, want) in expected {
            assert_eq!(req.code, want, "{}: {:#x} != {want:#x}", req.name, req.code);
        }
    }

    /// Cross-check against the command enum that `iommufd-bindings` generated
    /// from the kernel header, and the VFIO type/base from `vfio-bindings`.
    #[test]
    fn request_numbers_agree_with_the_generated_bindings() {
        let cmd = |nr: u32| io(iommu::IOMMUFD_TYPE, nr as u8);
        let pairs = [
            (IOMMU_DESTROY, iommu::IOMMUFD_CMD_DESTROY),
            (IOMMU_IOAS_ALLOC, iommu::IOMMUFD_CMD_IOAS_ALLOC),
            (IOMMU_IOAS_ALLOW_IOVAS, iommu::IOMMUFD_CMD_IOAS_ALLOW_IOVAS),
            (IOMMU_IOAS_COPY, iommu::IOMMUFD_CMD_IOAS_COPY),
            (IOMMU_IOAS_IOVA_RANGES, iommu::IOMMUFD_CMD_IOAS_IOVA_RANGES),
            (IOMMU_IOAS_MAP, iommu::IOMMUFD_CMD_IOAS_MAP),
            (IOMMU_IOAS_UNMAP, iommu::IOMMUFD_CMD_IOAS_UNMAP),
            (IOMMU_OPTION, iommu::IOMMUFD_CMD_OPTION),
            (IOMMU_VFIO_IOAS, iommu::IOMMUFD_CMD_VFIO_IOAS),
            (IOMMU_HWPT_ALLOC, iommu::IOMMUFD_CMD_HWPT_ALLOC),
            (IOMMU_GET_HW_INFO, iommu::IOMMUFD_CMD_GET_HW_INFO),
            (
                IOMMU_HWPT_SET_DIRTY_TRACKING,
                iommu::IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
            ),
            (
                IOMMU_HWPT_GET_DIRTY_BITMAP,
                iommu::IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP,
            ),
            (IOMMU_IOAS_MAP_FILE, iommu::IOMMUFD_CMD_IOAS_MAP_FILE),
        ];
        for (req, nr) in pairs {
            assert_eq!(req.code, cmd(nr), "{}", req.name);
        }
        assert_eq!(IOMMUFD_TYPE, iommu::IOMMUFD_TYPE);
        let vfio_cmd = |n: u32| io(vfio::VFIO_TYPE, (vfio::VFIO_BASE + n) as u8);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD.code, vfio_cmd(18));
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT.code, vfio_cmd(19));
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT.code, vfio_cmd(20));
    }

    /// The prefix sizes sent to old kernels end exactly where the 6.6/6.7
    /// structs ended, and the layouts match the uAPI.
    #[test]
    fn struct_layouts_and_compat_sizes() {
        assert_eq!(
            offset_of!(vfio::vfio_device_bind_iommufd, out_devid) + 4,
            BIND_V1_SIZE as usize
        );
        assert_eq!(
            offset_of!(vfio::vfio_device_attach_iommufd_pt, pt_id) + 4,
            ATTACH_V1_SIZE as usize
        );
        assert_eq!(
            offset_of!(vfio::vfio_device_detach_iommufd_pt, flags) + 4,
            DETACH_V1_SIZE as usize
        );
        assert_eq!(
            offset_of!(iommu::iommu_hwpt_alloc, data_uptr) + 8,
            HWPT_ALLOC_V1_SIZE as usize
        );
        assert_eq!(size_of::<iommu::iommu_ioas_map>(), 40);
        assert_eq!(size_of::<iommu::iommu_ioas_map_file>(), 40);
        assert_eq!(size_of::<iommu::iommu_ioas_unmap>(), 24);
        assert_eq!(size_of::<iommu::iommu_ioas_iova_ranges>(), 32);
        assert_eq!(size_of::<iommu::iommu_hw_info>(), 40);
        assert_eq!(offset_of!(iommu::iommu_hw_info, out_capabilities), 32);
        assert_eq!(MAP_FIXED_IOVA, 1);
        assert_eq!(MAP_WRITEABLE, 2);
        assert_eq!(MAP_READABLE, 4);
        assert_eq!(HWPT_ALLOC_DIRTY_TRACKING, 2);
        assert_eq!(HW_CAP_DIRTY_TRACKING, 1);
    }

    #[test]
    fn bitmap_words_rounds_up_and_rejects_nonsense() {
        assert_eq!(bitmap_words(4096, 4096), Some(1));
        assert_eq!(bitmap_words(64 * 4096, 4096), Some(1));
        assert_eq!(bitmap_words(64 * 4096 + 1, 4096), Some(2));
        assert_eq!(bitmap_words(u64::MAX, 4096), Some(u64::MAX / 4096 / 64 + 1));
        assert_eq!(bitmap_words(0, 4096), None);
        assert_eq!(bitmap_words(4096, 3000), None);
        assert_eq!(bitmap_words(4096, 0), None);
    }

    #[test]
    fn a_shorter_bitmap_is_refused_before_any_ioctl() {
        // stdin is not an iommufd; the length check must fire first.
        // SAFETY: fd 0 stays open for the test's duration.
        let fd = unsafe { BorrowedFd::borrow_raw(0) };
        let mut bitmap = [0u64; 1];
        let e = hwpt_get_dirty_bitmap(fd, 1, 0, 65 * 4096, 4096, 0, &mut bitmap)
            .expect_err("two words needed");
        assert_eq!(e.kind(), vfio_hal::ErrorKind::InvalidArgument);
        assert!(e.errno().is_none(), "{e}");
    }
}
