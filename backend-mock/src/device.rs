//! `MockDevice`, `MockRegion` and `MockIrq`: the hal traits over a plugged model.
//!
//! A plugged device is a [`DeviceCore`]: the model and its [`PciFunction`]
//! behind one lock. Every hal call on a device, region or irq takes that
//! lock, once, except a 4-byte read of a register the model declares
//! side-effect free, which the register mirror ([`crate::mirror`]) answers
//! while nothing has happened to the device since its last locked read.
//! The hot path (a register read) allocates nothing.
//!
//! Lifetime follows the device file descriptor of vfio: the device is open
//! while any handle to it — the [`MockDevice`], or a region or irq handle
//! obtained from it — is alive; dropping the last one closes it (routes are
//! torn down and their eventfd dups closed, the model is reset). A
//! [`vfio_hal::Revoker`] closes it the same way while handles still exist;
//! they then refuse every operation with [`Error::Revoked`].

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::relax::Yield;

use vfio_hal::device::flags as dflags;
use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::error::check_index;
use vfio_hal::migration::{MigrationData, MigrationState};
use vfio_hal::region::not_permitted;
use vfio_hal::revoke::{Revoke, RevokedFlag, Revoker};
use vfio_hal::{
    Device, DeviceInfo, Error, FeatureOp, Irq, IrqInfo, IrqSet, MmapArea, MmapDetacher, Protection,
    Region, RegionInfo, Result, Target,
};

use crate::container::Shared;
use crate::dma_log::DmaLog;
use crate::migration::{self, Migration};
use crate::mirror::{Held, Mirror};
use crate::model::{DeviceContext, DeviceModel};
use crate::pci::{Backing, PciFunction, Role};

/// Most rounds of due work one settle runs (guards against a model that
/// never clears its deadline).
const MAX_TIMER_ROUNDS: u32 = 10_000;

/// The largest naturally aligned access (8, 4, 2 or 1 bytes) at `offset`
/// that fits in `remaining` bytes, as vfio-pci splits region I/O.
fn piece(offset: u64, remaining: usize) -> usize {
    // Both bounds are powers of two: the alignment of `offset` and the
    // largest size that fits, each capped at 8.
    let aligned = 1usize << offset.trailing_zeros().min(3);
    let fits = 1usize << remaining.clamp(1, 8).ilog2();
    aligned.min(fits)
}

#[derive(Debug)]
pub(crate) struct DeviceState {
    model: Box<dyn DeviceModel>,
    pci: PciFunction,
    migration: Migration,
    dma_log: DmaLog,
    open: bool,
    gone: bool,
}

/// The lock around a device's state: taken once per hal call, held only
/// for the call's own work (never across a wait), and almost never
/// contended. A test-and-set lock costs one atomic read-modify-write per
/// lock and unlock pair, where std's futex mutex takes two (about 7 ns
/// against 16 ns on the benchmark machine, most of a register read);
/// a waiter yields its CPU between tries.
type DeviceLock = SpinMutex<DeviceState, Yield>;

impl MockDevice {
    /// `f` on the device's DMA log, through the device fd; `ENOTTY` for a
    /// model that cannot migrate (no logging driver).
    fn with_dma_log<R>(
        &self,
        op: &'static str,
        feature: u32,
        f: impl FnOnce(&mut DmaLog) -> Result<R>,
    ) -> Result<R> {
        let core = &self.handle.core;
        let target = || Target::Feature(feature);
        let mut st = core.lock();
        st.live(op, target())?;
        self.handle.live(op, target)?;
        let shared = &self.handle.shared;
        st.through_fd(|st| {
            if st.saved_state(&core.name, shared).is_none() {
                return Err(Error::sys(op, target(), libc::ENOTTY));
            }
            f(&mut st.dma_log)
        })
    }
}

/// One plugged device.
#[derive(Debug)]
pub(crate) struct DeviceCore {
    name: String,
    state: DeviceLock,
    /// The model's side-effect-free registers, readable without the lock.
    mirror: Mirror,
}

/// The device lock, held. Every holder is taken to change the device's
/// state (so the mirror's values go stale on release) unless it says
/// otherwise with [`StateGuard::changes_nothing`].
struct StateGuard<'a> {
    state: SpinMutexGuard<'a, DeviceState>,
    mirror: &'a Mirror,
    held: Held,
    changed: bool,
}

impl StateGuard<'_> {
    /// The holder only reads side-effect-free registers: the mirror's
    /// values stay good.
    fn changes_nothing(&mut self) {
        self.changed = false;
    }
}

impl Deref for StateGuard<'_> {
    type Target = DeviceState;

    fn deref(&self) -> &DeviceState {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    /// Publishes the mirror's generation before the lock is released (the
    /// fields drop after this).
    fn drop(&mut self) {
        self.mirror.release(self.held, self.changed);
    }
}

fn gone(op: &'static str, target: Target) -> Error {
    Error::sys(op, target, libc::ENODEV)
}

impl DeviceState {
    fn live(&self, op: &'static str, target: Target) -> Result<()> {
        if self.gone {
            Err(gone(op, target))
        } else {
            Ok(())
        }
    }

