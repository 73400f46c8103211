//! Decorators: wrappers that implement the hal traits around *any* backend
//! and see every call — fault injection ([`inject::FaultInjector`]) and
//! tracing ([`trace::Tracer`]), smoltcp's `FaultInjector<D>`/`Tracer<D>`
//! idea.
//!
//! The forwarding is written once, here: [`Decorated<B, H>`] implements
//! [`Container`], [`Device`], [`Region`] and [`Irq`] for any `B` that does,
//! and hands every fallible call to its [`Hook`] `H` together with a
//! description of the call ([`Op`] and [`Args`]). A decorator is a hook: it
//! decides what happens around the inner call (count it, fail it, record it),
//! never how a method is forwarded, so none can forget one (`revoker` goes
//! through like the rest). Everything opened through a decorated object
//! (devices, their regions and irqs) is decorated with a clone of the same
//! hook, so one plan or one log covers a whole tree.
//!
//! # What counts as a call
//! - Every call of a **fallible** trait method (one returning `Result`) is
//!   one call, named by its [`Op`].
//! - Provided trait methods (`Irq::set_eventfd`, `Device::probe_feature`, …)
//!   are forwarded to the inner object, not re-derived through the trait
//!   defaults: a backend that overrides a provided method keeps its own
//!   behaviour, and `irq.set_eventfd(0, fd)` is one [`Op::SetEventfd`], not
//!   also an [`Op::SetIrqs`].
//! - The infallible getters (`info()` of every trait, `Device::keep_fds`)
//!   and `Device::revoker` are forwarded without a hook call: nothing can be
//!   injected there, and counting them would make a step number depend on
//!   how often code rereads cached information.
//! - `Container::map_buffer` keeps the trait default on purpose: its guard
//!   ([`crate::DmaMapping`]) must hold the *decorated* container so that its
//!   unmap goes through the hook too; it is one [`Op::MapDma`] now and one
//!   [`Op::UnmapDma`] when the guard is dropped or unmapped.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::dirty::DirtyBitmap;
use crate::migration::{MigrationData, MigrationState};
use crate::{
    Container, Device, DeviceInfo, DmaAccess, FeatureOp, FeatureSupport, IommuInfo, Irq, IrqAction,
    IrqData, IrqInfo, IrqSet, MmapArea, Protection, Region, RegionInfo, Result, Revoker,
};

pub mod inject;
pub mod trace;

/// Which hal object an [`Op`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// [`crate::Container`].
    Container,
    /// [`crate::Device`].
    Device,
    /// [`crate::Region`].
    Region,
    /// [`crate::Irq`].
    Irq,
}

macro_rules! ops {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $object:ident; )*) => {
        /// One fallible hal trait method: what the fault injector counts and
        /// the tracer records.
        ///
        /// The [`Display`](fmt::Display) name (also [`Op::name`], and the `op`
        /// of the errors the fault injector returns) is the method's name, prefixed with its
        /// object where the bare name would be vague (`region.read`,
        /// `device.irq`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Op {
            $( $(#[$doc])* $variant, )*
        }

        impl Op {
            /// Every operation, in declaration order.
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            /// The operation's name, e.g. `"map_dma_raw"` or `"region.read"`.
            pub const fn name(self) -> &'static str {
                match self { $(Op::$variant => $name,)* }
            }

            /// The object whose method this is.
            pub const fn object(self) -> Object {
                match self { $(Op::$variant => Object::$object,)* }
            }
        }
    };
}

