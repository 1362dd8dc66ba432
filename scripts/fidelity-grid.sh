#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The fidelity grid of docs/FIDELITY.md as a benchmark: starts lychee-server on MODEL (CPU by
# default), runs lychee-eval's needle grid and the other tasks through it, writes each command's
# JSON and markdown table into OUT, the pivot tables (scripts/fidelity_pivot.py) into
# OUT/pivot.md, and stops the server. Every setting is an environment variable:
#   MODEL=models/lc20m DEVICE=cpu OUT=build/fidelity GRPC_PORT=0 (0: any free port)
#   POLICIES=dense,streaming,quest,lychee,prhs BUDGETS=256,1024,2048 AUDIT_RATE=0.25
#   NEEDLE_LENGTHS=2048,4096 NEEDLE_PROMPTS=8          (first needle run)
#   LONG_LENGTHS=8192,16384,32752 LONG_PROMPTS=4       (second needle run; empty: skip)
#   TASKS=multikey,vt,multivalue,cwe TASK_LENGTHS=2048,4096 TASK_PROMPTS=3 TASK_BUDGETS=256,1024
#   EXTRA="..." (more lychee-eval flags, e.g. --filler FILE)
# The defaults reproduce docs/FIDELITY.md (about 40 minutes on a loaded 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
model=${MODEL:-models/lc20m}
device=${DEVICE:-cpu}
out=${OUT:-build/fidelity}
policies=${POLICIES:-dense,streaming,quest,lychee,prhs}
budgets=${BUDGETS:-256,1024,2048}
audit=${AUDIT_RATE:-0.25}
extra=${EXTRA:-}
mkdir -p "$out"

log="$out/server.log"
"$bin/lychee-server" --model "$model" --device "$device" --host 127.0.0.1 \
  --grpc-port "${GRPC_PORT:-0}" --http-port 0 --max-num-seqs 4 --max-num-batched-tokens 2048 \
  >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
address=""
for _ in $(seq 1200); do
  address=$(sed -n 's/.*grpc listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$address" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "lychee-server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { cat "$log"; echo "lychee-server did not start" >&2; exit 1; }

run() {  # run NAME FLAGS...: one lychee-eval command, its table and JSON under OUT
  local name=$1
  shift
  echo "\$ lychee-eval $*" | tee "$out/$name.md"
  # shellcheck disable=SC2086
  "$bin/lychee-eval" --address "$address" --tokenizer "$model" --audit-rate "$audit" \
    --json "$out/$name.json" "$@" $extra | tee -a "$out/$name.md"
}

run needle --tasks needle --lengths "${NEEDLE_LENGTHS:-2048,4096}" \
  --prompts "${NEEDLE_PROMPTS:-8}" --policies "$policies" --budgets "$budgets"
needle_json=("$out/needle.json")
if [ -n "${LONG_LENGTHS-8192,16384,32752}" ]; then
  run needle-long --tasks needle --lengths "${LONG_LENGTHS:-8192,16384,32752}" \
    --prompts "${LONG_PROMPTS:-4}" --policies "$policies" --budgets "$budgets"
  needle_json+=("$out/needle-long.json")
fi
tasks=${TASKS-multikey,vt,multivalue,cwe}
if [ -n "$tasks" ]; then
  run tasks --tasks "$tasks" --lengths "${TASK_LENGTHS:-2048,4096}" \
    --prompts "${TASK_PROMPTS:-3}" --policies "$policies" --budgets "${TASK_BUDGETS:-256,1024}"
fi

{
  echo "## needle"
  echo
  scripts/fidelity_pivot.py needle "${needle_json[@]}"
  for t in ${tasks//,/ }; do
    echo
    echo "## $t"
    echo
    scripts/fidelity_pivot.py "$t" "$out/tasks.json"
  done
} >"$out/pivot.md"
echo
cat "$out/pivot.md"
