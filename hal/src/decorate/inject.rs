//! Fault injection: a decorator that makes chosen operations of any backend fail.
//!
//! [`FaultInjector<B>`] wraps a container, device, region or irq of *any*
//! backend — the in-memory mock, type1, iommufd, a test fake — and
//! implements the same hal trait (a [`Decorated`] with the [`Faults`] hook).
//! Every object opened through a wrapped container (its devices, their
//! regions and irqs) is wrapped too and shares one [`Plan`] and one call
//! counter, so "fail the 5th operation" counts across the whole tree.
//!
//! What counts as an operation is the [decorator rules](super): every
//! fallible trait method, one [`Op`] each.
//!
//! # What a failure does
//! The error is an [`Error::Other`] carrying the operation's name, the
//! plan's [`ErrorKind`] and, as its source, an [`InjectedFault`] with the
//! 1-based call number. A failed operation never
//! reaches the inner object: it fails cleanly, with no side effect, as if the
//! kernel had refused the ioctl up front; when it would have opened something
//! (a device, region or irq), nothing is opened.
//!
//! One exception keeps the lie safe: an injected [`ErrorKind::NotMapped`] on
//! [`Op::UnmapDma`] first unmaps in the backend, because a
//! [`crate::DmaMapping`] guard frees its buffer on NotMapped ("already
//! gone"), and the backend must not keep pointing at freed memory. Any other
//! kind leaves the mapping in place and the guard leaks its buffer, as it
//! does after a real failed unmap.
//!
//! # Sweeps
//! [`sweep`] (and [`Sweep`] for options) runs a multi-step routine once to
//! learn how many operations it performs, then once per step with that step
//! failing, handing each outcome to a check — the kernel selftests'
//! "fail the 1st, 2nd, 3rd… step until none is hit".

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Args, Decorated, Hook, Object, Op};
use crate::{Error, ErrorKind, Result, Target};

/// A set of [`Op`]s: which operations a [`Plan`] applies to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpFilter(u64);

impl OpFilter {
    /// Every operation.
    pub const ALL: Self = Self(u64::MAX >> (64 - Op::ALL.len()));
    /// No operation.
    pub const NONE: Self = Self(0);

    const fn bit(op: Op) -> u64 {
        // Fewer than 64 variants (checked by a test).
        1 << (op as u32)
    }

    /// Exactly one operation.
    pub const fn only(op: Op) -> Self {
        Self(Self::bit(op))
    }

    /// Every operation of one object, e.g. all irq calls.
    pub fn object(object: Object) -> Self {
        Op::ALL
            .iter()
            .filter(|op| op.object() == object)
            .copied()
            .collect()
    }

    /// This set plus `op`.
    pub const fn with(self, op: Op) -> Self {
        Self(self.0 | Self::bit(op))
    }

    /// This set minus `op`, e.g. `OpFilter::ALL.without(Op::UnmapDma)` to
    /// spare the teardown a sweep should not fail.
    pub const fn without(self, op: Op) -> Self {
        Self(self.0 & !Self::bit(op))
    }

    /// Whether `op` is in the set.
    pub const fn contains(self, op: Op) -> bool {
        self.0 & Self::bit(op) != 0
    }

    /// The operations in the set, in declaration order.
    pub fn ops(self) -> impl Iterator<Item = Op> {
        Op::ALL.iter().copied().filter(move |&op| self.contains(op))
    }
}

impl Default for OpFilter {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Debug for OpFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            return f.write_str("OpFilter::ALL");
        }
        f.debug_set().entries(self.ops()).finish()
    }
}

impl From<Op> for OpFilter {
    fn from(op: Op) -> Self {
        Self::only(op)
    }
}

impl<const N: usize> From<[Op; N]> for OpFilter {
    fn from(ops: [Op; N]) -> Self {
        ops.into_iter().collect()
    }
}

impl From<&[Op]> for OpFilter {
    fn from(ops: &[Op]) -> Self {
        ops.iter().copied().collect()
    }
}

impl FromIterator<Op> for OpFilter {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// When a [`Plan`] fails an operation that its filter selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Never: count only.
    Never,
    /// The Nth selected operation (1-based; `Nth(0)` never fires).
    Nth(u64),
    /// Every selected operation.
    Every,
}

