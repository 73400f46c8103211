//! B. Lifecycle: opening, dropping and re-opening leave nothing behind.

use vfio_hal::device::feature;
use vfio_hal::irq::index as irq_index;
use vfio_hal::pci::region as pci_region;
use vfio_hal::{Device, ErrorKind, FeatureOp, Irq, Region, RegionExt};

use super::{edu, edu_device, edu_device_for_msi, fresh, iova, quiet, settled_snapshot};
use crate::edu::{expected_factorial, reg};
use crate::fixture::{Fixture, Unplug};
use crate::outcome::{expect_eq, expect_kind, fail, not_applicable, CaseResult, Context};
use crate::probe::device_file_refs;
use crate::scratch::Scratch;
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// Opening and closing edu many times (with MSI routed each time) leaves the
/// process's fd and device-mmap counts unchanged.
pub fn open_close_no_leak<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    {
        let c = fresh(f)?;
        for i in 0..32u32 {
            let mut e = edu(f, &c)?;
            e.check_liveness(i.wrapping_mul(0x9e37_79b9))
                .context(format_args!("liveness, cycle {i}"))?;
            e.enable_msi()
                .context(format_args!("enable MSI, cycle {i}"))?;
        }
    }
    before.expect_unchanged("32 open/route/close cycles of edu")
}

/// Dropping a container that still holds mappings releases everything; so
/// does dropping it while a device opened from it is still alive.
pub fn container_dropped_with_live_mappings<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    {
        let scratch = Scratch::new(fresh(f)?, 4)?;
        let page = scratch.page();
        scratch
            .map_pages(iova(f, page, 0), 0, 1)
            .context("map page 0")?;
        scratch
            .map_pages(iova(f, page, 2), 2, 2)
            .context("map pages 2-3")?;
        drop(edu(f, scratch.container())?);
        let memory = scratch.drop_container_with_mappings();
        drop(memory);
    }
    before.expect_unchanged("dropping a container with two live mappings")?;
    {
        let scratch = Scratch::new(fresh(f)?, 1)?;
        scratch
            .map_pages(iova(f, scratch.page(), 0), 0, 1)
            .context("map one page")?;
        let dev = edu_device(f, scratch.container())?;
        let memory = scratch.drop_container_with_mappings();
        // The device outlives its container: it keeps working or reports
        // that it is gone, but never panics.
        match dev
            .region(pci_region::BAR0)
            .and_then(|bar| bar.read_at::<u32>(reg::ID))
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::DeviceGone => {}
            Err(e) => {
                return Err(fail(format!(
                    "BAR 0 read after the container was dropped: expected success or DeviceGone, got {}",
                    crate::outcome::Describe::describe(&e)
                )))
            }
        }
        drop(dev);
        drop(memory);
    }
    before.expect_unchanged("dropping a container before its device")
}

/// Dropping a device while MSI is routed tears the route down: the eventfd
/// stays the caller's and usable, is never signalled again, and nothing leaks.
pub fn device_dropped_with_irqs_routed<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    let timeout = f.capabilities().timeout;
    {
        let c = fresh(f)?;
        let old = EventFd::nonblocking().context("eventfd")?;
        {
            let dev = edu_device_for_msi(f, &c)?;
            let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
            let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
            msi.set_eventfd(0, Some(old.as_fd()))
                .context("route MSI to the eventfd")?;
            bar.write_at(reg::IRQ_RAISE, 1u32).context("raise")?;
            expect_eq("MSI signals before the drop", 1, old.wait(timeout)?)?;
            // Dropped here, route and all.
        }
        old.write(3).context("the eventfd is still ours")?;
        expect_eq("eventfd counter after our own signal", 3, old.take()?)?;
        let mut again = edu(f, &c)?;
        again
            .enable_msi()
            .context("route MSI on the re-opened device")?;
        again.acknowledge(u32::MAX)?;
        again.raise(1)?;
        let new = again
            .msi_eventfd()
            .ok_or_else(|| fail("MSI eventfd missing after enable_msi"))?;
        expect_eq("MSI signals on the new route", 1, new.wait(timeout)?)?;
        expect_eq(
            "signals on the eventfd of the dropped device's route",
            0,
            old.wait(quiet(f))?,
        )?;
        again.acknowledge(1)?;
    }
    before.expect_unchanged("dropping a device with MSI routed")
}

