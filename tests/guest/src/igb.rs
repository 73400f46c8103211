//! QEMU's igb (82576) in the lane: a register its reset clears, the AER
//! error path to the ERR interrupt, and SR-IOV virtual functions. Shared by
//! every backend's lane test.

use std::io;
use std::path::Path;
use std::time::Duration;

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index::ERR;
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;

use crate::{bind_vfio_pci, pci_device_dir, request_aer_inject};

/// Receive descriptor base, low half, of queue 0 (BAR 0): writable, and 0
/// after any reset of the device (QEMU's `igb_core_reset` clears the
/// register file), so a value left there tells whether a reset happened.
pub const RDBAL0: u64 = 0xc000;

/// igb's PCI device id (the PF) and that of its virtual functions.
pub const PF_DEVICE_ID: u16 = 0x10c9;
/// The igb VF's PCI device id.
pub const VF_DEVICE_ID: u16 = 0x10ca;

/// Device Control, in the PCI Express capability.
const PCI_EXP_DEVCTL: u64 = 8;
/// Device Control: correctable, non-fatal, fatal and unsupported-request
/// error reporting enables.
const DEVCTL_ERROR_REPORTING: u16 = 0x000f;

/// How long AER recovery may take to reach vfio-pci under TCG.
const AER_TIMEOUT: Duration = Duration::from_secs(30);

/// Leaves a mark in [`RDBAL0`] and returns what the register holds then
/// (non-zero: the device keeps it until a reset).
///
/// # Panics
/// On a failed access, or when the mark does not stick.
pub fn leave_reset_mark<D: Device>(igb: &D) -> u32 {
    let bar0 = igb.region(0).expect("igb BAR 0");
    bar0.write_at::<u32>(RDBAL0, 0x1234_5600)
        .expect("write RDBAL0");
    let held = bar0.read_at::<u32>(RDBAL0).expect("read RDBAL0");
    assert_ne!(held, 0, "RDBAL0 did not keep a value");
    held
}

/// What [`RDBAL0`] holds now.
///
/// # Panics
/// On a failed access.
pub fn reset_mark<D: Device>(igb: &D) -> u32 {
    igb.region(0)
        .and_then(|r| r.read_at::<u32>(RDBAL0))
        .expect("read RDBAL0")
}

/// Routes `igb`'s ERR interrupt to an eventfd, has the host inject an
/// uncorrectable non-fatal error (`POISON_TLP`) as from the device whose
/// QEMU id is `qemu_id`, and checks the eventfd fires: the guest's AER
/// driver ran recovery and vfio-pci's `error_detected` signalled the user.
/// Returns how long that took.
///
/// # Panics
/// On a failed step (the test's failure).
pub fn err_fires_on_an_injected_error<D: Device>(igb: &D, qemu_id: &str) -> Duration {
    let err = igb.irq(ERR).expect("ERR irq info");
    assert_eq!(err.info().count, 1, "igb is PCIe: one ERR vector");
    let efd = EventFd::nonblocking().expect("eventfd");
    err.set_eventfd(0, Some(efd.as_fd())).expect("route ERR");
    assert!(
        !efd.poll(Duration::from_millis(100)).expect("poll"),
        "ERR fired before any error"
    );
    // A device reports errors only with its Device Control enables set; a
    // guest's AER driver sets them through vfio's config space, as here
    // (the lane finds them clear once vfio-pci has opened the device).
    let devctl_at = u64::from(
        igb.find_capability(cfg::CAP_ID_EXP)
            .expect("capability walk")
            .expect("igb is PCIe")
            .offset,
    ) + PCI_EXP_DEVCTL;
    let config = igb.config().expect("config region");
    let devctl = config.read_at::<u16>(devctl_at).expect("read DEVCTL");
    config
        .write_at::<u16>(devctl_at, devctl | DEVCTL_ERROR_REPORTING)
        .expect("enable error reporting");
    let start = std::time::Instant::now();
    let bdf = igb.info().name.clone();
    eprintln!("before the injection: {}", aer_registers(&bdf));
    request_aer_inject(qemu_id, "POISON_TLP").expect("inject the AER error");
    let fired = efd.poll(AER_TIMEOUT).expect("poll");
    eprintln!("after the injection: {}", aer_registers(&bdf));
    assert!(
        fired,
        "no ERR signal within {AER_TIMEOUT:?} of the injected error"
    );
    let took = start.elapsed();
    assert_eq!(efd.take().expect("read"), 1, "one error, one signal");
    config
        .write_at::<u16>(devctl_at, devctl)
        .expect("restore DEVCTL");
    err.disable().expect("unroute ERR");
    took
}

