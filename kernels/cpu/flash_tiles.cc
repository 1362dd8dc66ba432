// SPDX-License-Identifier: Apache-2.0
// FlashAttention's tile operations (flash_tiles.h): portable scalar loops and AVX2/FMA, and the
// choice among the ISAs. The AVX-512 ops are in flash_tiles_avx512.cc.
#include "kernels/cpu/flash_tiles.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "common/bf16.h"

namespace lychee::cpu {
namespace {

// Scalar.

void QkScalar(const float* const* krows, int64_t nk, const float* qt, int64_t d, int64_t mp,
              float* st) {
  for (int64_t j = 0; j < nk; ++j) {
    float* s = st + j * mp;
    std::fill(s, s + mp, 0.0f);
    const float* k = krows[j];
    for (int64_t e = 0; e < d; ++e) {
      const float ke = k[e];
      const float* q = qt + e * mp;
      for (int64_t r = 0; r < mp; ++r) s[r] += ke * q[r];
    }
  }
}

void SoftmaxScalar(float* st, int64_t nk, int64_t mp, float* m, float* l, float* alpha) {
  for (int64_t r = 0; r < mp; ++r) {
    float tile_max = kFlashNegInf;
    for (int64_t j = 0; j < nk; ++j) tile_max = std::max(tile_max, st[j * mp + r]);
    const float m_new = std::max(m[r], tile_max);
    // A row with no valid key yet keeps max -inf; subtracting 0 keeps exp2 of -inf at 0 (no NaN).
    const float m_use = m_new == kFlashNegInf ? 0.0f : m_new;
    alpha[r] = std::exp2(m[r] - m_use);
    float sum = 0.0f;
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = std::exp2(st[j * mp + r] - m_use);
      st[j * mp + r] = pj;
      sum += pj;
    }
    l[r] = l[r] * alpha[r] + sum;
    m[r] = m_new;
  }
}

void PvScalar(const float* const* vrows, int64_t nk, const float* st, int64_t mp, int64_t rows,
              int64_t d, const float* alpha, float* o) {
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = o + r * d;
    for (int64_t e = 0; e < d; ++e) orow[e] *= alpha[r];
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = st[j * mp + r];
      const float* v = vrows[j];
      for (int64_t e = 0; e < d; ++e) orow[e] += pj * v[e];
    }
  }
}

void WidenScalar(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

// AVX2 + FMA. Compiled for those instructions through target attributes only, so nothing else in
// the binary needs them; called only when DetectedIsa() reports them. Requires d % 8 == 0.
#define LY_AVX2 __attribute__((target("avx2,fma")))

// 2^x for x <= ~127, 0 below -126 (and for -inf): x = n + f with n = round(x), |f| <= 1/2, and
// e^(f·ln2) from its degree-6 Taylor polynomial (relative error < 2e-7), scaled by 2^n through
// the exponent bits.
LY_AVX2 inline __m256 Exp2Avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 g = _mm256_mul_ps(_mm256_sub_ps(x, n), _mm256_set1_ps(0.6931471805599453f));
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// st rows j..j+R-1, columns [r, r + 8·C): R keys × C vectors of rows.
template <int R, int C>
LY_AVX2 inline void QkBlockAvx2(const float* const* krows, const float* qt, int64_t d, int64_t mp,
                                int64_t r, float* st) {
  __m256 acc[R][C];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[i][c] = _mm256_setzero_ps();
  }
  for (int64_t e = 0; e < d; ++e) {
    __m256 q[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) q[c] = _mm256_loadu_ps(qt + e * mp + r + 8 * c);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256 k = _mm256_broadcast_ss(krows[i] + e);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[i][c] = _mm256_fmadd_ps(k, q[c], acc[i][c]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(st + i * mp + r + 8 * c, acc[i][c]);
  }
}

template <int R>
LY_AVX2 inline void QkKeysAvx2(const float* const* krows, const float* qt, int64_t d, int64_t mp,
                               float* st) {
  int64_t r = 0;
  for (; r + 16 <= mp; r += 16) QkBlockAvx2<R, 2>(krows, qt, d, mp, r, st);
  if (r < mp) QkBlockAvx2<R, 1>(krows, qt, d, mp, r, st);
}

LY_AVX2 void QkAvx2(const float* const* krows, int64_t nk, const float* qt, int64_t d, int64_t mp,
                    float* st) {
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) QkKeysAvx2<4>(krows + j, qt, d, mp, st + j * mp);
  for (; j < nk; ++j) QkKeysAvx2<1>(krows + j, qt, d, mp, st + j * mp);
}

