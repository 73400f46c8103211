//! The `vfio-hal` tool on the real kernel, in the lane's guest
//! (`bash tests/vm/lane.sh`, which puts the binary in the guest's `/bin`);
//! ignored on the host, where `cli.rs` runs it on fake sysfs trees.
//!
//! What only a real kernel shows: `list` finding the lane's edu bound to
//! vfio-pci in a viable group with its cdev, `info` reading its regions,
//! irqs and features through the automatic backend and through each named
//! one, `read`/`write` reaching the device's registers, and `conformance`
//! passing its non-destructive selection; each in tables and in `--json`;
//! and `list` and `info` showing the kernel's mtty instances as mediated
//! devices with their type and migration features.

use std::process::{Command, Output};

use serde_json::Value;

/// The tool: in the guest's `/bin`; on the host (where these tests are
/// ignored) the one cargo built.
const BIN: &str = if cfg!(vfio_hal_guest) {
    "/bin/vfio-hal"
} else {
    env!("CARGO_BIN_EXE_vfio-hal")
};

/// The lane's edu, as the guest's /init found it.
fn edu() -> String {
    std::env::var("VFIO_HAL_EDU_BDF").expect("VFIO_HAL_EDU_BDF (set by the lane's /init)")
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"));
    // What a user would have seen, in the failure report.
    println!(
        "$ vfio-hal {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "vfio-hal {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn json(args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    serde_json::from_str(&ok(&with_json)).expect("valid JSON")
}

/// The row of `list`'s table that starts with `name`, and its cells.
fn row_cells<'t>(table: &'t str, name: &str) -> (&'t str, Vec<&'t str>) {
    let row = table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    (row, row.split_whitespace().collect())
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn list_finds_edu_bound_viable_with_its_cdev() {
    let edu = edu();
    let table = ok(&["list"]);
    let (row, cells) = row_cells(&table, &edu);
    assert_eq!(cells.get(1), Some(&"1234:11e8"), "{row}");
    assert_eq!(cells.get(3), Some(&"yes"), "viable: {row}");
    assert!(
        cells.get(4).is_some_and(|c| c.starts_with("vfio")),
        "cdev: {row}"
    );
    assert_eq!(cells.get(5), Some(&"iommufd"), "auto: {row}");
    for node in ["/dev/iommu", "/dev/vfio/devices"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" yes ")),
            "{node} present:\n{table}"
        );
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn info_describes_edu_through_each_backend() {
    let edu = edu();
    let table = ok(&["info", &edu]);
    assert!(table.contains("1234:11e8"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("0 ") && l.contains("BAR0") && l.contains("0x100000")),
        "BAR0 of 1 MiB:\n{table}"
    );
    for backend in ["legacy", "iommufd"] {
        let v = json(&["--backend", backend, "info", &edu]);
        assert_eq!(v["device"]["backend"].as_str(), Some(backend), "{v}");
        let regions = v["regions"].as_array().expect("regions");
        assert_eq!(regions[0]["size"].as_u64(), Some(1 << 20), "{v}");
        let irqs = v["irqs"].as_array().expect("irqs");
        assert_eq!(irqs[1]["count"].as_u64(), Some(1), "MSI: {v}");
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn read_and_write_reach_edus_registers() {
    let edu = edu();
    let v = json(&["read", &edu, "bar0", "0"]);
    assert_eq!(v["value"].as_u64(), Some(0x0100_00ed), "{v}");
    let table = ok(&["write", &edu, "bar0", "0x4", "0x5a5a0f0f", "--read-back"]);
    assert!(
        table.contains("0xa5a5f0f0"),
        "liveness reads back inverted:\n{table}"
    );
    // A width the device cannot take is refused before it is tried.
    let out = run(&["read", &edu, "bar0", "0", "--width", "3"]);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn conformance_passes_its_non_destructive_selection_on_edu() {
    let edu = edu();
    let v = json(&["conformance", &edu]);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert!(v["passed"].as_u64().is_some_and(|n| n > 20), "{v}");
    assert!(
        !v["left_out"].as_array().expect("left_out").is_empty(),
        "the destructive cases are left out: {v}"
    );
}

/// The lane's mtty instances, as the guest's /init created them.
fn mttys() -> [String; 2] {
    ["VFIO_HAL_MTTY_SRC", "VFIO_HAL_MTTY_DST"]
        .map(|v| std::env::var(v).unwrap_or_else(|_| panic!("{v} (set by the lane's /init)")))
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn list_shows_the_mtty_instances_and_info_describes_one() {
    let table = ok(&["list"]);
    for uuid in mttys() {
        let (row, cells) = row_cells(&table, &uuid);
        assert_eq!(cells.get(1), Some(&"mdev:mtty-2"), "{row}");
        assert_eq!(cells.get(3), Some(&"yes"), "viable: {row}");
        assert!(
            cells.get(4).is_some_and(|c| c.starts_with("vfio")),
            "cdev: {row}"
        );
    }
    let [uuid, _] = mttys();
    let table = ok(&["info", &uuid]);
    assert!(
        table.lines().any(|l| l.starts_with("mediated device")
            && l.contains("type mtty-2 (Dual port serial), parent mtty")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("migration")
                && l.contains("STOP_COPY|P2P|PRE_COPY, state Running")),
        "{table}"
    );
    for backend in ["legacy", "iommufd"] {
        let v = json(&["--backend", backend, "info", &uuid]);
        assert_eq!(v["device"]["backend"].as_str(), Some(backend), "{v}");
        assert_eq!(v["device"]["mdev"]["type"].as_str(), Some("mtty-2"), "{v}");
        assert_eq!(v["migration"]["flags"].as_u64(), Some(0b111), "{v}");
        // Two 8-byte I/O BARs, one per port.
        let regions = v["regions"].as_array().expect("regions");
        assert_eq!(regions[0]["size"].as_u64(), Some(8), "{v}");
        assert_eq!(regions[1]["size"].as_u64(), Some(8), "{v}");
    }
}
