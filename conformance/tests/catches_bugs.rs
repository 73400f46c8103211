//! The suite fails backends that break the rules: the mock wrapped in a
//! decorator with one deliberate bug must fail exactly the cases that check
//! that rule (and the wrapper without a bug must pass them).

use std::io::sink;

use vfio_hal::decorate::{Args, Decorated, Hook, Op};
use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::migration::MigrationState;
use vfio_hal::{Container, DmaAccess, Error, ErrorKind, IommuInfo, Result, Target};
use vfio_hal_conformance::runner::run_cases_to;
use vfio_hal_conformance::{cases, Capabilities, Fixture, Outcome, Unplug};
use vfio_hal_mock::conformance::MockFixture;
use vfio_hal_mock::{MockContainer, MockDevice};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// type1's raw answer: unmapping nothing "succeeds" with 0 bytes.
    UnmapNothingSucceeds,
    /// Overlaps refused, but with EINVAL instead of EEXIST.
    OverlapWrongKind,
    /// Address wrap reported as EINVAL (old type1) instead of EOVERFLOW.
    WrapWrongKind,
    /// Read-only maps silently made read-write.
    ReadOnlyIgnored,
    /// unmap_all missing although the fixture declares it.
    UnmapAllMissing,
    /// Every open_device leaks a file descriptor.
    LeakOnOpen,
    /// Dirty reads report the mapping clean whatever the device wrote.
    DirtyReadsClean,
}

#[derive(Debug)]
struct BuggyContainer {
    bug: Bug,
    inner: MockContainer,
}

fn einval(op: &'static str, iova: u64, len: u64) -> Error {
    Error::sys(op, Target::Iova { iova, len }, libc::EINVAL)
}

// SAFETY: every bug keeps the unmap promise: an unmap the mock refused as
// NotMapped (nothing mapped) becomes Ok(0), and the other bugs only change
// error kinds or map flags; every answer otherwise is the mock's.
unsafe impl Container for BuggyContainer {
    type Device = MockDevice;

    fn iommu_info(&self) -> Result<IommuInfo> {
        self.inner.iommu_info()
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        let access = match (self.bug, access) {
            (Bug::ReadOnlyIgnored, DmaAccess::ReadOnly) => DmaAccess::ReadWrite,
            (_, a) => a,
        };
        // SAFETY: the caller upholds map_dma_raw's contract, passed on unchanged.
        let result = unsafe { self.inner.map_dma_raw(iova, host, len, access) };
        match (self.bug, result) {
            (Bug::OverlapWrongKind, Err(e)) if e.kind() == ErrorKind::AlreadyMapped => {
                Err(einval("map", iova, len))
            }
            (Bug::WrapWrongKind, Err(e)) if e.kind() == ErrorKind::Overflow => {
                Err(einval("map", iova, len))
            }
            (_, r) => r,
        }
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        match (self.bug, self.inner.unmap_dma(iova, len)) {
            (Bug::UnmapNothingSucceeds, Err(e)) if e.kind() == ErrorKind::NotMapped => Ok(0),
            (Bug::WrapWrongKind, Err(e)) if e.kind() == ErrorKind::Overflow => {
                Err(einval("unmap", iova, len))
            }
            (_, r) => r,
        }
    }

    fn unmap_all(&self) -> Result<u64> {
        if self.bug == Bug::UnmapAllMissing {
            return Err(Error::sys("unmap_all", Target::None, libc::ENOTTY));
        }
        self.inner.unmap_all()
    }

    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        self.inner.set_dirty_tracking(enable)
    }

    fn read_dirty(&self, iova: u64, len: u64, page: u64, keep: bool) -> Result<DirtyBitmap> {
        let bitmap = self.inner.read_dirty(iova, len, page, keep)?;
        if self.bug == Bug::DirtyReadsClean {
            return DirtyBitmap::new(iova, len, page);
        }
        Ok(bitmap)
    }

    fn open_device(&self, name: &str) -> Result<MockDevice> {
        if self.bug == Bug::LeakOnOpen {
            if let Ok(f) = std::fs::File::open("/dev/null") {
                std::mem::forget(f);
            }
        }
        self.inner.open_device(name)
    }
}

#[derive(Debug)]
struct Buggy {
    bug: Bug,
    mock: MockFixture,
}

impl Fixture for Buggy {
    type Container = BuggyContainer;

    fn mode(&self) -> &str {
        "mock-with-a-bug"
    }

    fn container(&self) -> Result<BuggyContainer> {
        Ok(BuggyContainer {
            bug: self.bug,
            inner: self.mock.container()?,
        })
    }

    fn edu(&self) -> &str {
        self.mock.edu()
    }

    fn msix_device(&self) -> Option<&str> {
        self.mock.msix_device()
    }

    fn copy_engine(&self) -> Option<&str> {
        self.mock.copy_engine()
    }

    fn capabilities(&self) -> Capabilities {
        self.mock.capabilities()
    }

    fn iommu_faults(&self, c: &BuggyContainer) -> Option<u64> {
        self.mock.iommu_faults(&c.inner)
    }

    fn live_mappings(&self, c: &BuggyContainer) -> Option<usize> {
        self.mock.live_mappings(&c.inner)
    }

