//! The `vfio-hal` binary, run as a user would run it.
//!
//! Every test that must not depend on the machine's devices points the
//! tool at a fake sysfs and `/dev` (`--sys-root`, `--dev-root`): an empty
//! tree is "a fresh machine with no VFIO device", where the mock serves
//! `edu`; a tree with a device bound to another driver, or a group shared
//! with a host driver, shows the error messages.
//!
//! Not built for the lane's guest (`--cfg vfio_hal_guest`): the guest's
//! initramfs carries test binaries only, not the `vfio-hal` binary itself.
#![cfg(not(vfio_hal_guest))]

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vfio_hal_facade::host::fake::FakeHost;

const BIN: &str = env!("CARGO_BIN_EXE_vfio-hal");

/// The tool with `args`, pointed at `host`'s trees.
fn command(host: &FakeHost, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--sys-root")
        .arg(host.path("sys"))
        .arg("--dev-root")
        .arg(host.path("dev"));
    cmd
}

/// Runs the tool against `host`'s trees.
fn run(host: &FakeHost, args: &[&str]) -> Output {
    command(host, args)
        .output()
        .expect("the vfio-hal binary runs")
}

/// Runs the tool with its stdout and stderr connected as given.
fn run_with(host: &FakeHost, args: &[&str], stdout: Stdio, stderr: Stdio) -> Output {
    command(host, args)
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .expect("the vfio-hal binary runs")
}

/// The writing end of a pipe-like socket whose reader is already gone:
/// every write to it fails with EPIPE, as `vfio-hal … | head -1` does once
/// head has exited.
fn closed_pipe() -> Stdio {
    let (writer, reader) = UnixStream::pair().expect("a socket pair");
    drop(reader);
    Stdio::from(OwnedFd::from(writer))
}

