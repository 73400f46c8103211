//! The cases, one module per group (A–G), the DMA-engine group H and the
//! migration group M.
//!
//! Every case is a `pub fn name<F: Fixture>(f: &F) -> CaseResult`, takes a
//! fresh container from the fixture, and cleans up by dropping what it made.
//! [`all`] lists them in run order; [`crate::conformance_tests!`] stamps out
//! one `#[test]` per entry of the same list.

use std::time::Duration;

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::Container;

use crate::edu::EduDriver;
use crate::fixture::Fixture;
use crate::outcome::{CaseError, Context};
use crate::probe::Snapshot;
use crate::runner::Case;

pub mod a_hygiene;
pub mod b_lifecycle;
pub mod c_dma;
pub mod d_device;
pub mod e_interrupts;
pub mod f_device_dma;
pub mod g_robustness;
pub mod h_dma_engine;
pub mod m_migration;

/// The device type a fixture's container opens.
pub type Dev<F> = <<F as Fixture>::Container as Container>::Device;

/// Every case of the suite, in run order.
pub fn all<F: Fixture>() -> Vec<Case<F>> {
    crate::__for_each_case!(list F)
}

/// Applies a macro arm to the case list: the one place cases are registered,
/// each as `ID path [EFFECTS]`, with the [`Effects`](crate::runner::Effects)
/// it has (by constant name, none for a case that only reads, maps host
/// memory and routes interrupts).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($($how:tt)*) => {
        $crate::__expand_cases! { [$($how)*] cases [
            A01_bad_region_index a_hygiene::bad_region_index [],
            A02_bad_irq_index a_hygiene::bad_irq_index [],
            A03_region_offset_past_end a_hygiene::region_offset_past_end [],
            A04_region_offset_overflow a_hygiene::region_offset_overflow [],
            A05_buffer_ending_past_end a_hygiene::buffer_ending_past_end [],
            A06_oversized_buffer a_hygiene::oversized_buffer [],
            A07_zero_length_access a_hygiene::zero_length_access [],
            A08_absent_region_access a_hygiene::absent_region_access [],
            A09_open_unknown_device a_hygiene::open_unknown_device [],
            A10_malformed_irq_set a_hygiene::malformed_irq_set [],
            B01_open_close_no_leak b_lifecycle::open_close_no_leak [],
            B02_container_dropped_with_live_mappings b_lifecycle::container_dropped_with_live_mappings [],
            B03_device_dropped_with_irqs_routed b_lifecycle::device_dropped_with_irqs_routed [],
            B04_reopen_after_drop b_lifecycle::reopen_after_drop [DEVICE_DMA],
            B05_unplug_request b_lifecycle::unplug_request [UNPLUGS NEEDS_UNPLUG],
            B06_surprise_unplug b_lifecycle::surprise_unplug [UNPLUGS NEEDS_UNPLUG],
            B07_revoke b_lifecycle::revoke [REVOKES],
            C01_map_unmap_one_page c_dma::map_unmap_one_page [],
            C02_unmap_nothing c_dma::unmap_nothing [],
            C03_overlap_identical c_dma::overlap_identical [],
            C04_overlap_inside c_dma::overlap_inside [],
            C05_overlap_covering c_dma::overlap_covering [],
            C06_overlap_start c_dma::overlap_start [],
            C07_overlap_end c_dma::overlap_end [],
            C08_split_unmap c_dma::split_unmap [],
            C09_unmap_all_idempotent c_dma::unmap_all_idempotent [],
            C10_superset_unmap_returns_sum c_dma::superset_unmap_returns_sum [],
            C11_last_page_of_last_range c_dma::last_page_of_last_range [],
            C12_outside_iova_ranges c_dma::outside_iova_ranges [],
            C13_iova_wrap_overflows c_dma::iova_wrap_overflows [],
            C14_misalignment c_dma::misalignment [],
            C15_read_only_mapping_honoured c_dma::read_only_mapping_honoured [DEVICE_DMA],
            C16_iommu_info_sane c_dma::iommu_info_sane [],
            C17_dma_avail_counts c_dma::dma_avail_counts [],
            C18_dirty_tracking_declared c_dma::dirty_tracking_declared [],
            C19_map_buffer_guard c_dma::map_buffer_guard [],
            C20_dirty_pages_track_device_writes c_dma::dirty_pages_track_device_writes [DEVICE_DMA],
            D01_info_sane d_device::info_sane [],
            D02_config_ids d_device::config_ids [],
            D03_capability_walk_finds_msi d_device::capability_walk_finds_msi [],
            D04_bus_master_toggle d_device::bus_master_toggle [],
            D05_mmap_only_mappable_areas d_device::mmap_only_mappable_areas [],
            D06_config_region_refuses_mmap d_device::config_region_refuses_mmap [],
            D07_reset d_device::reset [RESETS DEVICE_DMA],
            D08_unknown_feature_unsupported d_device::unknown_feature_unsupported [],
            D09_edu_registers d_device::edu_registers [],
            D10_keep_fds_are_open d_device::keep_fds_are_open [],
            D11_low_power d_device::low_power [],
            E01_irq_info_sane e_interrupts::irq_info_sane [],
            E02_msi_once_per_raise e_interrupts::msi_once_per_raise [],
            E03_msi_deassign_with_none e_interrupts::msi_deassign_with_none [],
            E04_msi_disable e_interrupts::msi_disable [],
            E05_msi_loopback_trigger e_interrupts::msi_loopback_trigger [],
            E06_intx_mask_unmask e_interrupts::intx_mask_unmask [],
            E07_intx_resample e_interrupts::intx_resample [],
            E08_invalid_mask_on_msi e_interrupts::invalid_mask_on_msi [],
            E09_invalid_count_past_end e_interrupts::invalid_count_past_end [],
            E10_invalid_resample_on_msi e_interrupts::invalid_resample_on_msi [],
            E11_one_irq_type_at_a_time e_interrupts::one_irq_type_at_a_time [],
            E12_non_eventfd_refused e_interrupts::non_eventfd_refused [],
            E13_req_accepts_eventfd e_interrupts::req_accepts_eventfd [],
            E14_msix_loopback_per_vector e_interrupts::msix_loopback_per_vector [NEEDS_MSIX],
            E15_msix_deassign_one_vector e_interrupts::msix_deassign_one_vector [NEEDS_MSIX],
            E16_msix_table_not_mmappable e_interrupts::msix_table_not_mmappable [NEEDS_MSIX],
            F01_edu_round_trip f_device_dma::edu_round_trip [DEVICE_DMA],
            F02_dma_at_unmapped_iova f_device_dma::dma_at_unmapped_iova [DEVICE_DMA],
            F03_dma_after_unmap f_device_dma::dma_after_unmap [DEVICE_DMA],
            F04_edu_dma_mask f_device_dma::edu_dma_mask [DEVICE_DMA],
            F05_dma_needs_bus_master f_device_dma::dma_needs_bus_master [DEVICE_DMA],
            G01_sweep_open g_robustness::sweep_open [FAULT_SWEEP],
            G02_sweep_map_buffers g_robustness::sweep_map_buffers [FAULT_SWEEP],
            G03_sweep_route_msi g_robustness::sweep_route_msi [FAULT_SWEEP],
            G04_sweep_reset g_robustness::sweep_reset [FAULT_SWEEP RESETS],
            G05_sweep_round_trip g_robustness::sweep_round_trip [FAULT_SWEEP DEVICE_DMA],
            G06_sweep_msix_route g_robustness::sweep_msix_route [FAULT_SWEEP NEEDS_MSIX],
            G07_failed_unmap_keeps_mapping g_robustness::failed_unmap_keeps_mapping [FAULT_SWEEP],
            G08_sweep_inside g_robustness::sweep_inside [FAULT_SWEEP],
            M01_migration_features m_migration::migration_features [],
            M02_migration_refusals m_migration::migration_refusals [],
            M03_migration_round_trip m_migration::migration_round_trip [],
            M04_migration_precopy m_migration::migration_precopy [],
            M05_migration_answers m_migration::migration_answers [],
        ]
        // The DMA engines the H cases run on: `name kind [EFFECTS]`, one
        // line per engine (its driver implements `dma_engine::DmaEngine`).
        engines [
            edu $crate::edu::EduEngine [],
            copy_engine $crate::copy_engine::CopyEngine [NEEDS_COPY_ENGINE],
            igb $crate::igb::IgbEngine [NEEDS_IGB],
        ]
        // The cases run once per engine, with ids `<ID>_<engine>`.
        engine_cases {
            H01_copy_succeeds h_dma_engine::copy_succeeds [DEVICE_DMA],
            H02_copy_from_unmapped h_dma_engine::copy_from_unmapped [DEVICE_DMA],
            H03_copy_to_unmapped h_dma_engine::copy_to_unmapped [DEVICE_DMA],
            H04_one_msi_per_request h_dma_engine::one_msi_per_request [DEVICE_DMA],
            H05_send_msi h_dma_engine::send_msi_once [DEVICE_DMA],
            H06_ready_after_a_fault h_dma_engine::ready_after_a_fault [DEVICE_DMA],
        }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_cases {
    ([list $F:ty]
        cases [$($id:ident $($path:ident)::+ [$($effect:ident)*],)*]
        engines [$($engine:ident $kind:path [$($needs:ident)*],)*]
        engine_cases $engine_cases:tt
    ) => {{
        let mut cases = ::std::vec![$(
            $crate::runner::Case::<$F> {
                id: ::std::stringify!($id),
                effects: $crate::runner::Effects::NONE$(.union($crate::runner::Effects::$effect))*,
                run: $crate::cases::$($path)::+::<$F>,
            },
        )*];
        $(
            cases.extend($crate::__expand_cases!(
                [engine list $F] $engine $kind [$($needs)*] $engine_cases
            ));
        )*
        cases
    }};
    ([engine list $F:ty] $engine:ident $kind:path [$($needs:ident)*]
        { $($id:ident $($path:ident)::+ [$($effect:ident)*],)* }
    ) => {{
        let engine = $crate::runner::Effects::NONE$(.union($crate::runner::Effects::$needs))*;
        [$(
            $crate::runner::Case::<$F> {
                id: ::std::concat!(::std::stringify!($id), "_", ::std::stringify!($engine)),
                effects: engine$(.union($crate::runner::Effects::$effect))*,
                run: $crate::cases::$($path)::+::<$kind, $F>,
            },
        )*]
    }};
    ([tests $fixture:expr]
        cases [$($id:ident $($path:ident)::+ [$($effect:ident)*],)*]
        engines [$($engine:ident $kind:path [$($needs:ident)*],)*]
        engine_cases $engine_cases:tt
    ) => {
        $(
            #[test]
            #[allow(non_snake_case)]
            fn $id() {
                $crate::runner::run_test(&$fixture, ::std::stringify!($id), $crate::cases::$($path)::+);
            }
        )*
        $(
            $crate::__expand_cases!([engine tests $fixture] $engine $kind $engine_cases);
        )*
    };
    ([engine tests $fixture:expr] $engine:ident $kind:path
        { $($id:ident $($path:ident)::+ [$($effect:ident)*],)* }
    ) => {
        /// The DMA-engine cases on this engine.
        mod $engine {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                #[allow(non_snake_case)]
                fn $id() {
                    $crate::runner::run_test(
                        &$fixture,
                        ::std::concat!(::std::stringify!($id), "_", ::std::stringify!($engine)),
                        $crate::cases::$($path)::+::<$kind, _>,
                    );
                }
            )*
        }
    };
}

