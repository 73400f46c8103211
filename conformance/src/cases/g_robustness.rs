//! G. Robustness: fail the 1st, 2nd, 3rd… step of every multi-step
//! operation until none is hit; after each failure nothing is left behind.
//!
//! Two layers. [`FaultInjector`] (from `vfio-hal-mock`, usable over every
//! backend) fails whole hal calls, before they reach the backend: that
//! sweeps the callers — the edu and MSI-X drivers, the `DmaMapping` guard —
//! and the backend's handling of objects dropped half-way (a device whose
//! irq setup failed, a container whose second map failed). Faults *inside*
//! a backend call (the kernel's `fail-nth`) need the fixture's
//! [`StepFaults`](crate::fixture::StepFaults) hook, swept by [`sweep_inside`].
//!
//! After every failed step the sweep checks: the failure surfaced as the
//! injected error (not swallowed, not replaced); the process holds the same
//! fds and device mmaps as before; the IOVA window holds no mapping; and the
//! same operation then succeeds on the same container (everything rolled back).

use vfio_hal::decorate::inject::{FaultInjector, InjectedFault, OpFilter, Plan};
use vfio_hal::decorate::Op;
use vfio_hal::irq::index as irq_index;
use vfio_hal::pci::region as pci_region;
use vfio_hal::{Container, Device, DmaAccess, DmaBuffer, Error, ErrorKind, Irq, RegionExt};

use super::{dma_page, edu_device, edu_device_for_msi, filled, fresh, iova};
use crate::edu::{reg, DriverError, EduDriver};
use crate::ensure;
use crate::fixture::{Fixture, IOVA_WINDOW};
use crate::msix::MsixDriver;
use crate::outcome::{
    expect_eq, expect_kind, fail, not_applicable, CaseError, CaseResult, Context, Describe,
};
use crate::probe::Snapshot;
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// Calls that undo something. A failed teardown is not rolled back — it is
/// reported, and a `DmaMapping` keeps its buffer rather than free memory a
/// device may still reach — so sweeps spare them and
/// [`failed_unmap_keeps_mapping`] checks that behaviour on its own.
const TEARDOWN: [Op; 3] = [Op::UnmapDma, Op::UnmapAll, Op::Disable];

/// Every setup call.
fn setup_ops() -> OpFilter {
    TEARDOWN
        .iter()
        .fold(OpFilter::ALL, |ops, &op| ops.without(op))
}

/// Setup calls except register reads: completion polling reads a register
/// as often as the device takes, so their number is not deterministic on
/// real hardware. Reads are swept by the routines that do not poll.
fn setup_ops_no_polling() -> OpFilter {
    setup_ops().without(Op::RegionRead)
}

/// Opens and drops the fixture's devices through `c`, so that whatever a
/// backend creates lazily on a first open is counted in the baseline.
fn warm<F: Fixture>(f: &F, c: &F::Container) -> CaseResult {
    drop(edu_device(f, c)?);
    if let Some(name) = f.msix_device() {
        drop(
            c.open_device(name)
                .context(format_args!("open_device({name})"))?,
        );
    }
    Ok(())
}

/// Fails unless the fixture's IOVA window is empty (and the fixture's own
/// count, where it has one, is 0).
fn expect_nothing_mapped<F: Fixture>(f: &F, c: &F::Container, after: &str) -> CaseResult {
    if let Some(n) = f.live_mappings(c) {
        expect_eq(format!("live mappings after {after}"), 0, n)?;
    }
    let base = f.capabilities().iova_base;
    match c.unmap_dma(base, IOVA_WINDOW) {
        Err(e) if e.kind() == ErrorKind::NotMapped => Ok(()),
        Ok(n) => Err(fail(format!("{n:#x} bytes were left mapped after {after}"))),
        Err(e) => Err(fail(format!(
            "checking for leftover mappings after {after}: {}",
            e.describe()
        ))),
    }
}

fn is_injected(e: &DriverError) -> bool {
    matches!(e, DriverError::Hal(e) if InjectedFault::of(e).is_some())
}