    /// One access through the device fd — an ioctl or a region read or
    /// write — bracketed as vfio-pci brackets each: the device is resumed
    /// from runtime suspend before and may suspend again after (see
    /// [`crate::pci::power`]).
    #[inline]
    fn through_fd<R>(&mut self, access: impl FnOnce(&mut Self) -> R) -> R {
        self.pci.pm_get();
        let result = access(self);
        self.pci.pm_put();
        result
    }

    fn saved_state(&mut self, name: &str, shared: &Shared) -> Option<Vec<u8>> {
        let ctx = DeviceContext {
            name,
            pci: &mut self.pci,
            shared,
            dma_log: &mut self.dma_log,
        };
        self.model.save_state(&ctx)
    }

    /// `MIGRATION`, `MIG_DEVICE_STATE` and `MIG_DATA_SIZE` as vfio answers
    /// them (`vfio_check_feature`: a direction the feature lacks, or a
    /// short payload, is `EINVAL`); `None` for any other feature, or when
    /// the model cannot migrate (vfio-pci then answers `ENOTTY`).
    fn migration_feature(
        &mut self,
        name: &str,
        shared: &Shared,
        op: FeatureOp,
        feature: u32,
        data: &mut [u8],
    ) -> Option<Result<()>> {
        use vfio_hal::device::feature as f;
        let (get, set) = match feature {
            f::MIGRATION | f::MIG_DATA_SIZE | f::DMA_LOGGING_REPORT => (true, false),
            f::MIG_DEVICE_STATE => (true, true),
            f::DMA_LOGGING_START | f::DMA_LOGGING_STOP => (false, true),
            _ => return None,
        };
        let state = self.saved_state(name, shared)?;
        let refuse = |errno| {
            Some(Err(Error::sys(
                "VFIO_DEVICE_FEATURE",
                Target::Feature(feature),
                errno,
            )))
        };
        let wanted = matches!(op, FeatureOp::Get | FeatureOp::ProbeGet);
        if (wanted && !get) || (!wanted && !set) {
            return refuse(libc::EINVAL);
        }
        if matches!(op, FeatureOp::ProbeGet | FeatureOp::ProbeSet) {
            return Some(Ok(()));
        }
        if feature == f::DMA_LOGGING_STOP {
            self.dma_log.stop();
            return Some(Ok(()));
        }
        if matches!(feature, f::DMA_LOGGING_START | f::DMA_LOGGING_REPORT) {
            // Their payloads carry addresses: only the typed calls.
            return Some(Err(Error::NotSupported {
                op: "VFIO_DEVICE_FEATURE",
                target: Target::Feature(feature),
                reason: "DMA logging payloads hold addresses: use Device::dma_logging_start \
                         and dma_logging_report",
            }));
        }
        if op == FeatureOp::Set {
            // MIG_DEVICE_STATE SET answers with a data fd: only the typed
            // call can hand it back.
            return Some(Err(Error::NotSupported {
                op: "VFIO_DEVICE_FEATURE",
                target: Target::Feature(feature),
                reason: "setting the migration state answers with a data stream: use \
                         Device::set_migration_state",
            }));
        }
        let Some(payload) = data.get_mut(..8) else {
            return refuse(libc::EINVAL);
        };
        let value = match feature {
            f::MIGRATION => migration::migration_flags().bits(),
            f::MIG_DATA_SIZE => Migration::data_size(state.len()),
            // struct vfio_device_feature_mig_state: state, then data_fd -1.
            _ => u64::from(self.migration.state().raw()) | (u64::from(u32::MAX) << 32),
        };
        payload.copy_from_slice(&value.to_ne_bytes());
        Some(Ok(()))
    }

    fn set_migration_state(
        &mut self,
        name: &str,
        shared: &Shared,
        to: MigrationState,
    ) -> Result<Option<MigrationData>> {
        const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";
        let target = Target::Feature(vfio_hal::device::feature::MIG_DEVICE_STATE);
        if self.saved_state(name, shared).is_none() {
            return Err(Error::sys(OP, target, libc::ENOTTY));
        }
        let mut handed = None;
        for next in self.migration.plan(to)? {
            let (work, data) = self.migration.step(next);
            match work {
                migration::Work::None => {}
                migration::Work::Save => {
                    let state = self.saved_state(name, shared).unwrap_or_default();
                    self.migration.append(&state);
                }
                migration::Work::Load(bytes) => {
                    let loaded = migration::last_frame(&bytes).and_then(|frame| {
                        self.with_ctx(name, shared, |m, ctx| m.load_state(ctx, frame))
                            .map_err(|reason| {
                                log::warn!("{name}: migration data refused: {reason}");
                                Error::sys(OP, target.clone(), libc::EINVAL)
                            })
                    });
                    if let Err(e) = loaded {
                        self.migration.fail();
                        return Err(e);
                    }
                }
            }
            handed = data;
        }
        Ok(handed)
    }

