//! The whole conformance suite against native iommufd ([`IoasContainer`] and
//! cdev devices) in the lane's guest (`bash tests/vm/lane.sh`), on edu and
//! the MSI-X device; ignored on the host. The report, one line per case and
//! the summary `conformance: N passed, M failed, K skipped`, goes straight to
//! stdout, so the lane's log shows it whether the test passes or not.

use std::time::Duration;

use vfio_hal::{ErrorKind, Result};
use vfio_hal_conformance::{
    run_suite, Capabilities, Fixture, KernelFailNth, SplitUnmap, StepFaults,
};
use vfio_hal_iommufd::IoasContainer;

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
        Some(&KernelFailNth)
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