LY_AVX2 void SoftmaxAvx2(float* st, int64_t nk, int64_t mp, float* m, float* l, float* alpha) {
  const __m256 neg_inf = _mm256_set1_ps(kFlashNegInf);
  for (int64_t r = 0; r < mp; r += 8) {
    __m256 tile_max = neg_inf;
    for (int64_t j = 0; j < nk; ++j)
      tile_max = _mm256_max_ps(tile_max, _mm256_loadu_ps(st + j * mp + r));
    const __m256 m_old = _mm256_loadu_ps(m + r);
    const __m256 m_new = _mm256_max_ps(m_old, tile_max);
    const __m256 m_use =
        _mm256_andnot_ps(_mm256_cmp_ps(m_new, neg_inf, _CMP_EQ_OQ), m_new);  // -inf → 0
    const __m256 a = Exp2Avx2(_mm256_sub_ps(m_old, m_use));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
      const __m256 pj = Exp2Avx2(_mm256_sub_ps(_mm256_loadu_ps(st + j * mp + r), m_use));
      _mm256_storeu_ps(st + j * mp + r, pj);
      sum = _mm256_add_ps(sum, pj);
    }
    _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), a, sum));
    _mm256_storeu_ps(m + r, m_new);
    _mm256_storeu_ps(alpha + r, a);
  }
}

// o rows [r, r + 4), columns [e, e + 8·C).
template <int C>
LY_AVX2 inline void PvBlockAvx2(const float* const* vrows, int64_t nk, const float* st, int64_t mp,
                                int64_t d, const float* alpha, int64_t r, int64_t e, float* o) {
  __m256 acc[4][C];
#pragma GCC unroll 8
  for (int i = 0; i < 4; ++i) {
    const __m256 a = _mm256_broadcast_ss(alpha + r + i);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      acc[i][c] = _mm256_mul_ps(a, _mm256_loadu_ps(o + (r + i) * d + e + 8 * c));
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    __m256 v[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) v[c] = _mm256_loadu_ps(vrows[j] + e + 8 * c);
    const float* pj = st + j * mp + r;
#pragma GCC unroll 8
    for (int i = 0; i < 4; ++i) {
      const __m256 p = _mm256_broadcast_ss(pj + i);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[i][c] = _mm256_fmadd_ps(p, v[c], acc[i][c]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + (r + i) * d + e + 8 * c, acc[i][c]);
  }
}

LY_AVX2 void PvAvx2(const float* const* vrows, int64_t nk, const float* st, int64_t mp,
                    int64_t rows, int64_t d, const float* alpha, float* o) {
  for (int64_t r = 0; r < rows; r += 4) {
    int64_t e = 0;
    for (; e + 16 <= d; e += 16) PvBlockAvx2<2>(vrows, nk, st, mp, d, alpha, r, e, o);
    if (e < d) PvBlockAvx2<1>(vrows, nk, st, mp, d, alpha, r, e, o);
  }
}

// bf16 → fp32 is a 16-bit shift of each value into the upper half of a 32-bit lane.
LY_AVX2 void WidenAvx2(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  for (; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

#undef LY_AVX2

}  // namespace

const FlashTileOps kFlashScalarOps = {QkScalar, SoftmaxScalar, PvScalar, WidenScalar};
const FlashTileOps kFlashAvx2Ops = {QkAvx2, SoftmaxAvx2, PvAvx2, WidenAvx2};

const FlashTileOps& FlashTileOpsFor(VectorIsa isa, int64_t head_dim) {
  if (head_dim % 8 != 0) return kFlashScalarOps;
  switch (isa) {
    case VectorIsa::kAvx512:
      return kFlashAvx512Ops;
    case VectorIsa::kAvx2:
      return kFlashAvx2Ops;
    case VectorIsa::kScalar:
      break;
  }
  return kFlashScalarOps;
}

}  // namespace lychee::cpu