    fn with_ctx<R>(
        &mut self,
        name: &str,
        shared: &Shared,
        f: impl FnOnce(&mut dyn DeviceModel, &mut DeviceContext<'_>) -> R,
    ) -> R {
        let mut ctx = DeviceContext {
            name,
            pci: &mut self.pci,
            shared,
            dma_log: &mut self.dma_log,
        };
        f(&mut *self.model, &mut ctx)
    }

    /// Runs due work; in automatic mode first jumps the clock to each deadline.
    ///
    /// Inlined into every access: with no work scheduled it costs one
    /// dynamic call to the model.
    #[inline]
    fn settle(&mut self, name: &str, shared: &Shared) {
        if !self.gone && (*self.model).deadline().is_some() && !self.migration.frozen() {
            self.run_scheduled(name, shared);
        }
    }

    #[inline(never)]
    fn run_scheduled(&mut self, name: &str, shared: &Shared) {
        let mut rounds = 0;
        while let Some(at) = self.model.deadline() {
            if at > shared.clock.now() {
                if shared.clock.is_manual() {
                    return;
                }
                shared.clock.jump_to(at);
            }
            self.with_ctx(name, shared, |m, ctx| m.on_deadline(ctx));
            rounds += 1;
            if rounds == MAX_TIMER_ROUNDS {
                log::warn!("{name}: model keeps scheduling work; giving up for now");
                return;
            }
        }
    }

    /// Whether a 4-byte read of a declared side-effect-free register at
    /// `offset` of `index` would change nothing now: the model is called
    /// (a handler-backed span of a decoding BAR), no work is scheduled, no
    /// INTx resample eventfd is waiting to be polled and the device is not
    /// in low power (where every access resumes it, and BAR mmaps fault).
    fn reads_purely(&self, index: u32, offset: u64) -> bool {
        let Role::Bar(bar) = self.pci.role(index) else {
            return false;
        };
        let (backing, end) = self.pci.classify(bar, offset);
        self.open
            && !self.gone
            && self.pci.decodes(bar)
            && matches!(backing, Backing::Handler)
            && end >= offset + 4
            && !self.pci.irqs.resample_routed()
            && !self.pci.power.engaged()
            && self.model.deadline().is_none()
    }

    fn handler_read(
        &mut self,
        name: &str,
        shared: &Shared,
        region: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut pos = 0;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let n = piece(at, buf.len() - pos);
            let chunk = &mut buf[pos..pos + n];
            self.with_ctx(name, shared, |m, ctx| m.read(ctx, region, at, chunk))?;
            pos += n;
        }
        Ok(())
    }

    fn handler_write(
        &mut self,
        name: &str,
        shared: &Shared,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let mut pos = 0;
        while pos < data.len() {
            let at = offset + pos as u64;
            let n = piece(at, data.len() - pos);
            let chunk = &data[pos..pos + n];
            self.with_ctx(name, shared, |m, ctx| m.write(ctx, region, at, chunk))?;
            pos += n;
        }
        Ok(())
    }

    fn bar_read(
        &mut self,
        name: &str,
        shared: &Shared,
        bar: u8,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let region = u32::from(bar);
        if !self.pci.decodes(bar) {
            return Err(Error::sys("pread", Target::Region(region), libc::EIO));
        }
        let mut pos = 0;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let (backing, end) = self.pci.classify(bar, at);
            let n = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len() - pos);
            let chunk = &mut buf[pos..pos + n];
            match backing {
                Backing::Ram => match self.pci.ram(bar) {
                    Some(ram) => ram.read(at, chunk)?,
                    None => chunk.fill(0xff),
                },
                Backing::MsixTable => chunk.fill(0xff),
                Backing::MsixPba { base } => self.pci.pba_read(base, at, chunk),
                Backing::Handler => self.handler_read(name, shared, region, at, chunk)?,
            }
            pos += n;
        }
        Ok(())
    }

    fn bar_write(
        &mut self,
        name: &str,
        shared: &Shared,
        bar: u8,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let region = u32::from(bar);
        if !self.pci.decodes(bar) {
            return Err(Error::sys("pwrite", Target::Region(region), libc::EIO));
        }
        let mut pos = 0;
        while pos < data.len() {
            let at = offset + pos as u64;
            let (backing, end) = self.pci.classify(bar, at);
            let n = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(data.len() - pos);
            let chunk = &data[pos..pos + n];
            match backing {
                Backing::Ram => {
                    if let Some(ram) = self.pci.ram(bar) {
                        ram.write(at, chunk)?;
                    }
                }
                // vfio-pci drops writes to the MSI-X table; the PBA is read-only.
                Backing::MsixTable | Backing::MsixPba { .. } => {}
                Backing::Handler => self.handler_write(name, shared, region, at, chunk)?,
            }
            pos += n;
        }
        Ok(())
    }
}

impl DeviceCore {
    /// Builds the device from `model`'s layout.
    pub(crate) fn new(name: &str, model: Box<dyn DeviceModel>) -> Result<Self> {
        let pci = PciFunction::new(name, &model.layout())?;
        let mirror = Mirror::new(&model.pure_registers());
        Ok(Self {
            name: name.to_owned(),
            mirror,
            state: DeviceLock::new(DeviceState {
                model,
                pci,
                migration: Migration::default(),
                dma_log: DmaLog::default(),
                open: false,
                gone: false,
            }),
        })
    }

