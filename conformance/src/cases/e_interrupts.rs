//! E. Interrupts: MSI through edu's raise register, INTx masking and
//! resampling, loopback triggers, MSI-X per vector, invalid requests.
//!
//! Interrupts arrive on eventfds, asynchronously on real hardware: positive
//! checks wait up to the fixture's timeout for the expected count, negative
//! ones watch for the fixture's quiet window.

use std::os::fd::AsFd;
use vfio_hal::irq::{flags as irq_flags, index as irq_index};
use vfio_hal::pci::region as pci_region;
use vfio_hal::{Container, Device, ErrorKind, Irq, IrqAction, IrqData, IrqSet, Region, RegionExt};

use super::{count_signals, edu, edu_device, edu_device_for_msi, fresh, quiet, Dev};
use crate::edu::reg;
use crate::ensure;
use crate::fixture::Fixture;
use crate::msix::{self, MsixDriver};
use crate::outcome::{
    expect_eq, expect_kind, fail, not_applicable, CaseError, CaseResult, Context,
};
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// Refusals of a malformed or impossible `SET_IRQS`: the kernel answers
/// `EINVAL` for most, `ENOTTY` (NotSupported) for mask/unmask on MSI, and
/// the HAL's own `IrqSet::validate` answers `OutOfRange` for vectors past
/// the end. Each is a typed refusal; which one depends on who checks first.
const REFUSED: &[ErrorKind] = &[
    ErrorKind::InvalidArgument,
    ErrorKind::NotSupported,
    ErrorKind::OutOfRange,
];

/// The irq indices edu reports: INTx (one maskable, automasked line where
/// present), one MSI vector (eventfd-capable), no MSI-X, and REQ (one
/// eventfd, not resizable).
pub fn irq_info_sane<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let intx = dev.irq(irq_index::INTX).context("irq(INTx)")?.info();
    if intx.count > 0 {
        expect_eq("INTx count", 1, intx.count)?;
        ensure!(
            intx.flags & irq_flags::EVENTFD != 0 && intx.maskable() && intx.automasked(),
            "INTx flags {:#x} lack EVENTFD, MASKABLE or AUTOMASKED",
            intx.flags
        );
    }
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?.info();
    expect_eq("MSI count", 1, msi.count)?;
    ensure!(
        msi.flags & irq_flags::EVENTFD != 0,
        "MSI flags {:#x} lack EVENTFD",
        msi.flags
    );
    ensure!(
        !msi.maskable(),
        "MSI flags {:#x} claim MASKABLE; vfio-pci cannot mask MSI",
        msi.flags
    );
    let msix = dev.irq(irq_index::MSIX).context("irq(MSI-X)")?.info();
    expect_eq("MSI-X count of edu", 0, msix.count)?;
    let req = dev.irq(irq_index::REQ).context("irq(REQ)")?.info();
    expect_eq("REQ count", 1, req.count)?;
    // vfio-pci: every index but INTx (and MSI-X with dynamic allocation)
    // is NORESIZE.
    expect_eq(
        "REQ flags",
        irq_flags::EVENTFD | irq_flags::NORESIZE,
        req.flags,
    )
}

/// Each write to edu's raise register fires the MSI eventfd exactly once.
///
/// One raise at a time: MSIs sent back to back may legitimately coalesce in
/// the interrupt controller before the kernel sees them.
pub fn msi_once_per_raise<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut e = edu(f, &c)?;
    e.enable_msi().context("route MSI")?;
    let fd = e
        .msi_eventfd()
        .ok_or_else(|| fail("no eventfd after enable_msi"))?;
    for (i, bits) in [1u32, 2, 0x8000_0000].into_iter().enumerate() {
        e.raise(bits)?;
        expect_eq(
            format!("MSI signals for raise #{} (status bits {bits:#x})", i + 1),
            1,
            count_signals(f, fd, 1)?,
        )?;
        let status = e.interrupt_status()?;
        ensure!(
            status & bits == bits,
            "interrupt status {status:#x} after raising {bits:#x} lacks those bits"
        );
        e.acknowledge(bits)?;
    }
    expect_eq(
        "interrupt status after acknowledging",
        0,
        e.interrupt_status()?,
    )
}

/// Routing `None` to a vector de-assigns it: the old eventfd hears nothing
/// more, and a new one can be routed.
pub fn msi_deassign_with_none<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device_for_msi(f, &c)?;
    let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let old = EventFd::nonblocking()?;
    msi.set_eventfd(0, Some(old.as_fd())).context("route MSI")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals before de-assigning", 1, count_signals(f, &old, 1)?)?;
    msi.set_eventfd(0, None).context("de-assign vector 0")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals after de-assigning", 0, old.wait(quiet(f))?)?;
    let new = EventFd::nonblocking()?;
    msi.set_eventfd(0, Some(new.as_fd()))
        .context("route vector 0 again")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals on the new eventfd", 1, count_signals(f, &new, 1)?)?;
    expect_eq("signals on the old eventfd", 0, old.take()?)?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    msi.disable().context("disable MSI")?;
    Ok(())
}

