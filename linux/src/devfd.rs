//! The VFIO device fd: [`Device`], [`Region`] and [`Irq`] over an open
//! device file descriptor, shared by every backend.
//!
//! A device fd speaks the same ioctls whether it came from a type1 group
//! (`VFIO_GROUP_GET_DEVICE_FD`) or from the cdev (`/dev/vfio/devices/vfioN`
//! after `VFIO_DEVICE_BIND_IOMMUFD` and `VFIO_DEVICE_ATTACH_IOMMUFD_PT`).
//! What differs is what must stay open behind it: the group and container,
//! or the iommufd binding. A backend hands that in as a [`Backing`], which
//! the device keeps alive (and lists in [`Device::keep_fds`]) for as long as
//! the device or any region or irq handle of it lives.
//!
//! ```no_run
//! # use std::os::fd::{OwnedFd, RawFd};
//! # use std::sync::Arc;
//! use vfio_hal::prelude::*;
//! use vfio_hal_linux::devfd::{Backing, VfioDevice};
//!
//! /// What keeps the cdev binding alive (for illustration: an iommufd).
//! #[derive(Debug)]
//! struct Binding { iommufd: OwnedFd }
//! impl Backing for Binding {
//!     fn keep_fds(&self) -> Vec<RawFd> {
//!         use std::os::fd::AsRawFd;
//!         vec![self.iommufd.as_raw_fd()]
//!     }
//! }
//!
//! # fn bound_fd() -> (OwnedFd, OwnedFd) { unimplemented!() }
//! let (device_fd, iommufd) = bound_fd(); // after BIND_IOMMUFD + ATTACH_IOMMUFD_PT
//! let device = VfioDevice::new(device_fd, "0000:00:01.0", Arc::new(Binding { iommufd }))?;
//! let bar0 = device.region(0)?;
//! let id: u32 = bar0.read_at(0)?; // served from the mmapped BAR when it is mappable
//! # Ok::<(), vfio_hal::Error>(())
//! ```
//!
//! # Region access
//! Reads and writes are bounds-checked ([`vfio_hal::error::check_bounds`])
//! before any system call and go through `pread`/`pwrite` at
//! `region.offset + offset`; a short transfer is an error (`EIO`), never
//! silently split. A 1-, 2-, 4- or 8-byte, naturally aligned access inside
//! a mappable area of a PCI BAR is instead served by one volatile load or
//! store on a lazily created, cached mmap of that region (the fast path,
//! several times cheaper than the trapped `pread`). The fast path is only
//! taken while the device's memory decode is known to be on and the device
//! is not in low power: vfio-pci answers an access to a BAR mmap with
//! `SIGBUS` in those states, while `pread` returns an error. The decode
//! state is read from the command register on first use and forgotten after
//! every config write touching the command register and after a reset.
//! A scalar access ([`Region::read_scalar`] and [`Region::write_scalar`],
//! what `read_at` and `write_at` call) is served inline: each region handle
//! caches a window over the mmap of its first mappable area, and the access
//! checks its offset against that window and the device's one state word
//! (decode known on, not in low power, fast path on) in one comparison.
//! Turning decode off must not race with BAR access on another thread (an
//! access already past the check would fault), and other code writing the
//! command register behind this device's back (through a raw fd) is not seen.
//!
//! # Interrupts
//! Every `VFIO_DEVICE_SET_IRQS` request is checked with
//! [`IrqSet::validate`] against the index's info before it is sent, so bad
//! combinations are typed errors without a system call. ERR (index 3) and
//! REQ (index 4) are ordinary indices: route them with
//! [`Irq::set_eventfd`].
//!
//! # Revocation
//! [`Device::revoker`] hands out a [`Revoker`] over the state the device
//! shares with its handles (see [`vfio_hal::revoke`] for why a VMM needs
//! one). Revoking sets a flag that every operation checks before its
//! system call and, where the answer could come from the let-go device,
//! after it (a region read checks only after its `pread`: once revoked,
//! the call meets the placeholder fd below, whose refusal becomes
//! `Revoked`); then the cached fast-path mmaps and those [`Region::mmap`] handed
//! out (still owned by the caller, tracked weakly) become zero pages in
//! place ([`MmapArea::detach`]), and the fd number is pointed at a
//! placeholder eventfd with `dup3`, so that no thread ever uses a number
//! that was freed and reused. No lock is taken on the access paths. The
//! kernel releases the device when its file has no user left (in-flight
//! calls finish first), tearing down the interrupt routes, and a pending
//! hot-unplug completes.
//!
//! # Drop
//! Dropping never panics: the fd is closed (the kernel tears down interrupt
//! routes) and mmaps are unmapped, with failures logged — also after the
//! device was hot-unplugged.

use std::ffi::c_int;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use vfio_hal::caps::ChainKind;
use vfio_hal::device::{feature, flags as device_flags};
use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::error::{check_bounds, check_index, Buffer};
use vfio_hal::migration::{MigrationData, MigrationState};
use vfio_hal::pci::{cfg, region as pci_region};
use vfio_hal::region::not_permitted;
use vfio_hal::revoke::{Revoke, RevokedFlag, Revoker};
use vfio_hal::{
    Device, DeviceInfo, Error, FeatureOp, Irq, IrqInfo, IrqSet, MmapArea, MmapDetacher, Protection,
    Region, RegionInfo, Result, SparseArea, Target,
};

use crate::info::{self, put_u32, Fields};
use crate::sys::{self, ArgszRequest, Errno};

/// What must stay open behind a device fd: a type1 group (and through it the
/// container), or an iommufd binding.
///
/// The device holds it in an `Arc` for as long as the device or any of its
/// region and irq handles is alive, so the backend's objects are never
/// closed under a live device fd.
pub trait Backing: fmt::Debug + Send + Sync {
    /// The fds a sandboxed process must keep open besides the device fd
    /// (group and container, or the iommufd).
    fn keep_fds(&self) -> Vec<RawFd>;

