//! Helpers for tests that run inside the real-kernel lane's QEMU guest.
//!
//! `bash tests/vm/lane.sh` (see `docs/VM-LANE.md`) boots a small Linux guest
//! whose kernel has real VFIO, iommufd and vfio-pci, behind QEMU's emulated
//! Intel IOMMU. Its `/init` binds the lane's devices to vfio-pci and runs the
//! test binaries of every crate listed in `GUEST_TEST_PACKAGES` (top of
//! `tests/vm/lane.py`), one test at a time, with these environment variables:
//!
//! | variable | value |
//! |---|---|
//! | [`EDU_BDF`] | PCI address of QEMU's `edu` device (1234:11e8), bound to vfio-pci |
//! | [`MSIX_BDF`] | PCI address of an MSI-X capable device (QEMU NVMe, 1b36:0010), bound to vfio-pci |
//! | [`SPARE_BDF`] | a second `edu` behind a hotplug root port, bound to vfio-pci: the legacy backend's unplug test |
//! | [`SPARE2_BDF`] | a third `edu` behind a second root port: the iommufd backend's unplug test |
//! | [`SPARE3_BDF`], [`SPARE4_BDF`] | two more `edu`s behind their own root ports: `kvm_vmm`'s unplug of a device passed through to a KVM guest, legacy and iommufd backend |
//! | [`PEER_BDF`] | an `edu` behind a fifth root port, never unplugged: the peer of peer-to-peer DMA |
//! | [`IGB_BDF`] | QEMU's `igb` NIC (8086:10c9) alone behind a sixth root port: hot reset (its registers show the reset), PCIe with AER (the ERR interrupt), SR-IOV (VF tokens), a PCI PM capability |
//! | [`EDU_ID`], [`MSIX_ID`], [`SPARE_ID`] … [`SPARE4_ID`], [`IGB_ID`] | their QEMU ids, for [`request_unplug`] and [`request_aer_inject`] |
//! | [`IGB_PORT_ID`] | the QEMU id of the igb's root port, for [`request_aer_inject`] |
//! | [`MTTY_SRC`], [`MTTY_DST`] | UUIDs of two instances of the kernel's mtty sample (`mtty-2`, a dual-port virtual serial card with VFIO migration v2), created through sysfs: the source and the destination of the migration tests |
//! | [`KERNEL`] | `default` (type1 container + iommufd + cdev) or `compat` (iommufd serves `/dev/vfio/vfio`) |
//!
//! Tests that only make sense in the guest are marked
//! `#[cfg_attr(not(vfio_hal_guest), ignore = "needs the real-kernel lane: bash tests/vm/lane.sh")]`:
//! the lane compiles them with `--cfg vfio_hal_guest`, so a plain
//! `cargo test` on the host lists them as ignored with that reason.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod igb;
pub mod mtty;
pub mod peer;
pub mod sys;
pub mod unplug;

