#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# GPU tests on the GPU machine. That machine has the CUDA toolkit but none of our other libraries,
# so the test binaries are built here and travel with their shared libraries (scripts/gpu-bundle):
#
#   here:        scripts/gpu-check.sh prepare        # cuda preset build + bundle into .gpu/bundle
#   GPU machine: scripts/gpu-check.sh run            # (device tool, carry [".gpu"]) prints a table
#   GPU machine: LD_LIBRARY_PATH=.gpu/bundle/lib:/usr/local/cuda/lib64 \
#                  .gpu/bundle/bin/cuda_decode_attention_bench --json .gpu/decode_attention.json
#
# `run` executes every ctest test labelled `gpu` (the list is written by `prepare`) and prints one
# row per test: name, result, seconds. It exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu/bundle

case "${1:-}" in
  prepare)
    make build PRESET=cuda
    tests=$(ctest --test-dir build/cuda -L gpu -N | awk '/Test +#/{print $3}')
    rm -rf "$bundle" && mkdir -p "$bundle"
    printf '%s\n' $tests >"$bundle/tests.txt"
    scripts/gpu-bundle "$bundle" $(sed 's|^|build/cuda/tests/|' "$bundle/tests.txt")
    # Benchmarks travel too; run them by hand there, e.g.
    #   LD_LIBRARY_PATH=.gpu/bundle/lib:/usr/local/cuda/lib64 \
    #     .gpu/bundle/bin/cuda_decode_attention_bench --json .gpu/decode_attention.json
    scripts/gpu-bundle "$bundle" build/bin/cuda_decode_attention_bench
    ;;
  run)
    [ -f "$bundle/tests.txt" ] || { echo "run 'scripts/gpu-check.sh prepare' first" >&2; exit 2; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    failed=0
    printf '\n%-40s %-8s %8s\n' test result seconds
    while read -r t; do
      start=$(date +%s.%N)
      if "$bundle/bin/$t" >"$bundle/$t.log" 2>&1; then result=PASS; else result=FAIL; failed=1; fi
      grep -q '\[  SKIPPED \]' "$bundle/$t.log" && [ "$result" = PASS ] && result=SKIP
      printf '%-40s %-8s %8.2f\n' "$t" "$result" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b - a}')"
      [ "$result" = PASS ] || tail -n 30 "$bundle/$t.log"
    done <"$bundle/tests.txt"
    exit $failed
    ;;
  *)
    echo "usage: $0 prepare | run" >&2
    exit 2
    ;;
esac
