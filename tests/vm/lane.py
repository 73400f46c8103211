#!/usr/bin/env python3
"""The real-kernel lane: run the guest test binaries inside a QEMU guest whose
kernel has real VFIO, iommufd and vfio-pci, behind QEMU's emulated Intel IOMMU.

One command: `bash tests/vm/lane.sh [--boot default|compat|nommu]... [--fail-demo]`.
See docs/VM-LANE.md. Python 3.11 standard library only.

Steps: install missing Debian packages; build (or reuse) the guest kernel(s);
build the guest test binaries; pack an initramfs; pick kvm or tcg; boot each
kernel with a hard timeout; check the guest's result marker and every test
binary's libtest summary; print the totals.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Cargo packages whose test binaries run inside the guest. A crate adds its
# guest tests to the lane by appending its package name here.
GUEST_TEST_PACKAGES = [
    "vfio-hal-guest-tests",
    "vfio-hal-linux",
    "vfio-hal-legacy",
    "vfio-hal-iommufd",
    "vfio-hal-facade",
    "vfio-hal-cli",
    "vfio-hal-peer-bench",
]

# Binaries the guest tests run as a user would, copied into the guest's
# /bin: the command-line tool (built whenever vfio-hal-cli's tests are).
GUEST_TOOLS = ["vfio-hal"]

# Cargo features the lane turns on for a package's guest tests, beyond its
# defaults (a guest test that needs an optional feature is gated on it).
GUEST_TEST_FEATURES = {
    "vfio-hal-facade": ["vm-memory", "conformance"],
    "vfio-hal-linux": ["kvm"],
}

# Guest kernels: config fragments from tests/vm/kernel/, applied in order on
# top of tinyconfig + kvm_guest.config.
KERNELS = {
    "default": ["default.config"],
    "compat": ["default.config", "compat.config"],
}

@dataclass(frozen=True)
class BootSpec:
    """One boot of the lane: a kernel flavour, with or without QEMU's
    emulated VT-d, running all guest tests or only the ones it exists for."""

    kernel: str
    viommu: bool = True
    # Run only these tests (`--exact`); every other boot leaves them out
    # (`--skip`), so they count as neither passed nor skipped there. None
    # runs every test binary as it is, less the tests other boots own.
    only: tuple[str, ...] | None = None


# The boots, in order. `nommu` reuses the default kernel without the
# emulated VT-d: the kernel's own iommufd mock IOMMU (IOMMUFD_TEST) probes
# its devices with the first registered IOMMU's ops, which with VT-d present
# are VT-d's, so its tests run only where there is none.
BOOTS = {
    "default": BootSpec("default"),
    "compat": BootSpec("compat"),
    "nommu": BootSpec(
        "default",
        viommu=False,
        only=(
            "dirty_tracking_enable_and_read_on_the_kernel_mock_iommu",
            "ioas_container_reads_dirty_pages_of_its_hwpts_on_the_kernel_mock_iommu",
        ),
    ),
}


def owned_elsewhere(name: str) -> list[str]:
    """The tests that other boots exist for, which boot `name` leaves out."""
    return sorted({t for other, spec in BOOTS.items() if other != name for t in spec.only or ()})

# QEMU ids of the devices the guest tests may ask the host to unplug; the guest
# gets them as VFIO_HAL_<ROLE>_ID. /init finds the devices by vendor:device.
DEVICE_IDS = {
    "EDU": "edu0",  # QEMU edu, 1234:11e8, on the root bus
    "MSIX": "msix0",  # QEMU NVMe, 1b36:0010: MSI-X table inside BAR0
    "SPARE": "edu-spare",  # a second edu behind a hotplug-capable root port
    "SPARE2": "edu-spare2",  # a third edu behind a second root port: the lane's own unplug test
    "SPARE3": "edu-spare3",  # behind a third root port: kvm_vmm's passthrough unplug, legacy backend
    "SPARE4": "edu-spare4",  # behind a fourth root port: kvm_vmm's passthrough unplug, iommufd backend
    "PEER": "edu-peer",  # behind a fifth root port, never unplugged: the peer of peer-to-peer DMA
    "IGB": "igb0",  # QEMU igb, 8086:10c9, behind a sixth root port: hot reset, AER, SR-IOV, PCI PM
    "IGB_PORT": "rp6",  # igb's root port: where an AER error is injected (QEMU's igb sends none)
}

ROOT = Path(__file__).resolve().parents[2]
VM_DIR = ROOT / "tests" / "vm"
WORK = ROOT / "target" / "vm"
LOGS = WORK / "logs"
APT_LOG = LOGS / "apt.log"

APT_PACKAGES = [
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "flex",
    "bison",
    "libelf-dev",
    "linux-source-6.12",
]
KERNEL_SOURCE_PACKAGE = "linux-source-6.12"
KERNEL_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
# Bump when the way the kernel is built changes (invalidates the cache).
KERNEL_RECIPE = "tinyconfig+kvm_guest.config+fragments/olddefconfig/bzImage v1"
RUST_TARGET = "x86_64-unknown-linux-gnu"
BOOT_TIMEOUT_S = int(os.environ.get("VFIO_HAL_LANE_TIMEOUT", "600"))
PROBE_TIMEOUT_S = 20  # Linux under working KVM reaches /init in ~1 s
MAKE_JOBS = os.environ.get("VFIO_HAL_LANE_JOBS", "3")

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[lane {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class LaneError(Exception):
    """A failure that ends the lane with a message."""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------
# 1. Debian packages
# --------------------------------------------------------------------------


def dpkg_installed(pkg: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
    )
    return r.returncode == 0 and r.stdout.strip() == "install ok installed"


def os_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise LaneError("cannot tell the Debian codename from /etc/os-release")


def backports_source() -> Path | None:
    """Write a one-line apt source for <codename>-backports, derived from the
    machine's own Debian source (same URI and key), under target/vm/apt/."""
    codename = os_codename()
    entry = None
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in re.split(r"\n\s*\n", deb822.read_text()):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip()] = value.strip()
            if "deb" in fields.get("Types", "").split() and codename in fields.get(
                "Suites", ""
            ).split():
                entry = (fields["URIs"].split()[0], fields.get("Signed-By"))
                break
    if entry is None and Path("/etc/apt/sources.list").exists():
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            m = re.match(r"deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m and m.group(3) == codename:
                entry = (m.group(2), None)
                break
    if entry is None:
        return None
    uri, signed_by = entry
    opts = f"[signed-by={signed_by}] " if signed_by and signed_by.startswith("/") else ""
    path = WORK / "apt" / f"{codename}-backports.list"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"deb {opts}{uri} {codename}-backports main\n")
    return path


