//! QEMU's igb (82576) in the lane: a register its reset clears, the AER
//! error path to the ERR interrupt, and SR-IOV virtual functions. Shared by
//! every backend's lane test.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index::ERR;
use vfio_hal::pci::{cfg, walk_capabilities, walk_extended_capabilities};
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

/// Device Control and Device Status, in the PCI Express capability.
const PCI_EXP_DEVCTL: usize = 8;
const PCI_EXP_DEVSTA: usize = 10;
/// Bridge Control (type 1 header) and its SERR# forwarding enable.
const PCI_BRIDGE_CONTROL: u64 = 0x3e;
const BRIDGE_CTL_SERR: u16 = 1 << 1;
/// Command register: SERR# enable.
const CMD_SERR: u16 = 1 << 8;

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
/// uncorrectable non-fatal error (`POISON_TLP`) into igb's root port, whose
/// QEMU id is `port_qemu_id`, and checks the eventfd fires once: the
/// guest's AER driver ran recovery for everything below the port, and
/// vfio-pci's `error_detected` signalled the user. Returns how long that
/// took.
///
/// The error is the port's, not igb's own: QEMU's igb has no writable
/// error-reporting enables in Device Control (they read 0 whatever is
/// written), and QEMU sends an error message up only from a function whose
/// enables allow it. The port has them (Linux's AER driver sets them);
/// QEMU also wants the port's Command SERR# enable and Bridge Control
/// SERR# forwarding, which this sets as platform firmware would, and
/// restores afterwards.
///
/// # Panics
/// On a failed step (the test's failure).
pub fn err_fires_on_an_error_at_its_port<D: Device>(igb: &D, port_qemu_id: &str) -> Duration {
    let err = igb.irq(ERR).expect("ERR irq info");
    assert_eq!(err.info().count, 1, "igb is PCIe: one ERR vector");
    let efd = EventFd::nonblocking().expect("eventfd");
    err.set_eventfd(0, Some(efd.as_fd())).expect("route ERR");
    assert!(
        !efd.poll(Duration::from_millis(100)).expect("poll"),
        "ERR fired before any error"
    );
    let bdf = igb.info().name.clone();
    let port = upstream_port(&bdf).expect("igb's root port in sysfs");
    let command = SysfsConfig::at(&port)
        .set_bits(cfg::COMMAND, CMD_SERR)
        .expect("enable the port's SERR#");
    let bridge_control = SysfsConfig::at(&port)
        .set_bits(PCI_BRIDGE_CONTROL, BRIDGE_CTL_SERR)
        .expect("enable the port's SERR# forwarding");
    eprintln!("before the injection: {}", aer_registers(&bdf));
    let start = std::time::Instant::now();
    request_aer_inject(port_qemu_id, "POISON_TLP").expect("inject the AER error");
    let fired = efd.poll(AER_TIMEOUT).expect("poll");
    let took = start.elapsed();
    eprintln!("after the injection: {}", aer_registers(&bdf));
    let restored = SysfsConfig::at(&port)
        .write_u16(cfg::COMMAND, command)
        .and_then(|()| SysfsConfig::at(&port).write_u16(PCI_BRIDGE_CONTROL, bridge_control));
    err.disable().expect("unroute ERR");
    assert!(
        fired,
        "no ERR signal within {AER_TIMEOUT:?} of the injected error"
    );
    assert_eq!(efd.take().expect("read"), 1, "one error, one signal");
    restored.expect("restore the port's SERR# enables");
    took
}

/// The sysfs directory of the bridge above the PCI device `bdf`.
fn upstream_port(bdf: &str) -> io::Result<PathBuf> {
    let dir = std::fs::canonicalize(pci_device_dir(bdf))?;
    dir.parent()
        .filter(|p| p.join("config").exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{bdf} has no bridge")))
}

/// A device's config space through sysfs: for the ports above the lane's
/// devices, which no test opens through vfio.
struct SysfsConfig<'a>(&'a Path);

impl<'a> SysfsConfig<'a> {
    fn at(dir: &'a Path) -> Self {
        Self(dir)
    }

    fn read_u16(&self, offset: u64) -> io::Result<u16> {
        let mut word = [0u8; 2];
        std::fs::File::open(self.0.join("config"))?.read_exact_at(&mut word, offset)?;
        Ok(u16::from_le_bytes(word))
    }

    fn write_u16(&self, offset: u64, value: u16) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.0.join("config"))?;
        file.write_all_at(&value.to_le_bytes(), offset)
    }

    /// Sets `bits` in the word at `offset`; returns the word before.
    fn set_bits(&self, offset: u64, bits: u16) -> io::Result<u16> {
        let before = self.read_u16(offset)?;
        self.write_u16(offset, before | bits)?;
        Ok(before)
    }
}

/// The error-reporting registers of the device `bdf` and of the bridge
/// above it, read from sysfs config space, for a failure's message: the
/// command register, the PCIe device control/status, bridge control, and
/// the AER capability's uncorrectable status/mask and root command/status.
pub fn aer_registers(bdf: &str) -> String {
    let mut out = format!("{bdf}: {}", config_summary(&pci_device_dir(bdf)));
    if let Ok(port) = upstream_port(bdf) {
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
    let caps = walk_capabilities(&cfg).unwrap_or_default();
    if let Some(exp) = caps.iter().find(|c| c.id == cfg::CAP_ID_EXP) {
        let at = usize::from(exp.offset);
        s += &format!(
            " devctl {:#06x} devsta {:#06x}",
            u16_at(at + PCI_EXP_DEVCTL),
            u16_at(at + PCI_EXP_DEVSTA)
        );
    }
    let ext = walk_extended_capabilities(&cfg).unwrap_or_default();
    if let Some(aer) = ext.iter().find(|c| c.id == cfg::EXT_CAP_ID_ERR) {
        let at = usize::from(aer.offset);
        s += &format!(
            " uncor_status {:#x} uncor_mask {:#x} root_cmd {:#x} root_status {:#x}",
            u32_at(at + 4),
            u32_at(at + 8),
            u32_at(at + 0x2c),
            u32_at(at + 0x30)
        );
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
