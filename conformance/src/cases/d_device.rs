//! D. Device: info, config space, bus mastering, mmap, reset, features.

use std::os::fd::AsFd;

use vfio_hal::device::feature::{LOW_POWER_ENTRY, LOW_POWER_ENTRY_WITH_WAKEUP, LOW_POWER_EXIT};
use vfio_hal::device::DeviceKind;
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index as irq_index;
use vfio_hal::pci::{cfg, region as pci_region};
use vfio_hal::{
    Container, Device, ErrorKind, FeatureOp, FeatureSupport, Irq, PciConfig, Region, RegionExt,
};

use super::{count_signals, edu, edu_device, fresh, quiet};
use crate::edu::{self as edu_dev, expected_factorial, reg};
use crate::ensure;
use crate::fixture::Fixture;
use crate::outcome::{expect_eq, expect_kind, fail, CaseResult, Context, Describe};

/// Device info: a PCI device with at least vfio-pci's 9 regions and 5 irq
/// indices, each of which opens and reports its own index; BAR 0 and config
/// space are readable and writable.
pub fn info_sane<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let info = dev.info().clone();
    expect_eq("device kind", DeviceKind::Pci, info.kind())?;
    ensure!(
        info.num_regions >= 9,
        "vfio-pci reports at least 9 regions (6 BARs, ROM, config, VGA); got {}",
        info.num_regions
    );
    ensure!(
        info.num_irqs >= 5,
        "vfio-pci reports at least 5 irq indices (INTx, MSI, MSI-X, ERR, REQ); got {}",
        info.num_irqs
    );
    for i in 0..info.num_regions {
        let r = dev.region(i).context(format_args!("region({i})"))?;
        expect_eq(format!("region({i}).info().index"), i, r.info().index)?;
    }
    for i in 0..info.num_irqs {
        let q = dev.irq(i).context(format_args!("irq({i})"))?;
        expect_eq(format!("irq({i}).info().index"), i, q.info().index)?;
    }
    let bar = dev.region(pci_region::BAR0).context("region(BAR0)")?;
    let bar = bar.info();
    expect_eq("edu BAR 0 size", 1 << 20, bar.size)?;
    ensure!(
        bar.readable() && bar.writable(),
        "BAR 0 flags {:#x} lack READ or WRITE",
        bar.flags
    );
    let config = dev.config().context("config region")?;
    let config = config.info();
    ensure!(
        config.size >= 256,
        "config space is {} bytes, less than 256",
        config.size
    );
    ensure!(
        config.readable() && config.writable(),
        "config space flags {:#x} lack READ or WRITE",
        config.flags
    );
    Ok(())
}

/// Config space identifies edu: vendor 0x1234, device 0x11e8, revision 0x10.
pub fn config_ids<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    expect_eq("vendor id", edu_dev::VENDOR_ID, dev.vendor_id()?)?;
    expect_eq("device id", edu_dev::DEVICE_ID, dev.device_id()?)?;
    expect_eq("revision", edu_dev::REVISION, dev.revision()?)?;
    Ok(())
}

/// The capability walk finds edu's MSI capability (one vector, matching the
/// MSI irq count) and no MSI-X.
pub fn capability_walk_finds_msi<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let caps = dev.capabilities().context("walk the capability list")?;
    let msi = caps
        .iter()
        .find(|cap| cap.id == cfg::CAP_ID_MSI)
        .ok_or_else(|| fail(format!("no MSI capability in the list {caps:?}")))?;
    ensure!(
        !caps.iter().any(|cap| cap.id == cfg::CAP_ID_MSIX),
        "edu has no MSI-X, but the walk found one: {caps:?}"
    );
    let control = dev
        .config()?
        .read_at::<u16>(u64::from(msi.offset) + 2)
        .context("read MSI message control")?;
    let vectors = 1u32 << ((control >> 1) & 7);
    expect_eq("MSI vectors the capability offers", 1, vectors)?;
    let count = dev.irq(irq_index::MSI).context("irq(MSI)")?.info().count;
    expect_eq("MSI irq count", vectors, count)
}

/// Bus mastering turns on (with memory decode) and off, and the command
/// register reads back what was set.
pub fn bus_master_toggle<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let original = dev.command().context("read command")?;
    dev.set_bus_master(true).context("enable bus mastering")?;
    let on = dev.command().context("read command")?;
    ensure!(
        on & (cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY) == cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY,
        "command {on:#06x} after enabling bus mastering lacks BUS_MASTER or MEMORY"
    );
    dev.set_bus_master(false).context("disable bus mastering")?;
    let off = dev.command().context("read command")?;
    ensure!(
        off & cfg::CMD_BUS_MASTER == 0,
        "command {off:#06x} still has BUS_MASTER after disabling it"
    );
    ensure!(
        off & cfg::CMD_MEMORY != 0,
        "disabling bus mastering also cleared MEMORY: {off:#06x}"
    );
    let mask = cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY;
    dev.update_command(original & mask, !original & mask)
        .context("restore command")?;
    expect_eq(
        "command after restoring",
        original & mask,
        dev.command()? & mask,
    )
}

