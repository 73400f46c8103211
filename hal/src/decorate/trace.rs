//! Call tracing: a decorator that records every call to any backend and its result.
//!
//! [`Tracer<B>`] is a [`Decorated`] with the [`TraceLog`] hook, like
//! [`FaultInjector`](super::inject::FaultInjector) (smoltcp's `Tracer<D>`):
//! it wraps a container, device, region or irq of any backend, implements
//! the same hal trait, and wraps whatever it opens, so one [`TraceLog`]
//! holds the calls of a whole tree in order. Use it for
//! assertions ("the driver unmasked after the read") and for debugging
//! (`println!("{}", tracer.log())`). Every event is also emitted as a
//! `log::trace!` record (target `vfio_hal::trace`).
//!
//! The recorded calls are exactly the ones the fault injector counts (the
//! [decorator rules](super)): every fallible trait method, with provided
//! methods forwarded to the backend and recorded under their own [`Op`]; the
//! infallible getters (`info`, `keep_fds`) are not recorded, and never
//! called by the tracer itself, so it also wraps expectation mocks that
//! would reject an unexpected `info()`. An irq convenience call is
//! summarised as the `SET_IRQS` request it stands for ([`super::IrqCall`]).
//!
//! An event is appended when its call returns, so with several threads the
//! log is in completion order.
//!
//! Calls are numbered from 1 ([`Event::seq`]), as the fault injector
//! numbers them: on the same routine, the call a dump shows as `#n` is the
//! one [`Plan::fail_nth(n)`](super::inject::Plan::fail_nth) fails. The log
//! is bounded like the mock backend's fault and incident logs: it holds
//! the newest [`TRACE_LOG_CAPACITY`] events, dropping the oldest, and
//! [`TraceLog::total`] still counts every one.
//!
//! ```
//! use vfio_hal::{irq::index, prelude::*, Result};
//! use vfio_hal::decorate::{trace::Tracer, Op};
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
//!     println!("{tracer}"); // one line per call, e.g. "#2 reset() -> Ok"
//!     assert_eq!(tracer.log().ops(), [Op::Reset, Op::Irq, Op::Mask]);
//!     Ok(())
//! }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Args, Decorated, Hook, Op};
use crate::{Error, ErrorKind, Result};

/// How many events a [`TraceLog`] keeps; older ones are dropped (and still
/// counted by [`TraceLog::total`]).
pub const TRACE_LOG_CAPACITY: usize = 4096;

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

    /// The outcome of a failed call.
    pub fn failed(e: &Error) -> Self {
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
    /// The call's number, from 1 (the fault injector's numbering); keeps
    /// counting across [`TraceLog::clear`] and dropped events.
    pub seq: u64,
    /// The method.
    pub op: Op,
    /// Its arguments.
    pub args: Args,
    /// Its result.
    pub outcome: Outcome,
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
    /// The newest events, at most [`TRACE_LOG_CAPACITY`].
    events: VecDeque<Event>,
    /// Events recorded so far, including cleared and dropped ones.
    total: u64,
}

/// The shared, ordered list of [`Event`]s of one tracer tree. Clones share it.
///
/// Bounded: the newest [`TRACE_LOG_CAPACITY`] events are kept.
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
        s.total = s.total.saturating_add(1);
        let event = Event {
            seq: s.total,
            op,
            args,
            outcome,
        };
        log::trace!(target: "vfio_hal::trace", "{event}");
        if s.events.len() == TRACE_LOG_CAPACITY {
            s.events.pop_front();
        }
        s.events.push_back(event);
    }

    /// A copy of the events held, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.iter().cloned().collect()
    }

    /// How many events were recorded in total, including cleared and
    /// dropped ones: the number of the latest call.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Just the operations so far, in order: the usual thing to assert on.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().events.iter().map(|e| e.op).collect()
    }

    /// Forgets the events (call numbers keep counting).
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

/// The [`Hook`] of a [`Tracer`]: the log it records into.
impl Hook for TraceLog {
    fn around<T>(
        &self,
        op: Op,
        args: Args,
        inner: impl FnOnce() -> Result<T>,
        value: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T> {
        let result = inner();
        self.push(op, args, Outcome::of(&result, value));
        result
    }
}

/// A decorator that records every call to the wrapped backend object in a
/// [`TraceLog`]; see the [module docs](self).
///
/// `Tracer<C>` is a [`crate::Container`] whose devices are
/// `Tracer<C::Device>`, whose regions and irqs are traced in turn, all into
/// one log. Its `Display` is the log's.
pub type Tracer<B> = Decorated<B, TraceLog>;

impl<B> Decorated<B, TraceLog> {
    /// Wraps `inner` with a new, empty log.
    pub fn new(inner: B) -> Self {
        Self::with_log(inner, TraceLog::new())
    }

    /// Wraps `inner`, recording into `log` (which may already be shared).
    pub fn with_log(inner: B, log: TraceLog) -> Self {
        Self::with_hook(inner, log)
    }

    /// The shared log.
    pub fn log(&self) -> &TraceLog {
        self.hook()
    }

    /// A copy of the events so far ([`TraceLog::events`]).
    pub fn events(&self) -> Vec<Event> {
        self.log().events()
    }

    /// Empties the shared log ([`TraceLog::clear`]).
    pub fn clear(&self) {
        self.log().clear();
    }
}

impl<B> fmt::Display for Decorated<B, TraceLog> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.log(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decorate::{IrqCall, IrqDataSummary};
    use crate::IrqAction;

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
            crate::Target::Iova {
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
            "#3 set_eventfd(index 2, Trigger [0, +1), eventfds [7]) -> Ok\n"
        );
        let unmap = Outcome::failed(&err).to_string();
        assert!(
            unmap.starts_with("Err NotMapped (errno 2): not mapped: VFIO_IOMMU_UNMAP_DMA"),
            "{unmap}"
        );
    }

    #[test]
    fn the_log_keeps_the_newest_events_and_numbers_them_from_one() {
        let log = TraceLog::new();
        let calls = TRACE_LOG_CAPACITY as u64 + 3;
        for _ in 0..calls {
            log.push(Op::Reset, Args::None, Outcome::Ok);
        }
        assert_eq!(log.len(), TRACE_LOG_CAPACITY, "bounded");
        assert_eq!(log.total(), calls, "dropped events still count");
        let events = log.events();
        assert_eq!(
            events.first().map(|e| e.seq),
            Some(4),
            "the oldest 3 dropped"
        );
        assert_eq!(events.last().map(|e| e.seq), Some(calls));
    }
}