    #[inline]
    fn lock(&self) -> StateGuard<'_> {
        let state = self.state.lock();
        StateGuard {
            state,
            held: self.mirror.hold(),
            mirror: &self.mirror,
            changed: true,
        }
    }

    /// `open_device`: fails with `EBUSY` while already open.
    pub(crate) fn open(self: &Arc<Self>, shared: &Arc<Shared>) -> Result<MockDevice> {
        let mut st = self.lock();
        let target = || Target::Device(self.name.clone());
        st.live("open_device", target())?;
        if st.open {
            return Err(Error::Busy {
                op: "open_device",
                errno: libc::EBUSY,
                target: target(),
                reason: "the device is still open: its MockDevice or a region or irq taken from it is alive (drop them all to close it)",
            });
        }
        st.open = true;
        st.pci.reopen();
        st.migration.reset();
        st.dma_log.stop();
        st.with_ctx(&self.name, shared, |m, ctx| m.reset(ctx));
        let info = DeviceInfo {
            name: self.name.clone(),
            flags: dflags::PCI | dflags::RESET,
            num_regions: st.pci.region_count(),
            num_irqs: st.pci.irqs.infos().len() as u32,
            caps: Vec::new(),
        };
        drop(st);
        Ok(MockDevice {
            handle: Arc::new(Handle {
                shared: Arc::clone(shared),
                core: Arc::clone(self),
                revoked: RevokedFlag::new(),
                handed_out: Mutex::default(),
                file: OnceLock::new(),
            }),
            info,
        })
    }

    /// The last handle went away: tear down routes and reset, like a
    /// vfio-pci release.
    fn close(&self, shared: &Shared) {
        let mut st = self.lock();
        if !st.open {
            return;
        }
        st.open = false;
        st.migration.reset();
        st.dma_log.stop();
        // vfio_pci_core_disable: out of low power, its eventfd let go unsignalled.
        st.pci.power.disable();
        st.pci.irqs.teardown();
        if !st.gone {
            st.with_ctx(&self.name, shared, |m, ctx| m.reset(ctx));
        }
        st.pci.sync_irq_state();
    }

    /// Surprise removal: every later operation is `ENODEV`; routes and a
    /// low-power wakeup eventfd are closed.
    pub(crate) fn unplug(&self) {
        let mut st = self.lock();
        st.gone = true;
        st.pci.power.disable();
        st.pci.irqs.teardown();
        st.pci.sync_irq_state();
    }

    /// Signals the REQ eventfd if the device is open and has one.
    pub(crate) fn request_release(&self) -> bool {
        let st = self.lock();
        st.open && !st.gone && st.pci.irqs.request_release()
    }

    /// Runs the work that is due (manual clock) or pending (automatic clock).
    pub(crate) fn run_timers(&self, shared: &Shared) {
        self.lock().settle(&self.name, shared);
    }

    /// A 4-byte read of a side-effect-free register from the mirror, if
    /// nothing has happened to the device since its value was read.
    #[inline]
    fn mirrored_read(&self, handle: &Handle, index: u32, offset: u64) -> Option<u32> {
        // A revocation sets the flag before it closes the device: a read
        // that sees it clear is wholly before the revocation.
        if handle.revoked.is_set() {
            return None;
        }
        self.mirror.read(index, offset)
    }

    fn region_read(&self, handle: &Handle, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let shared = &*handle.shared;
        let mut st = self.lock();
        st.live("pread", Target::Region(index))?;
        handle.live("pread", || Target::Region(index))?;
        if let Ok(word) = <&mut [u8; 4]>::try_from(&mut *buf) {
            if self.mirror.declares(index, offset) && st.reads_purely(index, offset) {
                let result = st.handler_read(&self.name, shared, index, offset, word);
                if result.is_ok() {
                    st.changes_nothing();
                    self.mirror
                        .fill(st.held, index, offset, u32::from_ne_bytes(*word));
                }
                return result;
            }
        }
        // vfio-pci answers a 0-byte read before it resumes the device.
        let wakes = !buf.is_empty();
        let mut read = |st: &mut DeviceState| {
            st.pci.irqs.poll_resample();
            let result = match st.pci.role(index) {
                Role::Config => {
                    st.pci.config_read(offset, buf);
                    return Ok(());
                }
                Role::Bar(bar) => st.bar_read(&self.name, shared, bar, offset, buf),
                Role::Device => st.handler_read(&self.name, shared, index, offset, buf),
                Role::Absent => Ok(()),
            };
            st.settle(&self.name, shared);
            result
        };
        if wakes {
            st.through_fd(read)
        } else {
            read(&mut st)
        }
    }

    fn region_write(&self, handle: &Handle, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        let shared = &*handle.shared;
        let mut st = self.lock();
        st.live("pwrite", Target::Region(index))?;
        handle.live("pwrite", || Target::Region(index))?;
        let write = |st: &mut DeviceState| {
            st.pci.irqs.poll_resample();
            let result = match st.pci.role(index) {
                Role::Config => {
                    st.pci.config_write(offset, data);
                    Ok(())
                }
                Role::Bar(bar) => st.bar_write(&self.name, shared, bar, offset, data),
                Role::Device => st.handler_write(&self.name, shared, index, offset, data),
                Role::Absent => Ok(()),
            };
            st.settle(&self.name, shared);
            result
        };
        // vfio-pci answers a 0-byte write before it resumes the device.
        if data.is_empty() {
            write(&mut st)
        } else {
            st.through_fd(write)
        }
    }
}