/// A device dropped and opened again works as before: liveness, factorial
/// with its interrupt, a DMA round trip.
pub fn reopen_after_drop<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    for round in 0..3u32 {
        let mut e = edu(f, &c).context(format_args!("open, round {round}"))?;
        e.check_liveness(0x5a5a_0000 | round)
            .context(format_args!("liveness, round {round}"))?;
        e.enable_msi().context(format_args!("MSI, round {round}"))?;
        expect_eq(
            format!("factorial(9), round {round}"),
            expected_factorial(9),
            e.factorial(9)?,
        )?;
        e.round_trip(&c, f.capabilities().iova_base, 4096)
            .context(format_args!("DMA round trip, round {round}"))?;
    }
    Ok(())
}

/// A polite unplug request reaches the driver on the REQ interrupt; as with
/// vfio-pci, the device keeps working until the driver releases it, and the
/// release leaves nothing behind.
pub fn unplug_request<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    let timeout = f.capabilities().timeout;
    {
        let c = fresh(f)?;
        let e = edu(f, &c)?;
        let req = e.device().irq(irq_index::REQ).context("irq(REQ)")?;
        if req.info().count == 0 {
            return Err(not_applicable("edu has no REQ interrupt"));
        }
        let fd = EventFd::nonblocking()?;
        req.set_eventfd(0, Some(fd.as_fd())).context("route REQ")?;
        let Some(result) = f.unplug(&c, f.edu(), Unplug::Request) else {
            return Err(not_applicable(
                "the fixture cannot unplug devices (the real-kernel lane unplugs through QMP in its own test)",
            ));
        };
        result.context("request the unplug")?;
        let signals = fd.wait(timeout)?;
        crate::ensure!(
            signals >= 1,
            "the REQ eventfd was not signalled within {timeout:?} of the unplug request"
        );
        e.check_liveness(0x0dd_ba11)
            .context("the device after the request, before its release")?;
        // The driver honours the request by releasing the device.
        drop(req);
        drop(e);
    }
    before.expect_unchanged("an unplug request and release")
}

/// A device removed from under its user fails every later operation with
/// `DeviceGone`, and still drops cleanly.
pub fn surprise_unplug<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    {
        let c = fresh(f)?;
        let mut e = edu(f, &c)?;
        e.enable_msi().context("route MSI")?;
        let Some(result) = f.unplug(&c, f.edu(), Unplug::Surprise) else {
            return Err(not_applicable(
                "the fixture cannot unplug devices (the real-kernel lane unplugs through QMP in its own test)",
            ));
        };
        result.context("surprise unplug")?;
        let gone = [ErrorKind::DeviceGone];
        expect_kind(
            "BAR 0 read after unplug",
            e.bar().read_at::<u32>(reg::ID),
            &gone,
        )?;
        expect_kind(
            "BAR 0 write after unplug",
            e.bar().write_at(reg::LIVENESS, 1u32),
            &gone,
        )?;
        expect_kind("MSI disable after unplug", e.msi().disable(), &gone)?;
        expect_kind("reset after unplug", e.device().reset(), &gone)?;
        expect_kind(
            "region(BAR0) after unplug",
            e.device().region(pci_region::BAR0).map(|_| ()),
            &gone,
        )?;
        drop(e);
        expect_kind(
            "open_device after unplug",
            vfio_hal::Container::open_device(&c, f.edu()).map(|_| ()),
            &[ErrorKind::NotFound, ErrorKind::DeviceGone],
        )?;
    }
    before.expect_unchanged("a surprise unplug")
}

