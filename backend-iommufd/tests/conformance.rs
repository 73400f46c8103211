//! The whole conformance suite against native iommufd ([`IoasContainer`] and
//! cdev devices) in the lane's guest (`bash tests/vm/lane.sh`), on edu and
//! the MSI-X device; ignored on the host. The report, one line per case and
//! the summary `conformance: N passed, M failed, K skipped`, goes straight to
//! stdout, so the lane's log shows it whether the test passes or not.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::time::Duration;

use vfio_hal::{Error, ErrorKind, Result, Target};
use vfio_hal_conformance::{run_suite, Capabilities, Fixture, SplitUnmap, StepFaults};
use vfio_hal_iommufd::IoasContainer;

/// The kernel's per-thread fault injection: the Nth `should_fail()` point
/// this thread reaches fails. With `CONFIG_FAULT_INJECTION` and
/// `CONFIG_IOMMUFD_TEST` (both in the lane's kernels) those are iommufd's own
/// injection points — page pinning, area and domain allocation — i.e. the
/// steps inside this backend's ioctls.
#[derive(Debug)]
struct FailNth;

const FAIL_NTH: &str = "/proc/thread-self/fail-nth";

fn proc_error(e: &std::io::Error) -> Error {
    Error::from_io("fail-nth", Target::Path(FAIL_NTH.into()), e)
}

impl StepFaults for FailNth {
    fn arm(&self, nth: u64) -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(FAIL_NTH)
            .map_err(|e| proc_error(&e))?;
        file.write_all(nth.to_string().as_bytes())
            .map_err(|e| proc_error(&e))
    }

    fn disarm(&self) -> Result<bool> {
        // procfs does not seek this file: one open to read, one to write.
        let mut text = String::new();
        OpenOptions::new()
            .read(true)
            .open(FAIL_NTH)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| proc_error(&e))?;
        // 0: the armed point was reached and failed; N > 0: N more to go.
        let left: u64 = text.trim().parse().map_err(|_| Error::InvalidArgument {
            op: "fail-nth",
            target: Target::Path(FAIL_NTH.into()),
            reason: "not a number",
        })?;
        OpenOptions::new()
            .write(true)
            .open(FAIL_NTH)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(|e| proc_error(&e))?;
        Ok(left == 0)
    }
}

/// Native iommufd: a fresh IOAS per container, devices through their cdevs.
#[derive(Debug)]
struct IommufdFixture {
    edu: String,
    msix: String,
}

impl IommufdFixture {
    fn from_lane() -> Self {
        let var = |v: &str| {
            std::env::var(v).unwrap_or_else(|_| {
                panic!("{v} is not set: this test runs in the real-kernel lane (bash tests/vm/lane.sh)")
            })
        };
        Self {
            edu: var("VFIO_HAL_EDU_BDF"),
            msix: var("VFIO_HAL_MSIX_BDF"),
        }
    }
}

impl Fixture for IommufdFixture {
    type Container = IoasContainer;

    fn mode(&self) -> &str {
        "iommufd"
    }

    fn container(&self) -> Result<IoasContainer> {
        IoasContainer::open()
    }

    fn edu(&self) -> &str {
        &self.edu
    }

    fn msix_device(&self) -> Option<&str> {
        Some(&self.msix)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // iommufd refuses to cut a mapping: ENOENT.
            split_unmap: SplitUnmap::Refused(ErrorKind::NotMapped),
            unmap_all: true,
            // Dirty tracking is a HWPT property in iommufd, probed per device
            // (HwInfo::dirty_tracking_supported); the IOAS container reports
            // no type1 migration capability, and the lane's VT-d has none.
            dirty_tracking: false,
            region_mmap: true,
            // The kernel logs DMAR faults; it does not count them for us.
            iommu_faults_observable: false,
            // QEMU's edu has no reset handler.
            reset_restores_registers: false,
            // The kernel's virqfd reacts to a resample write at once.
            resample_lazy: false,
            // 16 MiB: inside VT-d's first range [0, 0xfedfffff], and the
            // 64 MiB window stays below edu's 28-bit DMA mask.
            iova_base: 0x100_0000,
            // TCG is slow; edu's DMA timer alone is 100 ms of virtual time.
            timeout: Duration::from_secs(20),
            quiet: Duration::from_millis(200),
        }
    }

    fn step_faults(&self) -> Option<&dyn StepFaults> {
        Some(&FailNth)
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn conformance_suite_iommufd() {
    let summary = run_suite(&IommufdFixture::from_lane());
    assert!(summary.success(), "{summary}");
}
