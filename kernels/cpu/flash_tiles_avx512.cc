// SPDX-License-Identifier: Apache-2.0
// FlashAttention's tile operations (flash_tiles.h) on AVX-512 (F + VL): 16 rows per vector and 32
// vector registers, so each Q·Kᵀ step keeps 8 keys × 32 rows of scores in registers and each P·V
// step 4 rows × 64 columns of output. On CPUs with full-width 512-bit FMA units (Zen 5, Intel
// server cores) that is twice the AVX2 tiles' arithmetic per instruction.
//
// Rows come padded to multiples of 8 (kFlashRowAlign), not 16: a last half vector of rows is
// loaded and stored under the mask 0x00FF. Compiled for these instructions through target
// attributes only; FlashTileOpsFor hands these ops out only when DetectedIsa() reports them.
// Requires head_dim % 8 == 0.
// GCC 12's AVX-512 intrinsics build their "undefined" vectors by self-initialisation, which
// -Wmaybe-uninitialized reports wherever they inline (GCC bug 105593); not a defect of this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "common/bf16.h"
#include "kernels/cpu/flash_tiles.h"

namespace lychee::cpu {
namespace {

#define LY_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))

constexpr __mmask16 kFull = 0xFFFF;
constexpr __mmask16 kHalf = 0x00FF;

// Masked loads and stores throughout: with a full mask they cost what plain ones do, and the
// hot loops need no branch on which vector is the last.
LY_AVX512 inline __m512 Load(const float* p, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, p);
}

LY_AVX512 inline void Store(float* p, __m512 v, __mmask16 mask) {
  _mm512_mask_storeu_ps(p, mask, v);
}

// 2^x as the AVX2 tiles compute it (flash_tiles.cc): x = n + f, n = round(x), e^(f·ln2) from its
// degree-6 Taylor polynomial (relative error < 2e-7), 2^n through the exponent bits; 0 below -126
// and for -inf.
LY_AVX512 inline __m512 Exp2Avx512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-126.0f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 g = _mm512_mul_ps(_mm512_sub_ps(x, n), _mm512_set1_ps(0.6931471805599453f));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
  const __m512i bits =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), p, _mm512_castsi512_ps(bits));
}

// st rows j..j+R-1 (keys), columns [r, r + 16·C) (rows); the last vector under `last`.
template <int R, int C>
LY_AVX512 inline void QkBlock(const float* const* krows, const float* qt, int64_t d, int64_t mp,
                              int64_t r, __mmask16 last, float* st) {
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[i][c] = _mm512_setzero_ps();
  }
  for (int64_t e = 0; e < d; ++e) {
    __m512 q[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) q[c] = Load(qt + e * mp + r + 16 * c, c == C - 1 ? last : kFull);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 k = _mm512_set1_ps(krows[i][e]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[i][c] = _mm512_fmadd_ps(k, q[c], acc[i][c]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      Store(st + i * mp + r + 16 * c, acc[i][c], c == C - 1 ? last : kFull);
    }
  }
}

template <int R>
LY_AVX512 inline void QkKeys(const float* const* krows, const float* qt, int64_t d, int64_t mp,
                             float* st) {
  int64_t r = 0;
  for (; r + 32 <= mp; r += 32) QkBlock<R, 2>(krows, qt, d, mp, r, kFull, st);
  if (r + 24 == mp) {
    QkBlock<R, 2>(krows, qt, d, mp, r, kHalf, st);
  } else if (r + 16 <= mp) {
    QkBlock<R, 1>(krows, qt, d, mp, r, kFull, st);
    r += 16;
  }
  if (r + 8 == mp) QkBlock<R, 1>(krows, qt, d, mp, r, kHalf, st);
}

