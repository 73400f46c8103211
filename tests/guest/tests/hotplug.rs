//! The lane's hot-unplug channel: a guest test asks the host for QMP
//! `device_del` over the control port. The successful round trip, with a
//! device in use, is each backend's own unplug test
//! (`backend-legacy/tests/guest.rs` on the spare edu,
//! `backend-iommufd/tests/guest.rs` on the second spare) through
//! [`vfio_hal_guest_tests::unplug`].

use vfio_hal_guest_tests::{self as lane};

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