/// Keeps a device open; the last one dropped closes it, unless a
/// revocation closed it first.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    core: Arc<DeviceCore>,
    revoked: RevokedFlag,
    /// The RAM-BAR mmaps handed out through this open, held weakly.
    handed_out: Mutex<Vec<MmapDetacher>>,
    /// The file standing for this open where a hypervisor wants the
    /// device's VFIO file; made on first use.
    file: OnceLock<OwnedFd>,
}

impl Handle {
    /// Refuses an operation through a revoked handle. Called with the
    /// device's lock held, which a revocation takes to close the device:
    /// an operation is wholly before the revocation or refused.
    fn live(&self, op: &'static str, target: impl FnOnce() -> Target) -> Result<()> {
        self.revoked.check(op, target)
    }
}

impl Revoke for Handle {
    /// Closes the device now, as the last handle's drop would: routes torn
    /// down, the model reset, the device free to be opened again; and
    /// detaches the RAM-BAR mmaps handed out (they stop aliasing the
    /// device's memory).
    fn revoke(&self) -> Result<()> {
        if !self.revoked.set() {
            return Ok(());
        }
        // Any mmap registered under the device lock before close took it.
        self.core.close(&self.shared);
        let handed_out = std::mem::take(
            &mut *self
                .handed_out
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        handed_out.iter().try_for_each(MmapDetacher::detach)
    }

    fn is_revoked(&self) -> bool {
        self.revoked.is_set()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.revoked.is_set() {
            self.core.close(&self.shared);
        }
    }
}

/// An open mock device (from [`vfio_hal::Container::open_device`] on a [`crate::MockContainer`]).
///
/// Nine vfio-pci regions (BAR0–5, ROM, CONFIG, VGA; absent ones have size
/// 0) plus the model's device-specific ones, and five irq indices (INTx,
/// MSI, MSI-X, ERR, REQ) with the counts vfio-pci reports.
///
/// A host's unplug request and a driver's answer to it, revocation
/// ([`vfio_hal::revoke`]):
///
/// ```
/// use vfio_hal::eventfd::{EventFd, EventFdExt};
/// use vfio_hal::irq::index::REQ;
/// use vfio_hal::prelude::*;
/// use vfio_hal::ErrorKind;
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let edu = container.open_device("edu")?;
/// let bar0 = edu.region(0)?; // a vCPU's handle
/// let revoker = edu.revoker()?; // the event loop's
///
/// let req = EventFd::nonblocking()
///     .map_err(|e| vfio_hal::Error::from_io("eventfd", vfio_hal::Target::None, &e))?;
/// edu.irq(REQ)?.set_eventfd(0, Some(req.as_fd()))?;
///
/// assert!(container.request_unplug("edu")?, "REQ signalled");
/// revoker.revoke()?; // what the REQ handler does
/// assert_eq!(bar0.read_at::<u32>(0).unwrap_err().kind(), ErrorKind::DeviceGone);
/// assert_eq!(edu.reset().unwrap_err().kind(), ErrorKind::DeviceGone);
/// // Let go already: the device opens again while the old handles live.
/// let again = container.open_device("edu")?;
/// assert_eq!(again.region(0)?.read_at::<u32>(0)?, 0x0100_00ed);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
///
/// # Low power
/// vfio-pci's three low-power features work as Linux 6.12's
/// `vfio_pci_core.c` has them: SET only; entry while in low power is
/// `EINVAL`, exit while not is a no-op. While in low
/// power the device is runtime-suspended, and any access through the
/// device fd — every ioctl (region and irq info, `SET_IRQS`, reset, the
/// feature ioctls themselves) and every region read or write — resumes it
/// first. A device entered with a wakeup eventfd signals it once on that
/// resume and leaves low power; one entered without stays in low power
/// until `LOW_POWER_EXIT` or close. Closing ends low power without a
/// signal; a reset does not end it (it resumes the device like any ioctl).
/// No region access bypasses the device in low power: the register mirror
/// is off ([`MockRegion::fast_path_covers`] is false), as vfio-pci faults
/// BAR mmaps then.
///
/// ```
/// use vfio_hal::eventfd::{EventFd, EventFdExt};
/// use vfio_hal::prelude::*;
/// use vfio_hal::ErrorKind;
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let edu = container.open_device("edu")?;
/// let wakeup = EventFd::nonblocking()
///     .map_err(|e| vfio_hal::Error::from_io("eventfd", vfio_hal::Target::None, &e))?;
///
/// edu.low_power_entry_with_wakeup(wakeup.as_fd())?;
/// assert_eq!(wakeup.take().ok(), Some(0), "no access yet");
/// assert_eq!(edu.vendor_id()?, 0x1234); // a config read resumes the device
/// assert_eq!(wakeup.take().ok(), Some(1), "signalled once");
///
/// edu.low_power_entry()?; // out of low power: a new entry is accepted
/// let again = edu.low_power_entry().unwrap_err();
/// assert_eq!((again.kind(), again.errno()), (ErrorKind::InvalidArgument, Some(libc::EINVAL)));
/// edu.low_power_exit()?;
/// edu.low_power_exit()?; // not in low power: nothing to do
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub struct MockDevice {
    handle: Arc<Handle>,
    info: DeviceInfo,
}

impl fmt::Debug for MockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockDevice")
            .field("info", &self.info)
            .finish()
    }
}