def apt_install(pkgs: list[str], opts: list[str], release: str | None = None) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def available() -> bool:
        for pkg in pkgs:
            out = subprocess.run(
                ["apt-cache", *opts, "madison", pkg], capture_output=True, text=True
            ).stdout
            if not out.strip() or (release and f" {release}/" not in out):
                return False
        return True

    def apt_get(*args: str) -> bool:
        cmd = ["apt-get", *opts, *args]
        log("apt: " + " ".join(cmd))
        with APT_LOG.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            ok = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode == 0
        if not ok:
            print("\n".join(APT_LOG.read_text().splitlines()[-20:]))
            log(f"apt: failed, see {APT_LOG.relative_to(ROOT)}")
        return ok

    if not available():
        log(f"apt: no candidate for {' '.join(pkgs)} yet")
        if not apt_get("update") or not available():
            return False
    target = ["-t", release] if release else []
    return apt_get("install", "-y", "--no-install-recommends", *target, *pkgs)


def ensure_packages() -> None:
    missing = [p for p in APT_PACKAGES if not dpkg_installed(p)]
    if not missing:
        log("apt: all packages present")
        return
    if os.geteuid() != 0:
        raise LaneError(f"missing Debian packages {missing}; run as root to install them")
    log(f"apt: missing {' '.join(missing)}")
    if "qemu-system-x86" in missing:
        missing.remove("qemu-system-x86")
        src = backports_source()
        ok = False
        if src is not None:
            release = f"{os_codename()}-backports"
            ok = apt_install(
                ["qemu-system-x86"], ["-o", f"Dir::Etc::SourceList={src}"], release
            )
            if not ok:
                log(f"apt: QEMU from {release} failed; falling back to {os_codename()}'s")
        if not ok and not apt_install(["qemu-system-x86"], []):
            raise LaneError("apt: cannot install qemu-system-x86")
    if missing and not apt_install(missing, []):
        raise LaneError(f"apt: cannot install {' '.join(missing)}")


# --------------------------------------------------------------------------
# 2. Guest kernel
# --------------------------------------------------------------------------


