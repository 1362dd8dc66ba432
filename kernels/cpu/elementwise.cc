// SPDX-License-Identifier: Apache-2.0
// Element-wise kernels: SwiGLU activation, residual add, embedding lookup.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace lychee::cpu {

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void EmbeddingGather(const float* table, const int32_t* ids, float* out, int64_t tokens,
                     int64_t hidden) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = table + static_cast<int64_t>(ids[t]) * hidden;
    std::copy(src, src + hidden, out + t * hidden);
  }
}

}  // namespace lychee::cpu
