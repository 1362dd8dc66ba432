// SPDX-License-Identifier: Apache-2.0
// Gemv (gemv.h): AVX-512 and AVX2/FMA row-block kernels behind target attributes; OpenBLAS's
// sgemv where neither runs.
#include "kernels/cpu/gemv.h"

#include <cblas.h>
#include <immintrin.h>

#include "kernels/cpu/cpu_runtime.h"

// GCC 12's AVX-512 intrinsics build their "undefined" vectors by self-initialisation, which
// -Wmaybe-uninitialized reports wherever they inline (GCC bug 105593); not a defect of this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lychee::cpu {
namespace {

#define LY_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define LY_AVX2 __attribute__((target("avx2,fma")))

// Rows [r, r + R): R dot products with x, k in vectors of 16 (the tail under a mask).
template <int R>
LY_AVX512 inline void RowsAvx512(const float* w, const float* x, float* y, int64_t r, int64_t k,
                                 float beta) {
  __m512 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  int64_t e = 0;
  for (; e + 16 <= k; e += 16) {
    const __m512 xv = _mm512_loadu_ps(x + e);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + (r + i) * k + e), xv, acc[i]);
    }
  }
  if (e < k) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (k - e)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(tail, x + e);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + (r + i) * k + e), xv, acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const float dot = _mm512_reduce_add_ps(acc[i]);
    y[r + i] = beta == 0.0f ? dot : dot + beta * y[r + i];
  }
}

LY_AVX512 void GemvAvx512(const float* w, const float* x, float* y, int64_t n, int64_t k,
                          float beta) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) RowsAvx512<4>(w, x, y, r, k, beta);
  for (; r < n; ++r) RowsAvx512<1>(w, x, y, r, k, beta);
}

LY_AVX2 inline float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <int R>
LY_AVX2 inline void RowsAvx2(const float* w, const float* x, float* y, int64_t r, int64_t k,
                             float beta) {
  __m256 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
  int64_t e = 0;
  for (; e + 8 <= k; e += 8) {
    const __m256 xv = _mm256_loadu_ps(x + e);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(w + (r + i) * k + e), xv, acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    float dot = HorizontalSum(acc[i]);
    for (int64_t t = e; t < k; ++t) dot += w[(r + i) * k + t] * x[t];
    y[r + i] = beta == 0.0f ? dot : dot + beta * y[r + i];
  }
}

LY_AVX2 void GemvAvx2(const float* w, const float* x, float* y, int64_t n, int64_t k, float beta) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) RowsAvx2<4>(w, x, y, r, k, beta);
  for (; r < n; ++r) RowsAvx2<1>(w, x, y, r, k, beta);
}

#undef LY_AVX512
#undef LY_AVX2

}  // namespace

void Gemv(const float* w, const float* x, float* y, int64_t n, int64_t k, float beta) {
  if (n <= 0) return;
  switch (ActiveIsa()) {
    case VectorIsa::kAvx512:
      GemvAvx512(w, x, y, n, k, beta);
      return;
    case VectorIsa::kAvx2:
      GemvAvx2(w, x, y, n, k, beta);
      return;
    case VectorIsa::kScalar:
      break;
  }
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k), 1.0f,
              w, static_cast<blasint>(k), x, 1, beta, y, 1);
}

}  // namespace lychee::cpu

#pragma GCC diagnostic pop