    /// The VFIO file a hypervisor must be given for the device
    /// ([`Device::vfio_file`]) when it is not the device fd itself: the
    /// group on the type1 path. `None` (the default): the device fd, a
    /// cdev.
    fn hypervisor_file(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// `Shared::state`, the one word a fast-path access checks: what the
/// device knows about its memory decode (PCI command bit 1) in the low two
/// bits, then whether the caller switched the fast path off and whether the
/// device is in low power; the bits above count how often the decode
/// knowledge was dropped, so that a reading taken before a drop is never
/// stored after it.
const DECODE_UNKNOWN: u64 = 0;
const DECODE_ON: u64 = 1;
const DECODE_OFF: u64 = 2;
const DECODE_STATE: u64 = 3;
/// [`VfioDevice::set_fast_path`] switched the fast path off.
const FAST_OFF: u64 = 1 << 2;
/// A low-power entry is on its way or done (vfio-pci zaps BAR mmaps).
const LOW_POWER: u64 = 1 << 3;
const DECODE_GENERATION: u64 = 1 << 4;
/// The bits of `Shared::state` that decide whether a BAR mmap may be
/// touched: it may while they read `DECODE_ON` (a device that is not PCI
/// has no decode to know and keeps `DECODE_ON`).
const TOUCH_MASK: u64 = FAST_OFF | LOW_POWER | DECODE_STATE;

/// State shared by a device and every region and irq handle of it.
struct Shared {
    // Field order is drop order: the cached mmaps go before the fd closes.
    /// Lazily created mmaps of each region's mappable areas (fast path).
    fast: Vec<OnceLock<Vec<MmapArea>>>,
    fd: OwnedFd,
    name: String,
    pci: bool,
    /// File offset of the config region (vfio-pci), read on first use.
    config_offset: OnceLock<Option<u64>>,
    /// Decode knowledge, fast-path switch and low power (`DECODE_*`,
    /// `FAST_OFF`, `LOW_POWER`).
    state: AtomicU64,
    /// Set first thing by [`Revoke::revoke`]: every operation checks it.
    revoked: RevokedFlag,
    /// What a revocation lets go of. Held while mmaps are created, so
    /// that none is created behind a revocation's back.
    release: Mutex<Release>,
    backing: Arc<dyn Backing>,
}

/// The mmaps of the device file a revocation must reach, and whether it
/// has let go of the file.
#[derive(Debug, Default)]
struct Release {
    /// The fd and every mmap are let go.
    done: bool,
    /// The mmaps [`Region::mmap`] handed out, held weakly.
    handed_out: Vec<MmapDetacher>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("fd", &self.fd.as_raw_fd())
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn target(&self) -> Target {
        Target::Device(self.name.clone())
    }

    /// Refuses an operation on a revoked device.
    fn live(&self, op: &'static str, target: impl FnOnce() -> Target) -> Result<()> {
        self.revoked.check(op, target)
    }

    /// An operation's result, unless the device was revoked meanwhile: a
    /// failure then came from the placeholder fd, and a fast-path access
    /// may have met the zero pages that replaced the BAR.
    fn unless_revoked<T>(
        &self,
        op: &'static str,
        target: impl FnOnce() -> Target,
        result: Result<T>,
    ) -> Result<T> {
        match result {
            Err(_) => self.live(op, target).and(result),
            Ok(_) => result,
        }
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for an index below `num_regions`.
    ///
    /// vfio-pci answers `EINVAL` for an index it does not implement on this
    /// device (the VGA region of a device that is not VGA), although the
    /// uAPI says unimplemented regions report size 0; such a region is
    /// reported as empty (no flags, size 0), so that generic code can walk
    /// every index below `num_regions`.
    fn region_info(&self, index: u32) -> Result<RegionInfo> {
        const OP: &str = "VFIO_DEVICE_GET_REGION_INFO";
        let queried = info::query(
            ArgszRequest::GetRegionInfo.fixed_size(),
            |b| put_u32(b, 8, index),
            |b| sys::argsz_ioctl(self.fd.as_fd(), ArgszRequest::GetRegionInfo, b),
        );
        let buf = match queried {
            Ok(buf) => buf,
            Err(info::QueryError::Sys(Errno(libc::EINVAL))) => {
                log::debug!("{}: region {index} not implemented (EINVAL)", self.name);
                return Ok(RegionInfo {
                    index,
                    ..RegionInfo::default()
                });
            }
            Err(e) => return Err(e.into_error(OP, Target::Region(index), Buffer::RegionInfo)),
        };
        let fields = Fields::new(&buf, Buffer::RegionInfo);
        let flags = fields.u32(4)?;
        let caps = if flags & vfio_hal::region::flags::CAPS != 0 {
            info::caps(ChainKind::Region, &buf, fields.u32(12)?, Buffer::RegionInfo)?
        } else {
            Vec::new()
        };
        Ok(RegionInfo {
            index,
            flags,
            size: fields.u64(16)?,
            offset: fields.u64(24)?,
            caps,
        })
    }

    /// Whether a BAR mmap may be touched now (see the module docs).
    #[inline]
    fn fast_path_allowed(&self, index: u32) -> bool {
        let seen = self.state.load(Ordering::Acquire);
        if seen & FAST_OFF != 0 {
            return false;
        }
        if !self.pci {
            return true;
        }
        if index > pci_region::BAR5 || seen & LOW_POWER != 0 {
            return false;
        }
        match seen & DECODE_STATE {
            DECODE_ON => true,
            DECODE_OFF => false,
            _ => self.learn_decode(seen),
        }
    }

    /// Reads the decode state, unknown in `seen`, and stores it unless a
    /// config write came between; whether it is on and was stored.
    #[cold]
    #[inline(never)]
    fn learn_decode(&self, seen: u64) -> bool {
        let on = self.read_memory_decode().unwrap_or(false);
        let known = (seen & !DECODE_STATE) | if on { DECODE_ON } else { DECODE_OFF };
        // A config write since `seen` makes this reading stale: use pread
        // for this access and read again next time.
        self.state
            .compare_exchange(seen, known, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && on
    }

    fn read_memory_decode(&self) -> Option<bool> {
        let offset = (*self
            .config_offset
            .get_or_init(|| self.region_info(pci_region::CONFIG).ok().map(|i| i.offset)))?;
        let mut cmd = [0u8; 2];
        let n = sys::pread(self.fd.as_fd(), &mut cmd, offset.checked_add(cfg::COMMAND)?).ok()?;
        (n == 2).then(|| u16::from_le_bytes(cmd) & cfg::CMD_MEMORY != 0)
    }

    fn forget_decode(&self) {
        if !self.pci {
            return; // no decode to forget: stays DECODE_ON
        }
        // Next generation, state unknown (the generation wraps harmlessly).
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((v & !DECODE_STATE).wrapping_add(DECODE_GENERATION))
            });
    }

    /// The cached mmaps of region `info` (created on first use; empty when
    /// the region has no mappable area or mapping failed).
    fn fast_maps(&self, info: &RegionInfo) -> &[MmapArea] {
        let Some(slot) = self.fast.get(info.index as usize) else {
            return &[];
        };
        if let Some(areas) = slot.get() {
            return areas;
        }
        let release = self.lock_release();
        if release.done || self.revoked.is_set() {
            return &[];
        }
        let areas = map_areas(self.fd.as_fd(), info).unwrap_or_else(|e| {
            log::debug!(
                "{}: no mmap fast path for region {}: {e}",
                self.name,
                info.index
            );
            Vec::new()
        });
        // Stored under the lock: a revocation sees it (or another thread's).
        let _ = slot.set(areas);
        drop(release);
        slot.get().map_or(&[], Vec::as_slice)
    }

    fn lock_release(&self) -> MutexGuard<'_, Release> {
        self.release.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Revoke for Shared {
    /// Sets the flag every operation checks, then lets go of the device
    /// file: the cached BAR mmaps and those handed out by [`Region::mmap`]
    /// become zero pages in place, and the fd number is pointed at a
    /// placeholder (see [`sys::replace_with_placeholder`]), so no number is
    /// freed under a thread that is about to use it. The kernel releases the
    /// device (and tears down its interrupt routes) once in-flight calls
    /// have finished.
    fn revoke(&self) -> Result<()> {
        // The flag goes first: an access that meets a replaced page or the
        // placeholder fd then also sees it (both replacements are system
        // calls that order after this store).
        self.revoked.set();
        let mut release = self.lock_release();
        if release.done {
            return Ok(());
        }
        for area in self.fast.iter().filter_map(OnceLock::get).flatten() {
            area.detach()?;
        }
        for area in &release.handed_out {
            area.detach()?;
        }
        sys::replace_with_placeholder(&self.fd)
            .map_err(|e| e.into_error("dup3(revoke)", self.target()))?;
        release.done = true;
        release.handed_out.clear();
        log::debug!("{}: revoked; the device file is let go", self.name);
        Ok(())
    }

    fn is_revoked(&self) -> bool {
        self.revoked.is_set()
    }
}

/// Maps every mappable area of a region.
fn map_areas(fd: BorrowedFd<'_>, info: &RegionInfo) -> Result<Vec<MmapArea>> {
    let areas = info.mappable_areas();
    if areas.is_empty() {
        return Err(Error::NotSupported {
            op: "mmap",
            target: Target::Region(info.index),
            reason: "region has no mappable area (no MMAP flag, or size 0)",
        });
    }
    areas
        .iter()
        .map(|a| map_area(fd, info, a, info.writable()))
        .collect()
}

/// Maps one mappable area of a region.
fn map_area(
    fd: BorrowedFd<'_>,
    info: &RegionInfo,
    area: &SparseArea,
    writable: bool,
) -> Result<MmapArea> {
    let file_offset = info
        .offset
        .checked_add(area.offset)
        .ok_or(Error::Overflow {
            op: "mmap",
            target: Target::Region(info.index),
            offset: info.offset,
            len: area.offset,
        })?;
    // Give the bare mmap error its region.
    MmapArea::map_fd(fd, file_offset, area.size, area.offset, writable)
        .map_err(|e| e.with_target(Target::Region(info.index)))
}

/// A VFIO device: an open device fd, its info, and what keeps it usable.
///
/// Cheap handles ([`VfioRegion`], [`VfioIrq`]) share the fd.
#[derive(Debug)]
pub struct VfioDevice {
    shared: Arc<Shared>,
    info: DeviceInfo,
}

impl VfioDevice {
    /// Wraps an open, usable device fd (`VFIO_DEVICE_GET_INFO` must work on
    /// it: for a cdev, bind and attach first). Reads the device info,
    /// capability chain included.
    pub fn new(fd: OwnedFd, name: impl Into<String>, backing: Arc<dyn Backing>) -> Result<Self> {
        let name = name.into();
        let buf = info::query(
            ArgszRequest::DeviceGetInfo.fixed_size(),
            |_| {},
            |b| sys::argsz_ioctl(fd.as_fd(), ArgszRequest::DeviceGetInfo, b),
        )
        .map_err(|e| {
            e.into_error(
                "VFIO_DEVICE_GET_INFO",
                Target::Device(name.clone()),
                Buffer::DeviceInfo,
            )
        })?;
        let fields = Fields::new(&buf, Buffer::DeviceInfo);
        let flags = fields.u32(4)?;
        let caps = if flags & device_flags::CAPS != 0 {
            info::caps(ChainKind::Device, &buf, fields.u32(16)?, Buffer::DeviceInfo)?
        } else {
            Vec::new()
        };
        let info = DeviceInfo {
            name: name.clone(),
            flags,
            num_regions: fields.u32(8)?,
            num_irqs: fields.u32(12)?,
            caps,
        };
        // One lazily filled slot per region; bounded so that a bogus count
        // cannot make us allocate without limit.
        let slots = info.num_regions.min(1024) as usize;
        log::debug!(
            "opened device {name}: flags {flags:#x}, {} regions, {} irqs",
            info.num_regions,
            info.num_irqs
        );
        Ok(Self {
            shared: Arc::new(Shared {
                fast: (0..slots).map(|_| OnceLock::new()).collect(),
                fd,
                pci: flags & device_flags::PCI != 0,
                name,
                config_offset: OnceLock::new(),
                state: AtomicU64::new(if flags & device_flags::PCI != 0 {
                    DECODE_UNKNOWN
                } else {
                    DECODE_ON
                }),
                revoked: RevokedFlag::new(),
                release: Mutex::default(),
                backing,
            }),
            info,
        })
    }

    /// The device fd (once revoked, a placeholder with the same number).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }
}

/// The device fd, e.g. for `KVM_DEV_VFIO_FILE_ADD` or a sandbox's list.
///
/// Once the device is revoked the number stays open but names a
/// placeholder (an eventfd, see [`sys::replace_with_placeholder`]), never
/// a freed number that a later `open` could reuse: VFIO ioctls on it fail
/// with `ENOTTY`, reads and writes with `ESPIPE`. The borrow cannot
/// outlive the device.
impl AsFd for VfioDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl VfioDevice {
    /// Whether the device was revoked ([`Device::revoker`]).
    pub fn is_revoked(&self) -> bool {
        self.shared.is_revoked()
    }

    /// [`Error::Revoked`] for `op` on this device once it was revoked: for
    /// calls about the device that do not go through its fd (iommufd's).
    pub fn check_not_revoked(&self, op: &'static str) -> Result<()> {
        self.shared.live(op, || self.shared.target())
    }

    /// The device's name (its PCI address for vfio-pci).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What keeps the device usable (group and container, or iommufd binding).
    pub fn backing(&self) -> &Arc<dyn Backing> {
        &self.shared.backing
    }

    /// Turns the mmap fast path of region access on (the default) or off
    /// for this device and all its handles; off, every access is a
    /// `pread`/`pwrite` (for comparisons, or for registers with side
    /// effects on the access width that the caller wants the kernel to do).
    pub fn set_fast_path(&self, enabled: bool) {
        if enabled {
            self.shared.state.fetch_and(!FAST_OFF, Ordering::AcqRel);
        } else {
            self.shared.state.fetch_or(FAST_OFF, Ordering::AcqRel);
        }
    }

    /// The devices a PCI hot reset of this device would also reset
    /// (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`). `NotSupported` when the
    /// device can be reset neither by slot nor by bus (the kernel's ENODEV).
    pub fn pci_hot_reset_info(&self) -> Result<HotResetInfo> {
        const OP: &str = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO";
        self.shared.live(OP, || self.shared.target())?;
        let fixed = ArgszRequest::GetPciHotResetInfo.fixed_size();
        let mut len = fixed;
        // The kernel answers ENOSPC with the needed count when the buffer is
        // too small; the set of affected devices may change between calls.
        for _ in 0..4 {
            let mut buf = vec![0u8; len];
            match sys::argsz_ioctl(self.fd(), ArgszRequest::GetPciHotResetInfo, &mut buf) {
                Ok(_) => return HotResetInfo::parse(&buf),
                Err(Errno(libc::ENOSPC)) => {
                    let count = Fields::new(&buf, Buffer::DeviceInfo).u32(8)? as usize;
                    len = count
                        .checked_mul(HotResetDevice::SIZE)
                        .and_then(|n| n.checked_add(fixed))
                        .filter(|&n| n <= vfio_hal::caps::MAX_INFO_SIZE && n > len)
                        .ok_or(Error::Malformed {
                            buffer: Buffer::DeviceInfo,
                            source: vfio_hal::caps::ParseError::InvalidField {
                                field: "vfio_pci_hot_reset_info.count",
                                offset: 8,
                                value: count as u64,
                            },
                        })?;
                }
                Err(Errno(libc::ENODEV)) => {
                    return Err(Error::NotSupported {
                        op: OP,
                        target: self.shared.target(),
                        reason: "no slot or bus reset can reach this device (ENODEV)",
                    })
                }
                Err(e) => {
                    self.shared.live(OP, || self.shared.target())?;
                    return Err(e.into_error(OP, self.shared.target()));
                }
            }
        }
        Err(Error::sys(OP, self.shared.target(), libc::ENOSPC))
    }

    /// PCI hot reset (`VFIO_DEVICE_PCI_HOT_RESET`) of this device's slot or
    /// bus. For a group-opened device, `group_fds` must prove ownership of
    /// every group [`pci_hot_reset_info`](Self::pci_hot_reset_info) lists;
    /// for a cdev bound to iommufd it is empty. The kernel refuses a list
    /// that misses a group, or the wrong form for how the device was
    /// opened, with `EINVAL`; `NotSupported` when no slot or bus reset can
    /// reach the device.
    pub fn pci_hot_reset(&self, group_fds: &[BorrowedFd<'_>]) -> Result<()> {
        const OP: &str = "VFIO_DEVICE_PCI_HOT_RESET";
        let count = u32::try_from(group_fds.len()).map_err(|_| Error::InvalidArgument {
            op: OP,
            target: self.shared.target(),
            reason: "too many group fds",
        })?;
        let mut buf = vec![0u8; 12];
        put_u32(&mut buf, 8, count);
        for fd in group_fds {
            buf.extend_from_slice(&(fd.as_raw_fd() as c_int).to_ne_bytes());
        }
        self.shared.live(OP, || self.shared.target())?;
        let result =
            sys::argsz_ioctl(self.fd(), ArgszRequest::PciHotReset, &mut buf).map_err(|e| match e {
                Errno(libc::ENODEV) => Error::NotSupported {
                    op: OP,
                    target: self.shared.target(),
                    reason: "no slot or bus reset can reach this device (ENODEV)",
                },
                e => e.into_error(OP, self.shared.target()),
            });
        self.shared
            .unless_revoked(OP, || self.shared.target(), result)?;
        self.shared.forget_decode();
        Ok(())
    }
}

impl Device for VfioDevice {
    type Region = VfioRegion;
    type Irq = VfioIrq;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn region(&self, index: u32) -> Result<VfioRegion> {
        check_index(
            "VFIO_DEVICE_GET_REGION_INFO",
            Target::Region(index),
            index,
            self.info.num_regions,
        )?;
        let op = "VFIO_DEVICE_GET_REGION_INFO";
        let target = || Target::Region(index);
        self.shared.live(op, target)?;
        let info = self
            .shared
            .unless_revoked(op, target, self.shared.region_info(index))?;
        Ok(VfioRegion::new(Arc::clone(&self.shared), info))
    }

    /// The irq index `index` (below `num_irqs`). vfio-pci answers `EINVAL`
    /// for an index it does not implement on this device (ERR on a device
    /// that is not PCI Express), although the uAPI says unimplemented irq
    /// types report count 0; such an index is reported with count 0 and no
    /// flags, so every request on it is refused by [`IrqSet::validate`].
    fn irq(&self, index: u32) -> Result<VfioIrq> {
        const OP: &str = "VFIO_DEVICE_GET_IRQ_INFO";
        check_index(OP, Target::Irq(index), index, self.info.num_irqs)?;
        self.shared.live(OP, || Target::Irq(index))?;
        let mut buf = [0u8; 16];
        put_u32(&mut buf, 8, index);
        let answer = sys::argsz_ioctl(self.fd(), ArgszRequest::GetIrqInfo, &mut buf);
        if answer.is_err() {
            self.shared.live(OP, || Target::Irq(index))?;
        }
        let info = match answer {
            Ok(_) => IrqInfo {
                index,
                flags: Fields::new(&buf, Buffer::IrqInfo).u32(4)?,
                count: Fields::new(&buf, Buffer::IrqInfo).u32(12)?,
            },
            Err(Errno(libc::EINVAL)) => {
                log::debug!(
                    "{}: irq index {index} not implemented (EINVAL)",
                    self.shared.name
                );
                IrqInfo {
                    index,
                    flags: 0,
                    count: 0,
                }
            }
            Err(e) => return Err(e.into_error(OP, Target::Irq(index))),
        };
        Ok(VfioIrq {
            info,
            shared: Arc::clone(&self.shared),
        })
    }

    fn reset(&self) -> Result<()> {
        const OP: &str = "VFIO_DEVICE_RESET";
        let target = || self.shared.target();
        self.shared.live(OP, target)?;
        let result = sys::device_reset(self.fd()).map_err(|e| e.into_error(OP, target()));
        let result = self.shared.unless_revoked(OP, target, result);
        // A reset restores config space; re-read the decode state either way.
        self.shared.forget_decode();
        result
    }

    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        const OP: &str = "VFIO_DEVICE_FEATURE";
        let target = Target::Feature(feature);
        self.shared.live(OP, || Target::Feature(feature))?;
        if feature > 0xffff {
            return Err(Error::InvalidArgument {
                op: OP,
                target,
                reason: "feature numbers are 16 bits",
            });
        }
        let probe = matches!(op, FeatureOp::ProbeGet | FeatureOp::ProbeSet);
        if !probe && feature == feature::DMA_BUF {
            return Err(Error::NotSupported {
                op: OP,
                target,
                reason: "DMA_BUF answers with a new dma-buf fd, which this call cannot \
                         hand back (it would leak); it is only probed",
            });
        }
        if op == FeatureOp::Set && feature == feature::MIG_DEVICE_STATE {
            return Err(Error::NotSupported {
                op: OP,
                target,
                reason: "setting the migration state answers with a data fd, which this \
                         call cannot hand back (it would leak): use Device::set_migration_state",
            });
        }
        if !probe && !sys::feature_payload_is_plain(feature) {
            return Err(Error::NotSupported {
                op: OP,
                target,
                reason: "this feature's payload holds addresses the kernel follows \
                         (or is unknown to this crate); it is only probed",
            });
        }
        // Entering low power zaps BAR mmaps: stop the fast path first.
        let entering = op == FeatureOp::Set
            && matches!(
                feature,
                feature::LOW_POWER_ENTRY | feature::LOW_POWER_ENTRY_WITH_WAKEUP
            );
        // Whether an earlier entry had already turned the fast path off: a
        // refused entry (EINVAL, already in low power) must not turn it on.
        let was_low = entering
            && self.shared.pci
            && self.shared.state.fetch_or(LOW_POWER, Ordering::AcqRel) & LOW_POWER != 0;
        let result = sys::device_feature(self.fd(), op.flags() | feature, data)
            .map(drop)
            .map_err(|e| e.into_error(OP, target));
        let result = self
            .shared
            .unless_revoked(OP, || Target::Feature(feature), result);
        if op == FeatureOp::Set {
            if entering && result.is_err() && !was_low {
                self.shared.state.fetch_and(!LOW_POWER, Ordering::AcqRel);
            }
            if feature == feature::LOW_POWER_EXIT && result.is_ok() {
                self.shared.state.fetch_and(!LOW_POWER, Ordering::AcqRel);
                self.shared.forget_decode();
            }
        }
        result
    }

    /// `MIG_DEVICE_STATE` SET; the kernel's data fd, where the last arc
    /// opens a session, as a [`KernelDataStream`](crate::migration::KernelDataStream).
    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";
        let target = || Target::Feature(feature::MIG_DEVICE_STATE);
        self.shared.live(OP, target)?;
        let result = sys::set_migration_state(self.fd(), state.raw())
            .map_err(|e| e.into_error(OP, target()));
        let fd = self.shared.unless_revoked(OP, target, result)?;
        Ok(fd.map(|fd| {
            MigrationData::new(state, Box::new(crate::migration::KernelDataStream::new(fd)))
        }))
    }

    /// `DMA_LOGGING_START`; vfio-pci itself has no logging (`ENOTTY`),
    /// variant drivers (mlx5, pds) do.
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        const OP: &str = "VFIO_DEVICE_FEATURE_DMA_LOGGING_START";
        let target = || Target::Feature(feature::DMA_LOGGING_START);
        self.shared.live(OP, target)?;
        let result = sys::dma_logging_start(self.fd(), page_size, ranges)
            .map_err(|e| e.into_error(OP, target()));
        self.shared.unless_revoked(OP, target, result)
    }

    /// `DMA_LOGGING_REPORT` into the shared bitmap type.
    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        const OP: &str = "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT";
        let target = || Target::Feature(feature::DMA_LOGGING_REPORT);
        self.shared.live(OP, target)?;
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        let result = sys::dma_logging_report(self.fd(), iova, len, page_size, bitmap.words_mut())
            .map_err(|e| e.into_error(OP, target()));
        self.shared.unless_revoked(OP, target, result)?;
        Ok(bitmap)
    }

