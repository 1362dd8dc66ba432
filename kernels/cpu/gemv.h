// SPDX-License-Identifier: Apache-2.0
// Gemv: y[n] = W[n, k] · x[k] + beta · y, W row-major: the decode step's products (one token,
// every weight read once). Memory-bound: what matters is streaming W at the memory's speed, so
// several rows are read at once (independent streams for the prefetchers) against x held in
// L1, with AVX-512 or AVX2/FMA picked at run time (cpu_runtime.h) and OpenBLAS's sgemv on other
// CPUs. On the calling thread; Gemm (cpu_kernels.h) splits rows over threads.
#pragma once

#include <cstdint>

namespace lychee::cpu {

// beta is 0 (y is overwritten, its old contents never read) or 1 (accumulate onto y).
void Gemv(const float* w, const float* x, float* y, int64_t n, int64_t k, float beta);

}  // namespace lychee::cpu