/// `/dev/full`: every write fails with ENOSPC, like a full disk.
fn full_disk() -> Stdio {
    let full = OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full (Linux's always-full device) opens");
    Stdio::from(full)
}

/// Runs the tool, killing it if it has not ended after `limit`.
fn run_within(host: &FakeHost, args: &[&str], limit: Duration) -> Output {
    let mut child = command(host, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vfio-hal binary runs");
    let start = Instant::now();
    while child.try_wait().expect("wait for vfio-hal").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vfio-hal {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("vfio-hal's output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(host: &FakeHost, args: &[&str]) -> String {
    let o = run(host, args);
    assert!(
        o.status.success(),
        "vfio-hal {args:?} failed ({}):\n{}\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json(host: &FakeHost, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(host, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{text}"))
}

fn fresh() -> FakeHost {
    FakeHost::new().expect("a fake tree")
}

#[test]
fn info_edu_prints_the_mock_edu_as_tables_on_a_fresh_machine() {
    let h = fresh();
    let o = run(&h, &["info", "edu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for expected in [
        "backend",
        "mock: no device is bound to vfio-pci",
        "1234:11e8 rev 0x10 class 00ff00",
        "MSI@0x40",
        "BAR0    0x100000 (1 MiB)",
        "CONFIG  0x100 (256 B)",
        "READ|WRITE",
        "MSI    1      EVENTFD|NORESIZE",
        "LOW_POWER_ENTRY",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // The header of each table starts at column 0 and its columns line up
    // with the rows: "SIZE" sits exactly above BAR0's size.
    let header = text
        .lines()
        .find(|l| l.starts_with("REGION"))
        .expect("region table");
    let bar0 = text
        .lines()
        .find(|l| l.starts_with("0 "))
        .expect("BAR0 row");
    assert_eq!(
        header.find("SIZE"),
        bar0.find("0x100000"),
        "{header}\n{bar0}"
    );
    assert!(stderr(&o).contains("mock backend"), "the mock is announced");
}

#[test]
fn info_json_parses_and_carries_the_same_facts() {
    let h = fresh();
    let v = json(&h, &["info", "edu"]);
    assert_eq!(v["device"]["name"], "edu");
    assert_eq!(v["device"]["backend"], "mock");
    assert_eq!(v["device"]["num_regions"], 9);
    assert_eq!(v["pci"]["vendor"], 0x1234);
    assert_eq!(v["pci"]["device"], 0x11e8);
    assert_eq!(v["regions"][0]["size"], 1 << 20);
    assert_eq!(v["regions"][7]["name"], "CONFIG");
    assert_eq!(v["irqs"][1]["name"], "MSI");
    assert_eq!(v["irqs"][1]["count"], 1);
    assert_eq!(v["features"].as_array().map(Vec::len), Some(10));
    assert!(v["iommu"]["iova_ranges"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
}

#[test]
fn the_copy_engine_shows_its_sparse_mmap_and_msix() {
    let h = fresh();
    let v = json(&h, &["info", "copy-engine", "--backend", "mock"]);
    let caps = &v["regions"][2]["caps"];
    assert_eq!(caps[0]["type"], "sparse-mmap", "{caps}");
    assert!(v["irqs"][2]["count"].as_u64().is_some_and(|n| n > 0));
    let text = ok(&h, &["info", "copy-engine", "--backend", "mock"]);
    assert!(
        text.contains("sparse-mmap[0x0+0x4000,0x5000+0x3000]"),
        "{text}"
    );
}

#[test]
fn reading_the_identification_and_writing_the_liveness_register() {
    let h = fresh();
    let text = ok(&h, &["read", "edu", "bar0", "0"]);
    assert!(text.contains("0x010000ed"), "{text}");
    let v = json(&h, &["read", "edu", "bar0", "0x0"]);
    assert_eq!(v["value"], 0x0100_00ed);

    // Liveness reads back the bitwise NOT of the last write.
    let text = ok(
        &h,
        &["write", "edu", "bar0", "0x4", "0x12345678", "--read-back"],
    );
    assert!(text.contains("0xedcba987"), "{text}");
    let v = json(&h, &["write", "edu", "0", "4", "0xcafe0000", "--read-back"]);
    assert_eq!(v["read_back"], 0x3501_ffff);

    // Config space, 2 bytes wide: the vendor id.
    let v = json(&h, &["read", "edu", "config", "0", "--width", "2"]);
    assert_eq!(v["value"], 0x1234);
}

#[test]
fn bad_widths_values_and_offsets_are_refused_with_reasons() {
    let h = fresh();
    let o = run(&h, &["read", "edu", "bar0", "0", "--width", "3"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert!(
        stderr(&o).contains("not one of 1, 2, 4, 8"),
        "{}",
        stderr(&o)
    );

    let o = run(&h, &["write", "edu", "bar0", "4", "0x100", "-w", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not fit in 1 byte"),
        "{}",
        stderr(&o)
    );

    let o = run(&h, &["read", "edu", "bar0", "0x100000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: read 4 bytes at BAR0+0x100000"),
        "{}",
        stderr(&o)
    );

    let o = run(&h, &["read", "edu", "bar0", "0", "--json", "--width", "8"]);
    assert!(
        o.status.success(),
        "an 8-byte read of edu's ID is served: {}",
        stderr(&o)
    );
}

#[test]
fn conformance_on_the_mock_runs_the_whole_suite_and_passes() {
    let h = fresh();
    let text = ok(&h, &["conformance", "edu"]);
    assert!(text.contains("mode mock"), "{text}");
    assert!(text.contains("(all)"), "the mock runs every case: {text}");
    let summary = text
        .lines()
        .rfind(|l| l.starts_with("conformance: "))
        .expect("summary line");
    assert!(summary.contains(" 0 failed"), "{summary}");

    let v = json(&h, &["conformance", "edu"]);
    assert_eq!(v["failed"], 0);
    assert!(
        v["passed"].as_u64().is_some_and(|n| n > 60),
        "{}",
        v["passed"]
    );
    assert_eq!(v["left_out"].as_array().map(Vec::len), Some(0));
    let results = v["results"].as_array().expect("results");
    assert!(results
        .iter()
        .any(|r| r["case"] == "D07_reset" && r["outcome"] == "passed"));
}

#[test]
fn conformance_case_selection_by_prefix() {
    let h = fresh();
    let v = json(&h, &["conformance", "edu", "--cases", "A,c01"]);
    let results = v["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["case"]
        .as_str()
        .is_some_and(|c| c.starts_with('A') || c.starts_with("C01"))));
    assert_eq!(results.len(), 11, "ten A cases and C01");
    let o = run(&h, &["conformance", "edu", "--cases", "Q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no case id starts with `Q`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_prints_throughput_per_second() {
    let h = fresh();
    let v = json(&h, &["bench", "--reads", "2000", "--maps", "200"]);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    let text = ok(&h, &["bench", "edu", "--reads", "100", "--maps", "10"]);
    assert!(
        text.contains("OPS/S") && text.contains("map-unmap"),
        "{text}"
    );
}

#[test]
fn bench_counts_beyond_their_maximum_are_refused_at_once() {
    let h = fresh();
    for (args, expected) in [
        (
            &["bench", "--reads", "18446744073709551615"][..],
            "error: --reads 18446744073709551615 is out of range: it takes 1 to 10000000",
        ),
        (
            &["bench", "--maps", "18446744073709551615", "--reads", "1"],
            "error: --maps 18446744073709551615 is out of range: it takes 1 to 1000000",
        ),
        (
            &["bench", "--maps", "0"],
            "error: --maps 0 is out of range: it takes 1 to 1000000",
        ),
    ] {
        // Generous for a loaded machine; the refusal itself takes
        // milliseconds, the unbounded loop took hours.
        let o = run_within(&h, args, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(1), "vfio-hal {args:?}");
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
    }
}

#[test]
fn list_on_a_machine_without_vfio_says_what_is_missing() {
    let h = fresh();
    let text = ok(&h, &["list"]);
    assert!(text.contains("No device is bound to vfio-pci"), "{text}");
    assert!(text.contains("modprobe vfio-pci"), "{text}");
    let v = json(&h, &["list"]);
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(0));
    let mock = v["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|o| o["backend"] == "mock"))
        .expect("mock offer");
    assert_eq!(mock["available"], true);
}

#[test]
fn list_shows_bound_devices_their_groups_and_viability() {
    let h = fresh();
    h.add_device("0000:00:04.0", Some("vfio-pci"), Some(4), Some("vfio0"))
        .expect("edu");
    h.add_device("0000:00:05.0", Some("vfio-pci"), Some(5), None)
        .expect("nvme");
    h.add_device("0000:00:05.1", Some("snd_hda_intel"), Some(5), None)
        .expect("sibling");
    let v = json(&h, &["list"]);
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2, "{v}");
    assert_eq!(devices[0]["group"], 4);
    assert_eq!(devices[0]["viable"], true);
    assert_eq!(devices[0]["cdev"], "vfio0");
    assert_eq!(devices[1]["viable"], false);
    assert_eq!(devices[1]["blockers"][0]["driver"], "snd_hda_intel");
    let text = ok(&h, &["list"]);
    assert!(text.contains("no: 0000:00:05.1 (snd_hda_intel)"), "{text}");
}

#[test]
fn list_shows_mediated_devices_with_their_type() {
    let h = fresh();
    h.add_device("0000:00:04.0", Some("vfio-pci"), Some(4), Some("vfio0"))
        .expect("edu");
    let uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    h.add_mdev(
        uuid,
        "mtty",
        "mtty-2",
        "Dual port serial",
        12,
        Some("vfio1"),
    )
    .expect("mtty");
    let v = json(&h, &["list"]);
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2, "{v}");
    assert_eq!(devices[0]["bus"], "pci");
    let mdev = &devices[1];
    assert_eq!(mdev["name"], uuid);
    assert_eq!(mdev["bus"], "mdev");
    assert_eq!(mdev["mdev"]["type"], "mtty-2");
    assert_eq!(mdev["mdev"]["type_name"], "Dual port serial");
    assert_eq!(mdev["mdev"]["parent"], "mtty");
    assert_eq!(
        (mdev["group"].as_u64(), mdev["viable"].as_bool()),
        (Some(12), Some(true))
    );
    let text = ok(&h, &["list"]);
    let row = text
        .lines()
        .find(|l| l.starts_with(uuid))
        .unwrap_or_else(|| panic!("no row for {uuid}:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["mdev:mtty-2", "12", "yes", "vfio1"], "{row}");
}

#[test]
fn a_device_on_another_driver_gets_the_rebind_commands() {
    let h = fresh();
    h.add_device("0000:00:03.0", Some("virtio-pci"), Some(3), None)
        .expect("device");
    let o = run(&h, &["info", "00:03.0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("error: 0000:00:03.0 is bound to virtio-pci, not to vfio-pci"),
        "{err}"
    );
    assert!(
        err.contains("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override"),
        "{err}"
    );

    let o = run(&h, &["info", "00:03.0", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("the error is JSON too");
    assert_eq!(v["error"]["kind"], "NotFound");
    assert!(v["error"]["remedy"]
        .as_str()
        .is_some_and(|r| r.contains("drivers_probe")));
}

#[test]
fn a_group_shared_with_a_host_driver_is_not_viable() {
    let h = fresh();
    h.add_device("0000:00:04.0", Some("vfio-pci"), Some(8), None)
        .expect("device");
    h.add_device("0000:00:04.1", Some("e1000e"), Some(8), None)
        .expect("sibling");
    let o = run(&h, &["info", "0000:00:04.0"]);
    let err = stderr(&o);
    assert!(
        err.contains("IOMMU group 8 of 0000:00:04.0 is not viable"),
        "{err}"
    );
    assert!(err.contains("0000:00:04.1 is bound to e1000e"), "{err}");
    assert!(err.contains("/sys/kernel/iommu_groups/8/devices"), "{err}");
}

#[cfg(feature = "legacy")]
#[test]
fn no_dev_vfio_says_which_module_to_load() {
    let h = fresh();
    h.add_device("0000:00:04.0", Some("vfio-pci"), Some(2), None)
        .expect("device");
    let o = run(
        &h,
        &["read", "0000:00:04.0", "bar0", "0", "--backend", "legacy"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("vfio/vfio is missing, which the legacy backend needs"),
        "{err}"
    );
    assert!(err.contains("modprobe vfio-pci vfio_iommu_type1"), "{err}");
}

#[test]
fn a_mock_name_is_refused_when_real_vfio_devices_are_present() {
    let h = fresh();
    h.add_device("0000:00:04.0", Some("vfio-pci"), Some(2), None)
        .expect("device");
    let o = run(&h, &["info", "edu"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "`edu` is not a PCI address, and this machine has VFIO devices (0000:00:04.0)"
        ),
        "{err}"
    );
    assert!(err.contains("--backend mock"), "{err}");
    // Asking for the mock explicitly still works.
    let v = json(&h, &["info", "edu", "--backend", "mock"]);
    assert_eq!(v["device"]["reason"], "asked for (--backend mock)");
}

#[test]
fn unknown_names_say_what_to_do() {
    let h = fresh();
    let o = run(&h, &["info", "nvme", "--backend", "mock"]);
    assert!(
        stderr(&o).contains("the mock backend has no device `nvme` (it has edu, copy-engine)"),
        "{}",
        stderr(&o)
    );
    let o = run(&h, &["info", "not-a-device"]);
    assert!(
        stderr(&o).contains("is not a PCI address"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_the_sigpipe_status() {
    let h = fresh();
    for args in [
        &["--backend", "mock", "info", "edu"][..],
        &["--backend", "mock", "info", "edu", "--json"],
        &["--backend", "mock", "list"],
        &["--backend", "mock", "conformance", "edu", "--cases", "A0"],
    ] {
        let o = run_with(&h, args, closed_pipe(), Stdio::piped());
        assert_eq!(
            o.status.code(),
            Some(141),
            "vfio-hal {args:?}: 128 + SIGPIPE, as a shell reports for cat: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o), "", "vfio-hal {args:?} ends quietly");
    }
}

#[test]
fn a_full_disk_on_stdout_is_one_line_on_stderr_and_exit_1() {
    let h = fresh();
    for args in [
        &["--backend", "mock", "info", "edu"][..],
        &["--backend", "mock", "info", "edu", "--json"],
        &["--backend", "mock", "read", "edu", "bar0", "0"],
        &["--backend", "mock", "conformance", "edu", "--cases", "A0"],
        &["--help"],
    ] {
        let o = run_with(&h, args, full_disk(), Stdio::piped());
        assert_eq!(
            o.status.code(),
            Some(1),
            "vfio-hal {args:?}: {}",
            stderr(&o)
        );
        assert_eq!(
            stderr(&o),
            "error: writing to stdout: No space left on device (os error 28)\n",
            "vfio-hal {args:?}"
        );
    }
}

#[test]
fn a_failing_stderr_does_not_stop_the_command() {
    let h = fresh();
    // Without --backend the mock is announced on stderr, which is full.
    let o = run_with(&h, &["info", "edu"], Stdio::piped(), full_disk());
    assert!(o.status.success(), "{}", o.status);
    assert!(stdout(&o).contains("1234:11e8"), "{}", stdout(&o));
}

#[test]
fn command_line_errors_are_json_too_with_json() {
    let h = fresh();
    for (args, expected) in [
        (
            &["read", "edu", "bar0", "0", "--width", "3", "--json"][..],
            "width `3` is not one of 1, 2, 4, 8",
        ),
        (&["--json", "bogus"], "unrecognized subcommand 'bogus'"),
        (
            &["--json", "read", "edu"],
            "required arguments were not provided",
        ),
    ] {
        let o = run(&h, args);
        assert_eq!(o.status.code(), Some(2), "vfio-hal {args:?}");
        let v: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("vfio-hal {args:?}: not JSON ({e}): {}", stdout(&o)));
        assert_eq!(v["error"]["kind"], "InvalidArgument", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{v}"
        );
        assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    }
    let o = run(&h, &["read", "edu", "bar0", "0", "--width", "3"]);
    assert_eq!(stdout(&o), "", "without --json stdout stays empty");
}

#[test]
fn numbers_with_a_sign_are_refused() {
    let h = fresh();
    for args in [
        &["read", "edu", "bar0", "+0"][..],
        &["read", "edu", "bar0", "0x+4"],
        &["write", "edu", "bar0", "4", "+5"],
        &["bench", "--reads", "+5"],
    ] {
        let o = run(&h, args);
        assert_eq!(o.status.code(), Some(2), "vfio-hal {args:?}");
        assert!(stderr(&o).contains("no sign"), "{}", stderr(&o));
    }
}

#[test]
fn a_root_that_is_not_there_is_an_error_naming_it() {
    let h = fresh();
    let missing = h.path("no-such-tree");
    for (option, other) in [("--sys-root", "--dev-root"), ("--dev-root", "--sys-root")] {
        let o = Command::new(BIN)
            .args(["info", "edu", option])
            .arg(&missing)
            .arg(other)
            .arg(h.path("sys"))
            .output()
            .expect("the vfio-hal binary runs");
        assert_eq!(o.status.code(), Some(1), "{option}: {}", stdout(&o));
        assert_eq!(
            stderr(&o),
            format!(
                "error: {option} {}: No such file or directory (os error 2)\n",
                missing.display()
            )
        );
    }
}

/// docs/CLI.md, whose examples and exit-status table these tests hold to
/// the tool.
const CLI_MD: &str = include_str!("../../docs/CLI.md");

/// One `$ vfio-hal …` example of a text block: the arguments, and the
/// lines shown after it (`…` for lines left out).
struct Example {
    args: Vec<String>,
    shown: Vec<String>,
}

/// The examples of `doc` that can be run here: those whose command has no
/// `# comment` (a comment says which other machine or run it comes from).
fn runnable_examples(doc: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_text = false;
    let mut current: Option<Example> = None;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_text = !in_text && line == "```text";
            examples.extend(current.take());
            continue;
        }
        if !in_text {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            examples.extend(current.take());
            current = command
                .strip_prefix("vfio-hal ")
                .filter(|c| !c.contains('#'))
                .map(|c| Example {
                    args: c.split_whitespace().map(str::to_owned).collect(),
                    shown: Vec::new(),
                });
        } else if let Some(example) = current.as_mut() {
            example.shown.push(line.to_owned());
        }
    }
    examples
}

/// Whether `shown`'s runs of lines between `…` lines appear in `actual`,
/// each run as consecutive lines, the runs in order.
fn shows(shown: &[String], actual: &[&str]) -> Result<(), String> {
    let mut from = 0;
    for run in shown.split(|l| l == "…").filter(|r| !r.is_empty()) {
        let found = (from..actual.len()).find(|&at| {
            actual
                .get(at..at + run.len())
                .is_some_and(|window| window.iter().zip(run).all(|(a, s)| a == s))
        });
        match found {
            Some(at) => from = at + run.len(),
            None => {
                return Err(format!(
                    "not in the output (after line {from}):\n{}",
                    run.join("\n")
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn the_documented_examples_are_what_the_tool_prints() {
    let h = fresh();
    let examples = runnable_examples(CLI_MD);
    assert!(
        examples.len() >= 7,
        "only {} runnable examples found in docs/CLI.md",
        examples.len()
    );
    for example in &examples {
        let args: Vec<&str> = example.args.iter().map(String::as_str).collect();
        let o = run(&h, &args);
        let text = format!("{}{}", stdout(&o), stderr(&o));
        let actual: Vec<&str> = text.lines().collect();
        if let Err(e) = shows(&example.shown, &actual) {
            panic!(
                "docs/CLI.md: `vfio-hal {}`: {e}\n--- the tool printed:\n{text}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn the_example_matcher_needs_the_shown_lines_in_order() {
    let lines = |list: &[&str]| list.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    let actual = ["a", "b", "c", "d"];
    assert!(shows(&lines(&["a", "b"]), &actual).is_ok());
    assert!(shows(&lines(&["a", "…", "c", "d"]), &actual).is_ok());
    assert!(shows(&lines(&["a", "c"]), &actual).is_err(), "consecutive");
    assert!(
        shows(&lines(&["c", "…", "a"]), &actual).is_err(),
        "in order"
    );
    assert!(shows(&lines(&["d", "e"]), &actual).is_err(), "past the end");
}

/// The cells of a markdown table row, `\|` kept as `|`.
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.trim().trim_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("a cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().expect("a cell").push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

#[test]
fn the_documented_exit_statuses_are_the_tools() {
    let h = fresh();
    let rows: Vec<Vec<String>> = CLI_MD
        .lines()
        .skip_while(|l| !l.starts_with("| status | when | for example |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        statuses,
        ["0", "1", "2", "141"],
        "docs/CLI.md's exit-status table"
    );
    for row in &rows {
        let status: i32 = row[0].parse().expect("a status");
        let example = row[2].trim_matches('`');
        let command = example
            .strip_prefix("vfio-hal ")
            .expect("a vfio-hal command");
        // `… | head -1` is a reader that leaves: the closed pipe, without the race.
        let (command, reader_gone) = match command.strip_suffix(" | head -1") {
            Some(c) => (c, true),
            None => (command, false),
        };
        let args: Vec<&str> = command.split_whitespace().collect();
        let o = if reader_gone {
            run_with(&h, &args, closed_pipe(), Stdio::piped())
        } else {
            run(&h, &args)
        };
        assert_eq!(
            o.status.code(),
            Some(status),
            "docs/CLI.md: `{example}`: {}",
            stderr(&o)
        );
    }
}
