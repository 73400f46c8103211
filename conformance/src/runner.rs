//! Running cases: one `#[test]` each through [`crate::conformance_tests!`], or
//! the whole suite in order through [`run_suite`], with a summary.

use std::fmt;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::fixture::Fixture;
use crate::outcome::{CaseResult, Outcome};

/// What a case does to the device beyond reading it and routing its
/// interrupts, and what it needs from the fixture: declared where the case
/// is registered (`__for_each_case!`), so that a runner can leave out the
/// destructive cases on an operator's device without a list of its own.
///
/// The test `declared_effects` runs every case on the mock under the
/// `Tracer` and fails when a case resets, unplugs or revokes the device, or
/// injects faults, without declaring it.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Effects(u16);

impl Effects {
    /// Reads, maps host memory, toggles bus mastering, routes and raises
    /// interrupts; all undone by the end of the case.
    pub const NONE: Self = Self(0);
    /// Resets the device (`Device::reset`).
    pub const RESETS: Self = Self(1 << 0);
    /// Unplugs the device (politely or by surprise) through the fixture.
    pub const UNPLUGS: Self = Self(1 << 1);
    /// Revokes the device's handles.
    pub const REVOKES: Self = Self(1 << 2);
    /// Makes the device DMA: it writes host memory and its own memory.
    pub const DEVICE_DMA: Self = Self(1 << 3);
    /// Fails hal calls halfway through operations (fault sweeps), which may
    /// leave the device in any state its driver reaches on an error path.
    pub const FAULT_SWEEP: Self = Self(1 << 4);
    /// Needs the fixture's MSI-X device ([`Fixture::msix_device`]).
    pub const NEEDS_MSIX: Self = Self(1 << 8);
    /// Needs the fixture's copy engine ([`Fixture::copy_engine`]).
    pub const NEEDS_COPY_ENGINE: Self = Self(1 << 9);
    /// Needs the fixture's unplug mechanism ([`Fixture::unplug`]).
    pub const NEEDS_UNPLUG: Self = Self(1 << 10);
    /// Needs the fixture's igb NIC ([`Fixture::igb`]).
    pub const NEEDS_IGB: Self = Self(1 << 11);

    /// The effects that make a case destructive.
    pub const DESTRUCTIVE: Self = Self(
        Self::RESETS.0
            | Self::UNPLUGS.0
            | Self::REVOKES.0
            | Self::DEVICE_DMA.0
            | Self::FAULT_SWEEP.0,
    );

    const NAMES: [(Self, &'static str); 9] = [
        (Self::RESETS, "resets the device"),
        (Self::UNPLUGS, "unplugs the device"),
        (Self::REVOKES, "revokes the device"),
        (Self::DEVICE_DMA, "makes the device DMA"),
        (
            Self::FAULT_SWEEP,
            "fails hal calls halfway through operations (fault sweeps)",
        ),
        (Self::NEEDS_MSIX, "needs an MSI-X device"),
        (Self::NEEDS_COPY_ENGINE, "needs a copy engine"),
        (Self::NEEDS_UNPLUG, "needs an unplug mechanism"),
        (Self::NEEDS_IGB, "needs an igb NIC"),
    ];

    /// Both sets of effects.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These effects without `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether every effect of `other` is declared here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any effect is destructive.
    pub const fn is_destructive(self) -> bool {
        self.0 & Self::DESTRUCTIVE.0 != 0
    }

    /// What the destructive effects do, e.g. `resets the device, makes the
    /// device DMA`; `None` for a non-destructive case.
    pub fn destructive_reason(self) -> Option<String> {
        let reason = Self(self.0 & Self::DESTRUCTIVE.0).to_string();
        self.is_destructive().then_some(reason)
    }
}

impl std::ops::BitOr for Effects {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl fmt::Display for Effects {
    /// The effects in words, comma-separated; `none` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Self::NAMES
            .iter()
            .filter(|(e, _)| self.contains(*e))
            .map(|&(_, name)| name);
        match names.next() {
            None => f.write_str("none"),
            Some(first) => {
                f.write_str(first)?;
                names.try_for_each(|n| write!(f, ", {n}"))
            }
        }
    }
}

impl fmt::Debug for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Effects({self})")
    }
}