/// Disabling the index stops signalling; routing again works.
pub fn msi_disable<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device_for_msi(f, &c)?;
    let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let fd = EventFd::nonblocking()?;
    msi.set_eventfd(0, Some(fd.as_fd())).context("route MSI")?;
    msi.disable().context("disable MSI")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals after disable", 0, fd.wait(quiet(f))?)?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    msi.set_eventfd(0, Some(fd.as_fd()))
        .context("route MSI again")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals after routing again", 1, count_signals(f, &fd, 1)?)?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    msi.disable().context("disable MSI")?;
    Ok(())
}

/// The loopback trigger fires a routed MSI vector from software, with no
/// data (always) and with bool data (only where true).
pub fn msi_loopback_trigger<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let fd = EventFd::nonblocking()?;
    msi.set_eventfd(0, Some(fd.as_fd())).context("route MSI")?;
    msi.trigger(0, 1).context("loopback trigger")?;
    expect_eq(
        "signals after a loopback trigger",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    let fire = |v: bool| {
        let data = [v];
        msi.set_irqs(&IrqSet {
            index: irq_index::MSI,
            start: 0,
            count: 1,
            action: IrqAction::Trigger,
            data: IrqData::Bool(&data),
        })
    };
    fire(true).context("loopback trigger with bool true")?;
    expect_eq(
        "signals after a bool-true trigger",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    fire(false).context("loopback trigger with bool false")?;
    expect_eq("signals after a bool-false trigger", 0, fd.wait(quiet(f))?)?;
    msi.disable().context("disable MSI")?;
    Ok(())
}

/// The INTx line of edu, routed to an eventfd, or not applicable without one.
fn intx_setup<F: Fixture>(f: &F, c: &F::Container) -> Result<(Dev<F>, EventFd), CaseError> {
    let dev = edu_device(f, c)?;
    let intx = dev.irq(irq_index::INTX).context("irq(INTx)")?;
    if intx.info().count == 0 {
        return Err(not_applicable("edu reports no INTx line in this fixture"));
    }
    let fd = EventFd::nonblocking()?;
    intx.set_eventfd(0, Some(fd.as_fd()))
        .context("route INTx")?;
    dev.region(pci_region::BAR0)
        .context("region(BAR0)")?
        .write_at(reg::IRQ_ACK, u32::MAX)
        .context("acknowledge everything")?;
    Ok((dev, fd))
}

/// INTx with vfio-pci's semantics: the line masks itself when it fires,
/// stays quiet while masked, unmask re-arms it, an explicit mask holds
/// interrupts back and unmasking with the line still asserted signals again.
pub fn intx_mask_unmask<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (dev, fd) = intx_setup(f, &c)?;
    let intx = dev.irq(irq_index::INTX).context("irq(INTx)")?;
    let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
    let raise = |bits: u32| bar.write_at(reg::IRQ_RAISE, bits);
    let ack = |bits: u32| bar.write_at(reg::IRQ_ACK, bits);

    raise(1)?;
    expect_eq(
        "INTx signals for the first raise",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    raise(2)?;
    expect_eq(
        "INTx signals for a raise while automasked",
        0,
        fd.wait(quiet(f))?,
    )?;
    ack(3)?;
    intx.unmask(0, 1).context("unmask with the line low")?;
    expect_eq(
        "INTx signals after unmasking a de-asserted line",
        0,
        fd.wait(quiet(f))?,
    )?;
    raise(1)?;
    expect_eq(
        "INTx signals for a raise after unmask",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    ack(1)?;
    intx.unmask(0, 1).context("unmask after acknowledging")?;

    intx.mask(0, 1).context("explicit mask")?;
    raise(1)?;
    expect_eq(
        "INTx signals for a raise while explicitly masked",
        0,
        fd.wait(quiet(f))?,
    )?;
    intx.unmask(0, 1).context("unmask with the line asserted")?;
    expect_eq(
        "INTx signals when unmasking an asserted line",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    ack(1)?;
    intx.unmask(0, 1).context("final unmask")?;
    intx.disable().context("disable INTx")?;
    Ok(())
}

/// A resample eventfd unmasks INTx when written, as KVM's irqfd resampler
/// does: with the line low it re-arms; with the line still asserted the
/// interrupt is signalled again. Where the fixture declares the resample
/// lazy, the re-signal must wait for the next device access, and come then.
pub fn intx_resample<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (dev, fd) = intx_setup(f, &c)?;
    let intx = dev.irq(irq_index::INTX).context("irq(INTx)")?;
    let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
    let resample = EventFd::nonblocking()?;
    intx.set_resample(Some(resample.as_fd()))
        .context("set the resample eventfd")?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq(
        "INTx signals for the first raise",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    resample.write(1)?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq(
        "INTx signals for a raise after resampling",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    // Still asserted: a resample signals again instead of unmasking.
    resample.write(1)?;
    if f.capabilities().resample_lazy {
        expect_eq(
            "INTx signals after resampling an asserted line, before any device access (declared lazy)",
            0,
            fd.wait(quiet(f))?,
        )?;
        bar.read_at::<u32>(reg::IRQ_STATUS)
            .context("read the interrupt status (the access a lazy resample waits for)")?;
    }
    expect_eq(
        "INTx signals after resampling an asserted line",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    resample.write(1)?;
    if f.capabilities().resample_lazy {
        bar.read_at::<u32>(reg::IRQ_STATUS)
            .context("read the interrupt status (the access a lazy resample waits for)")?;
    }
    expect_eq(
        "INTx signals after resampling a de-asserted line",
        0,
        fd.wait(quiet(f))?,
    )?;
    bar.write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq(
        "INTx signals for a raise after the last resample re-armed the line",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    bar.write_at(reg::IRQ_ACK, 1u32)?;
    intx.set_resample(None)
        .context("remove the resample eventfd")?;
    intx.disable().context("disable INTx")?;
    Ok(())
}

/// MSI cannot be masked or unmasked.
pub fn invalid_mask_on_msi<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    expect_kind("mask on MSI", msi.mask(0, 1), REFUSED)?;
    expect_kind("unmask on MSI", msi.unmask(0, 1), REFUSED)?;
    Ok(())
}

/// Vectors past the end of an index are refused, and nothing gets routed.
pub fn invalid_count_past_end<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let count = msi.info().count;
    expect_kind(
        format!("trigger of MSI vectors [0, {})", count + 1),
        msi.trigger(0, count + 1),
        REFUSED,
    )?;
    expect_kind(
        format!("trigger of MSI vector {count} (one past the end)"),
        msi.trigger(count, 1),
        REFUSED,
    )?;
    let a = EventFd::nonblocking()?;
    let b = EventFd::nonblocking()?;
    expect_kind(
        "routing two eventfds to a one-vector MSI",
        msi.set_eventfds(0, &[Some(a.as_fd()), Some(b.as_fd())]),
        REFUSED,
    )?;
    dev.region(pci_region::BAR0)?
        .write_at(reg::IRQ_RAISE, 1u32)?;
    expect_eq("signals after the refused routing", 0, a.wait(quiet(f))?)?;
    dev.region(pci_region::BAR0)?.write_at(reg::IRQ_ACK, 1u32)?;
    Ok(())
}

/// A resample (unmask) eventfd is for automasked INTx only; on MSI it is refused.
pub fn invalid_resample_on_msi<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let fd = EventFd::nonblocking()?;
    expect_kind(
        "resample eventfd on MSI",
        msi.set_resample(Some(fd.as_fd())),
        REFUSED,
    )?;
    Ok(())
}

/// vfio-pci runs one interrupt mode at a time: routing MSI while INTx is
/// routed is refused, and vice versa, until the other is disabled.
pub fn one_irq_type_at_a_time<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (dev, intx_fd) = intx_setup(f, &c)?;
    let intx = dev.irq(irq_index::INTX).context("irq(INTx)")?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let msi_fd = EventFd::nonblocking()?;
    expect_kind(
        "routing MSI while INTx is routed",
        msi.set_eventfd(0, Some(msi_fd.as_fd())),
        &[ErrorKind::InvalidArgument],
    )?;
    intx.disable().context("disable INTx")?;
    msi.set_eventfd(0, Some(msi_fd.as_fd()))
        .context("route MSI after disabling INTx")?;
    expect_kind(
        "routing INTx while MSI is routed",
        intx.set_eventfd(0, Some(intx_fd.as_fd())),
        &[ErrorKind::InvalidArgument],
    )?;
    msi.disable().context("disable MSI")?;
    Ok(())
}

/// Routing a descriptor that is not an eventfd is refused, and leaves no route.
pub fn non_eventfd_refused<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let null = std::fs::File::open("/dev/null")?;
    expect_kind(
        "routing MSI to /dev/null",
        msi.set_eventfd(0, Some(null.as_fd())),
        &[ErrorKind::InvalidArgument],
    )?;
    let fd = EventFd::nonblocking()?;
    msi.set_eventfd(0, Some(fd.as_fd()))
        .context("route MSI to an eventfd afterwards")?;
    msi.trigger(0, 1).context("loopback trigger")?;
    expect_eq("signals on the real eventfd", 1, count_signals(f, &fd, 1)?)?;
    msi.disable().context("disable MSI")?;
    Ok(())
}

/// The REQ index takes an eventfd, and its loopback trigger signals it.
pub fn req_accepts_eventfd<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let req = dev.irq(irq_index::REQ).context("irq(REQ)")?;
    if req.info().count == 0 {
        return Err(not_applicable("edu reports no REQ interrupt"));
    }
    let fd = EventFd::nonblocking()?;
    req.set_eventfd(0, Some(fd.as_fd())).context("route REQ")?;
    req.trigger(0, 1).context("loopback trigger of REQ")?;
    expect_eq(
        "REQ signals after a loopback trigger",
        1,
        count_signals(f, &fd, 1)?,
    )?;
    req.disable().context("disable REQ")?;
    Ok(())
}