ops! {
    /// `Container::iommu_info`.
    IommuInfo = "iommu_info", Container;
    /// `Container::map_dma_raw` (also what `map_buffer` calls).
    MapDma = "map_dma_raw", Container;
    /// `Container::unmap_dma` (also what a `DmaMapping` guard calls).
    UnmapDma = "unmap_dma", Container;
    /// `Container::unmap_all`.
    UnmapAll = "unmap_all", Container;
    /// `Container::open_device`.
    OpenDevice = "open_device", Container;
    /// `Container::set_dirty_tracking`.
    SetDirtyTracking = "set_dirty_tracking", Container;
    /// `Container::read_dirty`.
    ReadDirty = "read_dirty", Container;
    /// `Device::region`.
    Region = "device.region", Device;
    /// `Device::irq`.
    Irq = "device.irq", Device;
    /// `Device::reset`.
    Reset = "reset", Device;
    /// `Device::feature`.
    Feature = "feature", Device;
    /// `Device::probe_feature`.
    ProbeFeature = "probe_feature", Device;
    /// `Device::low_power_entry`.
    LowPowerEntry = "low_power_entry", Device;
    /// `Device::low_power_entry_with_wakeup`.
    LowPowerEntryWithWakeup = "low_power_entry_with_wakeup", Device;
    /// `Device::low_power_exit`.
    LowPowerExit = "low_power_exit", Device;
    /// `Device::set_migration_state`.
    SetMigrationState = "set_migration_state", Device;
    /// `Device::dma_logging_start`.
    DmaLoggingStart = "dma_logging_start", Device;
    /// `Device::dma_logging_report`.
    DmaLoggingReport = "dma_logging_report", Device;
    /// `Region::read`.
    RegionRead = "region.read", Region;
    /// `Region::write`.
    RegionWrite = "region.write", Region;
    /// `Region::mmap`.
    RegionMmap = "region.mmap", Region;
    /// `Irq::set_irqs`.
    SetIrqs = "set_irqs", Irq;
    /// `Irq::set_eventfds`.
    SetEventfds = "set_eventfds", Irq;
    /// `Irq::set_eventfd`.
    SetEventfd = "set_eventfd", Irq;
    /// `Irq::disable`.
    Disable = "irq.disable", Irq;
    /// `Irq::mask`.
    Mask = "mask", Irq;
    /// `Irq::unmask`.
    Unmask = "unmask", Irq;
    /// `Irq::trigger`.
    Trigger = "trigger", Irq;
    /// `Irq::set_resample`.
    SetResample = "set_resample", Irq;
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The arguments of one call, summarised (no host pointers, no payloads
/// longer than a register).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Args {
    /// The call takes no arguments.
    None,
    /// `open_device(name)`.
    Name(String),
    /// `device.region(index)` or `device.irq(index)`.
    Index(u32),
    /// `map_dma_raw(iova, _, len, access)`.
    Map {
        /// IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
        /// Device access.
        access: DmaAccess,
    },
    /// `unmap_dma(iova, len)`.
    Unmap {
        /// IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `region.read` / `region.write` / `region.mmap` (offset and len 0).
    Access {
        /// The region index, where the tracer opened the region itself.
        region: Option<u32>,
        /// Offset in the region.
        offset: u64,
        /// Access length in bytes.
        len: u64,
        /// The little-endian value written, for writes of at most 8 bytes.
        value: Option<u64>,
    },
    /// `feature(op, feature, data)`.
    Feature {
        /// GET, SET or a probe.
        op: FeatureOp,
        /// `VFIO_DEVICE_FEATURE_*` number.
        feature: u32,
        /// Payload length.
        len: usize,
    },
    /// `probe_feature(feature)`.
    Probe {
        /// `VFIO_DEVICE_FEATURE_*` number.
        feature: u32,
    },
    /// `low_power_entry_with_wakeup(fd)`.
    Wakeup {
        /// The wakeup eventfd.
        fd: RawFd,
    },
    /// `set_migration_state(state)`.
    MigrationState(MigrationState),
    /// `set_dirty_tracking(enable)`.
    Enable(bool),
    /// `dma_logging_start(page_size, ranges)`: the page size and how many
    /// ranges.
    LogRanges {
        /// Bytes per bit.
        page_size: u64,
        /// Number of ranges.
        count: usize,
    },
    /// `read_dirty(iova, len, page_size, keep)`.
    Dirty {
        /// IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
        /// Bytes per bit.
        page_size: u64,
        /// Bits are kept, not cleared.
        keep: bool,
    },
    /// Any irq call, as the `SET_IRQS` request it stands for.
    Irq(IrqCall),
}

/// An irq call summarised as a `VFIO_DEVICE_SET_IRQS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqCall {
    /// The irq index: from the request for `set_irqs`, else known only when
    /// the tracer opened the irq itself (it never asks the backend).
    pub index: Option<u32>,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
    /// Mask, unmask or trigger.
    pub action: IrqAction,
    /// The data.
    pub data: IrqDataSummary,
}

/// The data of an [`IrqCall`], owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqDataSummary {
    /// No data.
    None,
    /// One bool per vector.
    Bool(Vec<bool>),
    /// One eventfd per vector (`None` de-assigns).
    EventFd(Vec<Option<RawFd>>),
}

