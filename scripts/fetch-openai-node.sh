#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the official OpenAI node client (npm package `openai`, pinned) into
# third_party/npm-openai (git-ignored). tests/clients/test_openai_node.mjs drives lychee-server's
# OpenAI-compatible HTTP API with it. Idempotent. openai 5.x has no dependencies of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=third_party/npm-openai
pkgs=("openai@5.23.2")
stamp="$dest/.stamp-$(printf '%s ' "${pkgs[@]}" | md5sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0
mkdir -p "$dest"
echo "install-deps: npm install ${pkgs[*]}"
[ -f "$dest/package.json" ] || echo '{"name":"lychee-test-openai","private":true}' >"$dest/package.json"
npm install --prefix "$dest" --no-audit --no-fund --silent "${pkgs[@]}"
touch "$stamp"
