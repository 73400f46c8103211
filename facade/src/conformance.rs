//! Running the conformance suite against a device an operator names.
//!
//! [`RealFixture`] makes any real backend a `vfio_hal_conformance::Fixture`
//! for a QEMU edu (and optionally an MSI-X device) given by PCI address,
//! declaring what the backend does where backends legitimately differ
//! from one probe of the kernel. [`select`] picks the cases to run from
//! the effects each case declares where it is registered
//! ([`vfio_hal_conformance::Effects`]): [`Selection::NonDestructive`]
//! leaves out every case that resets, unplugs or revokes the device, makes
//! it DMA, or fails hal calls halfway through an operation (the fault
//! sweeps). What remains reads info and config space, maps host buffers
//! into the IOMMU, toggles bus mastering and routes and raises interrupts —
//! all undone by the end of each case.
//!
//! ```
//! use vfio_hal_mock::conformance::MockFixture;
//! use vfio_hal_facade::conformance::{select, Selection};
//!
//! let all = vfio_hal_conformance::cases::all::<MockFixture>();
//! let plan = select(all, &Selection::NonDestructive)?;
//! assert!(plan.run.iter().all(|c| c.id != "D07_reset"));
//! assert!(plan.left_out.iter().any(|(id, why)| *id == "D07_reset" && why.contains("resets")));
//! # Ok::<(), vfio_hal_facade::conformance::NoSuchCase>(())
//! ```

use std::fmt;

use vfio_hal::dynamic::DynContainer;
use vfio_hal::{Container, Error, IommuInfo, Target};
use vfio_hal_conformance::fixture::IOVA_WINDOW;
use vfio_hal_conformance::{Capabilities, Case, Fixture};

use crate::backend::Backend;
use crate::host::Host;
use crate::open::open_container;

/// Which cases run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every case.
    All,
    /// Every case whose declared effects are not destructive
    /// ([`vfio_hal_conformance::Effects::is_destructive`]).
    NonDestructive,
    /// The cases whose ids start with one of these prefixes (ASCII case ignored).
    Prefixes(Vec<String>),
}

impl Selection {
    /// `all`, `non-destructive` or `cases`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::NonDestructive => "non-destructive",
            Self::Prefixes(_) => "cases",
        }
    }
}