impl IrqDataSummary {
    /// The owned summary of `data`.
    pub fn of(data: &IrqData<'_>) -> Self {
        match data {
            IrqData::None => Self::None,
            IrqData::Bool(b) => Self::Bool(b.to_vec()),
            IrqData::EventFd(fds) => Self::eventfds(fds),
        }
    }

    /// The owned summary of eventfd data.
    pub fn eventfds(fds: &[Option<BorrowedFd<'_>>]) -> Self {
        Self::EventFd(fds.iter().map(|fd| fd.map(|f| f.as_raw_fd())).collect())
    }
}

/// The little-endian value of 1 to 8 bytes (a register access), else `None`.
pub fn le_value(bytes: &[u8]) -> Option<u64> {
    (1..=8).contains(&bytes.len()).then(|| {
        let mut v = [0u8; 8];
        v[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(v)
    })
}

fn opt_index(f: &mut fmt::Formatter<'_>, what: &str, index: Option<u32>) -> fmt::Result {
    match index {
        Some(i) => write!(f, "{what} {i}, "),
        None => Ok(()),
    }
}

impl fmt::Display for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => Ok(()),
            Self::Name(name) => write!(f, "{name:?}"),
            Self::Index(i) => write!(f, "{i}"),
            Self::Map { iova, len, access } => {
                write!(f, "iova {iova:#x}, len {len:#x}, {access:?}")
            }
            Self::Unmap { iova, len } => write!(f, "iova {iova:#x}, len {len:#x}"),
            Self::Access {
                region,
                offset,
                len,
                value,
            } => {
                opt_index(f, "region", *region)?;
                write!(f, "offset {offset:#x}, len {len}")?;
                match value {
                    Some(v) => write!(f, ", value {v:#x}"),
                    None => Ok(()),
                }
            }
            Self::Feature { op, feature, len } => write!(f, "{op:?}, feature {feature}, len {len}"),
            Self::Probe { feature } => write!(f, "feature {feature}"),
            Self::Wakeup { fd } => write!(f, "fd {fd}"),
            Self::MigrationState(state) => write!(f, "{state:?}"),
            Self::Enable(on) => write!(f, "{}", if *on { "start" } else { "stop" }),
            Self::LogRanges { page_size, count } => {
                write!(f, "page {page_size:#x}, {count} ranges")
            }
            Self::Dirty {
                iova,
                len,
                page_size,
                keep,
            } => write!(
                f,
                "iova {iova:#x}, len {len:#x}, page {page_size:#x}{}",
                if *keep { ", keep" } else { "" }
            ),
            Self::Irq(call) => write!(f, "{call}"),
        }
    }
}