/// The error-reporting registers of the device `bdf` and of the bridge
/// above it, read from sysfs config space, for a failure's message: the
/// command register, the PCIe device control/status, bridge control, and
/// the AER capability's uncorrectable status/mask and root command/status.
pub fn aer_registers(bdf: &str) -> String {
    let dir = pci_device_dir(bdf);
    let parent = std::fs::canonicalize(&dir)
        .ok()
        .and_then(|d| d.parent().map(|p| p.to_path_buf()));
    let mut out = format!("{bdf}: {}", config_summary(&dir));
    if let Some(port) = parent {
        out += &format!("; port {}: {}", port.display(), config_summary(&port));
    }
    out
}

fn config_summary(dir: &Path) -> String {
    let Ok(cfg) = std::fs::read(dir.join("config")) else {
        return "no config".into();
    };
    let u16_at = |o: usize| {
        cfg.get(o..o + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        cfg.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut s = format!("cmd {:#06x} status {:#06x}", u16_at(0x04), u16_at(0x06));
    if cfg.get(0x0e).is_some_and(|h| h & 0x7f == 1) {
        s += &format!(" bridgectl {:#06x}", u16_at(0x3e));
    }
    // The PCI Express capability (id 0x10): device control and status.
    let mut at = usize::from(cfg.get(0x34).copied().unwrap_or(0));
    for _ in 0..48 {
        if at < 0x40 || at + 2 > cfg.len() {
            break;
        }
        if cfg[at] == 0x10 {
            s += &format!(
                " devctl {:#06x} devsta {:#06x}",
                u16_at(at + 8),
                u16_at(at + 10)
            );
        }
        at = usize::from(cfg[at + 1]);
    }
    // The AER extended capability (id 0x0001).
    let mut at = 0x100;
    for _ in 0..64 {
        let header = u32_at(at);
        if header == 0 || header == u32::MAX {
            break;
        }
        if header & 0xffff == 1 {
            s += &format!(
                " uncor_status {:#x} uncor_mask {:#x} root_cmd {:#x} root_status {:#x}",
                u32_at(at + 4),
                u32_at(at + 8),
                u32_at(at + 0x2c),
                u32_at(at + 0x30)
            );
        }
        at = (header >> 20) as usize;
        if at < 0x100 {
            break;
        }
    }
    s
}

/// SR-IOV virtual functions of a PF bound to vfio-pci, created through
/// `sriov_numvfs` (vfio-pci needs `enable_sriov`), each bound to
/// vfio-pci; removed again on drop.
#[derive(Debug)]
pub struct VirtualFunctions {
    pf: String,
    vfs: Vec<String>,
}

impl VirtualFunctions {
    /// Creates `count` VFs of `pf` and binds them to vfio-pci.
    ///
    /// # Errors
    /// When sysfs refuses (no SR-IOV, vfio-pci without `enable_sriov`).
    pub fn create(pf: &str, count: u32) -> io::Result<Self> {
        let dir = pci_device_dir(pf);
        std::fs::write(dir.join("sriov_numvfs"), count.to_string())?;
        let this = Self {
            pf: pf.to_owned(),
            vfs: (0..count)
                .map(|i| link_name(&dir.join(format!("virtfn{i}"))))
                .collect::<io::Result<_>>()?,
        };
        for vf in &this.vfs {
            bind_vfio_pci(vf)?;
        }
        Ok(this)
    }

    /// The VFs' PCI addresses.
    pub fn addresses(&self) -> &[String] {
        &self.vfs
    }
}

impl Drop for VirtualFunctions {
    fn drop(&mut self) {
        let path = pci_device_dir(&self.pf).join("sriov_numvfs");
        if let Err(e) = std::fs::write(&path, "0") {
            eprintln!("removing the VFs of {}: {e}", self.pf);
        }
    }
}

/// The last component of the symlink at `link` (a PCI address).
fn link_name(link: &Path) -> io::Result<String> {
    let target = std::fs::read_link(link)?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("{} is no device link", link.display())))
}
