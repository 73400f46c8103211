//! The lane's hot-unplug round trip: a guest test asks the host for QMP
//! `device_del` over the control port, and the device leaves the guest.

use std::time::Duration;

use vfio_hal_guest_tests::{self as lane};

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn device_del_removes_the_spare_device() {
    let bdf = lane::lane_env(lane::SPARE2_BDF);
    let id = lane::lane_env(lane::SPARE2_ID);
    assert!(
        lane::pci_device_dir(&bdf).exists(),
        "spare device {id} ({bdf}) is not there before the unplug"
    );
    lane::request_unplug(&id).unwrap_or_else(|e| panic!("unplug request for {id}: {e}"));
    assert!(
        lane::wait_until_removed(&bdf, Duration::from_secs(60)),
        "spare device {id} ({bdf}) still in /sys/bus/pci/devices 60 s after device_del"
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn device_del_of_an_unknown_id_is_refused() {
    let err = lane::request_unplug("no-such-device").expect_err("the host accepted an unknown id");
    assert!(
        err.to_string().contains("no-such-device"),
        "the refusal should name the device: {err}"
    );
}