/// A fresh container from the fixture.
pub(crate) fn fresh<F: Fixture>(f: &F) -> Result<F::Container, CaseError> {
    f.container().context("fixture: create a fresh container")
}

/// The edu device, opened raw.
pub(crate) fn edu_device<F: Fixture>(f: &F, c: &F::Container) -> Result<Dev<F>, CaseError> {
    c.open_device(f.edu())
        .context(format_args!("open_device({})", f.edu()))
}

/// The edu device, opened raw, with bus mastering on: an MSI is a memory
/// write by the device, and QEMU drops it while bus mastering is off
/// (vfio-pci leaves it off).
pub(crate) fn edu_device_for_msi<F: Fixture>(f: &F, c: &F::Container) -> Result<Dev<F>, CaseError> {
    let dev = edu_device(f, c)?;
    vfio_hal::PciConfig::set_bus_master(&dev, true).context("enable bus mastering for MSI")?;
    Ok(dev)
}

/// The edu device behind its driver, with the fixture's timeout.
pub(crate) fn edu<F: Fixture>(f: &F, c: &F::Container) -> Result<EduDriver<Dev<F>>, CaseError> {
    EduDriver::open(edu_device(f, c)?)
        .map(|d| d.with_timeout(f.capabilities().timeout))
        .context("edu driver: open")
}