/// Environment variable: PCI address (`0000:00:01.0`) of the `edu` device.
pub const EDU_BDF: &str = "VFIO_HAL_EDU_BDF";
/// Environment variable: PCI address of the MSI-X capable device (QEMU NVMe).
pub const MSIX_BDF: &str = "VFIO_HAL_MSIX_BDF";
/// Environment variable: PCI address of the spare `edu`, which the legacy
/// backend's unplug test removes ([`unplug::unplug_while_in_use`]).
pub const SPARE_BDF: &str = "VFIO_HAL_SPARE_BDF";
/// Environment variable: PCI address of the second spare `edu`, which the
/// iommufd backend's unplug test removes.
pub const SPARE2_BDF: &str = "VFIO_HAL_SPARE2_BDF";
/// Environment variable: QEMU id of the second spare `edu`.
pub const SPARE2_ID: &str = "VFIO_HAL_SPARE2_ID";
/// Environment variable: PCI address of the third spare `edu`, which the
/// facade's `kvm_vmm` example unplugs while a KVM guest uses it (legacy
/// backend).
pub const SPARE3_BDF: &str = "VFIO_HAL_SPARE3_BDF";
/// Environment variable: QEMU id of the third spare `edu`.
pub const SPARE3_ID: &str = "VFIO_HAL_SPARE3_ID";
/// Environment variable: PCI address of the fourth spare `edu`, which the
/// facade's `kvm_vmm` example unplugs while a KVM guest uses it (iommufd
/// backend).
pub const SPARE4_BDF: &str = "VFIO_HAL_SPARE4_BDF";
/// Environment variable: QEMU id of the fourth spare `edu`.
pub const SPARE4_ID: &str = "VFIO_HAL_SPARE4_ID";
/// Environment variable: PCI address of the `edu` behind its own root
/// port that stays for the whole boot: the peer of peer-to-peer DMA.
pub const PEER_BDF: &str = "VFIO_HAL_PEER_BDF";
/// Environment variable: PCI address of QEMU's igb (the SR-IOV PF).
pub const IGB_BDF: &str = "VFIO_HAL_IGB_BDF";
/// Environment variable: QEMU id of the igb.
pub const IGB_ID: &str = "VFIO_HAL_IGB_ID";
/// Environment variable: QEMU id of the igb's root port, into which
/// [`request_aer_inject`] injects errors.
pub const IGB_PORT_ID: &str = "VFIO_HAL_IGB_PORT_ID";
/// Environment variable: QEMU id of the `edu` device.
pub const EDU_ID: &str = "VFIO_HAL_EDU_ID";
/// Environment variable: QEMU id of the MSI-X capable device.
pub const MSIX_ID: &str = "VFIO_HAL_MSIX_ID";
/// Environment variable: QEMU id of the spare `edu`.
pub const SPARE_ID: &str = "VFIO_HAL_SPARE_ID";
/// Environment variable: UUID of the first mtty instance (`mtty-2`, two
/// ports): the source of the migration tests.
pub const MTTY_SRC: &str = "VFIO_HAL_MTTY_SRC";
/// Environment variable: UUID of the second mtty instance: the destination.
pub const MTTY_DST: &str = "VFIO_HAL_MTTY_DST";
/// Environment variable: the guest kernel's flavour, `default` or `compat`.
pub const KERNEL: &str = "VFIO_HAL_KERNEL";

/// The serial port on which the guest talks to the lane's host driver.
pub const CONTROL_PORT: &str = "/dev/ttyS1";

/// How long [`request_unplug`] waits for the host's answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which guest kernel the lane booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlavour {
    /// `VFIO_CONTAINER=y`: the type1 container serves `/dev/vfio/vfio`;
    /// iommufd and the device cdev are there too.
    Default,
    /// `IOMMUFD_VFIO_CONTAINER=y`: iommufd serves `/dev/vfio/vfio`.
    Compat,
}

/// Reads one of the lane's environment variables.
///
/// # Panics
/// When it is not set, i.e. outside the lane.
pub fn lane_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test runs inside the real-kernel lane (bash tests/vm/lane.sh)"
        )
    })
}

/// The booted kernel's flavour, from [`KERNEL`].
///
/// # Panics
/// Outside the lane, or when the variable holds an unknown flavour.
pub fn kernel_flavour() -> KernelFlavour {
    match lane_env(KERNEL).as_str() {
        "default" => KernelFlavour::Default,
        "compat" => KernelFlavour::Compat,
        other => panic!("{KERNEL}={other}: expected default or compat"),
    }
}

/// The sysfs directory of a PCI device, `/sys/bus/pci/devices/<bdf>`.
pub fn pci_device_dir(bdf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(bdf)
}

/// Asks the host to hot-unplug the device whose QEMU id is `id` (QMP
/// `device_del`).
///
/// Returns once QEMU accepted the request; the guest kernel then removes the
/// device on its own schedule (see [`wait_until_removed`]). Bound to vfio-pci
/// and opened, the device first gets a request interrupt (`VFIO_PCI_REQ_IRQ_INDEX`)
/// and is only removed once the user lets go of it.
///
/// # Errors
/// When the control port cannot be used, the host does not answer in time,
/// or refuses (unknown id, QMP error); the error carries the host's reason.
pub fn request_unplug(id: &str) -> io::Result<()> {
    let reply = control_request(&format!("DEVICE_DEL {id}"))?;
    if reply == "OK" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "host refused DEVICE_DEL {id}: {reply}"
        )))
    }
}

