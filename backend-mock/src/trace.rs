//! Call tracing: a decorator that records every call to any backend and its result.
//!
//! [`Tracer<B>`] has the shape of [`FaultInjector`](crate::inject::FaultInjector)
//! (smoltcp's `Tracer<D>`): it wraps a container, device, region or irq of any
//! backend, implements the same hal trait, and wraps whatever it opens, so
//! one [`TraceLog`] holds the calls of a whole tree in order. Use it for
//! assertions ("the driver unmasked after the read") and for debugging
//! (`println!("{}", tracer.log())`). Every event is also emitted as a
//! `log::trace!` record (target `vfio_hal_mock::trace`).
//!
//! The recorded calls are exactly the ones the fault injector counts (see
//! [`crate::inject`]): every fallible trait method, with provided methods
//! forwarded to the backend and recorded under their own [`Op`]; the
//! infallible getters (`info`, `keep_fds`) are not recorded, and never
//! called by the tracer itself, so it also wraps expectation mocks that
//! would reject an unexpected `info()`. An irq convenience call is
//! summarised as the `SET_IRQS` request it stands for ([`IrqCall`]).
//!
//! An event is appended when its call returns, so with several threads the
//! log is in completion order.
//!
//! ```
//! use vfio_hal::{irq::index, prelude::*, Result};
//! use vfio_hal_mock::{inject::Op, trace::Tracer};
//!
//! /// The code under test: reset, then mask MSI vector 0.
//! fn quiesce<D: Device>(dev: &D) -> Result<()> {
//!     dev.reset()?;
//!     dev.irq(index::MSI)?.mask(0, 1)
//! }
//!
//! /// On any backend: `quiesce` resets before it touches the irq.
//! fn resets_first<C: Container>(backend: C, name: &str) -> Result<()> {
//!     let tracer = Tracer::new(backend);
//!     let dev = tracer.open_device(name)?;
//!     tracer.clear();
//!     quiesce(&dev)?;
//!     println!("{tracer}"); // one line per call, e.g. "#1 reset() -> Ok"
//!     assert_eq!(tracer.log().ops(), [Op::Reset, Op::Irq, Op::Mask]);
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vfio_hal::{
    Container, Device, DeviceInfo, DmaAccess, Error, ErrorKind, FeatureOp, FeatureSupport,
    IommuInfo, Irq, IrqAction, IrqData, IrqInfo, IrqSet, MmapArea, Region, RegionInfo, Result,
};

use crate::inject::Op;

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
    fn of(data: &IrqData<'_>) -> Self {
        match data {
            IrqData::None => Self::None,
            IrqData::Bool(b) => Self::Bool(b.to_vec()),
            IrqData::EventFd(fds) => Self::eventfds(fds),
        }
    }

    fn eventfds(fds: &[Option<BorrowedFd<'_>>]) -> Self {
        Self::EventFd(fds.iter().map(|fd| fd.map(|f| f.as_raw_fd())).collect())
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success.
    Ok,
    /// Success with a value worth seeing: bytes unmapped, the little-endian
    /// value of a read of at most 8 bytes, the number of mmapped areas.
    Value(u64),
    /// Failure.
    Failed {
        /// The error's kind.
        kind: ErrorKind,
        /// The errno, where the error came from a system call.
        errno: Option<i32>,
        /// The error's message.
        message: String,
    },
}

impl Outcome {
    fn of<T>(result: &Result<T>, value: impl FnOnce(&T) -> Option<u64>) -> Self {
        match result {
            Ok(v) => value(v).map_or(Self::Ok, Self::Value),
            Err(e) => Self::failed(e),
        }
    }

    fn failed(e: &Error) -> Self {
        Self::Failed {
            kind: e.kind(),
            errno: e.errno(),
            message: e.to_string(),
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Failed { .. })
    }

    /// The error kind of a failed call.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Failed { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, from 0; keeps counting across [`TraceLog::clear`].
    pub seq: u64,
    /// The method.
    pub op: Op,
    /// Its arguments.
    pub args: Args,
    /// Its result.
    pub outcome: Outcome,
}

fn le_value(bytes: &[u8]) -> Option<u64> {
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

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("Ok"),
            Self::Value(v) => write!(f, "Ok {v:#x}"),
            Self::Failed {
                kind,
                errno,
                message,
            } => {
                write!(f, "Err {kind:?}")?;
                if let Some(errno) = errno {
                    write!(f, " (errno {errno})")?;
                }
                write!(f, ": {message}")
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {}({}) -> {}",
            self.seq, self.op, self.args, self.outcome
        )
    }
}