/// What a [`FaultInjector`] fails, and with which [`ErrorKind`].
///
/// ```
/// use vfio_hal::ErrorKind;
/// use vfio_hal::decorate::{inject::Plan, Op};
///
/// // The 3rd operation of any kind fails with the default kind (Io).
/// let third = Plan::fail_nth(3);
/// // The 2nd irq routing fails as a busy device would.
/// let second_irq = Plan::fail_nth(2)
///     .only([Op::SetIrqs, Op::SetEventfds, Op::SetEventfd])
///     .with_kind(ErrorKind::Busy);
/// // Every unmap fails as after a hot-unplug.
/// let gone = Plan::fail_every(Op::UnmapDma).with_kind(ErrorKind::DeviceGone);
/// # let _ = (third, second_irq, gone);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plan {
    /// When to fail.
    pub trigger: Trigger,
    /// Which operations the trigger looks at; the others always pass.
    pub ops: OpFilter,
    /// The kind of the injected errors.
    pub kind: ErrorKind,
}

impl Default for Plan {
    fn default() -> Self {
        Self::count_only()
    }
}

impl Plan {
    /// The kind injected unless [`Plan::with_kind`] says otherwise.
    pub const DEFAULT_KIND: ErrorKind = ErrorKind::Io;

    /// Fails nothing; the injector only counts.
    pub const fn count_only() -> Self {
        Self {
            trigger: Trigger::Never,
            ops: OpFilter::ALL,
            kind: Self::DEFAULT_KIND,
        }
    }

    /// Fails the `n`th operation (1-based) that the filter selects — by
    /// default, the `n`th operation of any kind.
    pub const fn fail_nth(n: u64) -> Self {
        Self {
            trigger: Trigger::Nth(n),
            ..Self::count_only()
        }
    }

    /// Fails every operation in `ops`.
    pub fn fail_every(ops: impl Into<OpFilter>) -> Self {
        Self {
            trigger: Trigger::Every,
            ops: ops.into(),
            ..Self::count_only()
        }
    }

    /// Restricts the plan to `ops`: only they are numbered for
    /// [`Trigger::Nth`] and only they can fail.
    pub fn only(self, ops: impl Into<OpFilter>) -> Self {
        Self {
            ops: ops.into(),
            ..self
        }
    }

    /// Sets the kind of the injected errors.
    pub const fn with_kind(self, kind: ErrorKind) -> Self {
        Self { kind, ..self }
    }
}

/// One injected failure: which operation, and its 1-based call number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Injection {
    /// The operation that was failed.
    pub op: Op,
    /// Its number among all operations that reached the tree (as in [`InjectedFault`]).
    pub call: u64,
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (call #{})", self.op, self.call)
    }
}

/// The source of every error the injector returns (an [`Error::Other`] of
/// the plan's kind): which call it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected fault, call #{}", .0.call)]
pub struct InjectedFault(pub Injection);

impl InjectedFault {
    /// The injected fault behind `err`, if the injector produced it.
    pub fn of(err: &Error) -> Option<Injection> {
        std::error::Error::source(err)?
            .downcast_ref::<Self>()
            .map(|f| f.0)
    }
}

#[derive(Debug, Default)]
struct State {
    plan: Plan,
    /// Every operation.
    calls: u64,
    /// Operations the plan's filter selects.
    selected: u64,
    injected: u64,
    last: Option<Injection>,
}

/// The plan and counters one injector tree shares.
#[derive(Debug, Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters half-updated; carry on.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `op` and decides whether it fails.
    fn enter(&self, op: Op) -> Result<()> {
        let mut s = self.lock();
        s.calls = s.calls.saturating_add(1);
        let call = s.calls;
        if !s.plan.ops.contains(op) {
            return Ok(());
        }
        s.selected = s.selected.saturating_add(1);
        let fire = match s.plan.trigger {
            Trigger::Never => false,
            Trigger::Nth(n) => s.selected == n,
            Trigger::Every => true,
        };
        if !fire {
            return Ok(());
        }
        s.injected = s.injected.saturating_add(1);
        s.last = Some(Injection { op, call });
        let kind = s.plan.kind;
        drop(s);
        log::debug!("fault injector: failing {op} (call #{call}) with {kind:?}");
        Err(Error::other(
            op.name(),
            Target::None,
            kind,
            InjectedFault(Injection { op, call }),
        ))
    }
}

/// The [`Hook`] of a [`FaultInjector`]: the plan and counters one injector
/// tree shares.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Shared>);