fn starts_with_ignore_case(id: &str, prefix: &str) -> bool {
    id.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A [`Selection::Prefixes`] prefix that names no case (or is empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no case id starts with `{0}`")]
pub struct NoSuchCase(pub String);

/// The cases that run, and those left out with why.
pub struct Plan<F: Fixture> {
    /// Cases that run, in suite order.
    pub run: Vec<Case<F>>,
    /// Ids of the cases left out, and why.
    pub left_out: Vec<(&'static str, String)>,
}

impl<F: Fixture> fmt::Debug for Plan<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("run", &self.run)
            .field("left_out", &self.left_out)
            .finish()
    }
}

/// Splits `cases` into those that run and those left out (with why).
pub fn select<F: Fixture>(
    cases: Vec<Case<F>>,
    selection: &Selection,
) -> Result<Plan<F>, NoSuchCase> {
    if let Selection::Prefixes(prefixes) = selection {
        if let Some(p) = prefixes
            .iter()
            .find(|p| p.is_empty() || !cases.iter().any(|c| starts_with_ignore_case(c.id, p)))
        {
            return Err(NoSuchCase(p.clone()));
        }
    }
    let mut run = Vec::new();
    let mut left_out = Vec::new();
    for case in cases {
        let why = match selection {
            Selection::All => None,
            Selection::NonDestructive => case
                .effects
                .destructive_reason()
                .map(|w| format!("destructive: {w}")),
            Selection::Prefixes(p) => (!p.iter().any(|p| starts_with_ignore_case(case.id, p)))
                .then(|| "not among the selected prefixes".to_owned()),
        };
        match why {
            None => run.push(case),
            Some(why) => left_out.push((case.id, why)),
        }
    }
    Ok(Plan { run, left_out })
}

/// A real backend as a conformance fixture: a fresh container per case,
/// with the groups of the devices attached (legacy) so that IOMMU info and
/// maps work before a device is opened.
pub struct RealFixture {
    host: Host,
    backend: Backend,
    mode: &'static str,
    edu: String,
    msix: Option<String>,
    capabilities: Capabilities,
}

impl fmt::Debug for RealFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealFixture")
            .field("mode", &self.mode)
            .field("edu", &self.edu)
            .field("msix", &self.msix)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// Start of a window of [`IOVA_WINDOW`] bytes of usable IOVA space at or
/// above 16 MiB that ends below edu's 28-bit DMA mask.
pub fn iova_base(info: &IommuInfo, page: u64) -> Option<u64> {
    const EDU_DMA_LIMIT: u64 = 1 << 28;
    info.iova_ranges.iter().find_map(|r| {
        let base = r.start.max(0x100_0000).checked_next_multiple_of(page)?;
        let end = base.checked_add(IOVA_WINDOW)?;
        (r.contains(base, IOVA_WINDOW) && end <= EDU_DMA_LIMIT).then_some(base)
    })
}

impl RealFixture {
    /// The fixture for `edu` (and `msix`, PCI addresses bound to vfio-pci)
    /// on `backend` (`Legacy` or `Iommufd`), declaring its capabilities
    /// from one probe of the kernel.
    ///
    /// type1 reports its migration (dirty-tracking) capability in
    /// `VFIO_IOMMU_GET_INFO`; iommufd's compat mode serving `/dev/vfio/vfio`
    /// does not. That capability tells the two legacy modes apart (mode
    /// `legacy-type1v2` or `legacy-iommufd-compat`, and with it how a split
    /// unmap is refused), so case C18 (dirty tracking as declared) cannot
    /// fail in legacy mode here: the lane's fixtures declare it from the
    /// kernel they booted instead.
    pub fn probe(
        host: Host,
        backend: Backend,
        edu: String,
        msix: Option<String>,
    ) -> vfio_hal::Result<Self> {
        let mut attach = vec![edu.as_str()];
        attach.extend(msix.as_deref());
        let info = open_container(&host, backend, &attach)?.iommu_info()?;
        let declared =
            backend
                .description()
                .map(|d| (d.declares)(&info))
                .ok_or(Error::NotSupported {
                    op: "conformance fixture",
                    target: Target::None,
                    reason: "resolve Backend::Auto first",
                })?;
        let page = info
            .min_page_size()
            .unwrap_or(4096)
            .max(vfio_hal::memory::page_size());
        let base = iova_base(&info, page).ok_or(Error::Exhausted {
            op: "conformance fixture",
            target: Target::None,
            reason: "no usable IOVA range holds a 64 MiB window between 16 MiB and 256 MiB (edu's DMA mask)",
        })?;
        Ok(Self {
            host,
            backend,
            mode: declared.mode,
            edu,
            msix,
            // Legacy falls back to unmapping range by range where the
            // kernel lacks VFIO_UNMAP_ALL; iommufd unmaps the full range.
            capabilities: Capabilities::real_kernel(
                declared.split_unmap,
                declared.dirty_tracking,
                base,
            ),
        })
    }
}

impl Fixture for RealFixture {
    type Container = DynContainer;

    fn mode(&self) -> &str {
        self.mode
    }

    fn container(&self) -> vfio_hal::Result<DynContainer> {
        let mut attach = vec![self.edu.as_str()];
        attach.extend(self.msix.as_deref());
        open_container(&self.host, self.backend, &attach)
    }

    fn edu(&self) -> &str {
        &self.edu
    }

    fn msix_device(&self) -> Option<&str> {
        self.msix.as_deref()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal_mock::conformance::MockFixture;

    fn ids(cases: &[Case<MockFixture>]) -> Vec<&'static str> {
        cases.iter().map(|c| c.id).collect()
    }

    #[test]
    fn non_destructive_leaves_out_resets_unplugs_dma_and_sweeps() {
        let all = vfio_hal_conformance::cases::all::<MockFixture>();
        let total = all.len();
        let Plan {
            run,
            left_out: left,
        } = select(all, &Selection::NonDestructive).expect("selects");
        assert_eq!(run.len() + left.len(), total);
        for kept in [
            "A01_bad_region_index",
            "C01_map_unmap_one_page",
            "E02_msi_once_per_raise",
        ] {
            assert!(
                run.iter().any(|c| c.id == kept),
                "{kept} should run: {run:?}"
            );
        }
        for case in &run {
            assert!(!case.effects.is_destructive(), "{case:?} is destructive");
        }
        let run = ids(&run);
        for id in &run {
            assert!(
                !id.starts_with('F') && !id.starts_with('G') && *id != "D07_reset",
                "{id}"
            );
        }
        for (id, effect) in [
            ("D07_reset", "resets"),
            ("B05_unplug_request", "unplugs"),
            ("B07_revoke", "revokes"),
            ("F01_edu_round_trip", "DMA"),
            ("G04_sweep_reset", "fault sweeps"),
        ] {
            assert!(
                left.iter()
                    .any(|(left, why)| *left == id && why.contains(effect)),
                "{id} should be left out because it {effect}: {left:?}"
            );
        }
    }

    #[test]
    fn prefixes_select_case_insensitively_and_unknown_ones_are_refused() {
        let all = vfio_hal_conformance::cases::all::<MockFixture>();
        let Plan { run, .. } = select(
            all.clone(),
            &Selection::Prefixes(vec!["c01".into(), "D0".into()]),
        )
        .expect("selects");
        let run = ids(&run);
        assert!(
            run.contains(&"C01_map_unmap_one_page") && run.contains(&"D07_reset"),
            "{run:?}"
        );
        assert!(
            run.iter()
                .all(|id| id.starts_with("C01") || id.starts_with("D0")),
            "{run:?}"
        );
        let e =
            select(all.clone(), &Selection::Prefixes(vec!["Z9".into()])).expect_err("no such case");
        assert_eq!(e, NoSuchCase("Z9".into()));
        assert!(select(all, &Selection::Prefixes(vec![String::new()])).is_err());
    }

    #[test]
    fn the_iova_window_stays_below_edus_dma_mask() {
        let info = IommuInfo {
            page_sizes: 0x1000,
            iova_ranges: vec![
                vfio_hal::IovaRange {
                    start: 0,
                    end: 0xfedf_ffff,
                },
                vfio_hal::IovaRange {
                    start: 0xfef0_0000,
                    end: u64::MAX,
                },
            ],
            ..IommuInfo::default()
        };
        assert_eq!(iova_base(&info, 0x1000), Some(0x100_0000));
        let high = IommuInfo {
            iova_ranges: vec![vfio_hal::IovaRange {
                start: 0x1000_0000,
                end: u64::MAX,
            }],
            ..info
        };
        assert_eq!(iova_base(&high, 0x1000), None);
    }
}
