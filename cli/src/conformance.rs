//! `vfio-hal conformance DEV`: the conformance suite against a device an
//! operator names, or against the mock.
//!
//! On the mock the whole suite runs (its fixture plugs edu and the MSI-X
//! copy engine into every container). On a real device — which must be
//! QEMU's edu, since the cases write edu's registers — only the
//! non-destructive cases run unless `--all` or `--cases` says otherwise;
//! the selection and the real-device fixture are the library's
//! (`vfio_hal_facade::conformance`).

use std::io::Write;

use clap::Args;
use serde_json::json;
use vfio_hal::prelude::*;
use vfio_hal_conformance::runner::run_cases_to;
use vfio_hal_conformance::{Fixture, Outcome};
use vfio_hal_facade::conformance::{select, Plan, RealFixture, Selection};
use vfio_hal_facade::mock::conformance::MockFixture;
use vfio_hal_facade::Backend;

use crate::output::{say, Latched};
use crate::table::Table;
use crate::{CliError, Ctx};

/// Arguments of `conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// QEMU's edu as a PCI address, or the mock's `edu`; the mock edu when
    /// omitted and nothing is bound to vfio-pci.
    dev: Option<String>,
    /// A device with MSI-X for the MSI-X cases (real backends; the mock
    /// uses its copy engine).
    #[arg(long, value_name = "DEV")]
    msix: Option<String>,
    /// Run every case, destructive ones included (the default on the mock).
    #[arg(long, conflicts_with = "cases")]
    all: bool,
    /// Run only the cases whose ids start with one of these prefixes,
    /// comma-separated: `--cases A,C01,E`.
    #[arg(long, value_delimiter = ',', value_name = "PREFIXES")]
    cases: Vec<String>,
    /// List the cases and whether they would run, then stop.
    #[arg(long)]
    list_cases: bool,
}

/// Runs the selected cases of `fixture` and reports them.
fn run_fixture<F: Fixture>(
    ctx: &Ctx,
    fixture: &F,
    device: &str,
    backend: Backend,
    selection: &Selection,
    list_only: bool,
) -> Result<(), CliError> {
    let Plan {
        run: cases,
        left_out,
    } = select(vfio_hal_conformance::cases::all::<F>(), selection)
        .map_err(|e| CliError::Usage(format!("--cases: {e} (--list-cases shows them)")))?;
    if list_only {
        let mut all: Vec<(&str, String)> =
            cases.iter().map(|c| (c.id, "runs".to_owned())).collect();
        all.extend(
            left_out
                .iter()
                .map(|(id, why)| (*id, format!("left out: {why}"))),
        );
        all.sort();
        if ctx.json {
            return ctx.print_json(&json!({
                "mode": fixture.mode(),
                "selection": selection.name(),
                "cases": all.iter().map(|(id, s)| json!({"case": id, "status": s})).collect::<Vec<_>>(),
            }));
        }
        let mut t = Table::new(&["CASE", "STATUS"]);
        for (id, status) in all {
            t.row(vec![id.to_owned(), status]);
        }
        return say!("{}", t.render());
    }
    // The suite runs to the end even when stdout fails (each case undoes
    // what it did to the device); the failure is told after it.
    let (summary, printed) = if ctx.json {
        (run_cases_to(fixture, &cases, &mut std::io::sink()), Ok(()))
    } else {
        let mut out = Latched::new(std::io::stdout().lock());
        let _ = writeln!(
            out,
            "{device} ({backend} backend, mode {}): {} of {} cases selected ({})",
            fixture.mode(),
            cases.len(),
            cases.len() + left_out.len(),
            selection.name()
        );
        if !left_out.is_empty() {
            let _ = writeln!(out, "left out (--all runs everything, --cases picks):");
            for (id, why) in &left_out {
                let _ = writeln!(out, "  {id}: {why}");
            }
        }
        let summary = run_cases_to(fixture, &cases, &mut out);
        (summary, out.finish())
    };
    if ctx.json {
        ctx.print_json(&json!({
            "device": device,
            "backend": backend.name(),
            "mode": summary.mode,
            "selection": selection.name(),
            "left_out": left_out.iter().map(|(id, why)| json!({"case": id, "why": why})).collect::<Vec<_>>(),
            "results": summary.results.iter().map(|(id, o)| match o {
                Outcome::Passed => json!({"case": id, "outcome": "passed"}),
                Outcome::Failed(m) => json!({"case": id, "outcome": "failed", "message": m}),
                Outcome::NotApplicable(m) => json!({"case": id, "outcome": "skipped", "message": m}),
            }).collect::<Vec<_>>(),
            "passed": summary.passed(),
            "failed": summary.failed(),
            "skipped": summary.skipped(),
        }))?;
    }
    // A failed case is the news; a failed stdout otherwise.
    if summary.success() {
        printed
    } else {
        Err(CliError::Failed(format!(
            "{} of {} conformance case(s) failed",
            summary.failed(),
            summary.results.len()
        )))
    }
}

/// Runs `conformance`.
pub fn run(ctx: &Ctx, args: &ConformanceArgs) -> Result<(), CliError> {
    let opened = ctx.open(args.dev.as_deref())?;
    let (name, backend) = (opened.name.clone(), opened.backend);
    let explicit = if args.all {
        Some(Selection::All)
    } else if !args.cases.is_empty() {
        Some(Selection::Prefixes(args.cases.clone()))
    } else {
        None
    };
    if backend == Backend::Mock {
        if name != MockFixture::EDU {
            return Err(CliError::Usage(format!(
                "the suite drives edu: on the mock run it on `{}` (the copy engine is its MSI-X device already)",
                MockFixture::EDU
            )));
        }
        if args.msix.is_some() {
            return Err(CliError::Usage(
                "--msix names a real device; the mock's fixture uses its copy engine".to_owned(),
            ));
        }
        drop(opened);
        let selection = explicit.unwrap_or(Selection::All);
        return run_fixture(
            ctx,
            &MockFixture::new(),
            &name,
            backend,
            &selection,
            args.list_cases,
        );
    }
    let ids = (
        opened
            .device
            .vendor_id()
            .map_err(CliError::hal("read the vendor id"))?,
        opened
            .device
            .device_id()
            .map_err(CliError::hal("read the device id"))?,
    );
    let edu_ids = (
        vfio_hal_conformance::edu::VENDOR_ID,
        vfio_hal_conformance::edu::DEVICE_ID,
    );
    if ids != edu_ids {
        return Err(CliError::Failed(format!(
            "{name} is {:04x}:{:04x}, not QEMU's edu ({:04x}:{:04x}): the suite writes edu's registers and would misdrive another device",
            ids.0, ids.1, edu_ids.0, edu_ids.1
        )));
    }
    drop(opened);
    let msix = match &args.msix {
        Some(m) => Some(
            vfio_hal_facade::host::check_device(&ctx.host, m)
                .map_err(vfio_hal_facade::OpenError::from)?
                .name,
        ),
        None => None,
    };
    let fixture = RealFixture::probe(ctx.host.clone(), backend, name.clone(), msix)
        .map_err(CliError::hal("set up the conformance fixture"))?;
    let selection = explicit.unwrap_or(Selection::NonDestructive);
    run_fixture(ctx, &fixture, &name, backend, &selection, args.list_cases)
}