/// Sweeps `routine` over a fault-injecting wrapper of a fresh container per
/// step, failing each call in `ops` in turn.
fn sweep_container<F: Fixture>(
    f: &F,
    what: &str,
    ops: OpFilter,
    mut routine: impl FnMut(&FaultInjector<F::Container>) -> Result<(), DriverError>,
) -> CaseResult {
    let armed = |plan: Plan| -> Result<(FaultInjector<F::Container>, Snapshot), CaseError> {
        let c = fresh(f)?;
        warm(f, &c)?;
        let before = Snapshot::take()?;
        Ok((FaultInjector::with_plan(c, plan), before))
    };
    let (clean, before) = armed(Plan::count_only().only(ops))?;
    routine(&clean).context(format_args!("{what}, with nothing injected"))?;
    let steps = clean.selected_calls();
    before.expect_unchanged(&format!("{what}, with nothing injected"))?;
    expect_nothing_mapped(f, clean.inner(), &format!("{what}, with nothing injected"))?;
    drop(clean);
    ensure!(steps > 0, "{what} made no hal call the sweep could fail");
    for step in 1..=steps {
        let plan = Plan::fail_nth(step).only(ops).with_kind(ErrorKind::Io);
        let (inj, before) = armed(plan)?;
        let result = routine(&inj);
        let Some(fault) = inj.last_injection() else {
            return Err(fail(format!(
                "step {step}/{steps}: the fault never fired: {what} made fewer calls than \
                 in the clean run"
            )));
        };
        let at = format!("{what} with step {step}/{steps} ({fault}) failing");
        match result {
            Ok(()) => {
                return Err(fail(format!(
                    "{at}: the failure was swallowed, it reported success"
                )))
            }
            Err(e) if is_injected(&e) => {}
            Err(e) => {
                return Err(fail(format!(
                    "{at}: expected the injected error, got {}",
                    e.describe()
                )))
            }
        }
        before.expect_unchanged(&at)?;
        expect_nothing_mapped(f, inj.inner(), &at)?;
        inj.disarm();
        routine(&inj).context(format_args!("{what} again, after {at}"))?;
        before.expect_unchanged(&format!("{what} again, after {at}"))?;
        expect_nothing_mapped(f, inj.inner(), &format!("{what} again, after {at}"))?;
    }
    Ok(())
}

fn open_edu<C: Container>(c: &C, name: &str) -> Result<EduDriver<C::Device>, DriverError> {
    EduDriver::open(c.open_device(name)?)
}

/// Opening edu behind its driver (open, identity, BAR, MSI index, bus
/// mastering, liveness): every step fails cleanly.
pub fn sweep_open<F: Fixture>(f: &F) -> CaseResult {
    sweep_container(f, "opening edu", setup_ops(), |c| {
        let e = open_edu(c, f.edu())?;
        e.check_liveness(0x600d_f00d)
    })
}

/// Mapping three buffers (one read-only) and unmapping them: a failure at
/// any map leaves none of the earlier ones behind.
pub fn sweep_map_buffers<F: Fixture>(f: &F) -> CaseResult {
    let dp = dma_page(&fresh(f)?)?;
    let len = usize::try_from(dp).map_err(|_| fail("DMA page size"))?;
    sweep_container(f, "mapping three buffers", setup_ops(), |c| {
        let a = c.map_buffer(iova(f, dp, 0), DmaBuffer::new(len)?, DmaAccess::ReadOnly)?;
        let b = c.map_buffer(
            iova(f, dp, 1),
            DmaBuffer::new(2 * len)?,
            DmaAccess::ReadWrite,
        )?;
        let d = c.map_buffer(iova(f, dp, 4), DmaBuffer::new(len)?, DmaAccess::WriteOnly)?;
        d.unmap()?;
        b.unmap()?;
        a.unmap()?;
        Ok(())
    })
}

/// Routes MSI to `fd` and proves it with one raise; on a failure after the
/// route is in place, tears it down again.
fn route_msi<D: Device>(dev: &D, fd: &EventFd) -> Result<(), DriverError> {
    let bar = dev.region(pci_region::BAR0)?;
    bar.write_at(reg::IRQ_ACK, u32::MAX)?;
    let msi = dev.irq(irq_index::MSI)?;
    msi.set_eventfd(0, Some(fd.as_fd()))?;
    let proved = bar
        .write_at(reg::IRQ_RAISE, 1u32)
        .and_then(|()| bar.write_at(reg::IRQ_ACK, 1u32));
    if let Err(e) = proved {
        if let Err(undo) = msi.disable() {
            log::warn!("route_msi: undoing the route failed: {undo}");
        }
        return Err(e.into());
    }
    Ok(())
}