    /// The device fd (not once revoked: it then names a placeholder) and
    /// the backing's fds.
    fn keep_fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        if !self.shared.is_revoked() {
            fds.push(self.shared.fd.as_raw_fd());
        }
        fds.extend(self.shared.backing.keep_fds());
        fds
    }

    /// Revokes through the state the device shares with its handles (see
    /// the module docs, "Revocation").
    fn revoker(&self) -> Result<Revoker> {
        Ok(Revoker::new(&self.shared))
    }

    /// The backing's file (the group), or the device fd (a cdev); `Revoked`
    /// once revoked, when the device fd names a placeholder.
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        self.check_not_revoked("vfio_file")?;
        Ok(self
            .shared
            .backing
            .hypervisor_file()
            .unwrap_or_else(|| self.shared.fd.as_fd()))
    }
}

/// One region of a [`VfioDevice`]; shares the device fd.
#[derive(Debug, Clone)]
pub struct VfioRegion {
    shared: Arc<Shared>,
    info: RegionInfo,
    window: Window,
}

/// The fast path of a scalar access, cached in each region handle: where
/// the cached mmap of the region's first mappable area is, and which
/// `Shared::state` lets it be touched. Armed (lengths set) by the first
/// access the fast path serves; until then, and for accesses outside it,
/// [`VfioRegion::fast_area`] decides.
#[derive(Debug)]
struct Window {
    /// Region offset of the first mappable area (0 without one).
    start: u64,
    /// That area's cached mmap (one of `Shared::fast`, alive as long as
    /// the `Shared` is); null until armed.
    base: AtomicPtr<u8>,
    /// Bytes from `start` a load may touch, a multiple of 8: 0 until armed
    /// and for a region without the READ flag.
    read_len: AtomicU64,
    /// As `read_len`, for stores: 0 also for a read-only mapping.
    write_len: AtomicU64,
}

