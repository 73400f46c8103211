//! The effects each case declares where it is registered are true: every
//! case runs on the mock under the `Tracer`, and a case that resets,
//! unplugs or revokes the device, or injects faults, without declaring it
//! fails here. A runner leaves destructive cases out of a run on an
//! operator's device by these declarations alone, so an undeclared reset
//! would reach real hardware.
//!
//! What is observed, per case:
//! - a `reset` call that succeeded (the tracer's log): [`Effects::RESETS`];
//!   a refused one (on an unplugged or revoked device) still makes the case
//!   destructive;
//! - the fixture's `unplug` hook: [`Effects::UNPLUGS`] and
//!   [`Effects::NEEDS_UNPLUG`];
//! - a call refused because the device was revoked: [`Effects::REVOKES`];
//! - a fault injected by `FaultInjector` (its log record) or a request for
//!   the fixture's `step_faults`: [`Effects::FAULT_SWEEP`];
//! - the `copy_engine` hook: [`Effects::NEEDS_COPY_ENGINE`]; the `igb`
//!   hook: [`Effects::NEEDS_IGB`]; and a case
//!   declaring [`Effects::NEEDS_MSIX`] must ask for the MSI-X device.
//!
//! Device DMA happens inside the models, below the hal calls, and is not
//! observed here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use vfio_hal::decorate::trace::{self, TraceLog, Tracer};
use vfio_hal::decorate::Op;
use vfio_hal::{ErrorKind, Result};
use vfio_hal_conformance::runner::{run_case, serial};
use vfio_hal_conformance::{
    cases, Capabilities, Case, Effects, Fixture, Outcome, StepFaults, Unplug,
};
use vfio_hal_mock::conformance::MockFixture;
use vfio_hal_mock::MockContainer;

/// Counts the faults `FaultInjector` injects, from its log records.
struct InjectionCounter;

static INJECTED: AtomicU64 = AtomicU64::new(0);
static LOGGER: InjectionCounter = InjectionCounter;