impl Device for MockDevice {
    type Region = MockRegion;
    type Irq = MockIrq;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn region(&self, index: u32) -> Result<MockRegion> {
        let op = "VFIO_DEVICE_GET_REGION_INFO";
        check_index(op, Target::Region(index), index, self.info.num_regions)?;
        let mut st = self.handle.core.lock();
        st.live(op, Target::Region(index))?;
        self.handle.live(op, || Target::Region(index))?;
        let info = st
            .through_fd(|st| st.pci.region(index).cloned())
            .ok_or(gone(op, Target::Region(index)))?;
        Ok(MockRegion {
            handle: Arc::clone(&self.handle),
            info,
        })
    }

    fn irq(&self, index: u32) -> Result<MockIrq> {
        let op = "VFIO_DEVICE_GET_IRQ_INFO";
        check_index(op, Target::Irq(index), index, self.info.num_irqs)?;
        let mut st = self.handle.core.lock();
        st.live(op, Target::Irq(index))?;
        self.handle.live(op, || Target::Irq(index))?;
        let info = st
            .through_fd(|st| st.pci.irqs.infos().get(index as usize).copied())
            .ok_or(gone(op, Target::Irq(index)))?;
        Ok(MockIrq {
            handle: Arc::clone(&self.handle),
            info,
        })
    }

    /// Function reset: the model does what its device's reset does (edu
    /// keeps its registers, as QEMU's has no reset handler) and lowers its
    /// interrupt line; config space (command register included) and
    /// interrupt routes survive, as `pci_reset_function` restores them.
    /// Low power is not ended, as `vfio_pci_ioctl_reset` leaves it: like
    /// every ioctl, the reset resumes the device first, which ends a
    /// low-power entry with wakeup (see [`MockDevice`]).
    fn reset(&self) -> Result<()> {
        let core = &self.handle.core;
        let mut st = core.lock();
        st.live("VFIO_DEVICE_RESET", Target::Device(core.name.clone()))?;
        self.handle
            .live("VFIO_DEVICE_RESET", || Target::Device(core.name.clone()))?;
        st.through_fd(|st| {
            st.pci.irqs.device_reset();
            st.with_ctx(&core.name, &self.handle.shared, |m, ctx| m.reset(ctx));
            st.pci.sync_irq_state();
            st.migration.reset();
        });
        Ok(())
    }

    /// vfio-pci's low-power features (see [`MockDevice`]); every other
    /// feature is `ENOTTY`, as vfio-pci answers for a feature it lacks.
    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        let core = &self.handle.core;
        let mut st = core.lock();
        st.live("VFIO_DEVICE_FEATURE", Target::Feature(feature))?;
        self.handle
            .live("VFIO_DEVICE_FEATURE", || Target::Feature(feature))?;
        let shared = &self.handle.shared;
        st.through_fd(
            |st| match st.migration_feature(&core.name, shared, op, feature, data) {
                Some(answer) => answer,
                None => st.pci.feature(op, feature, data),
            },
        )
    }

    /// Device DMA logging, for a model that saves its state (as migration
    /// drivers offer it); `ENOTTY` for one that does not.
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        self.with_dma_log(
            "VFIO_DEVICE_FEATURE_DMA_LOGGING_START",
            vfio_hal::device::feature::DMA_LOGGING_START,
            |log| log.start(page_size, ranges).map(|()| page_size),
        )
    }

    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        self.with_dma_log(
            "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT",
            vfio_hal::device::feature::DMA_LOGGING_REPORT,
            |log| log.report(iova, len, page_size),
        )
    }

    /// vfio's migration features for a model that saves its state (see
    /// [`crate::migration`]); `ENOTTY` for one that does not.
    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";
        let target = || Target::Feature(vfio_hal::device::feature::MIG_DEVICE_STATE);
        let core = &self.handle.core;
        let mut st = core.lock();
        st.live(OP, target())?;
        self.handle.live(OP, target)?;
        let shared = &self.handle.shared;
        st.through_fd(|st| st.set_migration_state(&core.name, shared, state))
    }

    /// None: the mock has no device, group or container file descriptors.
    fn keep_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Revoking closes the device as dropping its last handle would.
    fn revoker(&self) -> Result<Revoker> {
        Ok(Revoker::new(&self.handle))
    }

    /// An empty memfd named `vfio-hal-mock:<device>`, one per open, made
    /// on first use: what [`crate::MockHypervisor`] accepts as a mock
    /// device's VFIO file (KVM would refuse it, as any non-VFIO file).
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        const OP: &str = "vfio_file";
        self.handle
            .live(OP, || Target::Device(self.info.name.clone()))?;
        if let Some(file) = self.handle.file.get() {
            return Ok(file.as_fd());
        }
        let made = crate::sys::device_file(&self.info.name)?;
        Ok(self.handle.file.get_or_init(|| made).as_fd())
    }
}

