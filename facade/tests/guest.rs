//! The facade on the real kernel, in the lane's guest (`bash tests/vm/lane.sh`
//! with `vfio-hal-facade` in `GUEST_TEST_PACKAGES`); ignored on the host.
//!
//! What only a real kernel shows: the automatic backend choice against the
//! nodes the booted kernel really has, both real backends opening edu
//! through `open`, sysfs discovery of the lane's devices, and the
//! non-destructive conformance selection passing on each backend through
//! the type-erased `RealFixture`.

use vfio_hal::prelude::*;
use vfio_hal_conformance::runner::run_cases_to;
use vfio_hal_facade::conformance::{select, RealFixture, Selection};
use vfio_hal_facade::{open, Backend, Host, OpenSpec};
use vfio_hal_guest_tests::{self as lane, KernelFlavour};

const EDU_ID_VALUE: u32 = 0x0100_00ed;

fn edu() -> String {
    lane::lane_env(lane::EDU_BDF)
}

fn msix() -> String {
    lane::lane_env(lane::MSIX_BDF)
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn sysfs_shows_the_lanes_devices_bound_and_viable() {
    let host = Host::default();
    let names = host.vfio_device_names();
    for bdf in [edu(), msix(), lane::lane_env(lane::SPARE_BDF)] {
        assert!(names.contains(&bdf), "{bdf} not in {names:?}");
        let d = host.check_device(&bdf).expect("usable");
        assert!(d.group.is_some() && d.bound_to_vfio(), "{d:?}");
    }
    let offers = host.offers();
    let legacy = offers.iter().find(|o| o.backend == Backend::Legacy);
    assert!(legacy.is_some_and(|o| o.available), "{offers:?}");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn auto_picks_iommufd_where_the_cdev_and_dev_iommu_exist() {
    let host = Host::default();
    let device = host.check_device(&edu()).expect("edu usable");
    let expect = if device.cdev.is_some() && host.iommu_node().exists() {
        Backend::Iommufd
    } else {
        Backend::Legacy
    };
    let opened = open(&OpenSpec::new(edu())).expect("auto opens edu");
    println!(
        "auto on the {:?} kernel: {} ({})",
        lane::kernel_flavour(),
        opened.backend,
        opened.reason
    );
    assert_eq!(opened.backend, expect, "{}", opened.reason);
    let bar0 = opened.device.region(0).expect("bar0");
    assert_eq!(bar0.read_at::<u32>(0).expect("id"), EDU_ID_VALUE);
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn both_real_backends_open_edu_by_request() {
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let opened = open(&OpenSpec::new(edu()).with_backend(backend))
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(opened.backend, backend);
        opened.device.set_bus_master(true).expect("bus master");
        let bar0 = opened.device.region(0).expect("bar0");
        assert_eq!(bar0.read_at::<u32>(0).expect("id"), EDU_ID_VALUE);
        bar0.write_at::<u32>(4, 0x5a5a_0f0f).expect("liveness");
        assert_eq!(bar0.read_at::<u32>(4).expect("liveness"), !0x5a5a_0f0f);
        let info = opened.container.iommu_info().expect("iommu info");
        assert!(!info.iova_ranges.is_empty(), "{backend}: {info:?}");
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_non_destructive_suite_passes_on_every_backend() {
    let mut failed = Vec::new();
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let fixture = RealFixture::probe(Host::default(), backend, edu(), Some(msix()))
            .unwrap_or_else(|e| panic!("{backend}: fixture: {e}"));
        let expected_mode = match (backend, lane::kernel_flavour()) {
            (Backend::Legacy, KernelFlavour::Default) => "legacy-type1v2",
            (Backend::Legacy, KernelFlavour::Compat) => "legacy-iommufd-compat",
            _ => "iommufd",
        };
        assert_eq!(
            vfio_hal_conformance::Fixture::mode(&fixture),
            expected_mode,
            "the probe tells the legacy modes apart"
        );
        let plan = select(
            vfio_hal_conformance::cases::all::<RealFixture>(),
            &Selection::NonDestructive,
        )
        .expect("selects");
        let summary = run_cases_to(&fixture, &plan.run, &mut std::io::stdout().lock());
        if !summary.success() || summary.passed() < 30 {
            failed.push(format!("{backend}: {summary}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("; "));
}
