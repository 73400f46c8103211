//! The mock's edu against QEMU's, in the lane's guest (`bash tests/vm/lane.sh
//! -p vfio-hal-facade`): one driver script
//! ([`vfio_hal_conformance::differential`]) runs on a mock edu and on the
//! real edu through each real backend, and the traces are compared step by
//! step. Every difference is printed (step, mock value, real value); the
//! test fails on any that [`DELIBERATE`] does not name, and
//! on a named one that no longer shows. The real device wins: a difference
//! is fixed in the model, or, where a fix would make the mock worse for its
//! users, listed here and in the "Deviations from QEMU" of
//! `backend-mock/src/models/edu.rs`, in the same words (checked on the host
//! too).

use std::io::Write;

use vfio_hal::Container;
use vfio_hal_conformance::differential::{self, Deviation, Difference, Options, Trace};
use vfio_hal_facade::mock::{models::Edu, MockContainer};
use vfio_hal_guest_tests as lane;

/// The mock edu's deliberate deviations from QEMU, each with why, in the
/// words of its "Deviations from QEMU".
const DELIBERATE: &[Deviation] = &[
    Deviation {
        step: "info.region0.flags",
        why: "vfio-pci would mmap BAR0; here it is handler-backed and not `MMAP`.",
    },
    Deviation {
        step: "info.can_reset",
        why: RESET,
    },
    Deviation {
        step: "reset.result",
        why: RESET,
    },
];

const RESET: &str = "The mock offers `VFIO_DEVICE_RESET` for every device, so a driver's \
    reset path can be tested; vfio-pci has no reset method for an edu on the root bus (no \
    FLR, no power-management reset, no bridge above it for a bus reset), so there \
    `can_reset` is false and a reset is refused with `EINVAL`.";

/// Every difference the comparison allows.
fn allowed() -> Vec<Deviation> {
    DELIBERATE.to_vec()
}

/// The edu model's source, whose module docs list its deviations.
const EDU_MODEL: &str = include_str!("../../backend-mock/src/models/edu.rs");

fn mock_trace() -> Trace {
    let container = MockContainer::new();
    container.plug("edu", Edu::new()).expect("plug edu");
    let clock = container.clock();
    let hold = move |on: bool| clock.set_manual(on);
    differential::run(&container, "edu", &Options::mock(&hold)).expect("the script on the mock")
}

fn real_trace<C: Container>(backend: &str, container: vfio_hal::Result<C>) -> Trace {
    let container = container.unwrap_or_else(|e| panic!("{backend}: open a container: {e}"));
    differential::run(&container, &lane::lane_env(lane::EDU_BDF), &Options::real())
        .unwrap_or_else(|e| panic!("{backend}: the script on the real edu: {e}"))
}

/// The docs' text with line breaks, `//!` markers and repeated blanks
/// folded into single spaces, as a deviation's `why` is written.
fn folded(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_start().trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_allowed_deviation_is_in_the_edu_models_docs() {
    let docs = folded(EDU_MODEL);
    for d in &allowed() {
        assert!(
            docs.contains(&folded(d.why)),
            "deviation {} is not in the edu model's docs: {}",
            d.step,
            d.why
        );
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_mock_edu_traces_like_qemus_through_both_real_backends() {
    let mock = mock_trace();
    let real = [
        (
            "legacy",
            real_trace("legacy", vfio_hal_facade::legacy::LegacyContainer::open()),
        ),
        (
            "iommufd",
            real_trace("iommufd", vfio_hal_facade::iommufd::IoasContainer::open()),
        ),
    ];
    let mut report = String::new();
    let mut unexpected = 0;
    let allowed = allowed();
    let mut used = vec![false; allowed.len()];
    for (backend, trace) in &real {
        let diffs: Vec<Difference> = mock.diff(trace);
        report += &format!(
            "{backend}: {} steps (mock {}), {} differences\n",
            trace.len(),
            mock.len(),
            diffs.len()
        );
        for d in &diffs {
            match d.allowed_by(&allowed) {
                Some(dev) => {
                    if let Some(i) = allowed.iter().position(|x| x == dev) {
                        used[i] = true;
                    }
                    report += &format!("  allowed  {d} (mock | {backend})\n");
                }
                None => {
                    unexpected += 1;
                    report += &format!("  DIFFERS  {d} (mock | {backend})\n");
                }
            }
        }
    }
    let stale: Vec<&str> = allowed
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(d, _)| d.step)
        .collect();
    // Past the harness's output capture, so the lane's log shows the
    // comparison of a passing run too.
    let _ = writeln!(std::io::stdout().lock(), "{report}");
    assert!(
        unexpected == 0 && stale.is_empty(),
        "{unexpected} differences not allowed; allowed but not seen: {stale:?}\n{report}"
    );
}
