// SPDX-License-Identifier: Apache-2.0
// Gemm on OpenBLAS: the only place kernels/cpu calls into BLAS.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"

namespace lychee::cpu {

void Gemm(const float* x, const float* w, const float* maybe_bias, float* y, int64_t m, int64_t n,
          int64_t k) {
  if (m <= 0 || n <= 0) return;
  float beta = 0.0f;
  if (maybe_bias != nullptr) {
    // Seed every row with the bias and let BLAS accumulate onto it (beta = 1): no second pass.
    for (int64_t r = 0; r < m; ++r) std::copy(maybe_bias, maybe_bias + n, y + r * n);
    beta = 1.0f;
  }
  if (k <= 0) {
    if (maybe_bias == nullptr) std::fill(y, y + m * n, 0.0f);
    return;
  }
  const auto bm = static_cast<blasint>(m);
  const auto bn = static_cast<blasint>(n);
  const auto bk = static_cast<blasint>(k);
  if (m == 1) {
    // Decode steps are matrix-vector products; sgemv streams W once without packing it.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, bn, bk, 1.0f, w, bk, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, bn, bk, 1.0f, x, bk, w, bk, beta, y, bn);
}

}  // namespace lychee::cpu
