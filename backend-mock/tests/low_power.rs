//! vfio-pci's low-power device features on the mock, rule by rule as Linux
//! 6.12's `vfio_pci_core.c` has them: SET only; entry refused while in low
//! power, exit always fine; the wakeup eventfd checked like
//! `eventfd_ctx_fdget`, held by the device and signalled exactly once, by
//! the first access through the device fd after entry; no signal without
//! an access, or without a wakeup eventfd; close ends low power silently,
//! a reset does not end it.
//!
//! Every test holds one lock for its whole run: some count this process's
//! file descriptors.
//!
//! Run: `cargo test -p vfio-hal-mock --test low_power`.

mod common;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rstest::rstest;

use common::{copy_engine, edu, open_fds};
use vfio_hal::device::feature::{LOW_POWER_ENTRY, LOW_POWER_ENTRY_WITH_WAKEUP, LOW_POWER_EXIT};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::{ErrorKind, FeatureOp, FeatureSupport, Protection, Result, Target};
use vfio_hal_mock::models::copy_engine::SRAM_BAR;
use vfio_hal_mock::models::edu::{reg, VENDOR_ID};
use vfio_hal_mock::{MockDevice, MockIrq, MockRegion};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn eventfd() -> EventFd {
    EventFd::nonblocking().expect("eventfd")
}

/// The entry-with-wakeup payload naming `fd`.
fn wakeup_payload(fd: RawFd) -> [u8; 8] {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&fd.to_ne_bytes());
    payload
}

/// `result` is the typed error of `VFIO_DEVICE_FEATURE` on `feature` with `errno`.
fn refused(result: Result<()>, feature: u32, errno: i32) {
    let e = result.expect_err("must be refused");
    assert_eq!(
        (e.kind(), e.errno(), e.op(), e.target()),
        (
            ErrorKind::InvalidArgument,
            Some(errno),
            Some("VFIO_DEVICE_FEATURE"),
            Some(&Target::Feature(feature))
        ),
        "{e}"
    );
}

/// Whether low power is engaged, told the only way the uAPI tells it: a
/// new entry is refused. Leaves the device as it found it.
fn in_low_power(dev: &MockDevice) -> bool {
    match dev.low_power_entry() {
        Ok(()) => {
            dev.low_power_exit().expect("exit the probing entry");
            false
        }
        Err(e) => {
            assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
            true
        }
    }
}

// ---- The features and their payloads ---------------------------------------

#[test]
fn the_three_features_support_set_only() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    for feature in [LOW_POWER_ENTRY, LOW_POWER_ENTRY_WITH_WAKEUP, LOW_POWER_EXIT] {
        assert_eq!(
            dev.probe_feature(feature).expect("probe"),
            FeatureSupport {
                get: false,
                set: true
            },
            "feature {feature}"
        );
        dev.feature(FeatureOp::ProbeSet, feature, &mut [])
            .expect("probe of SET");
        refused(
            dev.feature(FeatureOp::ProbeGet, feature, &mut []),
            feature,
            libc::EINVAL,
        );
        refused(
            dev.feature(FeatureOp::Get, feature, &mut [0; 8]),
            feature,
            libc::EINVAL,
        );
    }
    assert!(!in_low_power(&dev), "probes and GETs change nothing");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn the_wakeup_payload_is_checked_as_the_kernel_checks_it() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let efd = eventfd();
    let set =
        |payload: &mut [u8]| dev.feature(FeatureOp::Set, LOW_POWER_ENTRY_WITH_WAKEUP, payload);

    // Shorter than the struct (argsz < minsz): EINVAL, even with a good fd.
    for len in [0, 4, 7] {
        let mut payload = wakeup_payload(efd.as_raw_fd());
        refused(
            set(&mut payload[..len]),
            LOW_POWER_ENTRY_WITH_WAKEUP,
            libc::EINVAL,
        );
    }
    // A negative fd: EINVAL. A number that names no open file: EBADF.
    refused(
        set(&mut wakeup_payload(-1)),
        LOW_POWER_ENTRY_WITH_WAKEUP,
        libc::EINVAL,
    );
    refused(
        set(&mut wakeup_payload(RawFd::MAX)),
        LOW_POWER_ENTRY_WITH_WAKEUP,
        libc::EBADF,
    );
    // An open file that is not an eventfd: EINVAL (eventfd_ctx_fileget).
    let null = File::open("/dev/null").expect("/dev/null");
    refused(
        dev.low_power_entry_with_wakeup(null.as_fd()),
        LOW_POWER_ENTRY_WITH_WAKEUP,
        libc::EINVAL,
    );
    assert!(!in_low_power(&dev), "no refused entry engaged low power");

    // A longer payload is fine (only the first 8 bytes are the struct);
    // entry and exit ignore whatever payload they get.
    let mut long = [0u8; 12];
    long[..8].copy_from_slice(&wakeup_payload(efd.as_raw_fd()));
    set(&mut long).expect("entry with a 12-byte payload");
    dev.low_power_exit().expect("exit");
    assert_eq!(efd.take().expect("eventfd"), 1, "the exit ioctl resumed it");
    dev.feature(FeatureOp::Set, LOW_POWER_ENTRY, &mut [0xff; 8])
        .expect("entry with a payload");
    dev.feature(FeatureOp::Set, LOW_POWER_EXIT, &mut [0xff; 3])
        .expect("exit with a payload");
}

