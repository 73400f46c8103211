#!/usr/bin/env bash
# Miri over the tests that need no system call Miri lacks.
#
#   bash tests/reliability/miri.sh
#
# Installs the nightly toolchain and its miri and rust-src components if
# missing, then runs:
#   - every test of vfio-hal (unit, tests/bad_input.rs, doc tests);
#   - the vfio-hal-mock tests that only use anonymous memory, threads and
#     edu's handler-backed registers: the unit tests, tests/iommu.rs,
#     tests/bad_input.rs, tests/concurrency.rs and tests/dma_race.rs (Miri
#     also checks their threads for data races; dma_race races device DMA
#     against CPU copies of the same bytes).
# Not run: the other mock test files. They need memfd_create (RAM BARs:
# copy engine), or route real eventfds, which the mock checks through
# /proc/self/fd — Miri's fds are not the host's, so that check misjudges
# them (tests/edu.rs, irqs.rs, lifecycle.rs, doubles.rs, fd_leaks.rs,
# copy_engine.rs). The few hal and mock tests in the selection that hit the
# same limits are marked `#[cfg_attr(miri, ignore = "why")]`.
#
# Isolation is off so that tests may open /dev/null; exposed-provenance
# casts (the mock IOMMU stores host addresses as integers, on purpose) are
# allowed. PROPTEST_CASES (default 8) bounds the property tests that use
# proptest's default case count.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "miri: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
installed="$(rustup component list --toolchain nightly --installed)"
for component in miri rust-src; do
    if ! grep -q "^$component" <<<"$installed"; then
        echo "miri: installing the $component component"
        rustup component add --toolchain nightly "$component"
    fi
done
cargo +nightly miri setup

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-permissive-provenance}"
export PROPTEST_CASES="${PROPTEST_CASES:-8}"

# The two crates' runs take about as long as each other and Miri uses one
# core: they run side by side, each in a target directory of its own (one
# would serialise them on cargo's lock), their output shown one after the
# other.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
target="${CARGO_TARGET_DIR:-$root/target}"
status=0
run() {
    local name="$1"
    shift
    echo "miri: cargo +nightly miri test $* (output in $name.log)"
    CARGO_TARGET_DIR="$target/miri-$name" cargo +nightly miri test "$@" >"$logs/$name.log" 2>&1
}
# hal's doc tests run on the mock (memfd-backed BARs, eventfds, poll),
# whose system calls Miri lacks; `cargo test` runs them.
run hal -p vfio-hal --lib --tests &
hal=$!
run mock -p vfio-hal-mock --lib --test iommu --test bad_input --test concurrency --test dma_race &
mock=$!
wait "$hal" || status=1
wait "$mock" || status=1
for name in hal mock; do
    echo "miri: --- $name.log"
    cat "$logs/$name.log"
done
log="$logs/all.log"
cat "$logs/hal.log" "$logs/mock.log" >"$log"

# Sum the harness summaries: "test result: ok. N passed; M failed; K ignored; ..."
read -r passed failed ignored < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$log" |
        awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
echo "miri: $ignored ignored under Miri"
echo "miri: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    status=1
fi
exit "$status"
