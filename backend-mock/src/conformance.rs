//! The mock as a fixture of the conformance suite (feature `conformance`):
//! QEMU's edu model, the MSI-X copy engine and two migratable edus plugged
//! into every container.
//!
//! Everything mock-specific of the suite lives here; the cases only see
//! [`Fixture`], and the generic suite does not depend on this crate.

use std::time::Duration;

use vfio_hal::{ErrorKind, Result};
use vfio_hal_conformance::fixture::{Capabilities, Fixture, SplitUnmap, Unplug};

use crate::models::{CopyEngine, Edu};
use crate::{IommuConfig, MockContainer};

/// The mock backend as a conformance fixture.
///
/// ```
/// use vfio_hal_conformance::run_suite;
/// use vfio_hal_mock::conformance::MockFixture;
///
/// let summary = run_suite(&MockFixture::new());
/// assert_eq!(summary.failed(), 0, "{summary}");
/// ```
#[derive(Debug, Clone)]
pub struct MockFixture {
    mode: String,
    config: IommuConfig,
}

impl Default for MockFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl MockFixture {
    /// The name edu is plugged under.
    pub const EDU: &'static str = "edu";
    /// The name the copy engine is plugged under.
    pub const COPY_ENGINE: &'static str = "copy-engine";
    /// The names the migratable edus are plugged under: the source and the
    /// destination of the migration cases.
    pub const MIGRATABLE: (&'static str, &'static str) =
        ("edu-migration-source", "edu-migration-destination");
    /// Where the cases' IOVA window starts: 1 MiB, clear of page 0.
    pub const IOVA_BASE: u64 = 0x10_0000;

    /// Mode `mock`: the default IOMMU (x86 ranges, 4 KiB pages, type1v2 rules).
    pub fn new() -> Self {
        Self::with_config("mock", IommuConfig::default())
    }

    /// Mode `name` with this IOMMU configuration (for example
    /// `allow_split_unmap`, or another page size: the declared capabilities
    /// follow the configuration).
    pub fn with_config(name: &str, config: IommuConfig) -> Self {
        Self {
            mode: name.to_owned(),
            config,
        }
    }
}

impl Fixture for MockFixture {
    type Container = MockContainer;

    fn mode(&self) -> &str {
        &self.mode
    }

    fn container(&self) -> Result<MockContainer> {
        let c = MockContainer::with_config(self.config.clone())?;
        c.plug(Self::EDU, Edu::new())?;
        c.plug(Self::COPY_ENGINE, CopyEngine::new())?;
        c.plug(Self::MIGRATABLE.0, Edu::new().migratable())?;
        c.plug(Self::MIGRATABLE.1, Edu::new().migratable())?;
        Ok(c)
    }

    fn edu(&self) -> &str {
        Self::EDU
    }

    fn msix_device(&self) -> Option<&str> {
        Some(Self::COPY_ENGINE)
    }

    fn copy_engine(&self) -> Option<&str> {
        Some(Self::COPY_ENGINE)
    }

    fn migratable_pair(&self) -> Option<(&str, &str)> {
        Some(Self::MIGRATABLE)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            split_unmap: if self.config.allow_split_unmap {
                SplitUnmap::Allowed
            } else {
                // The mock follows type1v2: EINVAL.
                SplitUnmap::Refused(ErrorKind::InvalidArgument)
            },
            unmap_all: true,
            dirty_tracking: true,
            dirty_pages_exact: true,
            region_mmap: true,
            iommu_faults_observable: true,
            // No thread watches the resample eventfd; the next access does.
            resample_lazy: true,
            iova_base: Self::IOVA_BASE.next_multiple_of(self.config.page_size.max(1)),
            // Virtual time: completions are immediate, nothing is late.
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(20),
        }
    }

    fn iommu_faults(&self, container: &MockContainer) -> Option<u64> {
        Some(container.iommu().fault_count())
    }

    fn live_mappings(&self, container: &MockContainer) -> Option<usize> {
        Some(container.mapping_count())
    }

    fn unplug(&self, container: &MockContainer, device: &str, how: Unplug) -> Option<Result<()>> {
        Some(match how {
            Unplug::Request => container.request_unplug(device).map(drop),
            Unplug::Surprise => container.unplug(device),
        })
    }
}