/// One region of a [`MockDevice`].
pub struct MockRegion {
    handle: Arc<Handle>,
    info: RegionInfo,
}

impl fmt::Debug for MockRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRegion")
            .field("device", &self.handle.core.name)
            .field("info", &self.info)
            .finish()
    }
}

impl Region for MockRegion {
    fn info(&self) -> &RegionInfo {
        &self.info
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !self.info.readable() {
            return Err(not_permitted(
                "pread",
                self.info.index,
                "region is not readable",
            ));
        }
        self.info.check_access("pread", offset, buf.len() as u64)?;
        let core = &self.handle.core;
        if let Ok(word) = <&mut [u8; 4]>::try_from(&mut *buf) {
            if let Some(value) = core.mirrored_read(&self.handle, self.info.index, offset) {
                *word = value.to_ne_bytes();
                return Ok(());
            }
        }
        core.region_read(&self.handle, self.info.index, offset, buf)
    }

    /// A 4-byte read of a side-effect-free register straight from the
    /// mirror; everything else as [`Region::read`].
    #[inline]
    fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
        if size == 4 && self.info.readable() {
            self.info.check_access("pread", offset, 4)?;
            let core = &self.handle.core;
            if let Some(value) = core.mirrored_read(&self.handle, self.info.index, offset) {
                // The mirror holds the register's bytes as read (little
                // endian) in a native-order word.
                return Ok(u64::from(u32::from_le(value)));
            }
        }
        vfio_hal::region::read_scalar_through_read(self, offset, size)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.info.writable() {
            return Err(not_permitted(
                "pwrite",
                self.info.index,
                "region is not writable",
            ));
        }
        self.info
            .check_access("pwrite", offset, data.len() as u64)?;
        self.handle
            .core
            .region_write(&self.handle, self.info.index, offset, data)
    }

    /// Maps the RAM areas (memfd-backed, shared with the model); other
    /// regions are handler-backed and `NotSupported`. A revocation detaches
    /// them.
    fn mmap(&self) -> Result<Vec<MmapArea>> {
        self.hand_out("mmap", |pci| pci.mmap(self.info.index))
    }

    /// Maps one RAM area, as [`MockRegion::mmap`] maps them all.
    fn mmap_area(&self, area: usize, protection: Protection) -> Result<MmapArea> {
        const OP: &str = "mmap_area";
        let index = self.info.index;
        let chosen = self.info.mappable_area(area, protection)?;
        let mut mapped = self.hand_out(OP, |pci| {
            let ram = match pci.role(index) {
                Role::Bar(bar) => pci.ram(bar),
                _ => None,
            };
            let ram = ram.ok_or(Error::NotSupported {
                op: OP,
                target: Target::Region(index),
                reason: "region has no mmappable area (handler-backed in the mock)",
            })?;
            Ok(vec![ram.map(
                chosen.offset,
                chosen.size,
                protection.writable(),
            )?])
        })?;
        Ok(mapped.remove(0))
    }
}

impl MockRegion {
    /// Whether a `len`-byte read at `offset` would be answered now without
    /// the device lock, from the register mirror: the mock's fast path, as
    /// the Linux backend's `fast_path_covers` tells of its BAR mmap. For
    /// tests that must know which path ran. A register is covered from its
    /// first locked read until the device next changes; never in low power,
    /// where every access must reach the device to resume it (vfio-pci
    /// faults BAR mmaps then).
    ///
    /// ```
    /// use vfio_hal::prelude::*;
    /// use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
    ///
    /// let container = MockContainer::new();
    /// container.plug("edu", Edu::new())?;
    /// let edu = container.open_device("edu")?;
    /// let bar0 = edu.region(0)?;
    /// assert!(!bar0.fast_path_covers(reg::ID, 4), "not read yet");
    /// bar0.read_at::<u32>(reg::ID)?;
    /// assert!(bar0.fast_path_covers(reg::ID, 4));
    /// edu.low_power_entry()?;
    /// assert!(!bar0.fast_path_covers(reg::ID, 4), "low power");
    /// # Ok::<(), vfio_hal::Error>(())
    /// ```
    pub fn fast_path_covers(&self, offset: u64, len: usize) -> bool {
        len == 4
            && self.info.readable()
            && self.info.check_access("pread", offset, 4).is_ok()
            && self
                .handle
                .core
                .mirrored_read(&self.handle, self.info.index, offset)
                .is_some()
    }

    /// Runs `map` under the device lock unless the device is closed or
    /// revoked, and registers what it mapped for a revocation to detach.
    fn hand_out(
        &self,
        op: &'static str,
        map: impl FnOnce(&PciFunction) -> Result<Vec<MmapArea>>,
    ) -> Result<Vec<MmapArea>> {
        let st = self.handle.core.lock();
        st.live(op, Target::Region(self.info.index))?;
        self.handle.live(op, || Target::Region(self.info.index))?;
        let areas = map(&st.pci)?;
        let mut handed_out = self
            .handle
            .handed_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        handed_out.retain(|d| !d.is_dropped());
        handed_out.extend(areas.iter().map(MmapArea::detacher));
        Ok(areas)
    }
}

