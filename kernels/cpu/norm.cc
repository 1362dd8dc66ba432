// SPDX-License-Identifier: Apache-2.0
// RMSNorm as Hugging Face's LlamaRMSNorm / Qwen3RMSNorm compute it in fp32.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace lychee::cpu {

void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
             float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* outr = out + r * dim;
    // Double accumulation keeps the mean exact enough for hidden sizes in the thousands.
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float inv_rms =
        static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) outr[i] = weight[i] * (xr[i] * inv_rms);
  }
}

}  // namespace lychee::cpu