/// The fixture's MSI-X device behind the generic driver, with every vector routed.
fn msix_routed<F: Fixture>(f: &F, c: &F::Container) -> Result<MsixDriver<Dev<F>>, CaseError> {
    let Some(name) = f.msix_device() else {
        return Err(not_applicable("the fixture has no MSI-X device"));
    };
    let dev = c
        .open_device(name)
        .context(format_args!("open_device({name})"))?;
    let mut drv = MsixDriver::open(dev).context("MSI-X driver: open")?;
    drv.route().context("route every vector")?;
    Ok(drv)
}

/// Waits for `vector` to fire once, then checks no other vector did.
fn expect_only<F: Fixture>(f: &F, drv: &MsixDriver<Dev<F>>, vector: u32) -> CaseResult {
    let fd = drv
        .eventfd(vector)
        .ok_or_else(|| fail(format!("vector {vector} has no eventfd")))?;
    expect_eq(
        format!("signals on vector {vector} after triggering it"),
        1,
        count_signals(f, fd, 1)?,
    )?;
    let rest = drv.take_all()?;
    for (v, n) in rest.iter().enumerate() {
        ensure!(
            *n == 0,
            "vector {v} fired {n} time(s) when only vector {vector} was triggered"
        );
    }
    Ok(())
}