impl fmt::Display for IrqCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        opt_index(f, "index", self.index)?;
        write!(f, "{:?} [{}, +{})", self.action, self.start, self.count)?;
        match &self.data {
            IrqDataSummary::None => Ok(()),
            IrqDataSummary::Bool(b) => write!(f, ", bools {b:?}"),
            IrqDataSummary::EventFd(fds) => {
                f.write_str(", eventfds [")?;
                for (i, fd) in fds.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    match fd {
                        Some(fd) => write!(f, "{sep}{fd}")?,
                        None => write!(f, "{sep}-")?,
                    }
                }
                f.write_str("]")
            }
        }
    }
}

/// What a decorator does around each fallible call of the objects it wraps.
///
/// Clones are handed to every object opened through a decorated one, so a
/// hook that keeps state shares it (an `Arc` inside).
pub trait Hook: Clone {
    /// Runs one call: `op` and `args` describe it, `inner` performs it on
    /// the wrapped object, `value` picks the number worth recording from a
    /// success (bytes unmapped, a register's value). A hook may run `inner`
    /// or not, and return its result or another.
    fn around<T>(
        &self,
        op: Op,
        args: Args,
        inner: impl FnOnce() -> Result<T>,
        value: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T>;
}

/// `B` wrapped with hook `H`; see the [module docs](self).
///
/// `Decorated<C, H>` is a [`Container`] whose devices are
/// `Decorated<C::Device, H>`, whose regions and irqs are decorated in turn.
#[derive(Debug, Clone)]
pub struct Decorated<B, H> {
    inner: B,
    hook: H,
    /// The region or irq index, when this wrapper opened the object itself
    /// (it never asks the backend, so a hand-wrapped object has none).
    index: Option<u32>,
}

impl<B, H: Hook> Decorated<B, H> {
    /// Wraps `inner` with `hook`.
    pub fn with_hook(inner: B, hook: H) -> Self {
        Self {
            inner,
            hook,
            index: None,
        }
    }

    /// Wraps another object into this decorator's tree (the same hook), e.g.
    /// a device opened before the decorator existed.
    pub fn wrap<T>(&self, inner: T) -> Decorated<T, H> {
        Decorated::with_hook(inner, self.hook.clone())
    }

    fn wrap_index<T>(&self, inner: T, index: u32) -> Decorated<T, H> {
        Decorated {
            index: Some(index),
            ..self.wrap(inner)
        }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }

    /// The wrapped object.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Unwraps; other wrappers of the tree keep the shared hook.
    pub fn into_inner(self) -> B {
        self.inner
    }

    fn call<T>(&self, op: Op, args: Args, inner: impl FnOnce() -> Result<T>) -> Result<T> {
        self.hook.around(op, args, inner, |_| None)
    }

    fn irq_call(&self, start: u32, count: u32, action: IrqAction, data: IrqDataSummary) -> Args {
        Args::Irq(IrqCall {
            index: self.index,
            start,
            count,
            action,
            data,
        })
    }

    fn access(&self, offset: u64, len: usize, value: Option<u64>) -> Args {
        Args::Access {
            region: self.index,
            offset,
            len: len as u64,
            value,
        }
    }
}

// SAFETY: every call reaches the inner container unchanged or not at all,
// and a hook's own answers are bound by `Hook`'s users: the fault injector
// injects NotMapped on an unmap only after the inner container really
// unmapped the range (`inject`), the tracer returns the inner answer. So
// each unmap answer that says "nothing of this range is mapped" is true.
unsafe impl<C: Container, H: Hook> Container for Decorated<C, H> {
    type Device = Decorated<C::Device, H>;

    fn iommu_info(&self) -> Result<IommuInfo> {
        self.call(Op::IommuInfo, Args::None, || self.inner.iommu_info())
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        self.call(Op::MapDma, Args::Map { iova, len, access }, || {
            // SAFETY: the caller upholds map_dma_raw's contract, which we pass on unchanged.
            unsafe { self.inner.map_dma_raw(iova, host, len, access) }
        })
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        let args = Args::Unmap { iova, len };
        self.hook.around(
            Op::UnmapDma,
            args,
            || self.inner.unmap_dma(iova, len),
            |&n| Some(n),
        )
    }

