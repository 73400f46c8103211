//! The whole conformance suite against the legacy backend in the lane's
//! guest (`bash tests/vm/lane.sh`), on edu, the MSI-X device, the igb
//! NIC (a DMA engine of the H cases) and two instances of the kernel's
//! mtty sample (the migration cases); ignored on the host. The mode follows
//! the booted kernel: `legacy-type1v2` on the default kernel (the type1
//! container serves `/dev/vfio/vfio`), `legacy-iommufd-compat` on the
//! compat kernel (iommufd serves it). The report, one line per case and the
//! summary `conformance: N passed, M failed, K skipped`, goes to stdout.

use vfio_hal::{ErrorKind, Result};
use vfio_hal_conformance::{run_suite, Capabilities, Fixture, KernelFailNth, StepFaults};
use vfio_hal_guest_tests::{self as lane, KernelFlavour};
use vfio_hal_legacy::LegacyContainer;

/// The legacy container in the mode the booted kernel provides.
#[derive(Debug)]
struct LegacyFixture {
    flavour: KernelFlavour,
    edu: String,
    msix: String,
    igb: String,
    mtty: (String, String),
}

impl LegacyFixture {
    fn from_lane() -> Self {
        Self {
            flavour: lane::kernel_flavour(),
            edu: lane::lane_env(lane::EDU_BDF),
            msix: lane::lane_env(lane::MSIX_BDF),
            igb: lane::lane_env(lane::IGB_BDF),
            mtty: (
                lane::lane_env(lane::MTTY_SRC),
                lane::lane_env(lane::MTTY_DST),
            ),
        }
    }
}

impl Fixture for LegacyFixture {
    type Container = LegacyContainer;

    fn mode(&self) -> &str {
        match self.flavour {
            KernelFlavour::Default => "legacy-type1v2",
            KernelFlavour::Compat => "legacy-iommufd-compat",
        }
    }

    /// A type1 container has no IOMMU (no info, no maps) until a group is
    /// attached: attach every device's group up front, for the container's
    /// lifetime.
    fn container(&self) -> Result<LegacyContainer> {
        let container = LegacyContainer::open()?;
        container.attach(&self.edu)?;
        container.attach(&self.msix)?;
        container.attach(&self.igb)?;
        Ok(container)
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

    /// The lane's two mtty instances, each in its own emulated group,
    /// attached when the cases open them.
    fn migratable_pair(&self) -> Option<(&str, &str)> {
        Some((&self.mtty.0, &self.mtty.1))
    }

    fn capabilities(&self) -> Capabilities {
        let compat = self.flavour == KernelFlavour::Compat;
        // type1v2 refuses to cut a mapping with EINVAL, iommufd with ENOENT.
        let split_refusal = if compat {
            ErrorKind::NotMapped
        } else {
            ErrorKind::InvalidArgument
        };
        // type1 reports its migration (dirty page) capability in
        // VFIO_IOMMU_GET_INFO; iommufd's compat info does not. 16 MiB: inside
        // VT-d's first range [0, 0xfedfffff], and the 64 MiB window stays
        // below edu's 28-bit DMA mask.
        Capabilities::real_kernel(split_refusal, !compat, 0x100_0000)
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
fn conformance_suite_legacy() {
    let summary = run_suite(&LegacyFixture::from_lane());
    assert!(summary.success(), "{summary}");
}