#[derive(Debug, Default)]
struct LogState {
    events: Vec<Event>,
    next_seq: u64,
}

/// The shared, ordered list of [`Event`]s of one tracer tree. Clones share it.
///
/// Its `Display` prints one event per line.
#[derive(Debug, Clone, Default)]
pub struct TraceLog(Arc<Mutex<LogState>>);

impl TraceLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // Appending cannot leave the list half-updated; carry on after a panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event (what the tracer does; public for hand-written doubles).
    pub fn push(&self, op: Op, args: Args, outcome: Outcome) {
        let mut s = self.lock();
        let event = Event {
            seq: s.next_seq,
            op,
            args,
            outcome,
        };
        s.next_seq = s.next_seq.saturating_add(1);
        log::trace!(target: "vfio_hal_mock::trace", "{event}");
        s.events.push(event);
    }

    /// A copy of the events so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Just the operations so far, in order: the usual thing to assert on.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().events.iter().map(|e| e.op).collect()
    }

    /// Forgets the events (sequence numbers keep counting).
    pub fn clear(&self) {
        self.lock().events.clear();
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.lock().events.is_empty()
    }
}

impl fmt::Display for TraceLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for event in &self.lock().events {
            writeln!(f, "{event}")?;
        }
        Ok(())
    }
}

/// A decorator that records every call to the wrapped backend object in a
/// [`TraceLog`]; see the [module docs](self).
///
/// `Tracer<C>` is a [`Container`] whose devices are `Tracer<C::Device>`,
/// whose regions and irqs are traced in turn, all into one log.
/// Its `Display` is the log's.
#[derive(Debug, Clone)]
pub struct Tracer<B> {
    inner: B,
    log: TraceLog,
    /// The region or irq index, when this tracer opened the object itself.
    index: Option<u32>,
}

impl<B> Tracer<B> {
    /// Wraps `inner` with a new, empty log.
    pub fn new(inner: B) -> Self {
        Self::with_log(inner, TraceLog::new())
    }

    /// Wraps `inner`, recording into `log` (which may already be shared).
    pub fn with_log(inner: B, log: TraceLog) -> Self {
        Self {
            inner,
            log,
            index: None,
        }
    }

    /// Wraps another object into this tracer's log.
    pub fn wrap<T>(&self, inner: T) -> Tracer<T> {
        Tracer::with_log(inner, self.log.clone())
    }

    fn wrap_index<T>(&self, inner: T, index: u32) -> Tracer<T> {
        Tracer {
            index: Some(index),
            ..self.wrap(inner)
        }
    }

    /// The shared log.
    pub fn log(&self) -> &TraceLog {
        &self.log
    }

    /// A copy of the events so far ([`TraceLog::events`]).
    pub fn events(&self) -> Vec<Event> {
        self.log.events()
    }

    /// Empties the shared log ([`TraceLog::clear`]).
    pub fn clear(&self) {
        self.log.clear();
    }

    /// The wrapped object.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Unwraps; the log lives on in other wrappers and clones.
    pub fn into_inner(self) -> B {
        self.inner
    }

    fn record<T>(&self, op: Op, args: Args, result: Result<T>) -> Result<T> {
        self.record_with(op, args, result, |_| None)
    }

    fn record_with<T>(
        &self,
        op: Op,
        args: Args,
        result: Result<T>,
        value: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T> {
        self.log.push(op, args, Outcome::of(&result, value));
        result
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
}

impl<B> fmt::Display for Tracer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.log, f)
    }
}