impl Hook for Faults {
    fn around<T>(
        &self,
        op: Op,
        _args: Args,
        inner: impl FnOnce() -> Result<T>,
        _value: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T> {
        match self.0.enter(op) {
            Ok(()) => inner(),
            // `DmaMapping` frees its buffer when an unmap reports NotMapped,
            // so that answer must be true: undo the mapping first (the one
            // injected failure that reaches the backend; see the module docs).
            Err(injected) if op == Op::UnmapDma && injected.kind() == ErrorKind::NotMapped => {
                inner()?;
                Err(injected)
            }
            Err(injected) => Err(injected),
        }
    }
}

/// A decorator that fails operations of the wrapped backend object as its
/// [`Plan`] says; see the [module docs](self).
///
/// `FaultInjector<C>` is a [`crate::Container`] whose devices are
/// `FaultInjector<C::Device>`, whose regions and irqs are wrapped in turn;
/// all of them share the plan and counters of the injector they came from.
pub type FaultInjector<B> = Decorated<B, Faults>;

impl<B> Decorated<B, Faults> {
    /// Wraps `inner` in counting mode ([`Plan::count_only`]).
    pub fn new(inner: B) -> Self {
        Self::with_plan(inner, Plan::count_only())
    }

    /// Wraps `inner` with `plan` armed.
    pub fn with_plan(inner: B, plan: Plan) -> Self {
        let state = State {
            plan,
            ..State::default()
        };
        Self::with_hook(inner, Faults(Arc::new(Shared(Mutex::new(state)))))
    }

    /// The plan now in force.
    pub fn plan(&self) -> Plan {
        self.hook().0.lock().plan
    }

    /// Installs `plan` and zeroes every counter (re-arming for a new run).
    pub fn arm(&self, plan: Plan) {
        let mut s = self.hook().0.lock();
        *s = State {
            plan,
            ..State::default()
        };
    }

    /// Zeroes every counter and keeps the plan, so a `fail_nth` fires again.
    ///
    /// (Not `reset`: that name is [`crate::Device::reset`], which the wrapper implements.)
    pub fn rearm(&self) {
        let plan = self.plan();
        self.arm(plan);
    }

    /// Switches to counting mode, keeping the counters.
    pub fn disarm(&self) {
        self.hook().0.lock().plan.trigger = Trigger::Never;
    }

    /// Operations of every kind that reached the tree since the last
    /// [`arm`](Self::arm) or [`rearm`](Self::rearm), failed ones included.
    pub fn calls(&self) -> u64 {
        self.hook().0.lock().calls
    }

    /// Operations the plan's filter selected (equals [`calls`](Self::calls)
    /// when the filter is [`OpFilter::ALL`]).
    pub fn selected_calls(&self) -> u64 {
        self.hook().0.lock().selected
    }

    /// How many operations were failed.
    pub fn injected(&self) -> u64 {
        self.hook().0.lock().injected
    }

    /// The most recent injected failure.
    pub fn last_injection(&self) -> Option<Injection> {
        self.hook().0.lock().last
    }
}

/// What a sweep's check receives after one run of the routine.
///
/// Everything is owned, so the check decides the teardown order: drop
/// `result` (devices, mappings the routine returned), inspect
/// `injector.inner()`, drop `injector`, then look for leaked fds.
#[derive(Debug)]
pub struct SweepStep<B, T> {
    /// The failed step, 1-based; 0 for the clean (counting) run.
    pub step: u64,
    /// How many steps the clean run performed.
    pub steps: u64,
    /// The fault that actually fired in this run: `None` for step 0, and
    /// also `None` if the routine did fewer operations this time (it is not
    /// deterministic).
    pub injection: Option<Injection>,
    /// What the routine returned.
    pub result: Result<T>,
    /// The injector the routine ran on (its inner backend is still alive).
    pub injector: FaultInjector<B>,
}

/// Options of a fail-every-step sweep; [`sweep`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// The steps to fail (default: every operation).
    pub ops: OpFilter,
    /// The kind of the injected errors (default: [`Plan::DEFAULT_KIND`]).
    pub kind: ErrorKind,
}

impl Default for Sweep {
    fn default() -> Self {
        Self {
            ops: OpFilter::ALL,
            kind: Plan::DEFAULT_KIND,
        }
    }
}

