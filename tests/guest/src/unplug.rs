//! Hot-unplug of a device in use, answered the way a VMM answers it: the
//! host's `device_del` reaches the driver as the device's REQ interrupt, the
//! driver revokes the device ([`vfio_hal::revoke`]) from the thread that saw
//! REQ while another thread is still reading a BAR, that reader's next
//! access fails with `DeviceGone`, and the kernel removes the device while
//! the revoked handles still exist. One scenario for every backend's lane
//! test; it panics (fails the test) on the first deviation.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index::REQ;
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::ErrorKind;

/// edu's identification register (BAR0 + 0): `0x010000ed`.
const EDU_IDENT: u32 = 0x0100_00ed;
/// How long QEMU, the guest's pciehp and vfio-pci may take for each step.
const STEP: Duration = Duration::from_secs(60);

/// What [`unplug_while_in_use`] saw.
#[derive(Debug, Clone, Copy)]
pub struct UnplugReport {
    /// BAR reads the reader thread completed before the revocation.
    pub reads_before: u64,
    /// From `device_del` to the REQ interrupt.
    pub req_after: Duration,
    /// From the revocation to the device's removal from the guest.
    pub removed_after: Duration,
}

/// Unplugs `device` (an open QEMU edu whose QEMU id is `id` and PCI
/// address `bdf`) while a thread reads its BAR 0, and checks every step:
/// REQ arrives; after [`vfio_hal::Revoker::revoke`] the reader and every
/// further operation get `DeviceGone`; the device leaves the guest while
/// the handles are alive; dropping them is clean. Prints the report as an
/// `unplug(<backend>, <kernel>)` line on stdout (past libtest's capture).
///
/// # Panics
/// On any deviation, with what was expected.
pub fn unplug_while_in_use<D>(backend: &str, device: D, id: &str, bdf: &str) -> UnplugReport
where
    D: Device,
    D::Region: Send + 'static,
{
    device
        .update_command(cfg::CMD_MEMORY, 0)
        .expect("enable memory decode");
    let bar0 = device.region(0).expect("BAR 0");
    assert_eq!(bar0.read_at::<u32>(0).expect("ident"), EDU_IDENT);
    let req = device.irq(REQ).expect("the REQ irq index");
    let req_fd = EventFd::nonblocking().expect("eventfd");
    req.set_eventfd(0, Some(req_fd.as_fd()))
        .expect("route REQ to an eventfd");
    let revoker = device.revoker().expect("a revoker");

    // The device in use: a "vCPU" reading BAR 0 until the device is gone.
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let reads = Arc::clone(&reads);
        std::thread::spawn(move || loop {
            match bar0.read_at::<u32>(0) {
                Ok(EDU_IDENT) => {
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => return Err(format!("BAR 0 read {other:#x}, not edu's ident")),
                Err(e) => return Ok(e),
            }
        })
    };
    let start = Instant::now();
    while reads.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < STEP, "the reader thread never read BAR 0");
        std::thread::sleep(Duration::from_millis(1));
    }

    let asked = Instant::now();
    crate::request_unplug(id).unwrap_or_else(|e| panic!("device_del {id}: {e}"));
    let fired = req_fd.wait(STEP).expect("wait for REQ");
    assert!(fired > 0, "no REQ interrupt within {STEP:?} of device_del");
    let req_after = asked.elapsed();
    assert!(
        crate::pci_device_dir(bdf).exists(),
        "{bdf} was removed before its user let go"
    );

    let revoked = Instant::now();
    revoker.revoke().expect("revoke");
    let seen = reader
        .join()
        .expect("the reader thread panicked")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        seen.kind(),
        ErrorKind::DeviceGone,
        "the reader's error after the revocation: {seen}"
    );
    let reads_before = reads.load(Ordering::Relaxed);
    let gone = |what: &str, r: vfio_hal::Result<()>| match r {
        Err(e) if e.kind() == ErrorKind::DeviceGone => {}
        other => panic!("{what} after the revocation: expected DeviceGone, got {other:?}"),
    };
    gone("region(0)", device.region(0).map(drop));
    gone("config read", device.vendor_id().map(drop));
    gone("REQ disable", req.disable());
    gone("reset", device.reset());

    // The kernel completes the removal with the revoked handles still held.
    let start = Instant::now();
    while crate::pci_device_dir(bdf).exists() {
        assert!(
            start.elapsed() < STEP,
            "{bdf} still present {STEP:?} after the revocation, handles held"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let removed_after = revoked.elapsed();
    assert!(revoker.is_revoked());
    drop(req);
    drop(device);
    revoker.revoke().expect("revoke with nothing left");
    let report = UnplugReport {
        reads_before,
        req_after,
        removed_after,
    };
    let kernel = std::env::var(crate::KERNEL).unwrap_or_default();
    let _ = writeln!(
        std::io::stdout().lock(),
        "unplug({backend}, {kernel}): {report:?}"
    );
    report
}
