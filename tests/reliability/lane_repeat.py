#!/usr/bin/env python3
"""Runs the real-kernel lane N times and counts, per test, how often it
passed: the lane's flakiness figure (docs/RELIABILITY.md).

    python3 tests/reliability/lane_repeat.py N [lane arguments...]

Each run's boot logs are kept under target/vm/repeat/run-<i>/. Every
libtest line (`test NAME ... ok|FAILED|ignored`) and conformance line
(`case NAME ... ok|FAILED|skipped`) of every boot is counted under
(boot, test binary, name). Prints one line per test that ever failed or
was not run in every run, then the totals; exits nonzero when any run
failed or any test failed once. Python 3.11 standard library only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "target" / "vm" / "logs"
KEEP = ROOT / "target" / "vm" / "repeat"

BINARY_RE = re.compile(r"^=== RUN (\S+)$(.*?)^=== END \1 rc=\d+$", re.M | re.S)
HEAD_RE = re.compile(r"^(test|case) (\S+) \.\.\. ", re.M)
# The outcome follows the head on its line, or, when the test printed
# something first, stands alone on a later line.
SAME_LINE_RE = re.compile(r"(ok|FAILED|ignored|skipped)\b")
OWN_LINE_RE = re.compile(r"^(ok|FAILED|ignored|skipped)\s*$", re.M)


def boot_logs(run_dir: Path) -> dict[str, str]:
    """The boots' console logs of one run (not the build or probe logs)."""
    logs = {}
    for log in sorted(run_dir.glob("*.log")):
        if log.stem in ("apt", "kvm-probe") or log.stem.startswith("kernel-"):
            continue
        logs[log.stem] = log.read_text(errors="replace")
    return logs


def outcomes(text: str) -> dict[tuple[str, str], str]:
    """(binary, test) -> outcome, for one boot's console. Binaries keep
    their hash suffix (two packages' `conformance` tests differ only by
    it; it is the same in every run of one build); a name printed twice by
    one binary (one conformance suite per mode) gets `#2`, `#3`, …"""
    seen = {}
    for binary, body in BINARY_RE.findall(text):
        times: dict[str, int] = defaultdict(int)
        heads = list(HEAD_RE.finditer(body))
        for i, head in enumerate(heads):
            kind, name = head.group(1), head.group(2)
            # A test's outcome may come after the cases it runs; a case's
            # comes before the next head of either kind.
            later = (h for h in heads[i + 1:] if kind == "case" or h.group(1) == "test")
            end = next((h.start() for h in later), len(body))
            tail = body[head.end():end]
            found = SAME_LINE_RE.match(tail) or OWN_LINE_RE.search(tail)
            result = found.group(1) if found else "FAILED"
            times[name] += 1
            key = name if times[name] == 1 else f"{name}#{times[name]}"
            seen[(binary, key)] = result
    return seen


def main() -> int:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        print(__doc__)
        return 2
    runs = int(sys.argv[1])
    lane_args = sys.argv[2:]
    if KEEP.exists():
        shutil.rmtree(KEEP)
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failed_runs = []
    start = time.monotonic()
    for i in range(1, runs + 1):
        t = time.monotonic()
        print(f"[repeat] run {i}/{runs}: bash tests/vm/lane.sh {' '.join(lane_args)}", flush=True)
        rc = subprocess.run(
            ["bash", str(ROOT / "tests/vm/lane.sh"), *lane_args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        ).returncode
        run_dir = KEEP / f"run-{i}"
        run_dir.mkdir(parents=True)
        for log in LOGS.glob("*.log"):
            shutil.copy(log, run_dir / log.name)
        for boot, text in boot_logs(run_dir).items():
            for (binary, name), result in outcomes(text).items():
                counts[(boot, binary, name)][result] += 1
        print(f"[repeat] run {i}: rc={rc}, {time.monotonic() - t:.0f} s", flush=True)
        if rc:
            failed_runs.append(i)

    flaky = 0
    for (boot, binary, name), seen in sorted(counts.items()):
        ran = seen["ok"] + seen["FAILED"]
        if seen["FAILED"] or (ran and ran != runs):
            flaky += 1
            print(f"[repeat] {boot} {binary} {name}: passed {seen['ok']} of {runs} runs, failed {seen['FAILED']}")
    tests = len(counts)
    passes = sum(s["ok"] for s in counts.values())
    failures = sum(s["FAILED"] for s in counts.values())
    skips = sum(s["ignored"] + s["skipped"] for s in counts.values())
    print(
        f"[repeat] {runs} runs in {time.monotonic() - start:.0f} s, {len(failed_runs)} failed "
        f"{failed_runs or ''}; {tests} tests and cases (per boot); {passes} passes, "
        f"{failures} failures, {skips} skips; {flaky} tests not passing in every run"
    )
    return 1 if failed_runs or failures else 0


if __name__ == "__main__":
    sys.exit(main())