/// Routing MSI on an open device: after each failed step no route is left
/// (a raise signals nothing), and routing again gives exactly one signal.
pub fn sweep_route_msi<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    warm(f, &c)?;
    let timeout = f.capabilities().timeout;
    let quiet = f.capabilities().quiet;
    let mut steps = None;
    let mut step = 0;
    while steps.is_none_or(|n| step <= n) {
        let plan = match step {
            0 => Plan::count_only().only(setup_ops()),
            n => Plan::fail_nth(n).only(setup_ops()),
        };
        let fd = EventFd::nonblocking()?;
        let dev = FaultInjector::with_plan(edu_device_for_msi(f, &c)?, plan);
        let result = route_msi(&dev, &fd);
        let at = format!("routing MSI with step {step} failing");
        match (step, result, dev.last_injection()) {
            (0, r, _) => {
                r.context("routing MSI with nothing injected")?;
                steps = Some(dev.selected_calls());
                expect_eq("signals for the proving raise", 1, fd.wait(timeout)?)?;
            }
            (_, _, None) => {
                return Err(fail(format!("{at}: the fault never fired")));
            }
            (_, Ok(()), Some(fault)) => {
                return Err(fail(format!(
                    "{at}: {fault} failed but routing reported success"
                )));
            }
            (_, Err(e), Some(fault)) => {
                ensure!(
                    is_injected(&e),
                    "{at} ({fault}): expected the injected error, got {}",
                    e.describe()
                );
                let raw = dev.into_inner();
                let bar = raw.region(pci_region::BAR0).context("region(BAR0)")?;
                bar.write_at(reg::IRQ_ACK, u32::MAX)?;
                bar.write_at(reg::IRQ_RAISE, 1u32)?;
                // A failure after the proving raise may have left its one signal.
                let stale = fd.take()?;
                let after = fd.wait(quiet)?;
                ensure!(
                    stale <= 1 && after == 0,
                    "{at} ({fault}): a route was left behind: the eventfd heard {stale} + {after} signal(s) for one raise after the failure"
                );
                bar.write_at(reg::IRQ_ACK, 1u32)?;
                let again = EventFd::nonblocking()?;
                route_msi(&raw, &again).context(format_args!("routing again after {at}"))?;
                expect_eq(
                    format!("signals on a new route after {at}"),
                    1,
                    again.wait(timeout)?,
                )?;
                raw.irq(irq_index::MSI)?.disable()?;
            }
        }
        step += 1;
    }
    Ok(())
}

/// Resetting edu and restoring its setup (bus mastering, MSI route), then
/// computing a factorial with its interrupt.
pub fn sweep_reset<F: Fixture>(f: &F) -> CaseResult {
    let timeout = f.capabilities().timeout;
    sweep_container(f, "reset and restore", setup_ops_no_polling(), |c| {
        let mut e = open_edu(c, f.edu())?.with_timeout(timeout);
        e.enable_msi()?;
        if e.device().info().can_reset() {
            e.reset()?;
        }
        let got = e.factorial(7)?;
        if got != crate::edu::expected_factorial(7) {
            return Err(DriverError::Unexpected {
                what: "factorial(7) after reset",
                expected: u64::from(crate::edu::expected_factorial(7)),
                got: u64::from(got),
            });
        }
        Ok(())
    })
}

/// The whole edu DMA round trip: open, MSI, map, two DMAs with interrupts,
/// data check, unmap.
pub fn sweep_round_trip<F: Fixture>(f: &F) -> CaseResult {
    let timeout = f.capabilities().timeout;
    sweep_container(f, "an edu DMA round trip", setup_ops_no_polling(), |c| {
        let mut e = open_edu(c, f.edu())?.with_timeout(timeout);
        e.enable_msi()?;
        e.round_trip(c, f.capabilities().iova_base, 4096)
    })
}