// ---- Entry and exit ----------------------------------------------------------

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn entry_in_low_power_is_einval_and_exit_always_succeeds() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    dev.low_power_exit().expect("exit while not in low power");
    dev.low_power_exit().expect("again");

    dev.low_power_entry().expect("entry");
    refused(dev.low_power_entry(), LOW_POWER_ENTRY, libc::EINVAL);
    let efd = eventfd();
    let fds = open_fds();
    refused(
        dev.low_power_entry_with_wakeup(efd.as_fd()),
        LOW_POWER_ENTRY_WITH_WAKEUP,
        libc::EINVAL,
    );
    assert_eq!(open_fds(), fds, "the refused entry let go of its eventfd");

    dev.low_power_exit().expect("exit");
    dev.low_power_exit().expect("exit again: a no-op");
    dev.low_power_entry().expect("entry after exit");
    dev.low_power_exit().expect("exit");
    assert_eq!(
        efd.take().expect("eventfd"),
        0,
        "the refused eventfd never fires"
    );
}

// ---- Wakeup ------------------------------------------------------------------

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn the_first_access_after_entry_with_wakeup_signals_once_and_ends_low_power() {
    let _serial = serial();
    let (c, dev) = edu().expect("edu");
    let bar0 = dev.region(0).expect("BAR0");
    let efd = eventfd();
    let fds = open_fds();
    dev.low_power_entry_with_wakeup(efd.as_fd())
        .expect("entry with wakeup");
    assert_eq!(open_fds(), fds + 1, "the device holds its own reference");
    c.clock().advance(Duration::from_secs(1));
    assert_eq!(efd.take().expect("eventfd"), 0, "no access, no signal");

    assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
    assert_eq!(efd.take().expect("eventfd"), 1, "the first access signals");
    assert_eq!(open_fds(), fds, "and the device lets go of the eventfd");
    bar0.read_at::<u32>(reg::ID).expect("read");
    assert!(!in_low_power(&dev), "the wakeup ended low power");
    dev.low_power_exit().expect("exit is still fine");
    assert_eq!(efd.take().expect("eventfd"), 0, "signalled exactly once");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn the_caller_may_close_its_eventfd_after_entry() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let efd = eventfd();
    let theirs = efd.try_clone().expect("dup");
    dev.low_power_entry_with_wakeup(theirs.as_fd())
        .expect("entry");
    drop(theirs);
    dev.vendor_id().expect("config read");
    assert_eq!(
        efd.take().expect("eventfd"),
        1,
        "signalled through the device's reference"
    );
}

/// edu's handles, taken before entry: taking one is itself an ioctl.
struct Handles {
    dev: MockDevice,
    bar0: MockRegion,
    config: MockRegion,
    msi: MockIrq,
    req: MockIrq,
}

/// One access through the device fd.
type Access = fn(&Handles) -> Result<()>;