/// One irq index of a [`MockDevice`], with the semantics of
/// `drivers/vfio/pci/vfio_pci_intrs.c`:
/// - One interrupt mode at a time: INTx, MSI or MSI-X. Setting up a trigger
///   on one while another is enabled is `EINVAL`, and so is any other
///   request on an index that is not enabled (loopback, mask, even disable).
/// - INTx is level triggered and automasked: an asserted, unmasked line is
///   masked and its eventfd signalled. Unmasking (an `UNMASK` request or a
///   write to the resample eventfd) re-signals instead while the line is
///   still asserted. The command register's INTx-disable bit masks too.
/// - MSI/MSI-X allocate `start + count` vectors when first enabled and
///   cannot grow afterwards (`NORESIZE`); a vector routed to `None` stays
///   allocated and silent. Config space shows them as vfio-pci does: the
///   MSI-X capability as the function has it (enabled with `SET_IRQS`,
///   user writes dropped); the MSI message control as vfio-pci's virtual
///   word (`SET_IRQS` leaves it; a user write while MSI is routed also
///   reaches the function, so clearing its enable bit silences MSI).
/// - ERR (PCIe only) and REQ take one eventfd each.
/// - Every route holds its own dup of the eventfd, closed on disable,
///   re-route, device close and unplug. Delivery writes a u64 1 to it.
pub struct MockIrq {
    handle: Arc<Handle>,
    info: IrqInfo,
}

impl fmt::Debug for MockIrq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockIrq")
            .field("device", &self.handle.core.name)
            .field("info", &self.info)
            .finish()
    }
}

impl Irq for MockIrq {
    fn info(&self) -> IrqInfo {
        self.info
    }

    /// Checked with [`IrqSet::validate`], then applied with vfio-pci's state
    /// rules (see [`MockIrq`]): e.g. enabling MSI while INTx is on is `EINVAL`.
    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> {
        set.validate(&self.info)?;
        let mut st = self.handle.core.lock();
        st.live("VFIO_DEVICE_SET_IRQS", Target::Irq(self.info.index))?;
        self.handle
            .live("VFIO_DEVICE_SET_IRQS", || Target::Irq(self.info.index))?;
        st.through_fd(|st| st.pci.set_irqs(set))
    }
}

#[cfg(test)]
mod tests {
    use super::piece;
    use crate::models::copy_engine::{CopyEngine, SRAM_BAR};
    use crate::MockContainer;
    use vfio_hal::{Container, Device, Error, ErrorKind, Protection, Region, RegionExt};

    #[test]
    #[cfg_attr(miri, ignore = "a RAM BAR is memfd-backed; Miri has no memfd_create")]
    fn one_ram_area_maps_alone_and_a_revocation_detaches_it() {
        let container = MockContainer::new();
        container.plug("ce", CopyEngine::new()).expect("plug");
        let ce = container.open_device("ce").expect("open");
        let bar2 = ce.region(u32::from(SRAM_BAR)).expect("BAR2");
        bar2.write_at::<u32>(0x5004, 0xfeed_f00d).expect("write");
        let area = bar2
            .mmap_area(1, Protection::Read)
            .expect("second SRAM area");
        assert_eq!((area.region_offset(), area.len()), (0x5000, 0x3000));
        assert!(!area.is_writable());
        assert_eq!(area.load::<u32>(4).expect("load"), 0xfeed_f00d);
        let rw = bar2
            .mmap_area(0, Protection::ReadWrite)
            .expect("first area");
        rw.store(0x10, 0x1234_5678u32).expect("store");
        assert_eq!(bar2.read_at::<u32>(0x10).expect("read"), 0x1234_5678);

        let e = bar2.mmap_area(2, Protection::Read).expect_err("two areas");
        assert!(matches!(e, Error::NoSuchIndex { count: 2, .. }), "{e:?}");
        let bar0 = ce.region(0).expect("BAR0");
        let e = bar0.mmap_area(0, Protection::Read).expect_err("registers");
        assert_eq!(e.kind(), ErrorKind::NotSupported);

        ce.revoker().expect("revoker").revoke().expect("revoke");
        assert_eq!(area.load::<u32>(4).expect("load after"), 0, "not detached");
        let e = bar2.mmap_area(0, Protection::Read).expect_err("revoked");
        assert_eq!(e.kind(), ErrorKind::DeviceGone);
    }

    #[test]
    fn accesses_split_like_vfio_pci() {
        assert_eq!(piece(0x80, 8), 8);
        assert_eq!(piece(0x84, 8), 4);
        assert_eq!(piece(0x02, 4), 2);
        assert_eq!(piece(0x03, 4), 1);
        assert_eq!(piece(0x00, 3), 2);
    }

    #[test]
    fn a_piece_is_the_largest_aligned_size_that_fits() {
        for offset in 0..64u64 {
            for remaining in 1..20usize {
                let want = [8usize, 4, 2, 1]
                    .into_iter()
                    .find(|&n| remaining >= n && offset % n as u64 == 0);
                assert_eq!(Some(piece(offset, remaining)), want, "{offset} {remaining}");
            }
        }
    }
}