/// Opening the MSI-X device, routing its vectors and firing one.
pub fn sweep_msix_route<F: Fixture>(f: &F) -> CaseResult {
    let Some(name) = f.msix_device() else {
        return Err(not_applicable("the fixture has no MSI-X device"));
    };
    let timeout = f.capabilities().timeout;
    sweep_container(f, "routing MSI-X", setup_ops(), |c| {
        let mut drv = MsixDriver::open(c.open_device(name)?)?;
        drv.route()?;
        drv.trigger(0)?;
        let fired = drv
            .eventfd(0)
            .map(|fd| fd.wait(timeout))
            .transpose()
            .map_err(|source| DriverError::Os {
                what: "wait for vector 0",
                source,
            })?;
        match fired {
            Some(1) => Ok(()),
            other => Err(DriverError::Unexpected {
                what: "signals on MSI-X vector 0 after its trigger",
                expected: 1,
                got: other.unwrap_or(0),
            }),
        }
    })
}

/// A failed unmap is reported, and the mapping stays (the guard keeps the
/// buffer alive rather than free memory the device may still reach); the
/// container can still remove it.
pub fn failed_unmap_keeps_mapping<F: Fixture>(f: &F) -> CaseResult {
    let inj = FaultInjector::with_plan(fresh(f)?, Plan::fail_every(Op::UnmapDma));
    let dp = dma_page(inj.inner())?;
    let at = iova(f, dp, 0);
    let guard = inj
        .map_buffer(at, filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map_buffer")?;
    expect_kind(
        "DmaMapping::unmap with unmaps failing",
        guard.unmap().map(|b| b.len()).map_err(Error::from),
        &[ErrorKind::Io],
    )?;
    if let Some(n) = f.live_mappings(inj.inner()) {
        expect_eq("live mappings after the failed unmap", 1, n)?;
    }
    expect_eq(
        "bytes the container still had mapped after the failed unmap",
        dp,
        inj.inner()
            .unmap_dma(at, dp)
            .context("unmap through the backend")?,
    )?;
    let guard = inj
        .map_buffer(at, filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map_buffer again")?;
    drop(guard);
    expect_eq(
        "bytes the container still had mapped after a guard's failed unmap on drop",
        dp,
        inj.inner()
            .unmap_dma(at, dp)
            .context("unmap through the backend")?,
    )?;
    Ok(())
}

/// Faults inside backend calls (the fixture's [`StepFaults`](crate::fixture::StepFaults), e.g. the
/// kernel's `fail-nth`): opening edu, routing MSI and mapping a buffer,
/// failing the 1st, 2nd, 3rd… internal step until none is hit; after each,
/// nothing leaked and the operation works again.
pub fn sweep_inside<F: Fixture>(f: &F) -> CaseResult {
    let Some(faults) = f.step_faults() else {
        return Err(not_applicable(
            "the fixture has no injection points below the hal calls (FaultInjector sweeps G01-G06 cover the calls themselves)",
        ));
    };
    let c = fresh(f)?;
    warm(f, &c)?;
    let dp = dma_page(&c)?;
    let len = usize::try_from(dp).map_err(|_| fail("DMA page size"))?;
    let routine = |c: &F::Container| -> Result<(), DriverError> {
        let mut e = open_edu(c, f.edu())?;
        e.enable_msi()?;
        let m = c.map_buffer(iova(f, dp, 0), DmaBuffer::new(len)?, DmaAccess::ReadWrite)?;
        m.unmap()?;
        Ok(())
    };
    const MAX_STEPS: u64 = 10_000;
    for step in 1..=MAX_STEPS {
        let before = Snapshot::take()?;
        faults.arm(step).context("arm the step fault")?;
        let result = routine(&c);
        let fired = faults.disarm().context("disarm the step fault")?;
        let at = format!("open/route/map with internal step {step} failing");
        before.expect_unchanged(&at)?;
        expect_nothing_mapped(f, &c, &at)?;
        if !fired {
            return result.context("open/route/map once no internal step failed");
        }
        if result.is_ok() {
            log::debug!("{at}: the backend recovered from the fault by itself");
        }
        routine(&c).context(format_args!("open/route/map again after {at}"))?;
        before.expect_unchanged(&format!("the retry after {at}"))?;
    }
    Err(fail(format!(
        "the internal fault still fired after {MAX_STEPS} steps"
    )))
}
