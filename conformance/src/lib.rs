//! # vfio-hal-conformance
//!
//! One conformance suite, written once against the `vfio-hal` traits, that
//! every backend must pass: the mock here, the legacy (type1) and iommufd
//! backends in the real-kernel lane. It is object_store's public
//! `integration` module and vm-memory's generic harnesses, finished: cases
//! are plain functions generic over a [`Fixture`], and the fixture is the only
//! thing that differs between backends.
//!
//! - [`Fixture`] supplies fresh containers, the device names (QEMU's `edu`,
//!   optionally an MSI-X device, a copy engine and an igb NIC) and the declared
//!   [`Capabilities`] where backends legitimately differ. A declared gap is
//!   checked — refused with the right kind — never skipped.
//! - [`cases`] holds the cases, one module per group: A hygiene, B
//!   lifecycle, C DMA map/unmap, D device, E interrupts, F device DMA, G
//!   robustness (fault sweeps), H the DMA engines' contract, run on every
//!   engine ([`dma_engine::DmaEngine`]: edu, the copy engine and igb). Each ends
//!   as passed, failed (what was expected, what came back, with the error's
//!   kind and errno) or not applicable (why it cannot apply at all).
//! - [`conformance_tests!`] stamps out one `#[test]` per case for a fixture,
//!   like the kernel selftests' `FIXTURE_VARIANT_ADD_ALL_IOMMU_MODES`;
//!   [`run_suite`] runs them all in order and prints a summary ending in
//!   `conformance: N passed, M failed, K skipped`.
//! - [`edu::EduDriver`], [`msix::MsixDriver`],
//!   [`copy_engine::CopyEngineDriver`] and [`igb::IgbDriver`] are the
//!   drivers the cases use, written once against the hal traits: the same
//!   code drives the mock's models and the real devices. The DMA engines among them implement one
//!   driver interface, [`dma_engine::DmaEngine`] (the kernel VFIO
//!   selftests' `memcpy_start`, `memcpy_wait`, `send_msi`); a new engine is
//!   one file and one line in the case registry.
//! - [`differential`] is one driver script for edu whose trace, recorded
//!   on the mock's model and on the real device, is compared step by step.
//!
//! The drivers are independent readers of their devices, as a driver is of
//! real hardware: each keeps its own register map ([`edu::reg`],
//! [`copy_engine::reg`], [`igb::reg`]) and imports nothing from the mock's
//! models, so a bug in a model cannot hide from the suite behind a shared
//! constant. The
//! edu map's names and widths follow QEMU's `hw/misc/edu.c`, as the mock
//! model's do, and the test `register_maps` checks that the driver's and
//! the model's maps agree name for name and value for value.
//!
//! ```
//! use vfio_hal_conformance::run_suite;
//! use vfio_hal_mock::conformance::MockFixture;
//!
//! let summary = run_suite(&MockFixture::new());
//! assert!(summary.success(), "{summary}");
//! ```
//!
//! A backend crate runs the suite for each of its modes with one line each
//! (`conformance_tests!(type1v2, LegacyFixture::type1v2())`, …), as the
//! mock does:
//!
//! ```no_run
//! vfio_hal_conformance::conformance_tests!(mock, vfio_hal_mock::conformance::MockFixture::new());
//! # fn main() {}
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod cases;
pub mod copy_engine;
pub mod differential;
pub mod dma_engine;
pub mod edu;
pub mod fail_nth;
pub mod fixture;
pub mod igb;
pub mod msix;
pub mod outcome;
pub mod probe;
pub mod runner;
pub mod scratch;

pub use fail_nth::KernelFailNth;
pub use fixture::{Capabilities, Fixture, SplitUnmap, StepFaults, Unplug};
pub use outcome::{CaseError, CaseResult, Outcome};
pub use runner::{run_suite, Case, Effects, Summary};

/// Stamps out one `#[test]` per case of the suite for a fixture, in a module
/// named `$mode`.
///
/// A case that cannot apply to the fixture passes, printing
/// `N/A: <case> [<mode>]: <reason>` to stderr; a failed case panics with
/// what was expected and what came back. Cases hold a process-wide lock
/// ([`runner::serial`]), so the fd-counting ones never race.
///
/// ```no_run
/// use vfio_hal_mock::conformance::MockFixture;
///
/// vfio_hal_conformance::conformance_tests!(mock, MockFixture::new());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($mode:ident, $fixture:expr) => {
        mod $mode {
            #[allow(unused_imports)]
            use super::*;
            $crate::__for_each_case!(tests $fixture);
        }
    };
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
