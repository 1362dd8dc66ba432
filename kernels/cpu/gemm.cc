// SPDX-License-Identifier: Apache-2.0
// Gemm on OpenBLAS (and decode's matrix-vector products on Gemv, gemv.h): with gemv.cc the only
// places kernels/cpu calls into BLAS. OpenBLAS runs single-threaded
// (cpu_runtime.h); large products are split over the kernels' threads (ParallelFor) by output
// columns (or rows when there are few columns), each part one single-threaded BLAS call.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/thread_pool.h"

namespace lychee::cpu {
namespace {

// Below this many multiply-adds a product stays on the calling thread (a parallel region costs
// a few microseconds; stories260K-sized layers are smaller than that).
constexpr double kParallelMinMacs = 1 << 18;
constexpr int64_t kColumnAlign = 16;

// y[m, n] (leading dimension ldy) = x[m, k] · w[n, k]ᵀ + beta · y, on the calling thread.
void GemmPart(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
              int64_t ldy, float beta) {
  if (m <= 0 || n <= 0) return;
  const auto bm = static_cast<blasint>(m);
  const auto bn = static_cast<blasint>(n);
  const auto bk = static_cast<blasint>(k);
  if (m == 1) {
    // Decode steps are matrix-vector products: stream W once, without packing it.
    Gemv(w, x, y, n, k, beta);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, bn, bk, 1.0f, x, bk, w, bk, beta, y,
              static_cast<blasint>(ldy));
}

}  // namespace

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
  const int64_t threads = NumThreads();  // also keeps OpenBLAS single-threaded
  const double macs = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (threads <= 1 || macs < kParallelMinMacs) {
    GemmPart(x, w, y, m, n, k, n, beta);
    return;
  }
  // Columns (rows of w) in aligned slices, so each thread streams its own share of the weights;
  // rows of x when there are too few columns to go round.
  const bool by_columns = n >= threads * kColumnAlign || m < threads;
  const int64_t parts =
      by_columns ? std::min(threads, (n + kColumnAlign - 1) / kColumnAlign) : std::min(threads, m);
  ParallelFor(parts, static_cast<int>(parts), [&](int64_t i, int) {
    if (by_columns) {
      const int64_t slice = (n + parts - 1) / parts;
      const int64_t aligned = (slice + kColumnAlign - 1) / kColumnAlign * kColumnAlign;
      const int64_t n0 = std::min(n, i * aligned);
      const int64_t n1 = std::min(n, n0 + aligned);
      GemmPart(x, w + n0 * k, y + n0, m, n1 - n0, k, n, beta);
    } else {
      const int64_t m0 = m * i / parts;
      const int64_t m1 = m * (i + 1) / parts;
      GemmPart(x + m0 * k, w, y + m0 * n, m1 - m0, n, k, n, beta);
    }
  });
}

}  // namespace lychee::cpu
