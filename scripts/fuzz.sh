#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every libFuzzer target (fuzz/<target>, issue 15) for a bounded time each.
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
#
# Builds the `fuzz` preset (clang, ASan+UBSan, build/fuzz) unless LYCHEE_FUZZ_NO_BUILD=1. Each
# target starts from its seed corpus fuzz/<target>/corpus (read only) plus a working corpus in
# build/fuzz/corpus/<target> (kept between runs, so later runs go deeper), with its dictionary
# fuzz/<target>/dict when there is one. Crashes, leaks, timeouts (10 s an input) and check failures
# are written to build/fuzz/artifacts/<target>/. Prints one line per target: executions,
# executions per second, coverage, corpus size, and the result; exits 1 if any target failed.
# Environment: FUZZ_JOBS (parallel targets, default 1), FUZZ_RSS_MB (default 2048),
# FUZZ_MAX_LEN (bytes, default 16384), FUZZ_RUNS (stop after this many inputs, as well as the
# time), FUZZ_PRESET (default `fuzz`; `fuzz-fast` builds without ASan, UBSan only, in
# build/fuzz-fast: for 10^6-input runs of targets that are slow under ASan).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
shift || true
ALL_TARGETS=(openai_request chat_template http_request model_config safetensors tokenizer_json
             tokenizer_spm tokenizer_text)
TARGETS=("${@:-${ALL_TARGETS[@]}}")
JOBS="${FUZZ_JOBS:-1}"
PRESET="${FUZZ_PRESET:-fuzz}"
BUILD="build/$PRESET"

if [[ "${LYCHEE_FUZZ_NO_BUILD:-0}" != 1 ]]; then
  cmake --preset "$PRESET" >/dev/null
  cmake --build "$BUILD" --target "${TARGETS[@]/%/_fuzzer}"
fi

run_one() {
  local target="$1"
  local work="$BUILD/corpus/$target" artifacts="$BUILD/artifacts/$target"
  local log="$BUILD/logs/$target.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  local dict=()
  [[ -f "fuzz/$target/dict" ]] && dict=(-dict="fuzz/$target/dict")
  local rc=0
  ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    "$BUILD/fuzz/${target}_fuzzer" "$work" "fuzz/$target/corpus" "${dict[@]}" \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
      -max_len="${FUZZ_MAX_LEN:-16384}" -artifact_prefix="$artifacts/" -print_final_stats=1 \
      ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} \
      >"$log" 2>&1 || rc=$?
  local execs per_s cov ft units
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  per_s=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  units=$(find "$work" -type f | wc -l)
  local result=clean
  if [[ $rc -ne 0 ]]; then
    result="FAILED (rc $rc; $(grep -m1 -E 'ERROR|lychee fuzz target|Test unit written' "$log" || true); log $log)"
  fi
  printf '%-16s %12s execs %8s/s  cov %6s  ft %6s  corpus %5s  %s\n' "$target" "${execs:-?}" \
    "${per_s:-?}" "${cov:-?}" "${ft:-?}" "$units" "$result"
  [[ $rc -eq 0 ]]
}

failed=0
if [[ "$JOBS" -le 1 ]]; then
  for t in "${TARGETS[@]}"; do run_one "$t" || failed=1; done
else
  export -f run_one
  export BUILD SECONDS_PER_TARGET
  printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}' || failed=1
fi
exit "$failed"
