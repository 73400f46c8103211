#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target in fuzz/.
#
#   bash tests/reliability/fuzz.sh [seconds-per-target]      (default 30; CI)
#
# Installs what it needs (the nightly toolchain, cargo-fuzz), replays the
# checked-in corpus on stable (`cargo test --lib` in fuzz/, which also checks
# that the seeds are current), builds the targets with libFuzzer and ASan,
# then runs each target for the given time, FUZZ_JOBS (default 2) at once.
# New inputs go to fuzz/target/fuzz-corpus/<target> (ignored), never into
# the checked-in seeds under fuzz/corpus/<target>; a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script. Per-target logs:
# fuzz/target/fuzz-logs/<target>.log.
#
# Environment: FUZZ_JOBS (targets run in parallel), FUZZ_TARGETS (a
# space-separated subset), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac
jobs="${FUZZ_JOBS:-2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fuzz="$root/fuzz"
cd "$fuzz"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "fuzz: replaying the corpus and checking the seeds (stable)"
cargo test --lib --quiet

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "fuzz: building $(echo $targets | wc -w) targets"
cargo +nightly fuzz build

logs="$fuzz/target/fuzz-logs"
mkdir -p "$logs"

run_one() {
    local target="$1"
    local work="$fuzz/target/fuzz-corpus/$target"
    # mig_resume's inputs are whole saved device states (a copy engine's is
    # 28 KiB): room for two frames of it. libFuzzer cuts longer seeds.
    local max_len=4096
    case "$target" in mig_resume) max_len=65536 ;; esac
    mkdir -p "$work" "$fuzz/artifacts/$target"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if cargo +nightly fuzz run "$target" "$work" "$fuzz/corpus/$target" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$logs/$target.log" 2>&1; then
        echo "ok" >"$logs/$target.status"
    else
        echo "FAILED" >"$logs/$target.status"
    fi
}

echo "fuzz: running each target for ${secs}s, ${jobs} at a time"
running=0
for target in $targets; do
    rm -f "$logs/$target.status"
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=0
total=0
printf '%-12s %14s %10s  %s\n' target executions exec/s result
for target in $targets; do
    status="$(cat "$logs/$target.status" 2>/dev/null || echo FAILED)"
    # libFuzzer's final stats: "stat::number_of_executed_units: N".
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -1)"
    printf '%-12s %14s %10s  %s\n' "$target" "${runs:-?}" "${rate:-?}" "$status"
    total=$((total + ${runs:-0}))
    if [ "$status" != ok ]; then
        failed=$((failed + 1))
        echo "---- $target: last lines of $logs/$target.log" >&2
        tail -n 40 "$logs/$target.log" >&2
    fi
done
count=$(echo $targets | wc -w)
echo "fuzz: $total executions in total"
echo "fuzz: $((count - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