impl Window {
    /// Unarmed. PCI regions past BAR5 are never armed: the fast path
    /// never serves them (`Shared::fast_path_allowed`).
    fn new(info: &RegionInfo) -> Self {
        Self {
            start: info.mappable_areas().first().map_or(0, |a| a.offset),
            base: AtomicPtr::new(std::ptr::null_mut()),
            read_len: AtomicU64::new(0),
            write_len: AtomicU64::new(0),
        }
    }
}

impl Clone for Window {
    fn clone(&self) -> Self {
        // The base is published before the lengths (`arm_window`).
        let (read_len, write_len) = (
            self.read_len.load(Ordering::Acquire),
            self.write_len.load(Ordering::Acquire),
        );
        Self {
            start: self.start,
            base: AtomicPtr::new(self.base.load(Ordering::Relaxed)),
            read_len: AtomicU64::new(read_len),
            write_len: AtomicU64::new(write_len),
        }
    }
}

/// One volatile load of `size` bytes (1, 2, 4, else 8) at `at`, little
/// endian.
///
/// # Safety
/// `at` is naturally aligned for `size` and the `size` bytes are mapped
/// and readable.
#[inline(always)]
unsafe fn load_le(at: *const u8, size: usize) -> u64 {
    match size {
        // SAFETY: the caller's promise, for each width.
        1 => u64::from(unsafe { std::ptr::read_volatile(at) }),
        // SAFETY: as above.
        2 => u64::from(u16::from_le(unsafe {
            std::ptr::read_volatile(at.cast::<u16>())
        })),
        // SAFETY: as above.
        4 => u64::from(u32::from_le(unsafe {
            std::ptr::read_volatile(at.cast::<u32>())
        })),
        // SAFETY: as above.
        _ => u64::from_le(unsafe { std::ptr::read_volatile(at.cast::<u64>()) }),
    }
}

/// One volatile store of the low `size` bytes (1, 2, 4, else 8) of
/// `value` at `at`, little endian (the truncations keep those bytes).
///
/// # Safety
/// `at` is naturally aligned for `size` and the `size` bytes are mapped
/// and writable.
#[inline(always)]
unsafe fn store_le(at: *mut u8, size: usize, value: u64) {
    match size {
        // SAFETY: the caller's promise, for each width.
        1 => unsafe { std::ptr::write_volatile(at, value as u8) },
        // SAFETY: as above.
        2 => unsafe { std::ptr::write_volatile(at.cast::<u16>(), (value as u16).to_le()) },
        // SAFETY: as above.
        4 => unsafe { std::ptr::write_volatile(at.cast::<u32>(), (value as u32).to_le()) },
        // SAFETY: as above.
        _ => unsafe { std::ptr::write_volatile(at.cast::<u64>(), value.to_le()) },
    }
}

/// The error of an access that met a revoked device.
#[cold]
#[inline(never)]
fn revoked_error(op: &'static str, index: u32) -> Error {
    Error::Revoked {
        op,
        target: Target::Region(index),
    }
}