/// Each MSI-X vector's loopback trigger fires its own eventfd, exactly once,
/// and no other.
pub fn msix_loopback_per_vector<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = msix_routed(f, &c)?;
    for v in 0..drv.vectors() {
        drv.trigger(v).context(format_args!("trigger vector {v}"))?;
        expect_only(f, &drv, v)?;
    }
    Ok(())
}

/// De-assigning one MSI-X vector silences it and leaves the others routed.
pub fn msix_deassign_one_vector<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = msix_routed(f, &c)?;
    if drv.vectors() < 2 {
        return Err(not_applicable("the MSI-X device has a single vector"));
    }
    let gone = drv.vectors() - 1;
    drv.deassign(gone)
        .context(format_args!("de-assign vector {gone}"))?;
    drv.trigger(gone)
        .context(format_args!("trigger the de-assigned vector {gone}"))?;
    let fd = drv
        .eventfd(gone)
        .ok_or_else(|| fail(format!("vector {gone} has no eventfd")))?;
    expect_eq(
        format!("signals on de-assigned vector {gone}"),
        0,
        fd.wait(quiet(f))?,
    )?;
    for v in 0..gone {
        drv.trigger(v).context(format_args!("trigger vector {v}"))?;
        expect_only(f, &drv, v)?;
    }
    Ok(())
}

/// The MSI-X capability matches the irq info, and the table and PBA are
/// mappable only where the region says so (`MSIX_MAPPABLE`).
pub fn msix_table_not_mmappable<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = msix_routed(f, &c)?;
    let Some((layout, region)) = drv.table_region().context("read the MSI-X capability")? else {
        return Err(fail(
            "the fixture's MSI-X device has no MSI-X capability in config space",
        ));
    };
    expect_eq(
        "MSI-X irq count vs the capability's table size",
        layout.table_size,
        drv.irq().info().count,
    )?;
    let info = region.info();
    let table = msix::overlaps_mappable(&region, layout.table_offset, layout.table_len());
    if info.msix_mappable() {
        ensure!(
            info.mappable_areas().is_empty() || table,
            "BAR {} reports MSIX_MAPPABLE and mappable areas, but none covers the table",
            layout.table_bar
        );
        return Ok(());
    }
    ensure!(
        !table,
        "a mappable area of BAR {} overlaps the MSI-X table at {:#x}+{:#x}",
        layout.table_bar,
        layout.table_offset,
        layout.table_len()
    );
    if layout.pba_bar == layout.table_bar {
        ensure!(
            !msix::overlaps_mappable(&region, layout.pba_offset, layout.pba_len()),
            "a mappable area of BAR {} overlaps the MSI-X PBA",
            layout.pba_bar
        );
    }
    Ok(())
}