/// A revoked device (what a driver does when REQ asks for it) refuses every
/// operation through every handle with `DeviceGone`; the backend lets go of
/// the device while the handles still exist — no fd or mmap of the device
/// file is left, and the device opens again; the handles then drop cleanly.
pub fn revoke<F: Fixture>(f: &F) -> CaseResult {
    let before = settled_snapshot(f)?;
    let refs_before = device_file_refs()?;
    {
        let c = fresh(f)?;
        let mut e = edu(f, &c)?;
        let revoker = match e.device().revoker() {
            Err(err) if err.kind() == ErrorKind::NotSupported => {
                return Err(not_applicable(format!("the backend cannot revoke: {err}")))
            }
            other => other.context("revoker")?,
        };
        e.enable_msi().context("route MSI")?;
        // Twice: the first access may set up a fast path (a cached mmap).
        e.check_liveness(0x1357_9bdf).context("liveness")?;
        e.check_liveness(0x2468_ace0).context("liveness again")?;
        let config = e
            .device()
            .region(pci_region::CONFIG)
            .context("region(CONFIG)")?;
        // The caller's own mmap of BAR 0, where the backend offers one.
        let user_maps = match e.bar().mmap() {
            Err(err) if err.kind() == ErrorKind::NotSupported => Vec::new(),
            other => other.context("mmap BAR 0")?,
        };
        for area in user_maps.iter().filter(|a| a.region_offset() == 0) {
            expect_eq(
                "ID through the caller's mmap",
                crate::edu::reg::ID_VALUE,
                area.load::<u32>(reg::ID).context("load")?,
            )?;
        }
        crate::ensure!(!revoker.is_revoked(), "revoked before revoke()");
        // A backend with device fds (keep_fds lists them) is seen holding
        // its device file now, so the count after the revocation means something.
        if !e.device().keep_fds().is_empty() {
            let refs_open = device_file_refs()?;
            crate::ensure!(
                refs_open > refs_before,
                "no reference to a VFIO device file seen while edu is open ({refs_open}, before {refs_before})"
            );
        }

        revoker.revoke().context("revoke")?;
        crate::ensure!(revoker.is_revoked(), "is_revoked() is false after revoke()");
        let gone = [ErrorKind::DeviceGone];
        expect_kind("BAR 0 read", e.bar().read_at::<u32>(reg::ID), &gone)?;
        expect_kind("BAR 0 write", e.bar().write_at(reg::LIVENESS, 1u32), &gone)?;
        expect_kind("BAR 0 mmap", e.bar().mmap().map(drop), &gone)?;
        expect_kind("config read", config.read_at::<u16>(0), &gone)?;
        expect_kind("MSI disable", e.msi().disable(), &gone)?;
        expect_kind("reset", e.device().reset(), &gone)?;
        expect_kind(
            "region(BAR0)",
            e.device().region(pci_region::BAR0).map(drop),
            &gone,
        )?;
        expect_kind("irq(MSI)", e.device().irq(irq_index::MSI).map(drop), &gone)?;
        expect_kind(
            "feature probe",
            e.device()
                .feature(FeatureOp::ProbeGet, feature::MIGRATION, &mut []),
            &gone,
        )?;

        // Let go while the handles (and the caller's mmaps) live: the kernel
        // could now remove it.
        expect_eq(
            "references to VFIO device files, revoked handles and mmaps alive",
            refs_before,
            device_file_refs()?,
        )?;
        for area in user_maps.iter().filter(|a| a.region_offset() == 0) {
            expect_eq(
                "ID through the caller's detached mmap",
                0,
                area.load::<u32>(reg::ID).context("load")?,
            )?;
        }
        let again = edu(f, &c).context("open edu again while the revoked handles live")?;
        again
            .check_liveness(0x0bad_cafe)
            .context("the reopened device")?;
        drop(again);

        revoker.revoke().context("revoke a second time")?;
        drop(user_maps);
        drop(config);
        drop(e);
        crate::ensure!(
            revoker.is_revoked(),
            "is_revoked() is false with every handle dropped"
        );
        revoker
            .revoke()
            .context("revoke with every handle dropped")?;
    }
    before.expect_unchanged("revoking edu and dropping its handles")
}