/// The error of a region offset whose file offset does not fit in 64 bits.
#[cold]
#[inline(never)]
fn overflow(op: &'static str, index: u32, offset: u64, len: u64) -> Error {
    Error::Overflow {
        op,
        target: Target::Region(index),
        offset,
        len,
    }
}

impl VfioRegion {
    fn new(shared: Arc<Shared>, info: RegionInfo) -> Self {
        Self {
            window: Window::new(&info),
            shared,
            info,
        }
    }

    /// The address of a `size`-byte access at `offset` inside the armed
    /// window, if the device state lets the mmap be touched now; `len` is
    /// the window's `read_len` or `write_len`. One load of the state, and
    /// the checks folded into one comparison.
    #[inline(always)]
    fn window_at(&self, offset: u64, size: usize, len: &AtomicU64) -> Option<*mut u8> {
        let rel = offset.wrapping_sub(self.window.start);
        let state = self.shared.state.load(Ordering::Acquire);
        // Zero exactly when the access is naturally aligned and the state
        // lets the BAR be touched.
        let refused = (rel & (size as u64).wrapping_sub(1)) | ((state & TOUCH_MASK) ^ DECODE_ON);
        // A refusal sets the top bit, above any window length (a mapping
        // is far below 2^63 bytes). `len` is a multiple of 8 and `rel` a
        // multiple of `size` (a power of two up to 8), so `rel < len` puts
        // the whole access inside.
        let probe = rel | (u64::from(refused != 0) << 63);
        if matches!(size, 1 | 2 | 4 | 8) && probe < len.load(Ordering::Acquire) {
            // In bounds of the mapping (above): the usize conversion holds.
            Some(
                self.window
                    .base
                    .load(Ordering::Relaxed)
                    .wrapping_add(rel as usize),
            )
        } else {
            None
        }
    }

    /// One volatile load of `size` bytes from the window, little endian.
    #[inline(always)]
    fn window_load(&self, offset: u64, size: usize) -> Option<u64> {
        let at = self.window_at(offset, size, &self.window.read_len)?;
        // SAFETY: `window_at` puts the access inside the armed window, a
        // live mapping of the device file (or the zero pages a revocation
        // put in its place) owned by `self.shared`, naturally aligned (the
        // mapping is page aligned), while the device state lets the BAR be
        // touched; a volatile load of the width asked is one access of it.
        Some(unsafe { load_le(at, size) })
    }

    /// One volatile store of the low `size` bytes of `value` to the window,
    /// little endian; false if the window cannot take it.
    #[inline(always)]
    fn window_store(&self, offset: u64, size: usize, value: u64) -> bool {
        let Some(at) = self.window_at(offset, size, &self.window.write_len) else {
            return false;
        };
        // SAFETY: as in `window_load`; `write_len` is 0 unless the mapping
        // is writable.
        unsafe { store_le(at, size, value) };
        true
    }

    /// Arms the window over the region's first cached mmap, once the fast
    /// path served an access (so the mmaps exist and may be touched).
    fn arm_window(&self) {
        let w = &self.window;
        if !w.base.load(Ordering::Relaxed).is_null() {
            return;
        }
        let Some(first) = self.shared.fast_maps(&self.info).first() else {
            return;
        };
        if first.region_offset() != w.start {
            return;
        }
        let len = first.len() & !7;
        w.base.store(first.as_ptr(), Ordering::Relaxed);
        if self.info.readable() {
            w.read_len.store(len, Ordering::Release);
        }
        if self.info.writable() && first.is_writable() {
            w.write_len.store(len, Ordering::Release);
        }
    }

    /// A scalar read the window did not serve: through the byte path.
    #[inline(never)]
    fn read_scalar_slow(&self, offset: u64, size: usize) -> Result<u64> {
        vfio_hal::region::read_scalar_through_read(self, offset, size)
    }

    /// A scalar write the window did not take: through the byte path.
    #[inline(never)]
    fn write_scalar_slow(&self, offset: u64, size: usize, value: u64) -> Result<()> {
        vfio_hal::region::write_scalar_through_write(self, offset, size, value)
    }

    /// The file offset of `offset` within this region, overflow-checked.
    #[inline]
    fn file_offset(&self, op: &'static str, offset: u64, len: u64) -> Result<u64> {
        match self.info.offset.checked_add(offset) {
            Some(at) => Ok(at),
            None => Err(overflow(op, self.info.index, offset, len)),
        }
    }

    /// Whether an access of `len` bytes at `offset` would be served by the
    /// mmap fast path now (see the module docs); mapping the region on
    /// first use. For tests and benchmarks that must know which path ran.
    pub fn fast_path_covers(&self, offset: u64, len: usize) -> bool {
        self.fast_area(offset, len).is_some()
    }

    /// The cached mmap covering `[offset, offset + len)`, if the fast path
    /// may serve this access.
    #[inline]
    fn fast_area(&self, offset: u64, len: usize) -> Option<&MmapArea> {
        if !self.shared.fast_path_allowed(self.info.index)
            || !matches!(len, 1 | 2 | 4 | 8)
            || offset & (len as u64 - 1) != 0
            || !self.info.mmappable()
        {
            return None;
        }
        self.shared
            .fast_maps(&self.info)
            .iter()
            .find(|a| a.covers(offset, len as u64))
    }

    fn fast_read(area: &MmapArea, at: u64, buf: &mut [u8]) -> Result<()> {
        match buf.len() {
            1 => buf.copy_from_slice(&area.load::<u8>(at)?.to_ne_bytes()),
            2 => buf.copy_from_slice(&area.load::<u16>(at)?.to_ne_bytes()),
            4 => buf.copy_from_slice(&area.load::<u32>(at)?.to_ne_bytes()),
            _ => buf.copy_from_slice(&area.load::<u64>(at)?.to_ne_bytes()),
        }
        Ok(())
    }

    fn fast_write(area: &MmapArea, at: u64, data: &[u8]) -> Result<()> {
        fn arr<const N: usize>(d: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(d);
            a
        }
        match data.len() {
            1 => area.store(at, data[0]),
            2 => area.store(at, u16::from_ne_bytes(arr(data))),
            4 => area.store(at, u32::from_ne_bytes(arr(data))),
            _ => area.store(at, u64::from_ne_bytes(arr(data))),
        }
    }

    /// A `pread`/`pwrite` of `len` bytes: all of them, or an error — a short
    /// transfer is `EIO`, never silently split.
    fn whole(&self, op: &'static str, moved: sys::SysResult<usize>, len: u64) -> Result<()> {
        let index = self.info.index;
        match moved {
            Ok(n) if n as u64 == len => Ok(()),
            Ok(n) => {
                log::debug!(
                    "{}: short {op} of region {index}: {n} of {len} bytes",
                    self.shared.name
                );
                Err(Error::sys(op, Target::Region(index), libc::EIO))
            }
            Err(e) => Err(e.into_error(op, Target::Region(index))),
        }
    }

    /// Whether a write at `[offset, offset + len)` of this region may change
    /// the PCI command register.
    fn touches_command(&self, offset: u64, len: u64) -> bool {
        self.shared.pci
            && self.info.index == pci_region::CONFIG
            && offset < cfg::COMMAND + 2
            && offset + len > cfg::COMMAND
    }
}

impl VfioRegion {
    #[inline(always)]
    fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        const OP: &str = "region read";
        let index = self.info.index;
        if !self.info.readable() {
            return Err(not_permitted(OP, index, "region has no READ flag"));
        }
        let len = buf.len() as u64;
        check_bounds(OP, Target::Region(index), offset, len, self.info.size)?;
        let target = || Target::Region(index);
        if let Some(area) = self.fast_area(offset, buf.len()) {
            let result = Self::fast_read(area, offset - area.region_offset(), buf);
            self.arm_window();
            // Checked after the load, which reads the zero pages that
            // replace the BAR once the device is revoked.
            return self.shared.live(OP, target).and(result);
        }
        // No check before the pread: once revoked, the fd names the
        // placeholder, whose refusal is turned into `Revoked` below.
        let at = self.file_offset("pread", offset, len)?;
        let result = self.whole("pread", sys::pread(self.shared.fd.as_fd(), buf, at), len);
        self.shared.unless_revoked(OP, target, result)
    }

    #[inline(always)]
    fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<()> {
        const OP: &str = "region write";
        let index = self.info.index;
        if !self.info.writable() {
            return Err(not_permitted(OP, index, "region has no WRITE flag"));
        }
        let len = data.len() as u64;
        check_bounds(OP, Target::Region(index), offset, len, self.info.size)?;
        let target = || Target::Region(index);
        if let Some(area) = self.fast_area(offset, data.len()) {
            let result = Self::fast_write(area, offset - area.region_offset(), data);
            self.arm_window();
            // Checked after the store, which goes to the zero pages that
            // replace the BAR once the device is revoked.
            return self.shared.live(OP, target).and(result);
        }
        self.shared.live(OP, target)?;
        let at = self.file_offset("pwrite", offset, len)?;
        let result = self.whole("pwrite", sys::pwrite(self.shared.fd.as_fd(), data, at), len);
        if self.touches_command(offset, len) {
            self.shared.forget_decode();
        }
        self.shared.unless_revoked(OP, target, result)
    }
}

