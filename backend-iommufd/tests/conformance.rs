//! The whole conformance suite against native iommufd ([`IoasContainer`] and
//! cdev devices) in the lane's guest (`bash tests/vm/lane.sh`), on edu, the
//! MSI-X device, the igb NIC (a DMA engine of the H cases) and two
//! instances of the kernel's mtty sample (the migration cases); ignored on
//! the host. The report, one line per case and the summary
//! `conformance: N passed, M failed, K skipped`, goes straight to stdout, so
//! the lane's log shows it whether the test passes or not.

use vfio_hal::{ErrorKind, Result};
use vfio_hal_conformance::{run_suite, Capabilities, Fixture, KernelFailNth, StepFaults};
use vfio_hal_iommufd::IoasContainer;

/// Native iommufd: a fresh IOAS per container, devices through their cdevs.
#[derive(Debug)]
struct IommufdFixture {
    edu: String,
    msix: String,
    igb: String,
    mtty: (String, String),
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
            igb: var("VFIO_HAL_IGB_BDF"),
            mtty: (var("VFIO_HAL_MTTY_SRC"), var("VFIO_HAL_MTTY_DST")),
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

    fn igb(&self) -> Option<&str> {
        Some(&self.igb)
    }

    /// The lane's two mtty instances: emulated devices, bound through
    /// their cdevs to the IOAS like any other.
    fn migratable_pair(&self) -> Option<(&str, &str)> {
        Some((&self.mtty.0, &self.mtty.1))
    }

    fn capabilities(&self) -> Capabilities {
        // iommufd refuses to cut a mapping with ENOENT. Dirty tracking is a
        // HWPT property in iommufd, probed per device; the IOAS container
        // reports no type1 migration capability, and the lane's VT-d has
        // none. 16 MiB: inside VT-d's first range [0, 0xfedfffff], and the
        // 64 MiB window stays below edu's 28-bit DMA mask.
        Capabilities::real_kernel(ErrorKind::NotMapped, false, 0x100_0000)
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
