#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# lychee's CPU path beside llama.cpp, built here in the same run, on the same random fp32 Llama
# (~125M parameters, bench/llama_cpp/make_random_llama.py) and the same thread count: llama-bench's
# tests pp512, pp4096 (prefill tokens/s) and tg64 at depth 0 and 4096 (decode tokens/s after an
# untimed prefill of that many tokens), llama.cpp with flash attention on, lychee through
# build/bin/cpu_model_bench (CpuModel, the lychee-generate path) with an fp32 and a bf16 KV cache.
# Prints a markdown table and writes JSON with every sample and the ratios lychee / llama.cpp.
#
# llama.cpp is the source bundled in the npm package node-llama-cpp@3.22.1 (llama/gitRelease.bundle),
# fetched with npm and built out of tree in third_party/llama-cpp-anchor/ (git-ignored): CPU only,
# Release, GGML_NATIVE (its default), OpenMP, only the llama-bench target.
#
# Usage: bench/llama_cpp/compare.sh [--threads 2] [--reps 3] [--out DIR] [--json FILE]
# Needs: npm, cmake, ninja, a C++ compiler, python3 with numpy, build/bin/cpu_model_bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=2
reps=3
out=build/llama-cpp-compare
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$json" ] || json="$out/compare.json"
anchor=third_party/llama-cpp-anchor
pkg=node-llama-cpp@3.22.1
py=python3
if ! $py -c 'import numpy' 2>/dev/null; then py=/usr/bin/python3; fi

# 1. llama.cpp from the npm package's bundled source.
if [ ! -x "$anchor/build/bin/llama-bench" ]; then
  mkdir -p "$anchor"
  if [ ! -d "$anchor/src" ]; then
    (cd "$anchor" && npm pack "$pkg" --silent >/dev/null && tar xzf node-llama-cpp-3.22.1.tgz &&
      git clone -q package/llama/gitRelease.bundle src)
  fi
  nice -n 10 cmake -S "$anchor/src" -B "$anchor/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DGGML_CUDA=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  nice -n 10 cmake --build "$anchor/build" -j"$threads" --target llama-bench
fi
llama_commit=$(git -C "$anchor/src" rev-parse --short HEAD 2>/dev/null || echo unknown)

# 2. The same weights for both.
if [ ! -f "$out/model-f32.gguf" ] || [ ! -f "$out/hf/model.safetensors" ]; then
  PYTHONPATH="$anchor/src/gguf-py" $py bench/llama_cpp/make_random_llama.py "$out"
fi

# 3. llama.cpp: prefill tests at depth 0, decode tests at depth 0 and 4096; as built (OpenMP
# threads spin while they wait) and with OMP_WAIT_POLICY=passive (they sleep), which is far
# faster on a machine that other jobs share; the ratios use the faster of the two per test.
lb="$anchor/build/bin/llama-bench"
for wait in active passive; do
  OMP_WAIT_POLICY=$wait "$lb" -m "$out/model-f32.gguf" -t "$threads" -fa on -p 512,4096 -n 0 \
    -r "$reps" -o json >"$out/llama-pp-$wait.json"
  OMP_WAIT_POLICY=$wait "$lb" -m "$out/model-f32.gguf" -t "$threads" -fa on -p 0 -n 64 \
    -d 0,4096 -r "$reps" -o json >"$out/llama-tg-$wait.json"
done
load_between=$(cut -d" " -f1-3 /proc/loadavg)  # after llama.cpp, before lychee

# 4. lychee, same tests, fp32 and bf16 KV caches.
build/bin/cpu_model_bench --model "$out/hf" --threads "$threads" --prompts 512,4096 --decode 64 \
  --depths 0,4096 --reps "$reps" --kv-dtypes fp32,bf16 --json "$out/lychee.json" \
  2> >(tee "$out/lychee.log" >&2) >/dev/null
# The GEMMs' speed depends on OpenBLAS's kernel set (OPENBLAS_CORETYPE overrides its choice).
lychee_setup=$(sed -n 's/^\[cpu_model_bench\] threads [0-9]*, //p' "$out/lychee.log" | head -1)

# 5. Table and JSON with ratios.
$py - "$out" "$json" "$threads" "$llama_commit" "$(git rev-parse --short HEAD)" \
  "$load_between" "$(cut -d' ' -f1-3 /proc/loadavg)" "$lychee_setup" <<'PY'
import json, sys
out, path, threads, llama_commit, lychee_commit, load_between, load_after, setup = sys.argv[1:9]
def key_llama(r):
    if r["n_gen"] == 0:
        return f"pp{r['n_prompt']}"
    return f"tg{r['n_gen']}@d{r['n_depth']}"
anchors = {}
for wait in ["active", "passive"]:
    llama = (json.load(open(f"{out}/llama-pp-{wait}.json")) +
             json.load(open(f"{out}/llama-tg-{wait}.json")))
    anchors[wait] = {key_llama(r): r for r in llama}
ours = json.load(open(f"{out}/lychee.json"))
rows = []
print("| test | llama.cpp tok/s (spinning) | llama.cpp tok/s (passive) | lychee fp32 KV tok/s | "
      "ratio | lychee bf16 KV tok/s | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for test in ["pp512", "pp4096", "tg64@d0", "tg64@d4096"]:
    row = {"test": test}
    for wait in ["active", "passive"]:
        a = anchors[wait][test]
        row[f"llama_cpp_{wait}"] = {"avg_ts": a["avg_ts"], "stddev_ts": a["stddev_ts"],
                                    "samples_ns": a.get("samples_ns")}
    best = max(row["llama_cpp_active"]["avg_ts"], row["llama_cpp_passive"]["avg_ts"])
    cells = []
    for dtype in ["fp32", "bf16"]:
        r = next(x for x in ours if x["test"] == test and x["kv_dtype"] == dtype)
        ratio = r["avg_ts"] / best
        row[f"lychee_{dtype}"] = {"avg_ts": r["avg_ts"], "stddev_ts": r["stddev_ts"],
                                  "seconds": r["seconds"], "ratio_vs_best_llama_cpp": ratio}
        cells.append(f"{r['avg_ts']:.1f} ± {r['stddev_ts']:.1f} | {ratio:.2f}x")
    la, lp = row["llama_cpp_active"], row["llama_cpp_passive"]
    print(f"| {test} | {la['avg_ts']:.1f} ± {la['stddev_ts']:.1f} | "
          f"{lp['avg_ts']:.1f} ± {lp['stddev_ts']:.1f} | " + " | ".join(cells) + " |")
    rows.append(row)
print(f"\nload average (1, 5, 15 min) after llama.cpp: {load_between}; after lychee: {load_after}")
print(f"lychee: {setup}")
llama = json.load(open(f"{out}/llama-pp-active.json"))
doc = {"threads": int(threads), "llama_cpp_commit": llama_commit,
       "load_average_after_llama_cpp": load_between, "load_average_after_lychee": load_after,
       "llama_cpp_build": llama[0].get("build_commit"), "cpu_info": llama[0].get("cpu_info"),
       "lychee_commit": lychee_commit, "lychee_setup": setup, "model": "random Llama fp32, hidden 768, 12 layers, "
       "12/3 heads, ffn 2112, vocab 32000", "flash_attn": True, "rows": rows}
json.dump(doc, open(path, "w"), indent=2)
print(f"\nJSON: {path}")
PY