    fn unmap_all(&self) -> Result<u64> {
        self.hook.around(
            Op::UnmapAll,
            Args::None,
            || self.inner.unmap_all(),
            |&n| Some(n),
        )
    }

    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        self.call(Op::SetDirtyTracking, Args::Enable(enable), || {
            self.inner.set_dirty_tracking(enable)
        })
    }

    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        let args = Args::Dirty {
            iova,
            len,
            page_size,
            keep,
        };
        self.call(Op::ReadDirty, args, || {
            self.inner.read_dirty(iova, len, page_size, keep)
        })
    }

    fn open_device(&self, name: &str) -> Result<Self::Device> {
        let args = Args::Name(name.to_owned());
        let device = self.call(Op::OpenDevice, args, || self.inner.open_device(name))?;
        Ok(self.wrap(device))
    }
}

impl<D: Device, H: Hook> Device for Decorated<D, H> {
    type Region = Decorated<D::Region, H>;
    type Irq = Decorated<D::Irq, H>;

    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn region(&self, index: u32) -> Result<Self::Region> {
        let region = self.call(Op::Region, Args::Index(index), || self.inner.region(index))?;
        Ok(self.wrap_index(region, index))
    }

    fn irq(&self, index: u32) -> Result<Self::Irq> {
        let irq = self.call(Op::Irq, Args::Index(index), || self.inner.irq(index))?;
        Ok(self.wrap_index(irq, index))
    }

    fn reset(&self) -> Result<()> {
        self.call(Op::Reset, Args::None, || self.inner.reset())
    }

    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        let len = data.len();
        self.call(Op::Feature, Args::Feature { op, feature, len }, || {
            self.inner.feature(op, feature, data)
        })
    }

    fn keep_fds(&self) -> Vec<RawFd> {
        self.inner.keep_fds()
    }

    /// The inner device's revoker: revoking happens on another thread,
    /// outside this wrapper's calls, so no hook sees it.
    fn revoker(&self) -> Result<Revoker> {
        self.inner.revoker()
    }

    /// The inner device's file: handing it to a hypervisor happens outside
    /// this wrapper's calls.
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        self.inner.vfio_file()
    }

    fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> {
        self.call(Op::ProbeFeature, Args::Probe { feature }, || {
            self.inner.probe_feature(feature)
        })
    }

    fn low_power_entry(&self) -> Result<()> {
        self.call(Op::LowPowerEntry, Args::None, || {
            self.inner.low_power_entry()
        })
    }

    fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> {
        let args = Args::Wakeup {
            fd: wakeup.as_raw_fd(),
        };
        self.call(Op::LowPowerEntryWithWakeup, args, || {
            self.inner.low_power_entry_with_wakeup(wakeup)
        })
    }

    fn low_power_exit(&self) -> Result<()> {
        self.call(Op::LowPowerExit, Args::None, || self.inner.low_power_exit())
    }

    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        self.call(Op::SetMigrationState, Args::MigrationState(state), || {
            self.inner.set_migration_state(state)
        })
    }

    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        let args = Args::LogRanges {
            page_size,
            count: ranges.len(),
        };
        self.call(Op::DmaLoggingStart, args, || {
            self.inner.dma_logging_start(page_size, ranges)
        })
    }

    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        let args = Args::Dirty {
            iova,
            len,
            page_size,
            keep: false,
        };
        self.call(Op::DmaLoggingReport, args, || {
            self.inner.dma_logging_report(iova, len, page_size)
        })
    }
}