/// For every region of edu (and of the MSI-X device, where the fixture has
/// one), `mmap` maps exactly the region's mappable areas — or, where the
/// fixture declares region mmap unsupported, is refused with `NotSupported`;
/// a region with no mappable area is refused with `NotSupported`.
pub fn mmap_only_mappable_areas<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    check_mmap(f, &edu_device(f, &c)?, f.edu(), true)?;
    if let Some(name) = f.msix_device() {
        let dev = c
            .open_device(name)
            .context(format_args!("open_device({name})"))?;
        check_mmap(f, &dev, name, false)?;
    }
    Ok(())
}

fn check_mmap<F: Fixture, D: Device>(f: &F, dev: &D, name: &str, is_edu: bool) -> CaseResult {
    let can_map = f.capabilities().region_mmap;
    for i in 0..dev.info().num_regions {
        let region = dev.region(i).context(format_args!("{name}: region({i})"))?;
        let areas = region.info().mappable_areas();
        let result = region.mmap();
        if areas.is_empty() || !can_map {
            let why = if areas.is_empty() {
                "has no mappable area"
            } else {
                "is mappable but the fixture declares region mmap unsupported"
            };
            expect_kind(
                format!("{name}: mmap of region {i}, which {why}"),
                result.map(|m| m.len()),
                &[ErrorKind::NotSupported],
            )?;
            continue;
        }
        let maps = result.context(format_args!("{name}: mmap of region {i}"))?;
        let got: Vec<(u64, u64)> = maps.iter().map(|m| (m.region_offset(), m.len())).collect();
        let want: Vec<(u64, u64)> = areas.iter().map(|a| (a.offset, a.size)).collect();
        expect_eq(format!("{name}: areas mapped for region {i}"), want, got)?;
        if is_edu && i == pci_region::BAR0 {
            let Some(window) = maps.iter().find(|m| m.covers(reg::ID, 4)) else {
                return Err(fail("no mapped area of edu's BAR 0 covers the ID register"));
            };
            let id = window
                .load::<u32>(reg::ID - window.region_offset())
                .context("load edu's ID register through the mapping")?;
            expect_eq(
                "edu's ID register read through the mapping",
                reg::ID_VALUE,
                id,
            )?;
        }
    }
    Ok(())
}

/// Config space has no mappable area, and `mmap` of it is `NotSupported`.
pub fn config_region_refuses_mmap<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let config = dev.config().context("config region")?;
    ensure!(
        config.info().mappable_areas().is_empty(),
        "config space claims mappable areas: {:?}",
        config.info().mappable_areas()
    );
    expect_kind(
        "mmap of config space",
        config.mmap().map(|m| m.len()),
        &[ErrorKind::NotSupported],
    )?;
    Ok(())
}

/// Reset works where the device says it can (and is refused where it says
/// it cannot); afterwards the device works again, and edu's registers
/// survive it (edu has no reset handler).
pub fn reset<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut e = edu(f, &c)?;
    if !e.device().info().can_reset() {
        // vfio-pci answers EINVAL when no reset method works for the device.
        expect_kind(
            "reset of a device without the RESET flag",
            e.device().reset(),
            &[ErrorKind::InvalidArgument, ErrorKind::NotSupported],
        )?;
        return Ok(());
    }
    let marker = 0x0bad_cafe_u32;
    e.bar().write_at(reg::LIVENESS, marker)?;
    e.enable_msi().context("route MSI")?;
    e.reset()
        .context("reset, then restore bus mastering and the MSI route")?;
    expect_eq(
        "vendor id after reset",
        edu_dev::VENDOR_ID,
        e.device().vendor_id()?,
    )?;
    // QEMU's edu registers no reset handler, and the mock's model follows
    // it: the registers survive.
    expect_eq(
        "liveness register after reset (edu has no reset handler)",
        !marker,
        e.bar().read_at::<u32>(reg::LIVENESS)?,
    )?;
    expect_eq(
        "factorial(6) with MSI after reset",
        expected_factorial(6),
        e.factorial(6)?,
    )?;
    e.round_trip(&c, f.capabilities().iova_base, 4096)
        .context("DMA round trip after reset")?;
    Ok(())
}

/// A feature number no kernel defines probes as unsupported rather than
/// failing, and using it is refused.
pub fn unknown_feature_unsupported<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let unknown = 0xfff0;
    expect_eq(
        "probe of feature 0xfff0",
        FeatureSupport::default(),
        dev.probe_feature(unknown).context("probe feature 0xfff0")?,
    )?;
    let mut payload = [0u8; 8];
    match dev.feature(FeatureOp::Get, unknown, &mut payload) {
        Ok(()) => Err(fail("GET of feature 0xfff0 succeeded")),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotSupported | ErrorKind::InvalidArgument
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(fail(format!(
            "GET of feature 0xfff0: expected NotSupported or InvalidArgument, got {}",
            e.describe()
        ))),
    }
}

