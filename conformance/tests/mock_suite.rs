//! The whole conformance suite against the mock, through `run_suite`: prints
//! one line per case, the skipped cases with their reasons, and the summary
//! line `conformance: N passed, M failed, K skipped`; exits nonzero on any
//! failure. (`harness = false`: this file's `main` is the test.)

use vfio_hal_conformance::run_suite;
use vfio_hal_mock::conformance::MockFixture;

fn main() {
    let summary = run_suite(&MockFixture::new());
    if !summary.success() {
        std::process::exit(1);
    }
}