impl<R: Region, H: Hook> Region for Decorated<R, H> {
    fn info(&self) -> &RegionInfo {
        self.inner.info()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let args = self.access(offset, buf.len(), None);
        // The value read is recorded: the closure hands it out with the result.
        self.hook
            .around(
                Op::RegionRead,
                args,
                || {
                    self.inner.read(offset, buf)?;
                    Ok(le_value(buf))
                },
                |&value| value,
            )
            .map(drop)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let args = self.access(offset, data.len(), le_value(data));
        self.call(Op::RegionWrite, args, || self.inner.write(offset, data))
    }

    fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
        let args = self.access(offset, size, None);
        let recorded = (1..=8).contains(&size);
        self.hook.around(
            Op::RegionRead,
            args,
            || self.inner.read_scalar(offset, size),
            |&value| recorded.then_some(value),
        )
    }

    fn write_scalar(&self, offset: u64, size: usize, value: u64) -> Result<()> {
        let args = self.access(
            offset,
            size,
            le_value(value.to_le_bytes().get(..size).unwrap_or(&[])),
        );
        self.call(Op::RegionWrite, args, || {
            self.inner.write_scalar(offset, size, value)
        })
    }

    fn mmap(&self) -> Result<Vec<MmapArea>> {
        let args = self.access(0, 0, None);
        self.hook.around(
            Op::RegionMmap,
            args,
            || self.inner.mmap(),
            |areas| Some(areas.len() as u64),
        )
    }

    fn mmap_area(&self, area: usize, protection: Protection) -> Result<MmapArea> {
        let args = self.access(0, 0, None);
        self.hook.around(
            Op::RegionMmap,
            args,
            || self.inner.mmap_area(area, protection),
            |_| Some(1),
        )
    }
}

impl<I: Irq, H: Hook> Irq for Decorated<I, H> {
    fn info(&self) -> IrqInfo {
        self.inner.info()
    }

    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> {
        let args = Args::Irq(IrqCall {
            index: Some(set.index),
            start: set.start,
            count: set.count,
            action: set.action,
            data: IrqDataSummary::of(&set.data),
        });
        self.call(Op::SetIrqs, args, || self.inner.set_irqs(set))
    }

    fn set_eventfds(&self, start: u32, fds: &[Option<BorrowedFd<'_>>]) -> Result<()> {
        let count = u32::try_from(fds.len()).unwrap_or(u32::MAX);
        let data = IrqDataSummary::eventfds(fds);
        let args = self.irq_call(start, count, IrqAction::Trigger, data);
        self.call(Op::SetEventfds, args, || {
            self.inner.set_eventfds(start, fds)
        })
    }

    fn set_eventfd(&self, vector: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let data = IrqDataSummary::eventfds(&[fd]);
        let args = self.irq_call(vector, 1, IrqAction::Trigger, data);
        self.call(Op::SetEventfd, args, || self.inner.set_eventfd(vector, fd))
    }

    fn disable(&self) -> Result<()> {
        let args = self.irq_call(0, 0, IrqAction::Trigger, IrqDataSummary::None);
        self.call(Op::Disable, args, || self.inner.disable())
    }

    fn mask(&self, start: u32, count: u32) -> Result<()> {
        let args = self.irq_call(start, count, IrqAction::Mask, IrqDataSummary::None);
        self.call(Op::Mask, args, || self.inner.mask(start, count))
    }

    fn unmask(&self, start: u32, count: u32) -> Result<()> {
        let args = self.irq_call(start, count, IrqAction::Unmask, IrqDataSummary::None);
        self.call(Op::Unmask, args, || self.inner.unmask(start, count))
    }

    fn trigger(&self, start: u32, count: u32) -> Result<()> {
        let args = self.irq_call(start, count, IrqAction::Trigger, IrqDataSummary::None);
        self.call(Op::Trigger, args, || self.inner.trigger(start, count))
    }

    fn set_resample(&self, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let data = IrqDataSummary::eventfds(&[fd]);
        let args = self.irq_call(0, 1, IrqAction::Unmask, data);
        self.call(Op::SetResample, args, || self.inner.set_resample(fd))
    }
}