/// vfio-pci's low-power features: each supports SET and not GET; entry
/// while in low power is refused with `EINVAL` and exit always succeeds;
/// entry with wakeup refuses a file that is not an eventfd with `EINVAL`.
/// Entered with an eventfd, the device signals it exactly once, at the
/// first access after it has runtime-suspended and not before, and is then
/// out of low power (a new entry is accepted).
///
/// The kernel suspends the device asynchronously after the entry ioctl
/// returns (an access made before that finds it awake and signals
/// nothing), so the case waits the fixture's quiet window before the
/// access. The access is a read of config space through a region handle
/// taken before entry, so that the read itself is the first access (taking
/// a handle is an ioctl too). Config space is never mmapped, so the read
/// goes through the device fd on every backend (a BAR mmap faults with
/// SIGBUS in low power on vfio-pci).
pub fn low_power<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    for feature in [LOW_POWER_ENTRY, LOW_POWER_ENTRY_WITH_WAKEUP, LOW_POWER_EXIT] {
        expect_eq(
            format!("probe of low-power feature {feature}"),
            FeatureSupport {
                get: false,
                set: true,
            },
            dev.probe_feature(feature)
                .context(format_args!("probe feature {feature}"))?,
        )?;
    }

    dev.low_power_entry().context("low-power entry")?;
    let again = expect_kind(
        "low-power entry while in low power",
        dev.low_power_entry(),
        &[ErrorKind::InvalidArgument],
    )?;
    expect_eq(
        "errno of the second entry",
        Some(libc::EINVAL),
        again.errno(),
    )?;
    dev.low_power_exit().context("low-power exit")?;
    dev.low_power_exit()
        .context("low-power exit while not in low power")?;

    let null = std::fs::File::open("/dev/null")?;
    let refused = expect_kind(
        "low-power entry with /dev/null as the wakeup eventfd",
        dev.low_power_entry_with_wakeup(null.as_fd()),
        &[ErrorKind::InvalidArgument],
    )?;
    expect_eq(
        "errno of the entry with /dev/null",
        Some(libc::EINVAL),
        refused.errno(),
    )?;

    let config = dev.config().context("config region")?;
    let wakeup = EventFd::nonblocking()?;
    dev.low_power_entry_with_wakeup(wakeup.as_fd())
        .context("low-power entry with a wakeup eventfd")?;
    expect_eq(
        "wakeup signals before any access",
        0,
        wakeup.wait(quiet(f))?,
    )?;
    expect_eq(
        "vendor id read in low power",
        edu_dev::VENDOR_ID,
        config
            .read_at::<u16>(cfg::VENDOR_ID)
            .context("read the vendor id in low power")?,
    )?;
    expect_eq(
        "wakeup signals after the config read",
        1,
        count_signals(f, &wakeup, 1)?,
    )?;
    dev.low_power_entry()
        .context("low-power entry after the wakeup (which ends low power)")?;
    dev.low_power_exit().context("low-power exit")?;
    Ok(())
}

/// edu's register file behaves as QEMU's: identification, liveness,
/// factorial (u32 wrap-around), all ones for unlisted offsets and for
/// accesses narrower than 4 bytes below 0x80.
pub fn edu_registers<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let e = edu(f, &c)?;
    expect_eq("identification", reg::ID_VALUE, e.identification()?)?;
    for x in [0u32, 1, 0xdead_beef, u32::MAX] {
        e.check_liveness(x)
            .context(format_args!("liveness {x:#x}"))?;
    }
    for n in [0u32, 1, 5, 12, 13] {
        expect_eq(
            format!("factorial({n})"),
            expected_factorial(n),
            e.factorial(n)?,
        )?;
    }
    let bar = e.bar();
    expect_eq("unlisted offset 0x10", u32::MAX, bar.read_at::<u32>(0x10)?)?;
    // QEMU's memory core refuses accesses narrower than edu's minimum of 4
    // bytes before edu sees them: they read 0 (measured in the lane).
    expect_eq(
        "2-byte read of the liveness register (refused below 4 bytes)",
        0,
        bar.read_at::<u16>(reg::LIVENESS)?,
    )?;
    e.bar().write_at(reg::DMA_SRC, 0x1234_5678u32)?;
    expect_eq(
        "DMA source register read back",
        0x1234_5678,
        bar.read_at::<u32>(reg::DMA_SRC)?,
    )?;
    Ok(())
}

/// Every descriptor a sandboxed VMM must keep open for the device is open.
pub fn keep_fds_are_open<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    for fd in dev.keep_fds() {
        ensure!(
            crate::probe::is_open(fd),
            "keep_fds lists {fd}, which is not an open descriptor"
        );
    }
    Ok(())
}