def kernel_source_version() -> str:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", KERNEL_SOURCE_PACKAGE],
        capture_output=True,
        text=True,
    )
    if r.returncode or not KERNEL_TARBALL.exists():
        raise LaneError(f"{KERNEL_TARBALL} missing ({KERNEL_SOURCE_PACKAGE} not installed?)")
    return r.stdout.strip()


def fragments(flavour: str) -> list[Path]:
    return [VM_DIR / "kernel" / name for name in KERNELS[flavour]]


def kernel_key(flavour: str, src_version: str) -> str:
    h = hashlib.sha256()
    h.update(f"{KERNEL_RECIPE}\n{KERNEL_TARBALL.name}\n{src_version}\n".encode())
    for frag in fragments(flavour):
        h.update(frag.name.encode() + b"\n" + frag.read_bytes())
    return h.hexdigest()[:16]


def wanted_symbols(flavour: str) -> dict[str, str]:
    """CONFIG_X -> value ('n' for '# CONFIG_X is not set'), later fragments win."""
    want: dict[str, str] = {}
    for frag in fragments(flavour):
        for line in frag.read_text().splitlines():
            line = line.strip()
            m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
            if m:
                want[m.group(1)] = m.group(2)
                continue
            m = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
            if m:
                want[m.group(1)] = "n"
    return want


def check_config(flavour: str, config: Path) -> None:
    have: dict[str, str] = {}
    for line in config.read_text().splitlines():
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if m:
            have[m.group(1)] = m.group(2)
    bad = []
    for sym, value in wanted_symbols(flavour).items():
        got = have.get(sym, "n")
        if got != value:
            bad.append(f"  {sym}: wanted {value}, got {got}")
    if bad:
        raise LaneError(
            f"kernel config for '{flavour}' lost symbols of its fragment "
            f"(missing dependency?), see {config}:\n" + "\n".join(bad)
        )


def extract_kernel_source(src_version: str) -> Path:
    base = WORK / "src" / src_version
    tree = base / "linux-source-6.12"
    stamp = base / ".extracted"
    if stamp.exists():
        return tree
    for old in (WORK / "src").glob("*") if (WORK / "src").exists() else []:
        shutil.rmtree(old)
    base.mkdir(parents=True)
    log(f"kernel: extracting {KERNEL_TARBALL}")
    run(["tar", "-xf", str(KERNEL_TARBALL), "-C", str(base)])
    stamp.touch()
    return tree


def build_kernel(flavour: str) -> Path:
    src_version = kernel_source_version()
    key = kernel_key(flavour, src_version)
    cached = WORK / "kernel" / key / "bzImage"
    if cached.exists():
        log(f"kernel({flavour}): cache hit {cached.relative_to(ROOT)}")
        return cached
    log(f"kernel({flavour}): cache miss, building {src_version} (key {key})")
    t = time.monotonic()
    tree = extract_kernel_source(src_version)
    # One output dir shared by the flavours: switching flavour is an
    # incremental rebuild (seconds) instead of a full one (minutes).
    out = WORK / "kbuild" / src_version
    out.mkdir(parents=True, exist_ok=True)
    build_log = LOGS / f"kernel-{flavour}.build.log"
    LOGS.mkdir(parents=True, exist_ok=True)
    kvm_guest = next(
        p
        for p in (tree / "kernel/configs/kvm_guest.config", tree / "arch/x86/configs/kvm_guest.config")
        if p.exists()
    )
    make = ["make", "-C", str(tree), f"O={out}", "ARCH=x86_64"]
    steps = [
        make + ["tinyconfig"],
        [
            str(tree / "scripts/kconfig/merge_config.sh"),
            "-m",
            "-O",
            str(out),
            str(out / ".config"),
            str(kvm_guest),
            *map(str, fragments(flavour)),
        ],
        make + ["olddefconfig"],
    ]
    with build_log.open("w") as f:
        for cmd in steps:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            if subprocess.run(cmd, cwd=tree, stdout=f, stderr=subprocess.STDOUT).returncode:
                raise LaneError(f"kernel({flavour}): {cmd[0]} failed, see {build_log}")
        check_config(flavour, out / ".config")
        log(f"kernel({flavour}): config checked ({len(wanted_symbols(flavour))} symbols), make -j{MAKE_JOBS} bzImage")
        cmd = make + [f"-j{MAKE_JOBS}", "bzImage"]
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        if subprocess.run(cmd, cwd=tree, stdout=f, stderr=subprocess.STDOUT).returncode:
            tail = build_log.read_text().splitlines()[-30:]
            raise LaneError(f"kernel({flavour}): build failed, see {build_log}:\n" + "\n".join(tail))
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / ".config", cached.parent / "config")
    tmp = cached.with_suffix(".tmp")
    shutil.copy(out / "arch/x86/boot/bzImage", tmp)
    tmp.rename(cached)
    log(f"kernel({flavour}): built in {time.monotonic() - t:.0f}s -> {cached.relative_to(ROOT)}")
    return cached