/// The IOVA `page` pages of `page_size` into the fixture's window.
pub(crate) fn iova<F: Fixture>(f: &F, page_size: u64, page: u64) -> u64 {
    f.capabilities().iova_base + page * page_size
}

/// Bytes of one DMA buffer: the larger of the host and IOMMU page sizes, so
/// that a buffer maps whole on any IOMMU. Device transfers stay 4 KiB (edu's
/// buffer); the rest of a larger page keeps its fill pattern.
pub(crate) fn dma_page<C: Container>(c: &C) -> Result<u64, CaseError> {
    let iommu = c
        .iommu_info()
        .context("iommu_info")?
        .min_page_size()
        .ok_or_else(|| crate::outcome::fail("iommu_info reports no page size"))?;
    Ok(iommu.max(vfio_hal::memory::page_size()))
}

/// A DMA buffer of `len` bytes filled with `byte`.
pub(crate) fn filled(len: u64, byte: u8) -> Result<vfio_hal::DmaBuffer, CaseError> {
    let len = usize::try_from(len).map_err(|_| crate::outcome::fail("buffer length"))?;
    let b = vfio_hal::DmaBuffer::new(len).context("allocate a DMA buffer")?;
    b.fill(byte);
    Ok(b)
}

/// Fails unless every byte of `data` is `byte`.
pub(crate) fn expect_all(what: &str, data: &[u8], byte: u8) -> crate::outcome::CaseResult {
    match data.iter().position(|&b| b != byte) {
        None => Ok(()),
        Some(i) => Err(crate::outcome::fail(format!(
            "{what}: byte {i} is {:#04x}, expected {byte:#04x}",
            data[i]
        ))),
    }
}

/// How long to wait for something that must not happen.
pub(crate) fn quiet<F: Fixture>(f: &F) -> Duration {
    f.capabilities().quiet
}

/// A snapshot taken after one container and one edu device have been made
/// and dropped, so that lazily created, cached resources (a backend's first
/// open of `/dev/vfio/vfio`, say) are already counted.
pub(crate) fn settled_snapshot<F: Fixture>(f: &F) -> Result<Snapshot, CaseError> {
    {
        let c = fresh(f)?;
        drop(edu_device(f, &c)?);
    }
    Snapshot::take()
}

/// Waits until `expected` signals have arrived on `fd` (or the fixture's
/// timeout passed), then watches one quiet window for extra ones; returns
/// the total.
pub(crate) fn count_signals<F: Fixture>(
    f: &F,
    fd: &EventFd,
    expected: u64,
) -> Result<u64, CaseError> {
    let deadline = std::time::Instant::now() + f.capabilities().timeout;
    let mut total = 0;
    while total < expected && std::time::Instant::now() < deadline {
        total += fd.wait(Duration::from_millis(10))?;
    }
    Ok(total + fd.wait(quiet(f))?)
}