// SAFETY: every call is forwarded unchanged (and recorded), so each unmap
// answer is the inner implementation's.
unsafe impl<C: Container> Container for Tracer<C> {
    type Device = Tracer<C::Device>;

    fn iommu_info(&self) -> Result<IommuInfo> {
        self.record(Op::IommuInfo, Args::None, self.inner.iommu_info())
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        // SAFETY: the caller upholds map_dma_raw's contract, which we pass on unchanged.
        let result = unsafe { self.inner.map_dma_raw(iova, host, len, access) };
        self.record(Op::MapDma, Args::Map { iova, len, access }, result)
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        let result = self.inner.unmap_dma(iova, len);
        self.record_with(Op::UnmapDma, Args::Unmap { iova, len }, result, |&n| {
            Some(n)
        })
    }

    fn unmap_all(&self) -> Result<u64> {
        let result = self.inner.unmap_all();
        self.record_with(Op::UnmapAll, Args::None, result, |&n| Some(n))
    }

    fn open_device(&self, name: &str) -> Result<Self::Device> {
        let result = self.inner.open_device(name);
        let device = self.record(Op::OpenDevice, Args::Name(name.to_owned()), result)?;
        Ok(self.wrap(device))
    }

    // `map_buffer` keeps the trait default, so its map and its guard's unmap
    // are recorded as map_dma_raw and unmap_dma (see `crate::inject`).
}

impl<D: Device> Device for Tracer<D> {
    type Region = Tracer<D::Region>;
    type Irq = Tracer<D::Irq>;

    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn region(&self, index: u32) -> Result<Self::Region> {
        let result = self.inner.region(index);
        let region = self.record(Op::Region, Args::Index(index), result)?;
        Ok(self.wrap_index(region, index))
    }

    fn irq(&self, index: u32) -> Result<Self::Irq> {
        let result = self.inner.irq(index);
        let irq = self.record(Op::Irq, Args::Index(index), result)?;
        Ok(self.wrap_index(irq, index))
    }

    fn reset(&self) -> Result<()> {
        self.record(Op::Reset, Args::None, self.inner.reset())
    }

    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        let len = data.len();
        let result = self.inner.feature(op, feature, data);
        self.record(Op::Feature, Args::Feature { op, feature, len }, result)
    }

    fn keep_fds(&self) -> Vec<RawFd> {
        self.inner.keep_fds()
    }

    /// The inner device's revoker: revoking is not recorded (it happens on
    /// another thread, outside this wrapper's calls).
    fn revoker(&self) -> Result<vfio_hal::Revoker> {
        self.inner.revoker()
    }

    fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> {
        let result = self.inner.probe_feature(feature);
        self.record(Op::ProbeFeature, Args::Probe { feature }, result)
    }

    fn low_power_entry(&self) -> Result<()> {
        self.record(Op::LowPowerEntry, Args::None, self.inner.low_power_entry())
    }

    fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> {
        let result = self.inner.low_power_entry_with_wakeup(wakeup);
        let args = Args::Wakeup {
            fd: wakeup.as_raw_fd(),
        };
        self.record(Op::LowPowerEntryWithWakeup, args, result)
    }

    fn low_power_exit(&self) -> Result<()> {
        self.record(Op::LowPowerExit, Args::None, self.inner.low_power_exit())
    }
}

impl<R: Region> Region for Tracer<R> {
    fn info(&self) -> &RegionInfo {
        self.inner.info()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let result = self.inner.read(offset, buf);
        let value = if result.is_ok() { le_value(buf) } else { None };
        let args = Args::Access {
            region: self.index,
            offset,
            len: buf.len() as u64,
            value: None,
        };
        self.record_with(Op::RegionRead, args, result, |_| value)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let result = self.inner.write(offset, data);
        let args = Args::Access {
            region: self.index,
            offset,
            len: data.len() as u64,
            value: le_value(data),
        };
        self.record(Op::RegionWrite, args, result)
    }