/// One case of the suite for fixture type `F`.
pub struct Case<F: Fixture> {
    /// The case's id, e.g. `C02_unmap_nothing`: group letter, number, what it checks.
    pub id: &'static str,
    /// What the case does to the device and needs from the fixture.
    pub effects: Effects,
    /// The case itself.
    pub run: fn(&F) -> CaseResult,
}

impl<F: Fixture> Clone for Case<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Fixture> Copy for Case<F> {}

impl<F: Fixture> fmt::Debug for Case<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("effects", &self.effects)
            .finish()
    }
}

static SUITE: Mutex<()> = Mutex::new(());

/// Holds the suite's global lock: cases count process-wide resources (fds,
/// mmaps), so no two may run at once in one process. Tests of other crates
/// that share a binary with the suite and open files should hold it too.
pub fn serial() -> MutexGuard<'static, ()> {
    // A failed case may have panicked while holding it; the lock guards no data.
    SUITE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one case; a panic inside it is a failure, not an abort of the suite.
pub fn run_case<F: Fixture>(fixture: &F, case: fn(&F) -> CaseResult) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| case(fixture))) {
        Ok(result) => Outcome::from_result(result),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_owned());
            Outcome::Failed(format!("panicked: {msg}"))
        }
    }
}

/// The body of one generated `#[test]`: runs the case under the global lock,
/// passes on success, prints `N/A: <reason>` to stderr when it cannot apply,
/// and panics with the failure message otherwise.
pub fn run_test<F: Fixture>(fixture: &F, id: &str, case: fn(&F) -> CaseResult) {
    let _serial = serial();
    match run_case(fixture, case) {
        Outcome::Passed => {}
        Outcome::NotApplicable(reason) => {
            // Straight to the process's stderr: libtest captures the output
            // of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr().lock(),
                "N/A: {id} [{}]: {reason}",
                fixture.mode()
            );
        }
        Outcome::Failed(msg) => panic!("{id} [{}] FAILED: {msg}", fixture.mode()),
    }
}

/// The outcome of a whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The fixture's mode.
    pub mode: String,
    /// Every case's id and outcome, in the order they ran.
    pub results: Vec<(&'static str, Outcome)>,
}

impl Summary {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// Cases that could not apply to the fixture.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::NotApplicable(_)))
    }

    /// Whether nothing failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, o)| pred(o)).count()
    }
}

impl fmt::Display for Summary {
    /// The summary line: `conformance: N passed, M failed, K skipped`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance: {} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

/// Runs every case in order against `fixture`, printing one line per case,
/// the skipped cases with their reasons, and the summary line to stdout.
pub fn run_suite<F: Fixture>(fixture: &F) -> Summary {
    run_suite_to(fixture, &mut std::io::stdout().lock())
}

/// [`run_suite`], writing the report to `out`.
pub fn run_suite_to<F: Fixture>(fixture: &F, out: &mut impl Write) -> Summary {
    run_cases_to(fixture, &crate::cases::all::<F>(), out)
}

/// Runs `cases` in order against `fixture`, reporting as [`run_suite`] does.
pub fn run_cases_to<F: Fixture>(fixture: &F, cases: &[Case<F>], out: &mut impl Write) -> Summary {
    let _serial = serial();
    // The report is best effort: a closed stdout must not abort the run.
    let _ = writeln!(
        out,
        "conformance suite, mode {}: {} cases",
        fixture.mode(),
        cases.len()
    );
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let outcome = run_case(fixture, case.run);
        let _ = match &outcome {
            Outcome::Passed => writeln!(out, "case {} ... ok", case.id),
            Outcome::Failed(msg) => writeln!(out, "case {} ... FAILED: {msg}", case.id),
            Outcome::NotApplicable(reason) => {
                writeln!(out, "case {} ... skipped: {reason}", case.id)
            }
        };
        let _ = out.flush();
        results.push((case.id, outcome));
    }
    let summary = Summary {
        mode: fixture.mode().to_owned(),
        results,
    };
    if summary.skipped() > 0 {
        let _ = writeln!(out, "skipped (not applicable to mode {}):", summary.mode);
        for (id, outcome) in &summary.results {
            if let Outcome::NotApplicable(reason) = outcome {
                let _ = writeln!(out, "  {id}: {reason}");
            }
        }
    }
    if summary.failed() > 0 {
        let _ = writeln!(out, "failed:");
        for (id, outcome) in &summary.results {
            if let Outcome::Failed(msg) = outcome {
                let _ = writeln!(out, "  {id}: {msg}");
            }
        }
    }
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
    summary
}