# --------------------------------------------------------------------------
# 3. Guest test binaries
# --------------------------------------------------------------------------


def build_guest_tests(fail_demo: bool, packages: list[str], release: bool) -> tuple[list[Path], list[Path]]:
    """The test executables, and the GUEST_TOOLS binaries built with them."""
    env = dict(os.environ)
    env.pop("CARGO_ENCODED_RUSTFLAGS", None)
    env.update(
        RUSTFLAGS="-C target-feature=+crt-static --cfg vfio_hal_guest",
        # Per checkout, outside target/vm (which worktrees may share for
        # its kernels): cargo names a workspace crate's artifacts the same
        # in every checkout, so a shared directory can hand one checkout
        # another's build.
        CARGO_TARGET_DIR=str(ROOT / "target" / "lane-cargo"),
        # Read by tests/guest/build.rs: compiles the deliberately failing test.
        VFIO_HAL_LANE_FAIL_DEMO="1" if fail_demo else "0",
    )
    cmd = ["cargo", "test", "--no-run", "--target", RUST_TARGET, "--message-format=json"]
    if release:
        # Optimised binaries, for the guest benchmarks' figures.
        cmd.append("--release")
    for pkg in packages:
        cmd += ["-p", pkg]
        for feature in GUEST_TEST_FEATURES.get(pkg, []):
            cmd += ["--features", f"{pkg}/{feature}"]
    log("cargo: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    exes: list[Path] = []
    tools: list[Path] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            print(line, end="")
            continue
        if msg.get("reason") == "compiler-message":
            print(msg["message"].get("rendered", ""), end="")
        elif (
            msg.get("reason") == "compiler-artifact"
            and msg.get("profile", {}).get("test")
            and msg.get("executable")
        ):
            exes.append(Path(msg["executable"]))
        elif (
            msg.get("reason") == "compiler-artifact"
            and "bin" in msg.get("target", {}).get("kind", [])
            and msg.get("target", {}).get("name") in GUEST_TOOLS
            and msg.get("executable")
        ):
            tools.append(Path(msg["executable"]))
    if proc.wait():
        raise LaneError("cargo: building the guest tests failed")
    if not exes:
        raise LaneError(f"cargo: no test executables for {packages}")
    return exes, tools


# --------------------------------------------------------------------------
# 4. initramfs
# --------------------------------------------------------------------------


def build_initramfs(exes: list[Path], tools: list[Path]) -> tuple[Path, list[str]]:
    stage = WORK / "initramfs"
    if stage.exists():
        shutil.rmtree(stage)
    for d in ("bin", "dev", "proc", "sys", "tmp", "tests"):
        (stage / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", stage / "bin/busybox")  # from busybox-static
    shutil.copy(VM_DIR / "init", stage / "init")
    (stage / "init").chmod(0o755)
    names = []
    for exe in sorted(exes, key=lambda e: e.name):
        names.append(exe.name)
        # Debug info only bloats the initramfs; symbols stay for backtraces.
        run(["strip", "--strip-debug", "-o", str(stage / "tests" / exe.name), str(exe)])
    (stage / "tests" / "MANIFEST").write_text("".join(f"{n}\n" for n in names))
    for tool in tools:
        run(["strip", "--strip-debug", "-o", str(stage / "bin" / tool.name), str(tool)])
    image = WORK / "initramfs.cpio.gz"
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    cpio = run(
        ["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
        cwd=stage,
        input=("\n".join(["."] + files) + "\n").encode(),
        capture_output=True,
    ).stdout
    with image.open("wb") as f:
        run(["gzip", "-1", "-n"], input=cpio, stdout=f)
    log(f"initramfs: {len(names)} test binaries, tools {[t.name for t in tools]}, {image.stat().st_size >> 10} KiB")
    return image, names


# --------------------------------------------------------------------------
# 5. Boot
# --------------------------------------------------------------------------


def qemu_binary() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise LaneError("qemu-system-x86_64 not found")
    return qemu


def qemu_cmd(accel: str, kernel: Path, initrd: Path, append: str, tmp: Path, viommu: bool = True) -> list[str]:
    iommu = ["-device", "intel-iommu,intremap=on,caching-mode=on"] if viommu else []
    return [
        qemu_binary(),
        "-machine", f"q35,accel={accel}",
        "-cpu", "max",
        "-m", "3G",
        # One vCPU: with two, QEMU 10's multi-threaded TCG hit
        # `iotlb_to_section: Assertion section_index < d->map.sections_nb`
        # (a race between a vCPU's TLB and a memory-map update) during the
        # MSI-X conformance cases. The tests run one at a time anyway.
        "-smp", "1",
        "-nodefaults",
        "-no-reboot",
        "-display", "none",
        *iommu,
        "-device", f"edu,id={DEVICE_IDS['EDU']}",
        "-device", f"nvme,id={DEVICE_IDS['MSIX']},serial=vfiohal0",
        "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
        "-device", f"edu,id={DEVICE_IDS['SPARE']},bus=rp1",
        "-device", "pcie-root-port,id=rp2,chassis=2,slot=2",
        "-device", f"edu,id={DEVICE_IDS['SPARE2']},bus=rp2",
        "-device", "pcie-root-port,id=rp3,chassis=3,slot=3",
        "-device", f"edu,id={DEVICE_IDS['SPARE3']},bus=rp3",
        "-device", "pcie-root-port,id=rp4,chassis=4,slot=4",
        "-device", f"edu,id={DEVICE_IDS['SPARE4']},bus=rp4",
        "-device", "pcie-root-port,id=rp5,chassis=5,slot=5",
        "-device", f"edu,id={DEVICE_IDS['PEER']},bus=rp5",
        # 5 GT/s: above that, Linux waits for Data Link Layer Link Active
        # after a secondary bus reset, which QEMU's root port does not set
        # again (the hot reset then fails: "Data Link Layer Link Active not
        # set in 100 msec", ENOTTY).
        "-device", f"pcie-root-port,id={DEVICE_IDS['IGB_PORT']},chassis=6,slot=6,x-speed=5,x-width=1",
        "-device", f"igb,id={DEVICE_IDS['IGB']},bus=rp6",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-serial", "stdio",  # ttyS0: console
        "-chardev", f"socket,id=ctl,path={tmp / 'ctl.sock'},server=off",
        "-serial", "chardev:ctl",  # ttyS1: requests to the host (DEVICE_DEL)
        "-qmp", f"unix:{tmp / 'qmp.sock'},server=on,wait=off",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", append,
    ]  # fmt: skip


class Qmp:
    """Minimal QMP client on QEMU's unix socket."""

    def __init__(self, path: Path):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(10)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments) -> dict:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply or "error" in reply:
                return reply

    def close(self) -> None:
        self.sock.close()


@dataclass
class Boot:
    rc: int | None = None
    output: str = ""
    elapsed: float = 0.0
    failure: str | None = None


class Control:
    """Serves the guest's requests on its /dev/ttyS1, one line each way:
    `DEVICE_DEL <qemu-id>` -> QMP device_del, `AER_INJECT <qemu-id> <error>`
    -> HMP pcie_aer_inject_error; each answered `OK` or `ERR <reason>`."""

    def __init__(self, qmp_path: Path):
        self.qmp_path = qmp_path
        self.qmp: Qmp | None = None

    def handle(self, line: str) -> str:
        words = line.split()
        if words == ["PING"]:
            return "PONG"
        if len(words) == 2 and words[0] == "DEVICE_DEL":
            try:
                if self.qmp is None:
                    self.qmp = Qmp(self.qmp_path)
                reply = self.qmp.execute("device_del", id=words[1])
            except (OSError, ValueError) as e:
                return f"ERR qmp: {e}"
            if "error" in reply:
                return f"ERR {reply['error'].get('desc', reply['error'])}"
            return "OK"
        if len(words) >= 3 and words[0] == "AER_INJECT":
            # HMP's pcie_aer_inject_error <id> <error> [flags]: the device
            # records the error and sends it up as far as the error-reporting
            # enables on the way allow.
            try:
                if self.qmp is None:
                    self.qmp = Qmp(self.qmp_path)
                reply = self.qmp.execute(
                    "human-monitor-command",
                    **{"command-line": "pcie_aer_inject_error " + " ".join(words[1:])},
                )
            except (OSError, ValueError) as e:
                return f"ERR qmp: {e}"
            if "error" in reply:
                return f"ERR {reply['error'].get('desc', reply['error'])}"
            # Success prints "OK id: <id> root bus: ..."; anything else is
            # QEMU's reason.
            said = reply.get("return", "").strip()
            return "OK" if said.startswith("OK") else f"ERR {said or 'no answer'}"
        return f"ERR unknown request: {line!r}"

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()


def boot(
    accel: str,
    kernel: Path,
    initrd: Path,
    append: str,
    timeout: float,
    logfile: Path | None,
    echo: bool,
    viommu: bool = True,
) -> Boot:
    result = Boot()
    tmp = Path(tempfile.mkdtemp(prefix="vfio-hal-lane-"))
    ctl_listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl_listen.bind(str(tmp / "ctl.sock"))
    ctl_listen.listen(1)
    cmd = qemu_cmd(accel, kernel, initrd, append, tmp, viommu)
    out = logfile.open("wb") if logfile else None
    if out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel.register(proc.stdout, selectors.EVENT_READ, "console")
    sel.register(ctl_listen, selectors.EVENT_READ, "listen")
    chunks: list[bytes] = []
    at_line_start = True

    def note(msg: str) -> None:
        """A host-side line in the console stream (not parsed as guest output)."""
        line = ("" if at_line_start else "\n") + f"[lane host {time.monotonic() - start:5.1f}s] {msg}\n"
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
        if out:
            out.write(line.encode())

    ctl: socket.socket | None = None
    ctl_buf = b""
    control = Control(tmp / "qmp.sock")
    tail = b""
    try:
        console_open = True
        while console_open:
            left = start + timeout - time.monotonic()
            if left <= 0:
                result.failure = f"timeout: no exit after {timeout:.0f}s"
                break
            for key, _ in sel.select(timeout=min(left, 1.0)):
                if key.data == "console":
                    try:
                        data = os.read(proc.stdout.fileno(), 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        console_open = False
                        break
                    chunks.append(data)
                    if echo:
                        sys.stdout.buffer.write(data)
                        sys.stdout.buffer.flush()
                    if out:
                        out.write(data)
                        out.flush()
                    at_line_start = data.endswith(b"\n")
                    tail = (tail + data)[-4096:]
                    if accel == "kvm" and b"KVM internal error" in tail:
                        time.sleep(0.2)  # let QEMU finish its register dump
                        result.failure = "KVM internal error (QEMU would stay paused forever)"
                        console_open = False
                        break
                elif key.data == "listen":
                    ctl, _ = ctl_listen.accept()
                    ctl.setblocking(False)
                    sel.register(ctl, selectors.EVENT_READ, "ctl")
                elif key.data == "ctl":
                    assert ctl is not None
                    try:
                        data = ctl.recv(4096)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(ctl)
                        continue
                    ctl_buf += data
                    while b"\n" in ctl_buf:
                        raw, ctl_buf = ctl_buf.split(b"\n", 1)
                        line = raw.decode(errors="replace").strip()
                        if not line:
                            continue
                        reply = control.handle(line)
                        note(f"control: guest asked {line!r}, answered {reply!r}")
                        ctl.setblocking(True)
                        ctl.sendall(reply.encode() + b"\n")
                        ctl.setblocking(False)
        if result.failure is None:
            try:
                proc.wait(timeout=max(1.0, start + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                result.failure = "timeout: QEMU closed its output but did not exit"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        result.rc = proc.returncode
        result.elapsed = time.monotonic() - start
        control.close()
        if ctl:
            ctl.close()
        ctl_listen.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if out:
            out.close()
    result.output = b"".join(chunks).decode(errors="replace").replace("\r", "")
    return result


def choose_accel(kernel: Path, initrd: Path) -> str:
    forced = os.environ.get("VFIO_HAL_LANE_ACCEL")
    if forced:
        if forced not in ("kvm", "tcg"):
            raise LaneError(f"VFIO_HAL_LANE_ACCEL={forced}: use kvm or tcg")
        log(f"accel: {forced} (forced by VFIO_HAL_LANE_ACCEL)")
        return forced
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        log(f"accel: tcg (/dev/kvm unusable: {e.strerror})")
        return "tcg"
    probe_log = LOGS / "kvm-probe.log"
    b = boot("kvm", kernel, initrd, "console=ttyS0 panic=-1 VFIO_HAL_PROBE=1", PROBE_TIMEOUT_S, probe_log, False)
    if b.failure is None and re.search(r"^PROBE: OK$", b.output, re.M) and b.rc == 1:
        log(f"accel: kvm (probe boot reached /init in {b.elapsed:.1f}s)")
        return "kvm"
    qemu_errors = [l for l in b.output.splitlines() if l.startswith("qemu-system")]
    why = b.failure or f"guest did not reach /init, qemu rc={b.rc}"
    if qemu_errors:
        why += f": {qemu_errors[0]}"
    log(f"accel: tcg (KVM probe failed after {b.elapsed:.1f}s: {why}; see {probe_log.relative_to(ROOT)})")
    return "tcg"


# --------------------------------------------------------------------------
# 6./7. Run one kernel and judge the result
# --------------------------------------------------------------------------

RESULT_RE = re.compile(r"^RESULT: (PASS|FAIL rc=(\d+))$", re.M)
SUMMARY_RE = re.compile(
    r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;", re.M
)


IGNORED_RE = re.compile(r"^test (\S+) \.\.\. ignored(?:, (.*))?$", re.M)
PASSED_RE = re.compile(r"^test (\S+) \.\.\. ok$", re.M)


@dataclass
class Outcome:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    # Names of the tests that passed, and of those ignored, with the reason.
    passed_names: set[str] = field(default_factory=set)
    ignored: dict[str, str] = field(default_factory=dict)


def judge(b: Boot, expected: list[str]) -> Outcome:
    o = Outcome()
    if b.failure:
        o.problems.append(b.failure)
    for name in expected:
        m = re.search(
            rf"^=== RUN {re.escape(name)}$(.*?)^=== END {re.escape(name)} rc=(\d+)$",
            b.output,
            re.M | re.S,
        )
        if not m:
            o.problems.append(f"test binary {name} did not run to its end")
            continue
        sums = SUMMARY_RE.findall(m.group(1))
        if not sums:
            o.problems.append(f"test binary {name} printed no 'test result:' line (rc={m.group(2)})")
            o.failed += 1
            continue
        for _, p, f, i in sums:
            o.passed, o.failed, o.skipped = o.passed + int(p), o.failed + int(f), o.skipped + int(i)
        o.passed_names.update(PASSED_RE.findall(m.group(1)))
        for test, reason in IGNORED_RE.findall(m.group(1)):
            o.ignored[test] = reason or "no reason given"
        if m.group(2) != "0":
            o.problems.append(f"test binary {name} exited with rc={m.group(2)}")
    markers = RESULT_RE.findall(b.output)
    if not markers:
        o.problems.append("the guest printed no RESULT marker (crash, panic or timeout)")
    elif markers[-1][0] != "PASS":
        o.problems.append(f"the guest reported {markers[-1][0]}")
    elif b.rc != 1:
        o.problems.append(f"QEMU exit code {b.rc}, expected 1 (isa-debug-exit with 0)")
    return o


def run_boot(name: str, spec: BootSpec, kernel: Path, initrd: Path, expected: list[str], accel: str, fail_demo: bool) -> Outcome:
    append = " ".join(
        [
            "console=ttyS0",
            "panic=-1",
            *(["intel_iommu=on"] if spec.viommu else []),
            f"VFIO_HAL_KERNEL={spec.kernel}",
            f"VFIO_HAL_BOOT={name}",
            *([f"VFIO_HAL_ONLY_TESTS={','.join(spec.only)}"] if spec.only else []),
            *([f"VFIO_HAL_SKIP_TESTS={','.join(skip)}"] if (skip := owned_elsewhere(name)) and spec.only is None else []),
            f"VFIO_HAL_FAIL_DEMO={int(fail_demo)}",
            # The guest kernel has KVM: a KVM test that finds no /dev/kvm fails.
            "VFIO_HAL_REQUIRE_KVM=1",
            # vfio-pci may create the igb's virtual functions (sriov_numvfs).
            "vfio_pci.enable_sriov=1",
            *(f"VFIO_HAL_{role}_ID={qid}" for role, qid in DEVICE_IDS.items()),
        ]
    )
    logfile = LOGS / f"{name}.log"
    log(f"boot({name}): kernel {spec.kernel}, {'with' if spec.viommu else 'without'} VT-d, accel={accel}, timeout {BOOT_TIMEOUT_S}s, console -> {logfile.relative_to(ROOT)}")
    b = boot(accel, kernel, initrd, append, BOOT_TIMEOUT_S, logfile, True, spec.viommu)
    log(f"boot({name}): QEMU exited rc={b.rc} after {b.elapsed:.1f}s")
    o = judge(b, expected)
    if spec.only is not None:
        missing = [t for t in spec.only if t not in o.passed_names]
        if missing:
            o.problems.append(f"boot {name} exists to run {missing}, which did not pass")
    if b.failure or not RESULT_RE.search(b.output):
        tail = b.output.splitlines()[-40:]
        print(f"--- last lines of the console ({logfile.relative_to(ROOT)}) ---")
        print("\n".join(tail))
        print("--- end of console ---")
    for p in o.problems:
        print(f"lane({name}): FAIL: {p}")
    return o


def report_skips(outcomes: dict[str, Outcome]) -> list[str]:
    """Each test some boot ignored: run (and passed) in another boot, or a
    remaining skip with its reason. Returns the lines of the remaining ones."""
    remaining = []
    for boot_name, o in outcomes.items():
        for test, reason in sorted(o.ignored.items()):
            where = [b for b, other in outcomes.items() if test in other.passed_names]
            if where:
                print(f"lane: skipped in {boot_name}, passed in {', '.join(where)}: {test}")
            else:
                line = f"{boot_name}: {test} ({reason})"
                remaining.append(line)
                print(f"lane: SKIPPED in every boot: {line}")
    return remaining


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--boot",
        action="append",
        choices=list(BOOTS),
        help="run only this boot (repeatable; default: every boot of BOOTS, in order)",
    )
    ap.add_argument(
        "--fail-demo",
        action="store_true",
        default=os.environ.get("VFIO_HAL_LANE_FAIL_DEMO") == "1",
        help="add a deliberately failing guest test (the lane must then fail)",
    )
    ap.add_argument(
        "--package",
        "-p",
        action="append",
        choices=GUEST_TEST_PACKAGES,
        help="run only this package's guest tests (repeatable; default: all of GUEST_TEST_PACKAGES)",
    )
    ap.add_argument(
        "--release",
        action="store_true",
        help="build the guest tests optimised (for benchmark figures; CI runs debug builds)",
    )
    args = ap.parse_args()
    packages = args.package or GUEST_TEST_PACKAGES
    boots = {name: BOOTS[name] for name in (args.boot or list(BOOTS))}

    WORK.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    lock = (WORK / "lane.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("waiting for another lane run to finish (target/vm/lane.lock)")
        fcntl.flock(lock, fcntl.LOCK_EX)

    try:
        ensure_packages()
        # One build per kernel flavour, shared by the boots that use it.
        kernels = {spec.kernel: build_kernel(spec.kernel) for spec in boots.values()}
        exes, tools = build_guest_tests(args.fail_demo, packages, args.release)
        initrd, expected = build_initramfs(exes, tools)
        accel = choose_accel(next(iter(kernels.values())), initrd)
        total = Outcome()
        outcomes = {}
        for name, spec in boots.items():
            o = run_boot(name, spec, kernels[spec.kernel], initrd, expected, accel, args.fail_demo)
            print(f"lane({name}): {o.passed} passed, {o.failed} failed, {o.skipped} skipped")
            outcomes[name] = o
            total.passed += o.passed
            total.failed += o.failed
            total.skipped += o.skipped
            total.problems += o.problems
        remaining = report_skips(outcomes)
        for name, spec in BOOTS.items():
            if name not in boots and spec.only:
                print(f"lane: NOT RUN (boot {name} not selected): {', '.join(spec.only)}")
    except LaneError as e:
        print(f"lane: FAIL: {e}", flush=True)
        return 1
    log(f"done in {time.monotonic() - T0:.0f}s")
    print(
        f"{total.passed} passed, {total.failed} failed, {total.skipped} skipped "
        f"({total.skipped - len(remaining)} of them passed in another boot, "
        f"{len(remaining)} skipped in every boot)"
    )
    return 1 if total.problems or total.failed else 0


if __name__ == "__main__":
    sys.exit(main())
