//! Compiles the lane's deliberately failing test only for
//! `bash tests/vm/lane.sh --fail-demo`, which sets `VFIO_HAL_LANE_FAIL_DEMO=1`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vfio_hal_fail_demo)");
    println!("cargo::rerun-if-env-changed=VFIO_HAL_LANE_FAIL_DEMO");
    if std::env::var_os("VFIO_HAL_LANE_FAIL_DEMO").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=vfio_hal_fail_demo");
    }
}