#[rstest]
#[case::region_info(|h: &Handles| h.dev.region(0).map(drop))]
#[case::irq_info(|h: &Handles| h.dev.irq(index::MSI).map(drop))]
#[case::set_irqs(|h: &Handles| {
    let trigger = EventFd::nonblocking().expect("eventfd");
    h.req.set_eventfd(0, Some(trigger.as_fd()))
})]
// A refused ioctl is still an ioctl: the pm wrapper resumes before it.
#[case::refused_set_irqs(|h: &Handles| {
    let e = h.msi.disable().expect_err("MSI is not enabled");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    Ok(())
})]
#[case::reset(|h: &Handles| h.dev.reset())]
#[case::feature_probe(|h: &Handles| h.dev.probe_feature(LOW_POWER_ENTRY).map(drop))]
#[case::unknown_feature(|h: &Handles| {
    let e = h.dev.feature(FeatureOp::Get, 0xfff0, &mut []).expect_err("unknown");
    assert_eq!(e.errno(), Some(libc::ENOTTY));
    Ok(())
})]
#[case::low_power_exit(|h: &Handles| h.dev.low_power_exit())]
#[case::config_read(|h: &Handles| h.config.read_at::<u16>(cfg::VENDOR_ID).map(drop))]
#[case::config_write(|h: &Handles| h.config.write_at::<u8>(0x0c, 0x10))]
#[case::bar_read(|h: &Handles| h.bar0.read_at::<u32>(reg::LIVENESS).map(drop))]
#[case::bar_write(|h: &Handles| h.bar0.write_at::<u32>(reg::LIVENESS, 1))]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn every_access_through_the_device_fd_wakes_it(#[case] access: Access) {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let handles = Handles {
        bar0: dev.region(0).expect("BAR0"),
        config: dev.config().expect("config"),
        msi: dev.irq(index::MSI).expect("MSI"),
        req: dev.irq(index::REQ).expect("REQ"),
        dev,
    };
    let efd = eventfd();
    handles
        .dev
        .low_power_entry_with_wakeup(efd.as_fd())
        .expect("entry");
    assert_eq!(efd.take().expect("eventfd"), 0);
    access(&handles).expect("the access");
    assert_eq!(
        efd.take().expect("eventfd"),
        1,
        "the access woke the device"
    );
    assert!(!in_low_power(&handles.dev));
}

#[test]
#[cfg_attr(miri, ignore = "a RAM BAR is memfd-backed; Miri has no memfd_create")]
fn nothing_but_an_access_through_the_device_fd_wakes_it() {
    let _serial = serial();
    let (c, dev) = copy_engine().expect("copy engine");
    let sram = dev.region(u32::from(SRAM_BAR)).expect("BAR2");
    let old_map = sram.mmap_area(0, Protection::ReadWrite).expect("mmap");
    let efd = eventfd();
    dev.low_power_entry_with_wakeup(efd.as_fd()).expect("entry");

    // None of these is an access through the device fd.
    let _ = (dev.info(), dev.keep_fds());
    dev.vfio_file().expect("vfio file");
    drop(dev.revoker().expect("revoker"));
    c.clock().advance(Duration::from_secs(1));
    // vfio-pci answers 0-byte reads and writes before it resumes.
    sram.read(0, &mut []).expect("0-byte read");
    sram.write(0, &[]).expect("0-byte write");
    // mmap is not an ioctl, and a mapped access never resumes the device
    // (vfio-pci faults it instead: a deviation the crate docs list).
    let new_map = sram.mmap_area(0, Protection::ReadWrite).expect("mmap");
    new_map.store(0, 0x1234_5678u32).expect("store");
    assert_eq!(old_map.load::<u32>(0).expect("load"), 0x1234_5678);
    assert_eq!(efd.take().expect("eventfd"), 0, "nothing woke the device");
    assert!(!sram.fast_path_covers(0, 4));

    assert_eq!(sram.read_at::<u32>(0).expect("pread"), 0x1234_5678);
    assert_eq!(efd.take().expect("eventfd"), 1, "the region read did");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn a_register_the_mirror_holds_is_read_from_the_device_in_low_power() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let bar0 = dev.region(0).expect("BAR0");
    bar0.read_at::<u32>(reg::ID).expect("read");
    assert!(bar0.fast_path_covers(reg::ID, 4), "mirrored");

    let efd = eventfd();
    dev.low_power_entry_with_wakeup(efd.as_fd()).expect("entry");
    assert!(
        !bar0.fast_path_covers(reg::ID, 4),
        "no fast path in low power"
    );
    assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
    assert_eq!(
        efd.take().expect("eventfd"),
        1,
        "the read reached the device"
    );
}

// ---- Without wakeup ----------------------------------------------------------

