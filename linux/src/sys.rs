//! The system-call layer: VFIO ioctl request numbers, the ioctl wrappers and
//! the few other raw calls (positioned I/O, the revocation placeholder).
//!
//! This is the only module of the crate that calls `ioctl` (the mmaps are
//! owned by [`vfio_hal::MmapArea`]). It has two layers:
//!
//! - four generic wrappers, [`ioctl_with_val`], [`ioctl_with_ref`],
//!   [`ioctl_with_mut_ref`] and [`ioctl_with_bytes`]. They are `unsafe`
//!   because their soundness depends on what the kernel does with the
//!   argument for that request number (the vmm-sys-util convention); they are
//!   public so that each backend issues its own requests (iommufd's
//!   `IOMMU_*`, for one) through them;
//! - safe, typed functions for every VFIO request this crate sends, each of
//!   which upholds the wrapper's contract for its one request. Other modules
//!   call only these.
//!
//! Every VFIO request is `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO encodes no size
//! or direction in its request numbers and puts `argsz` into the argument
//! instead. The numbers below were checked against
//! `include/uapi/linux/vfio.h` of torvalds/linux at commit
//! `02256acf1e81e42f6338a39020bf2de9807c33d7` (comments name the `VFIO_BASE`
//! offset each one uses there); `tests` re-derives them by hand.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap,
    VFIO_DMA_UNMAP_FLAG_ALL,
};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::{Error, Target};