impl log::Log for InjectionCounter {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("vfio_hal::decorate::inject")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata())
            && record
                .args()
                .to_string()
                .starts_with("fault injector: failing")
        {
            INJECTED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

fn count_injections() {
    // Another test of this binary may have installed it already.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
}

/// Which fixture hooks a case used.
#[derive(Debug, Default)]
struct Hooks {
    unplug: bool,
    msix_device: bool,
    copy_engine: bool,
    igb: bool,
    step_faults: bool,
}

/// The mock fixture with every container under one shared `Tracer` log.
struct Traced {
    inner: MockFixture,
    log: TraceLog,
    hooks: Mutex<Hooks>,
}

impl Traced {
    fn new() -> Self {
        Self {
            inner: MockFixture::new(),
            log: TraceLog::new(),
            hooks: Mutex::new(Hooks::default()),
        }
    }

    fn hooks(&self) -> std::sync::MutexGuard<'_, Hooks> {
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Fixture for Traced {
    type Container = Tracer<MockContainer>;

    fn mode(&self) -> &str {
        "mock-traced"
    }

    fn container(&self) -> Result<Self::Container> {
        Ok(Tracer::with_log(self.inner.container()?, self.log.clone()))
    }

    fn edu(&self) -> &str {
        self.inner.edu()
    }

    fn msix_device(&self) -> Option<&str> {
        self.hooks().msix_device = true;
        self.inner.msix_device()
    }

    fn copy_engine(&self) -> Option<&str> {
        self.hooks().copy_engine = true;
        self.inner.copy_engine()
    }

    fn igb(&self) -> Option<&str> {
        self.hooks().igb = true;
        self.inner.igb()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn iommu_faults(&self, container: &Self::Container) -> Option<u64> {
        self.inner.iommu_faults(container.inner())
    }

    fn live_mappings(&self, container: &Self::Container) -> Option<usize> {
        self.inner.live_mappings(container.inner())
    }

    fn step_faults(&self) -> Option<&dyn StepFaults> {
        self.hooks().step_faults = true;
        self.inner.step_faults()
    }

    fn unplug(&self, container: &Self::Container, device: &str, how: Unplug) -> Option<Result<()>> {
        self.hooks().unplug = true;
        self.inner.unplug(container.inner(), device, how)
    }
}

/// What one run of a case was seen doing.
#[derive(Debug)]
struct Observed {
    outcome: Outcome,
    reset_ok: bool,
    reset_refused: bool,
    revoked: bool,
    injected: u64,
    hooks: Hooks,
}

fn observe(f: &Traced, case: &Case<Traced>) -> Observed {
    f.log.clear();
    *f.hooks() = Hooks::default();
    let injected_before = INJECTED.load(Ordering::SeqCst);
    let outcome = run_case(f, case.run);
    let events = f.log.events();
    let resets = events.iter().filter(|e| e.op == Op::Reset);
    let (ok, refused): (Vec<_>, Vec<_>) = resets.partition(|e| e.outcome.is_ok());
    let revoked = events.iter().any(|e| {
        matches!(&e.outcome, trace::Outcome::Failed { kind: ErrorKind::DeviceGone, message, .. }
            if message.contains("revoked"))
    });
    Observed {
        outcome,
        reset_ok: !ok.is_empty(),
        reset_refused: !refused.is_empty(),
        revoked,
        injected: INJECTED.load(Ordering::SeqCst) - injected_before,
        hooks: std::mem::take(&mut *f.hooks()),
    }
}

/// Every way `case`'s declarations fall short of what it was seen doing.
fn shortfalls(case: &Case<Traced>, seen: &Observed) -> Vec<String> {
    let declared = case.effects;
    let mut missing = Vec::new();
    let mut need = |observed: bool, effect: Effects, what: &str| {
        if observed && !declared.contains(effect) {
            missing.push(format!("{what} but does not declare `{effect}`"));
        }
    };
    need(seen.reset_ok, Effects::RESETS, "resets the device");
    need(seen.hooks.unplug, Effects::UNPLUGS, "unplugs the device");
    need(
        seen.hooks.unplug,
        Effects::NEEDS_UNPLUG,
        "uses the fixture's unplug",
    );
    need(seen.revoked, Effects::REVOKES, "revokes the device");
    need(seen.injected > 0, Effects::FAULT_SWEEP, "injects faults");
    need(
        seen.hooks.step_faults,
        Effects::FAULT_SWEEP,
        "sweeps step faults",
    );
    need(
        seen.hooks.copy_engine,
        Effects::NEEDS_COPY_ENGINE,
        "uses the copy engine",
    );
    need(seen.hooks.igb, Effects::NEEDS_IGB, "uses the igb NIC");
    if seen.reset_refused && !declared.is_destructive() {
        missing.push("calls reset but is not declared destructive".to_owned());
    }
    if declared.contains(Effects::NEEDS_MSIX) && !seen.hooks.msix_device {
        missing.push("declares `needs an MSI-X device` but never asks for one".to_owned());
    }
    if let Outcome::Failed(msg) = &seen.outcome {
        missing.push(format!(
            "failed under the tracer, so its effects are unknown: {msg}"
        ));
    }
    missing
        .into_iter()
        .map(|m| format!("{}: {m}", case.id))
        .collect()
}

fn check(cases: &[Case<Traced>]) -> (Vec<String>, Vec<(&'static str, Observed)>) {
    count_injections();
    let f = Traced::new();
    let mut all = Vec::new();
    let mut seen = Vec::new();
    for case in cases {
        let observed = observe(&f, case);
        all.extend(shortfalls(case, &observed));
        seen.push((case.id, observed));
    }
    (all, seen)
}

#[test]
fn every_case_declares_what_it_does() {
    let _serial = serial();
    let (shortfalls, seen) = check(&cases::all::<Traced>());
    assert!(
        shortfalls.is_empty(),
        "undeclared effects:\n{}",
        shortfalls.join("\n")
    );
    // Each kind of effect was seen at least once: the observation is not vacuous.
    let any = |p: fn(&Observed) -> bool| seen.iter().any(|(_, o)| p(o));
    assert!(any(|o| o.reset_ok), "no case was seen resetting");
    assert!(any(|o| o.hooks.unplug), "no case was seen unplugging");
    assert!(any(|o| o.revoked), "no case was seen revoking");
    assert!(any(|o| o.injected > 0), "no case was seen injecting faults");
    assert!(
        any(|o| o.hooks.copy_engine),
        "no case was seen using the copy engine"
    );
}

#[test]
fn a_removed_declaration_is_caught() {
    let _serial = serial();
    let stripped: Vec<Case<Traced>> = cases::all::<Traced>()
        .into_iter()
        .filter(|c| {
            [
                "D07_reset",
                "B05_unplug_request",
                "B07_revoke",
                "G04_sweep_reset",
                "H01_copy_succeeds_copy_engine",
            ]
            .contains(&c.id)
        })
        .map(|c| Case {
            effects: Effects::NONE,
            ..c
        })
        .collect();
    assert_eq!(stripped.len(), 5);
    let (shortfalls, _) = check(&stripped);
    for (id, effect) in [
        ("D07_reset", "resets the device"),
        ("B05_unplug_request", "unplugs the device"),
        ("B07_revoke", "revokes the device"),
        ("G04_sweep_reset", "injects faults"),
        ("H01_copy_succeeds_copy_engine", "needs a copy engine"),
    ] {
        assert!(
            shortfalls
                .iter()
                .any(|s| s.starts_with(id) && s.contains(effect)),
            "{id} without its declaration is not caught ({effect}): {shortfalls:#?}"
        );
    }
}