impl Sweep {
    /// Runs `routine` on a fresh `make()` backend in counting mode to learn
    /// its number of steps N (operations the filter selects), then N more
    /// times on fresh backends with step 1, 2, … N failing. `check` sees
    /// every run, the clean one first (step 0).
    ///
    /// Returns N, or the error of the clean run (a routine that fails with
    /// nothing injected cannot be swept).
    pub fn run<B, T>(
        &self,
        mut make: impl FnMut() -> B,
        mut routine: impl FnMut(&FaultInjector<B>) -> Result<T>,
        mut check: impl FnMut(SweepStep<B, T>),
    ) -> Result<u64> {
        let plan = Plan::count_only().only(self.ops).with_kind(self.kind);
        let injector = FaultInjector::with_plan(make(), plan);
        let result = routine(&injector);
        let steps = injector.selected_calls();
        let result = Ok(result?);
        check(SweepStep {
            step: 0,
            steps,
            injection: None,
            result,
            injector,
        });
        for step in 1..=steps {
            let plan = Plan {
                trigger: Trigger::Nth(step),
                ..plan
            };
            let injector = FaultInjector::with_plan(make(), plan);
            let result = routine(&injector);
            check(SweepStep {
                step,
                steps,
                injection: injector.last_injection(),
                result,
                injector,
            });
        }
        Ok(steps)
    }
}

/// Fails every step of `routine` in turn: see [`Sweep::run`], with every
/// operation a step and the default error kind.
///
/// ```
/// use vfio_hal::{prelude::*, Result};
/// use vfio_hal::decorate::inject::{sweep, FaultInjector, InjectedFault};
///
/// /// The code under test: open a device and route MSI-X vector 0.
/// fn bring_up<C: Container>(c: &C, fd: std::os::fd::BorrowedFd<'_>) -> Result<C::Device> {
///     let dev = c.open_device("0000:00:04.0")?;
///     dev.irq(vfio_hal::irq::index::MSIX)?.set_eventfd(0, Some(fd))?;
///     Ok(dev)
/// }
///
/// /// On any backend: every step of `bring_up` fails with the injected error.
/// fn every_step_fails_cleanly<C: Container>(
///     make: impl FnMut() -> C,
///     fd: std::os::fd::BorrowedFd<'_>,
/// ) -> Result<u64> {
///     sweep(make, |c| bring_up(c, fd), |step| {
///         if let Some(fault) = step.injection {
///             let err = step.result.as_ref().err();
///             assert_eq!(err.and_then(InjectedFault::of), Some(fault), "{err:?}");
///         }
///         // Here: drop step.result, then look for leftovers in step.injector.inner().
///     })
/// }
/// ```
pub fn sweep<B, T>(
    make: impl FnMut() -> B,
    routine: impl FnMut(&FaultInjector<B>) -> Result<T>,
    check: impl FnMut(SweepStep<B, T>),
) -> Result<u64> {
    Sweep::default().run(make, routine, check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_fits_the_filter_bits_and_has_a_unique_name() {
        assert!(Op::ALL.len() < 64);
        assert_eq!(OpFilter::ALL.ops().count(), Op::ALL.len());
        let mut names: Vec<_> = Op::ALL.iter().map(|op| op.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
    }

    #[test]
    fn filters_combine() {
        let f = OpFilter::from([Op::MapDma, Op::UnmapDma]);
        assert!(f.contains(Op::MapDma) && f.contains(Op::UnmapDma));
        assert!(!f.contains(Op::OpenDevice));
        assert!(!OpFilter::ALL.without(Op::Reset).contains(Op::Reset));
        let irq = OpFilter::object(Object::Irq);
        assert!(irq.contains(Op::SetIrqs) && !irq.contains(Op::RegionRead));
        assert_eq!(format!("{:?}", OpFilter::only(Op::Reset)), "{Reset}");
    }

    #[test]
    fn nth_counts_only_selected_ops_but_reports_the_global_call() {
        let shared = Shared::default();
        shared.lock().plan = Plan::fail_nth(2).only(Op::Reset);
        assert!(shared.enter(Op::RegionRead).is_ok()); // call 1, not selected
        assert!(shared.enter(Op::Reset).is_ok()); // call 2, 1st reset
        assert!(shared.enter(Op::RegionRead).is_ok()); // call 3
        let err = shared.enter(Op::Reset).expect_err("2nd reset fails");
        assert_eq!((err.op(), err.kind()), (Some("reset"), ErrorKind::Io));
        assert_eq!(
            InjectedFault::of(&err),
            Some(Injection {
                op: Op::Reset,
                call: 4
            })
        );
        assert!(shared.enter(Op::Reset).is_ok(), "fires once");
    }
}
