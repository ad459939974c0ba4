#!/usr/bin/env bash
# run.sh - builds the libFuzzer targets with clang in their own tree and
# runs each of them: first once over its committed seed corpus (a fast
# regression), then for a while. New corpus entries go to a scratch folder
# in the build tree (never to the committed corpus); a finding is written
# to BUILD/crashes/ and makes the script fail, with the command that
# reproduces it. `make fuzz` runs the long form, `make test` the short one.
#
#   tests/fuzz/run.sh [--seconds N] [--build DIR] [--targets "fuzz_event ..."]
#                     [--regress-only] [--jobs N]
#
# --seconds  fuzzing time per target (default $FUZZ_SECONDS or 600)
# --build    the clang build tree (default build-fuzz)
# --targets  which targets (default: all four)
# --regress-only  only run the committed corpora once
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${FUZZ_SECONDS:-600}
build=$root/build-fuzz
targets="fuzz_event fuzz_delta fuzz_snapshot fuzz_query"
regress_only=0
jobs=2

while [[ $# -gt 0 ]]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --regress-only) regress_only=1; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -lt 1 ]]; then
    echo "run.sh: --seconds must be a positive integer, not '$seconds'" >&2
    exit 2
fi
case $build in /*) ;; *) build=$root/$build ;; esac

clang_bin=${PD_FUZZ_CC:-clang}
if ! command -v "$clang_bin" >/dev/null 2>&1; then
    echo "run.sh: $clang_bin not found; scripts/deps.sh installs clang and libclang-rt-14-dev" >&2
    exit 1
fi

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$clang_bin" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPD_FUZZ=ON -DPD_TESTS=OFF >"$build/configure.log" 2>&1 \
    || { cat "$build/configure.log" >&2; exit 1; }
nice -n 10 cmake --build "$build" -j"$jobs" --target pd_fuzzers

bin=$build/tests/fuzz
crashes=$build/crashes
mkdir -p "$crashes" "$build/logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

max_len() {
    case $1 in
    fuzz_event) echo 4096 ;;
    fuzz_delta) echo 8192 ;;
    fuzz_snapshot) echo 16384 ;;
    *) echo 8192 ;;
    esac
}

failed=()
for t in $targets; do
    corpus=$root/tests/fuzz/corpus/$t
    dict=$root/tests/fuzz/$t.dict
    [[ -x $bin/$t && -d $corpus ]] || { echo "run.sh: no target or corpus for $t" >&2; exit 2; }
    log=$build/logs/$t.log
    opts=(-rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")"
          -artifact_prefix="$crashes/$t-")
    [[ -f $dict ]] && opts+=(-dict="$dict")

    echo "== $t: the committed corpus once"
    if ! nice -n 15 "$bin/$t" "${opts[@]}" -runs=0 "$corpus" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        failed+=("$t (corpus)")
        continue
    fi
    [[ $regress_only -eq 1 ]] && continue

    echo "== $t: fuzzing for ${seconds}s (log: $log)"
    scratch=$build/corpus/$t
    mkdir -p "$scratch"
    if nice -n 15 "$bin/$t" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        "$scratch" "$corpus" >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::new_units_added)|DONE' "$log" | tail -n 3
    else
        tail -n 60 "$log" >&2
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run.sh: FINDINGS in: ${failed[*]}" >&2
    echo "run.sh: inputs are in $crashes/; reproduce one with" >&2
    echo "    $bin/<target> $crashes/<file>" >&2
    exit 1
fi
echo "run.sh: no findings ($targets)"