    fn mmap(&self) -> Result<Vec<MmapArea>> {
        let result = self.inner.mmap();
        let args = Args::Access {
            region: self.index,
            offset: 0,
            len: 0,
            value: None,
        };
        self.record_with(Op::RegionMmap, args, result, |areas| {
            Some(areas.len() as u64)
        })
    }
}

impl<I: Irq> Irq for Tracer<I> {
    fn info(&self) -> IrqInfo {
        self.inner.info()
    }

    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> {
        let result = self.inner.set_irqs(set);
        let args = Args::Irq(IrqCall {
            index: Some(set.index),
            start: set.start,
            count: set.count,
            action: set.action,
            data: IrqDataSummary::of(&set.data),
        });
        self.record(Op::SetIrqs, args, result)
    }

    fn set_eventfds(&self, start: u32, fds: &[Option<BorrowedFd<'_>>]) -> Result<()> {
        let result = self.inner.set_eventfds(start, fds);
        let count = u32::try_from(fds.len()).unwrap_or(u32::MAX);
        let data = IrqDataSummary::eventfds(fds);
        let args = self.irq_call(start, count, IrqAction::Trigger, data);
        self.record(Op::SetEventfds, args, result)
    }

    fn set_eventfd(&self, vector: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let result = self.inner.set_eventfd(vector, fd);
        let data = IrqDataSummary::eventfds(&[fd]);
        let args = self.irq_call(vector, 1, IrqAction::Trigger, data);
        self.record(Op::SetEventfd, args, result)
    }

    fn disable(&self) -> Result<()> {
        let result = self.inner.disable();
        let args = self.irq_call(0, 0, IrqAction::Trigger, IrqDataSummary::None);
        self.record(Op::Disable, args, result)
    }

    fn mask(&self, start: u32, count: u32) -> Result<()> {
        let result = self.inner.mask(start, count);
        let args = self.irq_call(start, count, IrqAction::Mask, IrqDataSummary::None);
        self.record(Op::Mask, args, result)
    }

    fn unmask(&self, start: u32, count: u32) -> Result<()> {
        let result = self.inner.unmask(start, count);
        let args = self.irq_call(start, count, IrqAction::Unmask, IrqDataSummary::None);
        self.record(Op::Unmask, args, result)
    }

    fn trigger(&self, start: u32, count: u32) -> Result<()> {
        let result = self.inner.trigger(start, count);
        let args = self.irq_call(start, count, IrqAction::Trigger, IrqDataSummary::None);
        self.record(Op::Trigger, args, result)
    }

    fn set_resample(&self, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let result = self.inner.set_resample(fd);
        let data = IrqDataSummary::eventfds(&[fd]);
        let args = self.irq_call(0, 1, IrqAction::Unmask, data);
        self.record(Op::SetResample, args, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_reads_like_the_calls() {
        let log = TraceLog::new();
        log.push(
            Op::RegionWrite,
            Args::Access {
                region: Some(0),
                offset: 4,
                len: 4,
                value: Some(0x2a),
            },
            Outcome::Ok,
        );
        let err = Error::sys(
            "VFIO_IOMMU_UNMAP_DMA",
            vfio_hal::Target::Iova {
                iova: 0x1000,
                len: 0x1000,
            },
            libc::ENOENT,
        );
        log.push(
            Op::UnmapDma,
            Args::Unmap {
                iova: 0x1000,
                len: 0x1000,
            },
            Outcome::failed(&err),
        );
        log.clear();
        log.push(
            Op::SetEventfd,
            Args::Irq(IrqCall {
                index: Some(2),
                start: 0,
                count: 1,
                action: IrqAction::Trigger,
                data: IrqDataSummary::EventFd(vec![Some(7)]),
            }),
            Outcome::Ok,
        );
        assert_eq!(
            log.to_string(),
            "#2 set_eventfd(index 2, Trigger [0, +1), eventfds [7]) -> Ok\n"
        );
        let unmap = Outcome::failed(&err).to_string();
        assert!(
            unmap.starts_with("Err NotMapped (errno 2): not mapped: VFIO_IOMMU_UNMAP_DMA"),
            "{unmap}"
        );
    }
}