/// Asks the host to inject a PCIe AER error into the device whose QEMU id
/// is `id` (HMP `pcie_aer_inject_error <id> <error>`), e.g. `POISON_TLP`
/// (uncorrectable, non-fatal by default). The device records it; QEMU sends
/// the error message up to the root port only as far as each function's
/// error-reporting enables allow, and the guest's AER driver then runs
/// recovery, which vfio-pci answers by signalling the ERR eventfd.
///
/// # Errors
/// As [`request_unplug`]; the error carries what QEMU said.
pub fn request_aer_inject(id: &str, error: &str) -> io::Result<()> {
    let reply = control_request(&format!("AER_INJECT {id} {error}"))?;
    if reply == "OK" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "host refused AER_INJECT {id} {error}: {reply}"
        )))
    }
}

/// Binds the PCI device `bdf` to vfio-pci (driver_override, then a probe),
/// as the lane's /init does for its devices; for devices that appear
/// during a test (SR-IOV virtual functions).
///
/// # Errors
/// When sysfs refuses, or the device ends up without vfio-pci.
pub fn bind_vfio_pci(bdf: &str) -> io::Result<()> {
    let dir = pci_device_dir(bdf);
    if let Ok(driver) = std::fs::read_link(dir.join("driver")) {
        if driver.file_name().is_some_and(|n| n == "vfio-pci") {
            return Ok(());
        }
        std::fs::write(dir.join("driver/unbind"), bdf)?;
    }
    std::fs::write(dir.join("driver_override"), "vfio-pci")?;
    std::fs::write("/sys/bus/pci/drivers_probe", bdf)?;
    let driver = std::fs::read_link(dir.join("driver"))?;
    if driver.file_name().is_some_and(|n| n == "vfio-pci") {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{bdf} bound to {driver:?}, not vfio-pci"
        )))
    }
}

/// A PCI device's runtime power-management status
/// (`power/runtime_status`: `active`, `suspended`, …).
///
/// # Errors
/// When sysfs has no such file (a kernel without `CONFIG_PM`).
pub fn runtime_pm_status(bdf: &str) -> io::Result<String> {
    Ok(
        std::fs::read_to_string(pci_device_dir(bdf).join("power/runtime_status"))?
            .trim()
            .to_owned(),
    )
}

/// Polls sysfs until the PCI device `bdf` is gone; `false` on timeout.
pub fn wait_until_removed(bdf: &str, timeout: Duration) -> bool {
    let dir = pci_device_dir(bdf);
    let deadline = Instant::now() + timeout;
    while dir.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Checks that a request fits the line protocol: one line, no control bytes.
fn check_request(line: &str) -> io::Result<()> {
    if line.is_empty() || line.chars().any(|c| c.is_control()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad control request {line:?}"),
        ));
    }
    Ok(())
}

/// Sends one request line on [`CONTROL_PORT`] and returns the host's one-line reply.
fn control_request(line: &str) -> io::Result<String> {
    static PORT: Mutex<()> = Mutex::new(());
    check_request(line)?;
    let _serialised = PORT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(CONTROL_PORT)?;
    // Raw mode; reads return after at most 1 s without data.
    sys::make_raw(port.as_fd(), 10)?;
    port.write_all(format!("{line}\n").as_bytes())?;
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if port.read(&mut byte)? == 1 {
            match byte[0] {
                b'\n' => break,
                b'\r' => {}
                b => reply.push(b),
            }
        } else if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from the host to {line:?} on {CONTROL_PORT}"),
            ));
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_single_lines() {
        assert!(check_request("DEVICE_DEL edu-spare").is_ok());
        assert!(check_request("DEVICE_DEL a\nDEVICE_DEL b").is_err());
        assert!(check_request("").is_err());
    }
}