    fn unplug(&self, c: &BuggyContainer, device: &str, how: Unplug) -> Option<Result<()>> {
        self.mock.unplug(&c.inner, device, how)
    }
}

/// Runs the named cases with `bug` and returns their outcomes.
fn outcomes(bug: Bug, ids: &[&str]) -> Vec<(&'static str, Outcome)> {
    let fixture = Buggy {
        bug,
        mock: MockFixture::new(),
    };
    let chosen: Vec<_> = cases::all::<Buggy>()
        .into_iter()
        .filter(|c| ids.contains(&c.id))
        .collect();
    assert_eq!(chosen.len(), ids.len(), "unknown case id in {ids:?}");
    run_cases_to(&fixture, &chosen, &mut sink()).results
}

/// `bug` fails every case in `caught`; without the bug they all pass.
fn caught(bug: Bug, caught: &[&str]) {
    for (id, outcome) in outcomes(Bug::None, caught) {
        assert_eq!(outcome, Outcome::Passed, "{id} without a bug");
    }
    for (id, outcome) in outcomes(bug, caught) {
        assert!(
            matches!(outcome, Outcome::Failed(_)),
            "{id} did not catch {bug:?}: {outcome:?}"
        );
    }
}

#[test]
fn the_wrapper_alone_passes_the_whole_suite() {
    let fixture = Buggy {
        bug: Bug::None,
        mock: MockFixture::new(),
    };
    let summary = run_cases_to(&fixture, &cases::all::<Buggy>(), &mut sink());
    assert_eq!(summary.failed(), 0, "{:#?}", summary.results);
}

#[test]
fn dirty_tracking_must_report_the_written_page() {
    caught(
        Bug::DirtyReadsClean,
        &["C20_dirty_pages_track_device_writes"],
    );
}

#[test]
fn unmapping_nothing_must_be_not_mapped() {
    caught(
        Bug::UnmapNothingSucceeds,
        &[
            "C01_map_unmap_one_page",
            "C02_unmap_nothing",
            "C10_superset_unmap_returns_sum",
        ],
    );
}

#[test]
fn overlaps_must_be_already_mapped() {
    caught(
        Bug::OverlapWrongKind,
        &[
            "C03_overlap_identical",
            "C04_overlap_inside",
            "C05_overlap_covering",
            "C06_overlap_start",
            "C07_overlap_end",
            "C19_map_buffer_guard",
        ],
    );
}

#[test]
fn a_wrap_must_be_overflow() {
    caught(Bug::WrapWrongKind, &["C13_iova_wrap_overflows"]);
}

#[test]
fn read_only_mappings_must_stop_device_writes() {
    caught(Bug::ReadOnlyIgnored, &["C15_read_only_mapping_honoured"]);
}

#[test]
fn a_declared_unmap_all_must_work() {
    caught(Bug::UnmapAllMissing, &["C09_unmap_all_idempotent"]);
}

#[test]
fn a_leaked_fd_is_seen() {
    caught(
        Bug::LeakOnOpen,
        &[
            "B01_open_close_no_leak",
            "B03_device_dropped_with_irqs_routed",
            "G01_sweep_open",
        ],
    );
}

/// A device that refuses one request the uAPI allows: every
/// `set_migration_state(PRE_COPY_P2P)`, whatever the state (`EINVAL`, as
/// a driver with a wrong arc table would answer).
#[derive(Debug, Clone)]
struct RefusesPreCopyP2p;

impl Hook for RefusesPreCopyP2p {
    fn around<T>(
        &self,
        op: Op,
        args: Args,
        inner: impl FnOnce() -> Result<T>,
        _value: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T> {
        match (op, args) {
            (Op::SetMigrationState, Args::MigrationState(MigrationState::PreCopyP2p)) => Err(
                Error::sys("set_migration_state", Target::None, libc::EINVAL),
            ),
            _ => inner(),
        }
    }
}

/// The mock's migratable pair behind [`RefusesPreCopyP2p`].
#[derive(Debug)]
struct MigrationBug(MockFixture);

impl Fixture for MigrationBug {
    type Container = Decorated<MockContainer, RefusesPreCopyP2p>;

    fn mode(&self) -> &str {
        "mock-refusing-an-arc"
    }

    fn container(&self) -> Result<Self::Container> {
        Ok(Decorated::with_hook(self.0.container()?, RefusesPreCopyP2p))
    }

    fn edu(&self) -> &str {
        self.0.edu()
    }

    fn migratable_pair(&self) -> Option<(&str, &str)> {
        self.0.migratable_pair()
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}

#[test]
fn every_request_in_every_state_must_be_answered_as_the_uapi_says() {
    let fixture = MigrationBug(MockFixture::new());
    let cases: Vec<_> = cases::all::<MigrationBug>()
        .into_iter()
        .filter(|c| c.id.starts_with('M'))
        .collect();
    let results = run_cases_to(&fixture, &cases, &mut sink()).results;
    for (id, outcome) in &results {
        match *id {
            "M05_migration_answers" => assert!(
                matches!(outcome, Outcome::Failed(_)),
                "{id} did not catch the refused arc: {outcome:?}"
            ),
            _ => assert_eq!(*outcome, Outcome::Passed, "{id} with the refused arc"),
        }
    }
    assert!(results.iter().any(|(id, _)| *id == "M05_migration_answers"));
}