impl Region for VfioRegion {
    fn info(&self) -> &RegionInfo {
        &self.info
    }

    #[inline]
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_bytes(offset, buf)
    }

    #[inline]
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_bytes(offset, data)
    }

    /// One volatile load from the region's cached mmap when the fast path
    /// serves the access (inlined into the caller), else [`Region::read`].
    #[inline]
    fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
        if let Some(value) = self.window_load(offset, size) {
            // Checked after the load, which reads the zero pages that
            // replace the BAR once the device is revoked.
            if self.shared.revoked.is_set() {
                return Err(revoked_error("region read", self.info.index));
            }
            return Ok(value);
        }
        self.read_scalar_slow(offset, size)
    }

    /// One volatile store to the region's cached mmap when the fast path
    /// serves the access (inlined into the caller), else [`Region::write`].
    #[inline]
    fn write_scalar(&self, offset: u64, size: usize, value: u64) -> Result<()> {
        if self.window_store(offset, size, value) {
            // Checked after the store, which goes to the zero pages that
            // replace the BAR once the device is revoked.
            if self.shared.revoked.is_set() {
                return Err(revoked_error("region write", self.info.index));
            }
            return Ok(());
        }
        self.write_scalar_slow(offset, size, value)
    }

    /// Maps the region's mappable areas; a revocation detaches them
    /// ([`MmapArea::detach`]) while they are alive.
    fn mmap(&self) -> Result<Vec<MmapArea>> {
        self.hand_out("mmap", |fd| map_areas(fd, &self.info))
    }

    /// Maps one mappable area; a revocation detaches it as those of
    /// [`Region::mmap`].
    fn mmap_area(&self, area: usize, protection: Protection) -> Result<MmapArea> {
        let chosen = self.info.mappable_area(area, protection)?;
        let mut mapped = self.hand_out("mmap_area", |fd| {
            map_area(fd, &self.info, &chosen, protection.writable()).map(|a| vec![a])
        })?;
        Ok(mapped.remove(0))
    }
}

impl VfioRegion {
    /// Runs `map` on the device fd unless the device is revoked, and
    /// registers what it mapped for a revocation to detach.
    fn hand_out(
        &self,
        op: &'static str,
        map: impl FnOnce(BorrowedFd<'_>) -> Result<Vec<MmapArea>>,
    ) -> Result<Vec<MmapArea>> {
        let target = || Target::Region(self.info.index);
        // Under the lock a revocation takes: registered before it looks.
        let mut release = self.shared.lock_release();
        self.shared.live(op, target)?;
        let areas = map(self.shared.fd.as_fd());
        let areas = self.shared.unless_revoked(op, target, areas)?;
        release.handed_out.retain(|d| !d.is_dropped());
        release
            .handed_out
            .extend(areas.iter().map(MmapArea::detacher));
        Ok(areas)
    }
}

/// One irq index of a [`VfioDevice`]; shares the device fd.
#[derive(Debug, Clone)]
pub struct VfioIrq {
    shared: Arc<Shared>,
    info: IrqInfo,
}

impl Irq for VfioIrq {
    fn info(&self) -> IrqInfo {
        self.info
    }

    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> {
        const OP: &str = "VFIO_DEVICE_SET_IRQS";
        let target = || Target::Irq(self.info.index);
        set.validate(&self.info)?;
        self.shared.live(OP, target)?;
        let mut bytes = set.to_bytes();
        let result = sys::argsz_ioctl(self.shared.fd.as_fd(), ArgszRequest::SetIrqs, &mut bytes)
            .map(drop)
            .map_err(|e| e.into_error(OP, target()));
        self.shared.unless_revoked(OP, target, result)
    }
}

/// One device a PCI hot reset would affect (`struct vfio_pci_dependent_device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HotResetDevice {
    /// The IOMMU group (group-opened device) or the iommufd device id (cdev,
    /// with [`HotResetInfo::DEV_ID`] set; `u32::MAX` is "not owned").
    pub id: u32,
    /// PCI segment.
    pub segment: u16,
    /// PCI bus.
    pub bus: u8,
    /// PCI device and function (`slot << 3 | function`).
    pub devfn: u8,
}

impl HotResetDevice {
    const SIZE: usize = 8;

    /// The PCI address, `ssss:bb:dd.f`.
    pub fn address(&self) -> String {
        format!(
            "{:04x}:{:02x}:{:02x}.{}",
            self.segment,
            self.bus,
            self.devfn >> 3,
            self.devfn & 7
        )
    }
}

/// What `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HotResetInfo {
    /// `VFIO_PCI_HOT_RESET_FLAG_*`.
    pub flags: u32,
    /// Every device the reset affects, this one included.
    pub devices: Vec<HotResetDevice>,
}

impl HotResetInfo {
    /// Flag: [`HotResetDevice::id`] holds iommufd device ids (cdev).
    pub const DEV_ID: u32 = 1 << 0;
    /// Flag: every affected device is owned by the caller's iommufd context.
    pub const DEV_ID_OWNED: u32 = 1 << 1;