LY_AVX512 void QkAvx512(const float* const* krows, int64_t nk, const float* qt, int64_t d,
                        int64_t mp, float* st) {
  int64_t j = 0;
  for (; j + 8 <= nk; j += 8) QkKeys<8>(krows + j, qt, d, mp, st + j * mp);
  for (; j + 4 <= nk; j += 4) QkKeys<4>(krows + j, qt, d, mp, st + j * mp);
  for (; j < nk; ++j) QkKeys<1>(krows + j, qt, d, mp, st + j * mp);
}

LY_AVX512 void SoftmaxAvx512(float* st, int64_t nk, int64_t mp, float* m, float* l, float* alpha) {
  const __m512 neg_inf = _mm512_set1_ps(kFlashNegInf);
  for (int64_t r = 0; r < mp; r += 16) {
    const __mmask16 mask = r + 16 <= mp ? kFull : kHalf;
    // Masked-off lanes load as 0 and are never stored.
    __m512 tile_max = neg_inf;
    for (int64_t j = 0; j < nk; ++j)
      tile_max = _mm512_max_ps(tile_max, Load(st + j * mp + r, mask));
    const __m512 m_old = Load(m + r, mask);
    const __m512 m_new = _mm512_max_ps(m_old, tile_max);
    // A row with no valid key yet keeps max -inf; subtracting 0 keeps exp2 of -inf at 0 (no NaN).
    const __m512 m_use =
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m_new, neg_inf, _CMP_NEQ_OQ), m_new);
    const __m512 a = Exp2Avx512(_mm512_sub_ps(m_old, m_use));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
      const __m512 pj = Exp2Avx512(_mm512_sub_ps(Load(st + j * mp + r, mask), m_use));
      Store(st + j * mp + r, pj, mask);
      sum = _mm512_add_ps(sum, pj);
    }
    Store(l + r, _mm512_fmadd_ps(Load(l + r, mask), a, sum), mask);
    Store(m + r, m_new, mask);
    Store(alpha + r, a, mask);
  }
}

// o rows [r, r + 4), columns [e, e + 16·C); the last vector of columns under `last`.
template <int C>
LY_AVX512 inline void PvBlock(const float* const* vrows, int64_t nk, const float* st, int64_t mp,
                              int64_t d, const float* alpha, int64_t r, int64_t e, __mmask16 last,
                              float* o) {
  __m512 acc[4][C];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512 a = _mm512_set1_ps(alpha[r + i]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      acc[i][c] = _mm512_mul_ps(a, Load(o + (r + i) * d + e + 16 * c, c == C - 1 ? last : kFull));
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    __m512 v[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) v[c] = Load(vrows[j] + e + 16 * c, c == C - 1 ? last : kFull);
    const float* pj = st + j * mp + r;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m512 p = _mm512_set1_ps(pj[i]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[i][c] = _mm512_fmadd_ps(p, v[c], acc[i][c]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      Store(o + (r + i) * d + e + 16 * c, acc[i][c], c == C - 1 ? last : kFull);
    }
  }
}

LY_AVX512 void PvAvx512(const float* const* vrows, int64_t nk, const float* st, int64_t mp,
                        int64_t rows, int64_t d, const float* alpha, float* o) {
  for (int64_t r = 0; r < rows; r += 4) {
    int64_t e = 0;
    for (; e + 64 <= d; e += 64) PvBlock<4>(vrows, nk, st, mp, d, alpha, r, e, kFull, o);
    for (; e + 16 <= d; e += 16) PvBlock<1>(vrows, nk, st, mp, d, alpha, r, e, kFull, o);
    if (e < d) PvBlock<1>(vrows, nk, st, mp, d, alpha, r, e, kHalf, o);  // d % 16 == 8
  }
}

// bf16 → fp32 is a 16-bit shift of each value into the upper half of a 32-bit lane.
LY_AVX512 void WidenAvx512(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
  for (; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

#undef LY_AVX512

}  // namespace

const FlashTileOps kFlashAvx512Ops = {QkAvx512, SoftmaxAvx512, PvAvx512, WidenAvx512};

}  // namespace lychee::cpu

#pragma GCC diagnostic pop