/// An errno returned by a failed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current errno (read right after a failed call).
    pub fn last() -> Self {
        Self(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The typed HAL error for this errno: `op` failed on `target`.
    pub fn into_error(self, op: &'static str, target: Target) -> Error {
        Error::sys(op, target, self.0)
    }
}

/// Result of a raw system call.
pub type SysResult<T> = Result<T, Errno>;

/// `_IOC_NONE`, `_IOC_DIRSHIFT` and `_IOC_TYPESHIFT` of `<asm/ioctl.h>`:
/// powerpc, mips and sparc encode "no direction" as 1 in three direction
/// bits at 29; every other architecture as 0 in two bits at 30.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const IOC_NONE_BITS: u64 = 1 << 29;
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const IOC_NONE_BITS: u64 = 0;
const IOC_TYPESHIFT: u32 = 8;

/// `_IO(ty, nr)`: a request number without size or direction.
pub const fn io(ty: u8, nr: u8) -> u64 {
    IOC_NONE_BITS | ((ty as u64) << IOC_TYPESHIFT) | nr as u64
}

/// `VFIO_TYPE`, the ioctl "magic" `';'`.
pub const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE`: the first VFIO request number.
pub const VFIO_BASE: u8 = 100;

/// One ioctl request: its number and its uAPI name (kept for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The uAPI name, e.g. `VFIO_IOMMU_MAP_DMA`.
    pub name: &'static str,
    /// The request number passed to `ioctl(2)`.
    pub code: u64,
}

impl Request {
    /// A request named `name` with number `code` (for other ioctl families,
    /// e.g. iommufd's `_IO(';', 0x80 + n)`).
    pub const fn new(name: &'static str, code: u64) -> Self {
        Self { name, code }
    }

    /// The VFIO request `_IO(VFIO_TYPE, VFIO_BASE + offset)`.
    pub const fn vfio(name: &'static str, offset: u8) -> Self {
        Self::new(name, io(VFIO_TYPE, VFIO_BASE + offset))
    }
}

// Container (/dev/vfio/vfio) requests.
/// `VFIO_GET_API_VERSION`, `VFIO_BASE + 0`.
pub const VFIO_GET_API_VERSION: Request = Request::vfio("VFIO_GET_API_VERSION", 0);
/// `VFIO_CHECK_EXTENSION`, `VFIO_BASE + 1`.
pub const VFIO_CHECK_EXTENSION: Request = Request::vfio("VFIO_CHECK_EXTENSION", 1);
/// `VFIO_SET_IOMMU`, `VFIO_BASE + 2`.
pub const VFIO_SET_IOMMU: Request = Request::vfio("VFIO_SET_IOMMU", 2);
/// `VFIO_IOMMU_GET_INFO`, `VFIO_BASE + 12` (on the container fd).
pub const VFIO_IOMMU_GET_INFO: Request = Request::vfio("VFIO_IOMMU_GET_INFO", 12);
/// `VFIO_IOMMU_MAP_DMA`, `VFIO_BASE + 13`.
pub const VFIO_IOMMU_MAP_DMA: Request = Request::vfio("VFIO_IOMMU_MAP_DMA", 13);
/// `VFIO_IOMMU_UNMAP_DMA`, `VFIO_BASE + 14`.
pub const VFIO_IOMMU_UNMAP_DMA: Request = Request::vfio("VFIO_IOMMU_UNMAP_DMA", 14);
/// `VFIO_IOMMU_DIRTY_PAGES`, `VFIO_BASE + 17` (on the container fd).
pub const VFIO_IOMMU_DIRTY_PAGES: Request = Request::vfio("VFIO_IOMMU_DIRTY_PAGES", 17);

// Group (/dev/vfio/N) requests.
/// `VFIO_GROUP_GET_STATUS`, `VFIO_BASE + 3`.
pub const VFIO_GROUP_GET_STATUS: Request = Request::vfio("VFIO_GROUP_GET_STATUS", 3);
/// `VFIO_GROUP_SET_CONTAINER`, `VFIO_BASE + 4`.
pub const VFIO_GROUP_SET_CONTAINER: Request = Request::vfio("VFIO_GROUP_SET_CONTAINER", 4);
/// `VFIO_GROUP_UNSET_CONTAINER`, `VFIO_BASE + 5`.
pub const VFIO_GROUP_UNSET_CONTAINER: Request = Request::vfio("VFIO_GROUP_UNSET_CONTAINER", 5);
/// `VFIO_GROUP_GET_DEVICE_FD`, `VFIO_BASE + 6`.
pub const VFIO_GROUP_GET_DEVICE_FD: Request = Request::vfio("VFIO_GROUP_GET_DEVICE_FD", 6);

// Device fd requests.
/// `VFIO_DEVICE_GET_INFO`, `VFIO_BASE + 7`.
pub const VFIO_DEVICE_GET_INFO: Request = Request::vfio("VFIO_DEVICE_GET_INFO", 7);
/// `VFIO_DEVICE_GET_REGION_INFO`, `VFIO_BASE + 8`.
pub const VFIO_DEVICE_GET_REGION_INFO: Request = Request::vfio("VFIO_DEVICE_GET_REGION_INFO", 8);
/// `VFIO_DEVICE_GET_IRQ_INFO`, `VFIO_BASE + 9`.
pub const VFIO_DEVICE_GET_IRQ_INFO: Request = Request::vfio("VFIO_DEVICE_GET_IRQ_INFO", 9);
/// `VFIO_DEVICE_SET_IRQS`, `VFIO_BASE + 10`.
pub const VFIO_DEVICE_SET_IRQS: Request = Request::vfio("VFIO_DEVICE_SET_IRQS", 10);
/// `VFIO_DEVICE_RESET`, `VFIO_BASE + 11`.
pub const VFIO_DEVICE_RESET: Request = Request::vfio("VFIO_DEVICE_RESET", 11);
/// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`, `VFIO_BASE + 12` (on a device fd).
pub const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Request =
    Request::vfio("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", 12);
/// `VFIO_DEVICE_PCI_HOT_RESET`, `VFIO_BASE + 13` (on a device fd).
pub const VFIO_DEVICE_PCI_HOT_RESET: Request = Request::vfio("VFIO_DEVICE_PCI_HOT_RESET", 13);
/// `VFIO_DEVICE_FEATURE`, `VFIO_BASE + 17`.
pub const VFIO_DEVICE_FEATURE: Request = Request::vfio("VFIO_DEVICE_FEATURE", 17);
/// `VFIO_DEVICE_BIND_IOMMUFD`, `VFIO_BASE + 18` (cdev only; crosvm's
/// out-of-tree `VFIO_DEVICE_ACPI_DSM` reuses this number).
pub const VFIO_DEVICE_BIND_IOMMUFD: Request = Request::vfio("VFIO_DEVICE_BIND_IOMMUFD", 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, `VFIO_BASE + 19` (cdev only).
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: Request =
    Request::vfio("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 19);
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`, `VFIO_BASE + 20` (cdev only).
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: Request =
    Request::vfio("VFIO_DEVICE_DETACH_IOMMUFD_PT", 20);

fn check(ret: libc::c_int) -> SysResult<i32> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

// `ioctl`'s request parameter is `c_ulong` on glibc and `c_int` on musl; the
// VFIO numbers fit either (they are below 2^30), so the cast never truncates.
#[allow(clippy::unnecessary_cast)]
fn code(req: Request) -> libc::Ioctl {
    req.code as libc::Ioctl
}

/// `ioctl(fd, req, val)` with an integer argument.
///
/// # Safety
/// `req` must not interpret `val` as an address the kernel writes to or
/// reads from (or `val` must be such an address, valid for that access).
pub unsafe fn ioctl_with_val(
    fd: BorrowedFd<'_>,
    req: Request,
    val: libc::c_ulong,
) -> SysResult<i32> {
    // SAFETY: the fd is open (borrowed); what the kernel does with `val` is
    // the caller's contract.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), code(req), val) })
}

/// `ioctl(fd, req, &arg)`: the kernel reads a `T`.
///
/// # Safety
/// `req` must read at most `size_of::<T>()` bytes through the pointer and
/// never write through it, and `T`'s bytes must be what `req` expects.
pub unsafe fn ioctl_with_ref<T>(fd: BorrowedFd<'_>, req: Request, arg: &T) -> SysResult<i32> {
    // SAFETY: the pointer is valid for size_of::<T>() bytes for the call;
    // the access pattern is the caller's contract.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), code(req), std::ptr::from_ref(arg)) })
}

/// `ioctl(fd, req, &mut arg)`: the kernel reads and writes a `T`.
///
/// # Safety
/// `req` must access at most `size_of::<T>()` bytes through the pointer, and
/// must only write values that are valid for `T`.
pub unsafe fn ioctl_with_mut_ref<T>(
    fd: BorrowedFd<'_>,
    req: Request,
    arg: &mut T,
) -> SysResult<i32> {
    // SAFETY: the pointer is valid and exclusive for size_of::<T>() bytes
    // during the call; the access pattern is the caller's contract.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), code(req), std::ptr::from_mut(arg)) })
}

/// `ioctl(fd, req, buf.as_mut_ptr())`: the kernel reads and writes a byte buffer.
///
/// # Safety
/// `req` must access at most `buf.len()` bytes through the pointer (for VFIO
/// `argsz` requests: `argsz` in the buffer must not exceed `buf.len()`, and
/// the buffer must hold at least the request's fixed part) and must not
/// follow addresses stored in the buffer to memory it writes.
pub unsafe fn ioctl_with_bytes(fd: BorrowedFd<'_>, req: Request, buf: &mut [u8]) -> SysResult<i32> {
    // SAFETY: the pointer is valid and exclusive for buf.len() bytes during
    // the call; the access pattern is the caller's contract.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), code(req), buf.as_mut_ptr()) })
}

// ---------------------------------------------------------------------------
// Typed, safe VFIO calls.
// ---------------------------------------------------------------------------

/// The VFIO requests whose argument is a self-describing `argsz` buffer with
/// no embedded user addresses; [`argsz_ioctl`] sends them safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgszRequest {
    /// `VFIO_DEVICE_GET_INFO` (`struct vfio_device_info`).
    DeviceGetInfo,
    /// `VFIO_DEVICE_GET_REGION_INFO` (`struct vfio_region_info`).
    GetRegionInfo,
    /// `VFIO_DEVICE_GET_IRQ_INFO` (`struct vfio_irq_info`).
    GetIrqInfo,
    /// `VFIO_DEVICE_SET_IRQS` (`struct vfio_irq_set` + data).
    SetIrqs,
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` (`struct vfio_pci_hot_reset_info`).
    GetPciHotResetInfo,
    /// `VFIO_DEVICE_PCI_HOT_RESET` (`struct vfio_pci_hot_reset` + group fds).
    PciHotReset,
    /// `VFIO_IOMMU_GET_INFO` (`struct vfio_iommu_type1_info`).
    IommuGetInfo,
}

impl ArgszRequest {
    /// The request.
    pub fn request(self) -> Request {
        match self {
            Self::DeviceGetInfo => VFIO_DEVICE_GET_INFO,
            Self::GetRegionInfo => VFIO_DEVICE_GET_REGION_INFO,
            Self::GetIrqInfo => VFIO_DEVICE_GET_IRQ_INFO,
            Self::SetIrqs => VFIO_DEVICE_SET_IRQS,
            Self::GetPciHotResetInfo => VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
            Self::PciHotReset => VFIO_DEVICE_PCI_HOT_RESET,
            Self::IommuGetInfo => VFIO_IOMMU_GET_INFO,
        }
    }

    /// The size of the fixed struct: the kernel copies in this many bytes
    /// (its `minsz`, or more) before it looks at `argsz`.
    pub fn fixed_size(self) -> usize {
        match self {
            Self::DeviceGetInfo => 24,
            Self::GetRegionInfo => 32,
            Self::GetIrqInfo => 16,
            Self::SetIrqs => 20,
            Self::GetPciHotResetInfo | Self::PciHotReset => 12,
            Self::IommuGetInfo => 24,
        }
    }
}

/// Sends an `argsz` request with `buf` as its argument, after setting
/// `argsz` to `buf.len()`. A buffer shorter than the fixed struct, or longer
/// than `u32::MAX`, is refused with `EINVAL` before any call.
pub fn argsz_ioctl(fd: BorrowedFd<'_>, req: ArgszRequest, buf: &mut [u8]) -> SysResult<i32> {
    let argsz = u32::try_from(buf.len()).map_err(|_| Errno(libc::EINVAL))?;
    if buf.len() < req.fixed_size() {
        return Err(Errno(libc::EINVAL));
    }
    buf[..4].copy_from_slice(&argsz.to_ne_bytes());
    // SAFETY: these requests read and write only within `argsz` bytes, which
    // we just set to the buffer length, and the buffer holds the fixed
    // struct; none of them carries a user address (dirty bitmaps and the
    // like go through other requests, which this enum does not offer).
    unsafe { ioctl_with_bytes(fd, req.request(), buf) }
}

/// The `VFIO_DEVICE_FEATURE` features whose payloads hold no user addresses.
///
/// `DMA_LOGGING_START` (6) and `DMA_LOGGING_REPORT` (8) carry pointers the
/// kernel follows (a range array, a bitmap it writes); features above 12
/// are unknown to this crate. Those are only probed, never sent with a payload.
pub const fn feature_payload_is_plain(feature: u32) -> bool {
    matches!(feature, 0..=5 | 7 | 9..=12)
}

/// `VFIO_DEVICE_FEATURE` with header flags `flags` (operation and feature
/// number) and `payload` after the header; on success `payload` holds what
/// the kernel wrote back.
///
/// A GET or SET of a feature whose payload may carry user addresses (see
/// [`feature_payload_is_plain`]) is refused with `EPERM` before any call;
/// probes are always allowed.
pub fn device_feature(fd: BorrowedFd<'_>, flags: u32, payload: &mut [u8]) -> SysResult<i32> {
    const PROBE: u32 = 1 << 18;
    const FEATURE_MASK: u32 = 0xffff;
    if flags & PROBE == 0 && !feature_payload_is_plain(flags & FEATURE_MASK) {
        return Err(Errno(libc::EPERM));
    }
    // SAFETY: the payload of the allowed features holds no address the
    // kernel follows (probes do not touch the payload at all).
    unsafe { device_feature_raw(fd, flags, payload) }
}

/// `VFIO_DEVICE_FEATURE` with `payload` after the `{argsz, flags}` header,
/// copied back after the call.
///
/// # Safety
/// Every address inside `payload` must be valid for what the feature lets
/// the kernel do there for the call's duration.
unsafe fn device_feature_raw(fd: BorrowedFd<'_>, flags: u32, payload: &mut [u8]) -> SysResult<i32> {
    let mut buf = Vec::with_capacity(8 + payload.len());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(payload);
    let argsz = u32::try_from(buf.len()).map_err(|_| Errno(libc::EINVAL))?;
    buf[..4].copy_from_slice(&argsz.to_ne_bytes());
    // SAFETY: the kernel accesses at most argsz (= buf.len()) bytes of the
    // buffer; addresses in the payload are the caller's contract.
    let ret = unsafe { ioctl_with_bytes(fd, VFIO_DEVICE_FEATURE, &mut buf) }?;
    payload.copy_from_slice(&buf[8..]);
    Ok(ret)
}

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` of `ranges` (`(iova, length)`)
/// in pages of `page_size`; returns the page size the driver logs in.
pub fn dma_logging_start(
    device: BorrowedFd<'_>,
    page_size: u64,
    ranges: &[(u64, u64)],
) -> SysResult<u64> {
    const SET: u32 = 1 << 17;
    const START: u32 = 6;
    // struct vfio_device_feature_dma_logging_range { __aligned_u64 iova, length; }
    let table: Vec<[u64; 2]> = ranges.iter().map(|&(iova, len)| [iova, len]).collect();
    let num = u32::try_from(table.len()).map_err(|_| Errno(libc::E2BIG))?;
    // struct vfio_device_feature_dma_logging_control { __aligned_u64 page_size;
    // __u32 num_ranges; __u32 __reserved; __aligned_u64 ranges; }
    let mut control = [0u8; 24];
    control[..8].copy_from_slice(&page_size.to_ne_bytes());
    control[8..12].copy_from_slice(&num.to_ne_bytes());
    control[16..].copy_from_slice(&(table.as_ptr() as u64).to_ne_bytes());
    // SAFETY: the kernel reads `num_ranges` 16-byte entries at `ranges`:
    // `table`, alive and unchanged for the call.
    unsafe { device_feature_raw(device, SET | START, &mut control) }?;
    let [a, b, c, d, e, f, g, h, ..] = control;
    Ok(u64::from_ne_bytes([a, b, c, d, e, f, g, h]))
}

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` of `[iova, iova + len)` in
/// pages of `page_size` into `bitmap` (one bit a page, whole `u64`s).
pub fn dma_logging_report(
    device: BorrowedFd<'_>,
    iova: u64,
    len: u64,
    page_size: u64,
    bitmap: &mut [u64],
) -> SysResult<()> {
    const GET: u32 = 1 << 16;
    const REPORT: u32 = 8;
    let pages = len.checked_div(page_size).ok_or(Errno(libc::EINVAL))?;
    if (bitmap.len() as u64) < pages.div_ceil(64) {
        return Err(Errno(libc::EINVAL));
    }
    // struct vfio_device_feature_dma_logging_report { __aligned_u64 iova,
    // length, page_size, bitmap; }
    let mut report = [0u8; 32];
    report[..8].copy_from_slice(&iova.to_ne_bytes());
    report[8..16].copy_from_slice(&len.to_ne_bytes());
    report[16..24].copy_from_slice(&page_size.to_ne_bytes());
    report[24..].copy_from_slice(&(bitmap.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: the kernel writes one bit per page of the range, in whole
    // u64s, at `bitmap`, which holds at least that many and is exclusively
    // borrowed for the call.
    unsafe { device_feature_raw(device, GET | REPORT, &mut report) }.map(drop)
}

/// `VFIO_GET_API_VERSION`.
pub fn get_api_version(container: BorrowedFd<'_>) -> SysResult<i32> {
    // SAFETY: the request takes no argument; 0 is passed and ignored.
    unsafe { ioctl_with_val(container, VFIO_GET_API_VERSION, 0) }
}

/// `VFIO_CHECK_EXTENSION`: > 0 when `extension` is supported.
pub fn check_extension(container: BorrowedFd<'_>, extension: u32) -> SysResult<i32> {
    // SAFETY: the argument is a plain integer (the extension number).
    unsafe {
        ioctl_with_val(
            container,
            VFIO_CHECK_EXTENSION,
            libc::c_ulong::from(extension),
        )
    }
}

/// `VFIO_SET_IOMMU` with IOMMU type `iommu_type`.
pub fn set_iommu(container: BorrowedFd<'_>, iommu_type: u32) -> SysResult<()> {
    // SAFETY: the argument is a plain integer (the IOMMU type).
    unsafe { ioctl_with_val(container, VFIO_SET_IOMMU, libc::c_ulong::from(iommu_type)) }.map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: the `VFIO_GROUP_FLAGS_*` word.
pub fn group_get_status(group: BorrowedFd<'_>) -> SysResult<u32> {
    let mut status = vfio_group_status {
        argsz: std::mem::size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: the kernel reads and writes exactly the 8-byte struct.
    unsafe { ioctl_with_mut_ref(group, VFIO_GROUP_GET_STATUS, &mut status) }?;
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> SysResult<()> {
    let fd: RawFd = container.as_raw_fd();
    // SAFETY: the kernel reads one s32 (the container fd).
    unsafe { ioctl_with_ref(group, VFIO_GROUP_SET_CONTAINER, &fd) }.map(drop)
}

/// `VFIO_GROUP_UNSET_CONTAINER`.
pub fn group_unset_container(group: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: the request takes no argument.
    unsafe { ioctl_with_val(group, VFIO_GROUP_UNSET_CONTAINER, 0) }.map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: a new fd for the device named `name`.
pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> SysResult<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string (strndup_user), which
    // a CStr is; it writes nothing through the pointer.
    let fd = unsafe {
        check(libc::ioctl(
            group.as_raw_fd(),
            code(VFIO_GROUP_GET_DEVICE_FD),
            name.as_ptr(),
        ))
    }?;
    // SAFETY: on success the ioctl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_RESET`.
pub fn device_reset(device: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: the request takes no argument.
    unsafe { ioctl_with_val(device, VFIO_DEVICE_RESET, 0) }.map(drop)
}

/// `VFIO_IOMMU_MAP_DMA` of `size` bytes at `vaddr` to `iova` with
/// `VFIO_DMA_MAP_FLAG_*` `flags`.
///
/// # Safety
/// `[vaddr, vaddr + size)` must stay valid process memory until it is
/// unmapped from the container (the device may read and write it at any
/// time); this is [`vfio_hal::Container::map_dma_raw`]'s contract.
pub unsafe fn map_dma(
    container: BorrowedFd<'_>,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
) -> SysResult<()> {
    let map = vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags,
        vaddr,
        iova,
        size,
    };
    // SAFETY: the kernel reads the 32-byte struct; the memory it pins is the
    // caller's contract.
    unsafe { ioctl_with_ref(container, VFIO_IOMMU_MAP_DMA, &map) }.map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`, or of everything with
/// `all` (`VFIO_DMA_UNMAP_FLAG_ALL`, iova and size 0); returns the bytes
/// the kernel reports unmapped.
pub fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64, all: bool) -> SysResult<u64> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: std::mem::size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags: if all { VFIO_DMA_UNMAP_FLAG_ALL } else { 0 },
        iova: if all { 0 } else { iova },
        size: if all { 0 } else { size },
        data: Default::default(),
    };
    // SAFETY: without GET_DIRTY_BITMAP the kernel reads and writes only the
    // 24-byte struct (it writes the unmapped size back).
    unsafe { ioctl_with_mut_ref(container, VFIO_IOMMU_UNMAP_DMA, &mut unmap) }?;
    Ok(unmap.size)
}

/// `VFIO_MIG_GET_PRECOPY_INFO`, `VFIO_BASE + 21` (on a migration data fd).
pub const VFIO_MIG_GET_PRECOPY_INFO: Request = Request::vfio("VFIO_MIG_GET_PRECOPY_INFO", 21);

/// `VFIO_DEVICE_FEATURE` SET of `MIG_DEVICE_STATE` to `state`: the data
/// fd the kernel answers with when the last arc opens a session.
pub fn set_migration_state(device: BorrowedFd<'_>, state: u32) -> SysResult<Option<OwnedFd>> {
    const SET: u32 = 1 << 17;
    const MIG_DEVICE_STATE: u32 = 2;
    // struct vfio_device_feature_mig_state { __u32 device_state; __s32 data_fd; }
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&state.to_ne_bytes());
    payload[4..].copy_from_slice(&(-1i32).to_ne_bytes());
    device_feature(device, SET | MIG_DEVICE_STATE, &mut payload)?;
    let [.., a, b, c, d] = payload;
    let fd = i32::from_ne_bytes([a, b, c, d]);
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: on success the kernel installed `fd` in this process's table
    // as a new file for this call's caller (`vfio_ioct_mig_return_fd`);
    // nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `struct vfio_precopy_info`.
#[repr(C)]
struct PrecopyInfoArg {
    argsz: u32,
    flags: u32,
    initial_bytes: u64,
    dirty_bytes: u64,
}

/// `VFIO_MIG_GET_PRECOPY_INFO` on a data fd: `(initial_bytes, dirty_bytes)`.
pub fn migration_precopy_info(data: BorrowedFd<'_>) -> SysResult<(u64, u64)> {
    let mut info = PrecopyInfoArg {
        argsz: std::mem::size_of::<PrecopyInfoArg>() as u32,
        flags: 0,
        initial_bytes: 0,
        dirty_bytes: 0,
    };
    // SAFETY: the kernel reads and writes the 24-byte struct only.
    unsafe { ioctl_with_mut_ref(data, VFIO_MIG_GET_PRECOPY_INFO, &mut info) }?;
    Ok((info.initial_bytes, info.dirty_bytes))
}

const DIRTY_PAGES_FLAG_START: u32 = 1 << 0;
const DIRTY_PAGES_FLAG_STOP: u32 = 1 << 1;
const DIRTY_PAGES_FLAG_GET_BITMAP: u32 = 1 << 2;

/// `VFIO_IOMMU_DIRTY_PAGES` with `START` (`start`) or `STOP`.
pub fn dirty_pages_start_stop(container: BorrowedFd<'_>, start: bool) -> SysResult<()> {
    // struct vfio_iommu_type1_dirty_bitmap { __u32 argsz; __u32 flags; __u8 data[]; }
    let mut header = [0u32; 2];
    header[0] = 8;
    header[1] = if start {
        DIRTY_PAGES_FLAG_START
    } else {
        DIRTY_PAGES_FLAG_STOP
    };
    // SAFETY: without GET_BITMAP the kernel reads only the 8-byte header.
    unsafe { ioctl_with_mut_ref(container, VFIO_IOMMU_DIRTY_PAGES, &mut header) }.map(drop)
}

/// `struct vfio_iommu_type1_dirty_bitmap` with the
/// `vfio_iommu_type1_dirty_bitmap_get` payload and its `vfio_bitmap`.
#[repr(C)]
struct DirtyBitmapGet {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
    pgsize: u64,
    bitmap_bytes: u64,
    data: u64,
}

/// `VFIO_IOMMU_DIRTY_PAGES` with `GET_BITMAP`: which `pgsize` pages of
/// `[iova, iova + size)` were dirtied, one bit each into `bitmap` (the
/// kernel wants at least one bit per page, in whole `u64`s, and clears
/// what it reports).
pub fn dirty_pages_get(
    container: BorrowedFd<'_>,
    iova: u64,
    size: u64,
    pgsize: u64,
    bitmap: &mut [u64],
) -> SysResult<()> {
    let bytes = u64::try_from(std::mem::size_of_val(bitmap)).map_err(|_| Errno(libc::EINVAL))?;
    let mut get = DirtyBitmapGet {
        argsz: std::mem::size_of::<DirtyBitmapGet>() as u32,
        flags: DIRTY_PAGES_FLAG_GET_BITMAP,
        iova,
        size,
        pgsize,
        bitmap_bytes: bytes,
        data: bitmap.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel reads the struct and writes at most `bitmap_bytes`
    // bytes at `data`, which is `bitmap`, exclusively borrowed for the call.
    unsafe { ioctl_with_mut_ref(container, VFIO_IOMMU_DIRTY_PAGES, &mut get) }.map(drop)
}

/// crosvm's `VFIO_DEVICE_ACPI_DSM` (`VFIO_BASE + 18`) with `args` after the
/// `{argsz, padding}` header; `args` receives what the kernel wrote back.
/// Only for kernels with crosvm's patches (`crate::crosvm` checks the opt-in).
#[cfg(feature = "crosvm-ext")]
pub(crate) fn crosvm_acpi_dsm(device: BorrowedFd<'_>, args: &mut [u8]) -> SysResult<i32> {
    let mut buf = vec![0u8; 8];
    buf.extend_from_slice(args);
    let argsz = u32::try_from(buf.len()).map_err(|_| Errno(libc::EINVAL))?;
    buf[..4].copy_from_slice(&argsz.to_ne_bytes());
    let req = Request::vfio("VFIO_DEVICE_ACPI_DSM", 18);
    // SAFETY: crosvm's handler reads and writes within argsz (= buf.len())
    // bytes. Were this an upstream kernel, the number would be
    // VFIO_DEVICE_BIND_IOMMUFD, which writes only `out_devid` (bytes 12..16)
    // and only after checking argsz >= 16: also inside the buffer.
    let ret = unsafe { ioctl_with_bytes(device, req, &mut buf) }?;
    args.copy_from_slice(&buf[8..]);
    Ok(ret)
}

// ---------------------------------------------------------------------------
// Positioned I/O, the revocation placeholder.
// ---------------------------------------------------------------------------

fn file_offset(offset: u64) -> SysResult<libc::off64_t> {
    libc::off64_t::try_from(offset).map_err(|_| Errno(libc::EINVAL))
}

/// Runs a transfer syscall until it is not interrupted (`EINTR`); returns
/// the bytes it moved.
fn retry_interrupted(mut transfer: impl FnMut() -> isize) -> SysResult<usize> {
    loop {
        match usize::try_from(transfer()) {
            Ok(n) => return Ok(n),
            Err(_) => match Errno::last() {
                Errno(libc::EINTR) => continue,
                e => return Err(e),
            },
        }
    }
}

/// One `pread` of `buf.len()` bytes at `offset` (retried on `EINTR`);
/// returns the bytes read, which may be fewer.
#[inline]
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let off = file_offset(offset)?;
    retry_interrupted(|| {
        // SAFETY: the kernel writes at most buf.len() bytes into `buf`.
        unsafe { bare_pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) }
    })
}

/// `pread64` as the bare system call (`syscall(2)`). libc's `pread64` is a
/// thread-cancellation point: in a multi-threaded process glibc switches
/// asynchronous cancellation on and off around the call, two more calls
/// and atomic updates per read. Nothing here uses pthread cancellation, so
/// the bare call moves the same bytes for fewer instructions; register
/// reads through `pread` are frequent enough for that to show.
///
/// # Safety
/// As `pread64`: the kernel writes up to `len` bytes at `buf`.
#[cfg(target_pointer_width = "64")]
#[inline]
unsafe fn bare_pread(
    fd: libc::c_int,
    buf: *mut libc::c_void,
    len: usize,
    off: libc::off64_t,
) -> isize {
    // SAFETY: the caller's promise; on 64-bit Linux every argument of
    // pread64 is one register, passed as is.
    unsafe { libc::syscall(libc::SYS_pread64, fd, buf, len, off) as isize }
}

/// `pread64` (32-bit targets split the offset; libc knows how).
///
/// # Safety
/// As `pread64`: the kernel writes up to `len` bytes at `buf`.
#[cfg(not(target_pointer_width = "64"))]
#[inline]
unsafe fn bare_pread(
    fd: libc::c_int,
    buf: *mut libc::c_void,
    len: usize,
    off: libc::off64_t,
) -> isize {
    // SAFETY: the caller's promise.
    unsafe { libc::pread64(fd, buf, len, off) }
}

/// One `pwrite` of `data` at `offset` (retried on `EINTR`); returns the bytes
/// written, which may be fewer.
pub fn pwrite(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> SysResult<usize> {
    let off = file_offset(offset)?;
    retry_interrupted(|| {
        // SAFETY: the kernel reads at most data.len() bytes from `data`.
        unsafe { libc::pwrite64(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off) }
    })
}

/// Points the descriptor number of `fd` at a fresh eventfd, atomically
/// (`dup3`): this process stops referencing the file `fd` was open on,
/// while the number stays taken, so a thread about to use it meets the
/// eventfd (which answers VFIO ioctls `ENOTTY`, `pread`/`pwrite` `ESPIPE`)
/// rather than a file opened later under the same number.
pub fn replace_with_placeholder(fd: &OwnedFd) -> SysResult<()> {
    let placeholder =
        EventFd::nonblocking().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // SAFETY: dup3 takes no pointers. The target number is owned by `fd`,
    // which keeps owning it (now naming the eventfd) and closes it on drop;
    // `placeholder`'s own number is closed when it drops below.
    check(unsafe { libc::dup3(placeholder.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// `_IO(';', n)` on x86: direction 0, size 0, type 0x3b, number n.
    fn uapi(n: u64) -> u64 {
        if IOC_NONE_BITS == 0 {
            0x3b00 | n
        } else {
            IOC_NONE_BITS | 0x3b00 | n
        }
    }

    #[test]
    fn request_numbers_match_the_uapi_header() {
        // (request, VFIO_BASE offset as written in include/uapi/linux/vfio.h)
        let table = [
            (VFIO_GET_API_VERSION, 0),
            (VFIO_CHECK_EXTENSION, 1),
            (VFIO_SET_IOMMU, 2),
            (VFIO_GROUP_GET_STATUS, 3),
            (VFIO_GROUP_SET_CONTAINER, 4),
            (VFIO_GROUP_UNSET_CONTAINER, 5),
            (VFIO_GROUP_GET_DEVICE_FD, 6),
            (VFIO_DEVICE_GET_INFO, 7),
            (VFIO_DEVICE_GET_REGION_INFO, 8),
            (VFIO_DEVICE_GET_IRQ_INFO, 9),
            (VFIO_DEVICE_SET_IRQS, 10),
            (VFIO_DEVICE_RESET, 11),
            (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 12),
            (VFIO_DEVICE_PCI_HOT_RESET, 13),
            (VFIO_IOMMU_GET_INFO, 12),
            (VFIO_IOMMU_MAP_DMA, 13),
            (VFIO_IOMMU_UNMAP_DMA, 14),
            (VFIO_IOMMU_DIRTY_PAGES, 17),
            (VFIO_MIG_GET_PRECOPY_INFO, 21),
            (VFIO_DEVICE_FEATURE, 17),
            (VFIO_DEVICE_BIND_IOMMUFD, 18),
            (VFIO_DEVICE_ATTACH_IOMMUFD_PT, 19),
            (VFIO_DEVICE_DETACH_IOMMUFD_PT, 20),
        ];
        for (req, offset) in table {
            assert_eq!(req.code, uapi(100 + offset), "{}", req.name);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_values_are_the_well_known_ones() {
        // As seen in strace output and crosvm's seccomp policies.
        assert_eq!(VFIO_GET_API_VERSION.code, 0x3b64);
        assert_eq!(VFIO_DEVICE_SET_IRQS.code, 0x3b6e);
        assert_eq!(VFIO_IOMMU_MAP_DMA.code, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA.code, 0x3b72);
        assert_eq!(VFIO_DEVICE_FEATURE.code, 0x3b75);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD.code, 0x3b76);
    }

    #[test]
    fn short_argsz_buffers_are_refused_before_the_call() {
        // A closed fd would give EBADF; the length check comes first.
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = null.as_fd();
        let mut buf = [0u8; 8];
        assert_eq!(
            argsz_ioctl(fd, ArgszRequest::GetRegionInfo, &mut buf),
            Err(Errno(libc::EINVAL))
        );
    }

    #[test]
    fn pointer_carrying_features_are_refused_before_the_call() {
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = null.as_fd();
        const GET: u32 = 1 << 16;
        const PROBE: u32 = 1 << 18;
        assert_eq!(
            device_feature(fd, GET | 8, &mut [0; 32]),
            Err(Errno(libc::EPERM))
        );
        assert_eq!(
            device_feature(fd, GET | 6, &mut [0; 24]),
            Err(Errno(libc::EPERM))
        );
        assert_eq!(
            device_feature(fd, GET | 200, &mut []),
            Err(Errno(libc::EPERM))
        );
        // A probe of the same feature reaches the kernel (/dev/null: ENOTTY).
        assert_eq!(
            device_feature(fd, PROBE | GET | 8, &mut []),
            Err(Errno(libc::ENOTTY))
        );
        // A plain feature reaches the kernel too.
        assert_eq!(
            device_feature(fd, GET | 1, &mut [0; 8]),
            Err(Errno(libc::ENOTTY))
        );
    }

    #[test]
    fn offsets_beyond_off64_are_einval() {
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = null.as_fd();
        assert_eq!(pread(fd, &mut [0; 4], u64::MAX), Err(Errno(libc::EINVAL)));
        assert_eq!(pwrite(fd, &[0; 4], 1 << 63), Err(Errno(libc::EINVAL)));
    }
}
