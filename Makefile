# SPDX-License-Identifier: Apache-2.0
# Thin wrapper over scripts/install-deps.sh, CMake presets and ctest.
# `make run` and `make test` each do the whole set-up (deps + build) on a fresh Debian 12 machine.
# The `cuda` preset is used when the CUDA toolkit is installed (it compiles without a GPU).

NVCC ?= /usr/local/cuda/bin/nvcc
PRESET ?= $(if $(wildcard $(NVCC)),cuda,cpu)
JOBS ?= $(shell nproc)
PROMPT ?= Once upon a time
MAX_TOKENS ?= 200

.PHONY: all deps build test test-sanitize test-tsan fuzz run generate format clean
all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	@ctest --preset $(PRESET) -j $(JOBS)

# The whole CPU suite built with ASan+UBSan (build/asan; its own server binaries in
# build/asan/bin, which the integration tests start). Slow (a second, instrumented build of
# everything); not part of CI. SANITIZE_TESTS=asan-core runs only the engine, scheduler, KV cache
# and server tests.
SANITIZE_TESTS ?= asan
test-sanitize: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@ctest --preset $(SANITIZE_TESTS) -j $(JOBS)

# The engine, scheduler, KV cache and server tests under ThreadSanitizer (build/tsan).
test-tsan: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)
	@ctest --preset tsan -j $(JOBS)

# Every libFuzzer target for FUZZ_SECONDS each (clang, build/fuzz; scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# Starts lychee-server on the embedded model, shows one generation through lychee-client, and
# keeps serving (Ctrl-C stops it; DEMO_ONCE=1 stops after the example).
run: build
	@PROMPT="$(PROMPT)" MAX_TOKENS=$(MAX_TOKENS) scripts/run-demo.sh

# One generation in-process, without the server.
generate: build
	build/bin/lychee-generate --model models/stories260K --prompt "$(PROMPT)" --max-tokens $(MAX_TOKENS)

format:
	@git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf build