#[test]
fn without_wakeup_accesses_are_served_and_low_power_stays_until_exit() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let bar0 = dev.region(0).expect("BAR0");
    bar0.read_at::<u32>(reg::ID).expect("read");
    dev.low_power_entry().expect("entry");
    for _ in 0..3 {
        assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
        bar0.write_at::<u32>(reg::LIVENESS, 7).expect("write");
        assert_eq!(bar0.read_at::<u32>(reg::LIVENESS).expect("read"), !7);
        assert_eq!(dev.vendor_id().expect("config read"), VENDOR_ID);
        assert!(
            !bar0.fast_path_covers(reg::ID, 4),
            "no fast path in low power"
        );
    }
    assert!(
        in_low_power(&dev),
        "accesses do not end low power without wakeup"
    );
    dev.low_power_exit().expect("exit");
    assert!(!in_low_power(&dev));
    bar0.read_at::<u32>(reg::ID).expect("read");
    assert!(bar0.fast_path_covers(reg::ID, 4), "the fast path is back");
}

#[test]
fn a_suspended_device_holds_intx_until_the_next_access() {
    let _serial = serial();
    let (c, dev) = edu().expect("edu");
    let trigger = eventfd();
    dev.irq(index::INTX)
        .expect("INTx")
        .set_eventfd(0, Some(trigger.as_fd()))
        .expect("route INTx");
    c.clock().set_manual(true);
    let bar0 = dev.region(0).expect("BAR0");
    bar0.write_at::<u32>(reg::STATUS, reg::EDU_STATUS_IRQFACT)
        .expect("interrupt when done");
    bar0.write_at::<u32>(reg::FACTORIAL, 5).expect("start");
    dev.low_power_entry().expect("entry");

    c.clock().advance(Duration::from_secs(1));
    assert_eq!(
        trigger.take().expect("eventfd"),
        0,
        "the line rose while suspended: INTx masked (pm_intx_masked)"
    );
    assert_eq!(bar0.read_at::<u32>(reg::FACTORIAL).expect("read"), 120);
    assert_eq!(
        trigger.take().expect("eventfd"),
        1,
        "the access resumed the device: unmasked, the line still high re-sends"
    );
    dev.low_power_exit().expect("exit");
}

// ---- Close and reset ---------------------------------------------------------

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn closing_the_device_ends_low_power_without_a_signal() {
    let _serial = serial();
    let (c, dev) = edu().expect("edu");
    let efd = eventfd();
    let fds = open_fds();
    dev.low_power_entry_with_wakeup(efd.as_fd()).expect("entry");
    drop(dev);
    assert_eq!(efd.take().expect("eventfd"), 0, "close signals nothing");
    assert_eq!(open_fds(), fds, "close let go of the eventfd");

    let dev = c.open_device(common::EDU).expect("reopen");
    assert!(!in_low_power(&dev), "a new open is not in low power");
    dev.low_power_entry().expect("entry without wakeup");
    dev.revoker().expect("revoker").revoke().expect("revoke");
    let dev = c.open_device(common::EDU).expect("reopen after revoke");
    assert!(!in_low_power(&dev), "a revocation closed it the same way");
    dev.vendor_id().expect("read");
    assert_eq!(efd.take().expect("eventfd"), 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn a_reset_resumes_the_device_like_any_ioctl_and_does_not_end_low_power() {
    let _serial = serial();
    let (_c, dev) = edu().expect("edu");
    let efd = eventfd();
    dev.low_power_entry_with_wakeup(efd.as_fd())
        .expect("entry with wakeup");
    dev.reset().expect("reset");
    assert_eq!(efd.take().expect("eventfd"), 1, "the reset ioctl woke it");
    assert!(!in_low_power(&dev));

    dev.low_power_entry().expect("entry without wakeup");
    dev.reset().expect("reset");
    assert!(
        in_low_power(&dev),
        "vfio_pci_ioctl_reset leaves pm_runtime_engaged alone"
    );
    dev.low_power_exit().expect("exit");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
fn a_surprise_unplug_lets_go_of_the_wakeup_eventfd() {
    let _serial = serial();
    let (c, dev) = edu().expect("edu");
    let efd = eventfd();
    let fds = open_fds();
    dev.low_power_entry_with_wakeup(efd.as_fd()).expect("entry");
    c.unplug(common::EDU).expect("unplug");
    assert_eq!(open_fds(), fds, "closed with the interrupt routes");
    let e = dev.low_power_exit().expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::DeviceGone);
    assert_eq!(efd.take().expect("eventfd"), 0);
}