    fn parse(buf: &[u8]) -> Result<Self> {
        let fields = Fields::new(buf, Buffer::DeviceInfo);
        let count = fields.u32(8)? as usize;
        let devices = buf
            .get(12..)
            .unwrap_or_default()
            .chunks_exact(HotResetDevice::SIZE)
            .take(count)
            .map(|d| {
                let d = Fields::new(d, Buffer::DeviceInfo);
                Ok(HotResetDevice {
                    id: d.u32(0)?,
                    segment: d.u16(4)?,
                    bus: d.u8(6)?,
                    devfn: d.u8(7)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            flags: fields.u32(4)?,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use vfio_hal::ErrorKind;

    #[derive(Debug)]
    struct Nothing;
    impl Backing for Nothing {
        fn keep_fds(&self) -> Vec<RawFd> {
            Vec::new()
        }
    }

    /// A region handle over a plain file, to test the checks that run
    /// before any system call.
    fn region_over(file: File, info: RegionInfo) -> VfioRegion {
        let shared = Arc::new(Shared {
            fast: Vec::new(),
            fd: file.into(),
            name: "test".into(),
            pci: true,
            config_offset: OnceLock::new(),
            state: AtomicU64::new(DECODE_UNKNOWN),
            revoked: RevokedFlag::new(),
            release: Mutex::default(),
            backing: Arc::new(Nothing),
        });
        VfioRegion::new(shared, info)
    }

    /// A region handle over a plain file whose fast path may map it: a
    /// PCI BAR 0 with decode known on.
    fn region_mapped(file: File, info: RegionInfo) -> VfioRegion {
        let shared = Arc::new(Shared {
            fast: vec![OnceLock::new()],
            fd: file.into(),
            name: "test".into(),
            pci: true,
            config_offset: OnceLock::new(),
            state: AtomicU64::new(DECODE_ON),
            revoked: RevokedFlag::new(),
            release: Mutex::default(),
            backing: Arc::new(Nothing),
        });
        VfioRegion::new(shared, info)
    }

    fn window_reads(r: &VfioRegion, offset: u64, size: usize) -> bool {
        r.window_at(offset, size, &r.window.read_len).is_some()
    }

    #[test]
    fn the_scalar_window_serves_only_aligned_access_while_the_state_allows() {
        use vfio_hal::region::flags;
        use vfio_hal::RegionExt;
        let (file, path) = temp_file(&[0x11; 4096]);
        let r = region_mapped(
            file,
            info(0, flags::READ | flags::WRITE | flags::MMAP, 4096, 0),
        );
        assert!(!window_reads(&r, 0, 4), "armed before first use");
        assert_eq!(r.read_at::<u32>(0).expect("read"), 0x1111_1111);
        assert!(window_reads(&r, 0, 4), "the fast path arms the window");
        // A store through the window reaches the file (MAP_SHARED).
        r.write_at::<u16>(6, 0xa55a).expect("write");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(bytes[6..8], [0x5a, 0xa5]);
        assert_eq!(r.read_at::<u64>(0).expect("read"), 0xa55a_1111_1111_1111);
        assert_eq!(r.read_at::<u8>(4095).expect("last byte"), 0x11);
        for (offset, size) in [(2, 4), (4092, 8), (4096, 1), (u64::MAX, 1), (0, 3)] {
            assert!(!window_reads(&r, offset, size), "{offset:#x}+{size}");
        }
        // Every state that forbids touching the BAR closes the window.
        for bit in [FAST_OFF, LOW_POWER] {
            r.shared.state.fetch_or(bit, Ordering::AcqRel);
            assert!(!window_reads(&r, 0, 4));
            assert!(!r.fast_path_covers(0, 4));
            assert_eq!(r.read_at::<u32>(0).expect("pread"), 0x1111_1111);
            r.shared.state.fetch_and(!bit, Ordering::AcqRel);
            assert!(window_reads(&r, 0, 4));
        }
        r.shared.forget_decode();
        assert!(!window_reads(&r, 0, 4), "decode unknown");
        // A clone keeps the armed window.
        r.shared.state.fetch_or(DECODE_ON, Ordering::AcqRel);
        assert!(window_reads(&r.clone(), 0, 4));
        let e = r.read_scalar(0, 9).expect_err("too wide");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_read_only_region_opens_no_write_window() {
        use vfio_hal::region::flags;
        use vfio_hal::RegionExt;
        let (file, path) = temp_file(&[0x22; 4096]);
        let r = region_mapped(file, info(0, flags::READ | flags::MMAP, 4096, 0));
        assert_eq!(r.read_at::<u32>(0).expect("read"), 0x2222_2222);
        assert!(window_reads(&r, 0, 4));
        assert!(r.window_at(0, 4, &r.window.write_len).is_none());
        let e = r.write_at::<u32>(0, 1).expect_err("no WRITE flag");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        let _ = std::fs::remove_file(path);
    }

    /// Revokes `region`'s device through `revoker` while another thread reads 4 bytes at 8
    /// in a loop (the region holds 0x5a bytes); the reader must have read
    /// that before its first error, which is `Revoked` and is returned.
    fn revoke_under_a_reader(region: &VfioRegion, revoker: &Revoker) -> Error {
        use vfio_hal::RegionExt;
        let reader = {
            let region = region.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                loop {
                    match region.read_at::<u32>(8) {
                        Ok(0x5a5a_5a5a) => reads += 1,
                        Ok(other) => panic!("read {other:#x}"),
                        Err(e) => return (reads, e),
                    }
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        revoker.revoke().expect("revoke");
        let (reads, err) = reader.join().expect("reader");
        assert!(reads > 0, "the reader never read before the revocation");
        assert!(matches!(err, Error::Revoked { .. }), "{err:?}");
        err
    }

    #[test]
    fn a_revocation_under_fast_path_reads_is_an_error_never_a_zero() {
        use vfio_hal::region::flags;
        use vfio_hal::RegionExt;
        let (file, path) = temp_file(&[0x5a; 4096]);
        let region = region_mapped(
            file,
            info(0, flags::READ | flags::WRITE | flags::MMAP, 4096, 0),
        );
        assert!(region.fast_path_covers(8, 4));
        let revoker = Revoker::new(&region.shared);
        revoke_under_a_reader(&region, &revoker);
        let later = region.write_at::<u32>(0, 1).expect_err("write after");
        assert!(matches!(later, Error::Revoked { .. }), "{later:?}");
        let _ = std::fs::remove_file(path);
    }

    /// Instruction counts of the fast path against a raw volatile load, for
    /// `valgrind --tool=callgrind` (docs/PERFORMANCE.md): the two loops
    /// are separate functions, each reading `PROBE_READS` times. Not built
    /// for the lane's guest, where it would only count as a skip.
    #[test]
    #[cfg(not(vfio_hal_guest))]
    #[ignore = "a probe for callgrind, not a test"]
    fn scalar_read_probe() {
        use vfio_hal::region::flags;
        use vfio_hal::RegionExt;
        const PROBE_READS: u32 = 10_000;
        #[inline(never)]
        fn hal_mmap_reads(r: &VfioRegion) -> u32 {
            let mut sum = 0u32;
            for _ in 0..PROBE_READS {
                sum = sum.wrapping_add(r.read_at::<u32>(0).expect("read"));
            }
            sum
        }
        #[inline(never)]
        fn hal_pread_reads(r: &VfioRegion) -> u32 {
            let mut sum = 0u32;
            for _ in 0..PROBE_READS {
                sum = sum.wrapping_add(r.read_at::<u32>(0).expect("read"));
            }
            sum
        }
        #[inline(never)]
        fn raw_loads(at: *const u32) -> u32 {
            let mut sum = 0u32;
            for _ in 0..PROBE_READS {
                // SAFETY: `at` is a live, aligned mapping (the caller's).
                sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(at) });
            }
            sum
        }
        #[inline(never)]
        fn raw_preads(fd: RawFd) -> u32 {
            let mut sum = 0u32;
            for _ in 0..PROBE_READS {
                let mut v = [0u8; 4];
                // SAFETY: reads 4 bytes into `v`.
                let n = unsafe { libc::pread64(fd, v.as_mut_ptr().cast(), 4, 0) };
                assert_eq!(n, 4);
                sum = sum.wrapping_add(u32::from_le_bytes(v));
            }
            sum
        }
        let (file, path) = temp_file(&[0x33; 4096]);
        let r = region_mapped(file, info(0, flags::READ | flags::MMAP, 4096, 0));
        assert!(r.fast_path_covers(0, 4));
        let areas = r.mmap().expect("mmap");
        let want = 0x3333_3333u32.wrapping_mul(PROBE_READS);
        assert_eq!(hal_mmap_reads(&r), want);
        assert_eq!(raw_loads(areas[0].as_ptr().cast()), want);
        r.shared.state.fetch_or(FAST_OFF, Ordering::AcqRel);
        assert_eq!(hal_pread_reads(&r), want);
        assert_eq!(raw_preads(r.shared.fd.as_raw_fd()), want);
        let _ = std::fs::remove_file(path);
    }

    fn fd_target(fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_revocation_detaches_the_mmaps_it_handed_out() {
        use vfio_hal::region::flags;
        let (file, path) = temp_file(&[0x77; 4096]);
        let region = region_over(
            file,
            info(0, flags::READ | flags::WRITE | flags::MMAP, 4096, 0),
        );
        let in_maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .expect("maps")
                .lines()
                .any(|l| l.contains(&*path.to_string_lossy()))
        };
        let dropped = region.mmap().expect("mmap");
        drop(dropped);
        let areas = region.mmap().expect("mmap");
        assert_eq!(areas.len(), 1);
        assert_eq!(areas[0].load::<u32>(0).expect("load"), 0x7777_7777);
        assert!(in_maps(), "the file is mapped");

        Revoker::new(&region.shared).revoke().expect("revoke");
        assert!(!in_maps(), "a handed-out mmap still maps the file");
        assert_eq!(areas[0].load::<u32>(0).expect("load after"), 0);
        let e = region.mmap().expect_err("mmap after");
        assert!(matches!(e, Error::Revoked { .. }), "{e:?}");
        drop(areas);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_revocation_refuses_racing_and_later_access_and_lets_go_of_the_file() {
        let (file, path) = temp_file(&[0x5a; 64]);
        use vfio_hal::region::flags;
        use vfio_hal::RegionExt;
        let region = region_over(file, info(0, flags::READ | flags::WRITE, 64, 0));
        let raw = region.shared.fd.as_raw_fd();
        let revoker = Revoker::new(&region.shared);
        let err = revoke_under_a_reader(&region, &revoker);
        assert_eq!(err.kind(), ErrorKind::DeviceGone);
        let later = region.write_at::<u32>(0, 1).expect_err("write after");
        assert!(matches!(later, Error::Revoked { .. }), "{later:?}");
        // The number is still taken, by a placeholder, not by the file.
        assert!(fd_target(raw).contains("eventfd"), "{}", fd_target(raw));
        revoker.revoke().expect("idempotent");
        drop(region);
        assert!(revoker.is_revoked());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn one_area_is_mapped_at_its_offset_with_the_protection_asked() {
        use vfio_hal::region::flags;
        use vfio_hal::{Capability, Protection};
        let mut content = vec![0x11u8; 3 * 4096];
        content[2 * 4096..].fill(0x33);
        let (file, path) = temp_file(&content);
        let mut sparse = info(0, flags::READ | flags::WRITE | flags::MMAP, 3 * 4096, 0);
        sparse.flags |= flags::CAPS;
        sparse.caps = vec![Capability::SparseMmap(vec![
            SparseArea {
                offset: 0,
                size: 4096,
            },
            SparseArea {
                offset: 2 * 4096,
                size: 4096,
            },
        ])];
        let region = region_over(file, sparse);
        let area = region
            .mmap_area(1, Protection::Read)
            .expect("map the second area");
        assert_eq!((area.region_offset(), area.len()), (2 * 4096, 4096));
        assert!(!area.is_writable());
        assert_eq!(area.load::<u32>(0).expect("load"), 0x3333_3333);
        let e = region
            .mmap_area(2, Protection::Read)
            .expect_err("two areas");
        assert!(matches!(e, Error::NoSuchIndex { count: 2, .. }), "{e:?}");

        Revoker::new(&region.shared).revoke().expect("revoke");
        assert_eq!(area.load::<u32>(0).expect("load after"), 0, "not detached");
        let e = region
            .mmap_area(0, Protection::ReadWrite)
            .expect_err("after revoke");
        assert!(matches!(e, Error::Revoked { .. }), "{e:?}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_borrowed_device_fd_is_never_a_freed_number() {
        let (file, path) = temp_file(&[0; 64]);
        let device = VfioDevice {
            shared: region_over(file, info(0, 0, 0, 0)).shared,
            info: DeviceInfo::default(),
        };
        let raw = device.as_fd().as_raw_fd();
        assert!(
            fd_target(raw).contains("vfio-hal-linux-devfd"),
            "{}",
            fd_target(raw)
        );
        device.revoker().expect("revoker").revoke().expect("revoke");
        assert_eq!(device.as_fd().as_raw_fd(), raw);
        assert!(fd_target(raw).contains("eventfd"), "{}", fd_target(raw));
        let _ = std::fs::remove_file(path);
    }

    fn temp_file(bytes: &[u8]) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "vfio-hal-linux-devfd-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).expect("write temp file");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open temp file");
        (f, path)
    }

    fn info(index: u32, flags: u32, size: u64, offset: u64) -> RegionInfo {
        RegionInfo {
            index,
            flags,
            size,
            offset,
            caps: Vec::new(),
        }
    }

    #[test]
    fn bounds_are_checked_before_the_syscall() {
        // /dev/null would "succeed" with 0 bytes: the errors below come from
        // the checks, not from the kernel.
        let r = region_over(
            File::open("/dev/null").expect("open"),
            info(0, vfio_hal::region::flags::READ, 0x100, 0),
        );
        let e = r.read(0xff, &mut [0u8; 2]).expect_err("past the end");
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
        let e = r.read(u64::MAX, &mut [0u8; 2]).expect_err("wraps");
        assert_eq!(e.kind(), ErrorKind::Overflow);
        let e = r.write(0, &[0u8; 1]).expect_err("no WRITE flag");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
    }

    #[test]
    fn region_io_goes_to_region_offset_plus_offset() {
        let mut content = vec![0u8; 64];
        content[40..44].copy_from_slice(&[1, 2, 3, 4]);
        let (f, path) = temp_file(&content);
        let flags = vfio_hal::region::flags::READ | vfio_hal::region::flags::WRITE;
        let r = region_over(f, info(2, flags, 16, 32));
        let mut buf = [0u8; 4];
        r.read(8, &mut buf).expect("read");
        assert_eq!(buf, [1, 2, 3, 4]);
        r.write(12, &[9, 9]).expect("write");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(&back[44..46], &[9, 9]);
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn a_short_read_is_an_error_with_eio() {
        // The file ends inside the region: pread returns fewer bytes.
        let (f, path) = temp_file(&[0u8; 10]);
        let r = region_over(f, info(0, vfio_hal::region::flags::READ, 0x100, 0));
        let e = r.read(8, &mut [0u8; 4]).expect_err("short");
        assert_eq!(e.errno(), Some(libc::EIO));
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn region_offset_plus_offset_overflow_is_typed() {
        let r = region_over(
            File::open("/dev/null").expect("open"),
            info(0, vfio_hal::region::flags::READ, u64::MAX, u64::MAX - 2),
        );
        let e = r.read(8, &mut [0u8; 4]).expect_err("file offset wraps");
        assert_eq!(e.kind(), ErrorKind::Overflow);
    }

    #[test]
    fn only_writes_to_the_command_register_forget_the_decode_state() {
        let r = region_over(
            File::open("/dev/null").expect("open"),
            info(pci_region::CONFIG, 3, 256, 0),
        );
        assert!(r.touches_command(4, 2));
        assert!(r.touches_command(0, 8));
        assert!(r.touches_command(5, 1));
        assert!(!r.touches_command(6, 2));
        assert!(!r.touches_command(0, 4));
    }

    #[test]
    fn a_decode_reading_never_outlives_a_config_write() {
        let r = region_over(
            File::open("/dev/null").expect("open"),
            info(0, vfio_hal::region::flags::READ, 0x100, 0),
        );
        let shared = &r.shared;
        // No config region behind /dev/null: decode reads as off, stored.
        assert!(!shared.fast_path_allowed(0));
        assert_eq!(shared.state.load(Ordering::Acquire), DECODE_OFF);
        shared.forget_decode();
        let v = shared.state.load(Ordering::Acquire);
        assert_eq!(v & DECODE_STATE, DECODE_UNKNOWN);
        assert_eq!(v / DECODE_GENERATION, 1, "one generation later");
        // A reading taken in generation 1 cannot be stored in generation 2.
        shared.forget_decode();
        let stale = v | DECODE_ON;
        assert!(shared
            .state
            .compare_exchange(v, stale, Ordering::AcqRel, Ordering::Acquire)
            .is_err());
        // Only BARs of a PCI device take the fast path, and not in low power.
        assert!(!shared.fast_path_allowed(pci_region::CONFIG));
        shared.state.fetch_or(LOW_POWER, Ordering::AcqRel);
        assert!(!shared.fast_path_allowed(0));
    }

    #[test]
    fn dma_buf_is_refused_before_the_ioctl_so_no_fd_can_leak() {
        let device = device_over_dev_null();
        let mut payload = [0u8; 16];
        for op in [FeatureOp::Set, FeatureOp::Get] {
            let e = device
                .feature(op, feature::DMA_BUF, &mut payload)
                .expect_err("refused");
            // Not an ENOTTY from /dev/null: refused before any ioctl.
            assert!(
                matches!(
                    e,
                    Error::NotSupported {
                        target: Target::Feature(feature::DMA_BUF),
                        ..
                    }
                ),
                "{op:?}: {e:?}"
            );
        }
        // Probing asks the kernel (here /dev/null, which knows no ioctl).
        let e = device
            .feature(FeatureOp::ProbeSet, feature::DMA_BUF, &mut [])
            .expect_err("not a VFIO fd");
        assert_eq!(e.errno(), Some(libc::ENOTTY));
    }

    /// A device whose fd is /dev/null, which knows no ioctl: a call that
    /// reaches the kernel fails with `ENOTTY`.
    fn device_over_dev_null() -> VfioDevice {
        let region = region_over(
            File::open("/dev/null").expect("open"),
            RegionInfo::default(),
        );
        VfioDevice {
            shared: region.shared,
            info: DeviceInfo::default(),
        }
    }

    #[test]
    fn setting_the_migration_state_raw_is_refused_before_the_ioctl() {
        let device = device_over_dev_null();
        let e = device
            .feature(FeatureOp::Set, feature::MIG_DEVICE_STATE, &mut [0; 8])
            .expect_err("refused");
        assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
        // GET asks the kernel (here /dev/null, which knows no ioctl).
        let e = device
            .feature(FeatureOp::Get, feature::MIG_DEVICE_STATE, &mut [0; 8])
            .expect_err("not a VFIO fd");
        assert_eq!(e.errno(), Some(libc::ENOTTY));
    }

    #[test]
    fn hot_reset_info_parses_devices() {
        let mut buf = vec![0u8; 12 + 16];
        put_u32(&mut buf, 4, HotResetInfo::DEV_ID);
        put_u32(&mut buf, 8, 2);
        buf[12..16].copy_from_slice(&7u32.to_ne_bytes());
        buf[16..18].copy_from_slice(&0u16.to_ne_bytes());
        buf[18] = 0;
        buf[19] = (1 << 3) | 2;
        buf[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        buf[26] = 3;
        let info = HotResetInfo::parse(&buf).expect("parses");
        assert_eq!(info.flags, HotResetInfo::DEV_ID);
        assert_eq!(info.devices.len(), 2);
        assert_eq!(info.devices[0].id, 7);
        assert_eq!(info.devices[0].address(), "0000:00:01.2");
        assert_eq!(info.devices[1].bus, 3);
        // A count larger than the buffer is clipped, not trusted.
        put_u32(&mut buf, 8, 1000);
        let info = HotResetInfo::parse(&buf).expect("parses");
        assert_eq!(info.devices.len(), 2);
    }

    #[test]
    fn a_hot_reset_info_shorter_than_its_header_is_malformed() {
        // flags, but no count: a zero count would read as "no devices".
        let mut buf = vec![0u8; 8];
        put_u32(&mut buf, 4, HotResetInfo::DEV_ID);
        let e = HotResetInfo::parse(&buf).expect_err("short buffer");
        assert!(
            matches!(
                e,
                Error::Malformed {
                    buffer: Buffer::DeviceInfo,
                    source: vfio_hal::caps::ParseError::Truncated {
                        offset: 8,
                        need: 4,
                        len: 8
                    }
                }
            ),
            "{e:?}"
        );
    }
}
