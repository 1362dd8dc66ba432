// SPDX-License-Identifier: Apache-2.0
// FlashAttention (flash_attention.h): the unit driver (geometry, work split, masks, merge) in
// portable C++, and the three tile operations it calls (Q·Kᵀ, online softmax, P·V) twice: as
// portable scalar loops and as AVX2/FMA intrinsics behind target attributes, picked at run time.
//
// Sections: tile operations (scalar, AVX2), geometry, one unit, FlashAttention.
#include "kernels/cpu/flash_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "common/bf16.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/thread_pool.h"

namespace lychee::cpu {
namespace {

constexpr int64_t kKeyTile = 64;       // keys per tile (Bk)
constexpr int64_t kTargetRows = 32;    // rows (queries × group heads) per unit, before padding
constexpr int64_t kRowAlign = 8;       // rows are padded to whole 8-float vectors
constexpr int64_t kMinSplitTiles = 4;  // a key split reads at least this many key tiles
constexpr double kParallelMinMacs = 1 << 17;  // below this, one thread (a region costs ~µs)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- Tile operations ---------------------------------------------------------------------------
// Layouts (mp = padded rows, a multiple of kRowAlign; nk <= kKeyTile keys):
//   qt [d][mp]   queries transposed, pre-scaled by scale·log2(e)
//   st [nk][mp]  scores transposed (key-major), overwritten with the probabilities
//   o  [mp][d]   unnormalised output rows
//   m, l, alpha [mp]  running max (base 2), running sum, this tile's rescale factor
// krows / vrows: nk pointers to K / V rows of head_dim floats.

struct TileOps {
  void (*qk)(const float* const* krows, int64_t nk, const float* qt, int64_t d, int64_t mp,
             float* st);
  void (*softmax)(float* st, int64_t nk, int64_t mp, float* m, float* l, float* alpha);
  void (*pv)(const float* const* vrows, int64_t nk, const float* st, int64_t mp, int64_t d,
             const float* alpha, float* o);
  // bf16 K/V rows (a bf16 cache) widened to fp32: n values.
  void (*widen)(const uint16_t* src, int64_t n, float* dst);
};

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
    float tile_max = kNegInf;
    for (int64_t j = 0; j < nk; ++j) tile_max = std::max(tile_max, st[j * mp + r]);
    const float m_new = std::max(m[r], tile_max);
    // A row with no valid key yet keeps max -inf; subtracting 0 keeps exp2 of -inf at 0 (no NaN).
    const float m_use = m_new == kNegInf ? 0.0f : m_new;
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

void PvScalar(const float* const* vrows, int64_t nk, const float* st, int64_t mp, int64_t d,
              const float* alpha, float* o) {
  for (int64_t r = 0; r < mp; ++r) {
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

constexpr TileOps kScalarOps = {QkScalar, SoftmaxScalar, PvScalar, WidenScalar};

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
  const __m256 neg_inf = _mm256_set1_ps(kNegInf);
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

LY_AVX2 void PvAvx2(const float* const* vrows, int64_t nk, const float* st, int64_t mp, int64_t d,
                    const float* alpha, float* o) {
  for (int64_t r = 0; r < mp; r += 4) {
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

constexpr TileOps kAvx2Ops = {QkAvx2, SoftmaxAvx2, PvAvx2, WidenAvx2};

// ---- Geometry ----------------------------------------------------------------------------------

struct Geometry {
  int64_t group = 0;             // query heads per kv head
  int64_t queries_per_tile = 0;  // Bq
  int64_t mp = 0;                // rows of a unit (Bq · group), padded to kRowAlign
  int64_t thread_floats = 0;     // one thread's tiles
  int64_t slot_floats = 0;       // one key split's partial result: o, m, l
  // Floats per thread: its tiles plus the partial slots of 2 splits per kv head.
  int64_t PerThread(int64_t num_kv_heads) const {
    return thread_floats + 2 * num_kv_heads * slot_floats;
  }
};

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

Geometry MakeGeometry(int64_t num_heads, int64_t num_kv_heads, int64_t d) {
  Geometry g;
  g.group = num_heads / num_kv_heads;
  g.queries_per_tile = std::max<int64_t>(1, kTargetRows / g.group);
  g.mp = RoundUp(g.queries_per_tile * g.group, kRowAlign);
  // qt, o: mp·d each; st: kKeyTile·mp; m, l, alpha, qpos: mp each; K and V of one key tile
  // widened from a bf16 cache: kKeyTile·d each; a vector of slack so that every thread's block
  // starts 64-byte aligned relative to the workspace.
  g.thread_floats = RoundUp(2 * g.mp * d + kKeyTile * g.mp + 4 * g.mp + 2 * kKeyTile * d, 16);
  g.slot_floats = RoundUp(g.mp * (d + 2), 16);
  return g;
}

// ---- One unit ----------------------------------------------------------------------------------

struct Unit {
  int64_t kv_head = 0;
  int64_t q_lo = 0;   // first query of the tile
  int64_t num_q = 0;  // queries in the tile
  int64_t split = 0;  // index of the key split
  int64_t num_splits = 1;
};

// Runs one unit; writes the normalised output rows (one split) or its partial slot.
void RunUnit(const FlashAttentionParams& p, const Geometry& geo, const TileOps& ops, const Unit& u,
             float* scratch, float* maybe_slot) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t bs = c.block_size;
  const int64_t cap = geo.mp;  // rows the scratch holds
  const int64_t group = geo.group;
  const int64_t q_row = p.num_heads * d;
  const int64_t rows = u.num_q * group;
  const int64_t mp = RoundUp(rows, kRowAlign);  // this unit's padded rows (decode: the group)
  float* qt = scratch;
  float* o = qt + d * cap;
  float* st = o + cap * d;
  float* m = st + kKeyTile * cap;
  float* l = m + cap;
  float* alpha = l + cap;
  float* qpos = alpha + cap;  // positions as floats (exact below 2^24)
  float* kwide = qpos + cap;  // [kKeyTile][d] keys of a bf16 cache's tile, as fp32
  float* vwide = kwide + kKeyTile * d;

  const int64_t p_lo = p.query_start + u.q_lo;
  const int64_t p_hi = p_lo + u.num_q - 1;
  const int64_t window = p.sliding_window;
  // Rows are (query, head of the group), query-major; padded rows repeat the last real row's
  // position so that they see the same keys (their scores are 0 and their output is dropped).
  const float qscale = p.scale * kLog2e;
  for (int64_t e = 0; e < d; ++e) std::fill(qt + e * mp + rows, qt + (e + 1) * mp, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t qi = r / group;
    const float* src = p.q + (u.q_lo + qi) * q_row + (u.kv_head * group + r % group) * d;
    for (int64_t e = 0; e < d; ++e) qt[e * mp + r] = src[e] * qscale;
    qpos[r] = static_cast<float>(p_lo + qi);
  }
  for (int64_t r = rows; r < mp; ++r) qpos[r] = static_cast<float>(p_hi);
  std::fill(m, m + mp, kNegInf);
  std::fill(l, l + mp, 0.0f);
  std::fill(o, o + mp * d, 0.0f);

  const int64_t key_begin = window > 0 ? std::max<int64_t>(0, p_lo - window + 1) : 0;
  const int64_t key_end = p_hi + 1;
  const int64_t num_tiles = (key_end - key_begin + kKeyTile - 1) / kKeyTile;
  const int64_t tile_lo = u.split * num_tiles / u.num_splits;
  const int64_t tile_hi = (u.split + 1) * num_tiles / u.num_splits;
  const float* krows[kKeyTile];
  const float* vrows[kKeyTile];
  for (int64_t t = tile_lo; t < tile_hi; ++t) {
    const int64_t k0 = key_begin + t * kKeyTile;
    const int64_t nk = std::min(kKeyTile, key_end - k0);
    for (int64_t j = 0; j < nk;) {
      const int64_t pos = k0 + j;
      const int64_t block = p.block_table[pos / bs];
      const int64_t slot = pos % bs;
      const int64_t run = std::min(bs - slot, nk - j);
      const float* kb;
      const float* vb;
      if (c.is_bf16()) {
        ops.widen(c.KBf16(block, u.kv_head) + slot * d, run * d, kwide + j * d);
        ops.widen(c.VBf16(block, u.kv_head) + slot * d, run * d, vwide + j * d);
        kb = kwide + j * d;
        vb = vwide + j * d;
      } else {
        kb = c.K(block, u.kv_head) + slot * d;
        vb = c.V(block, u.kv_head) + slot * d;
      }
      for (int64_t i = 0; i < run; ++i) {
        krows[j + i] = kb + i * d;
        vrows[j + i] = vb + i * d;
      }
      j += run;
    }
    ops.qk(krows, nk, qt, d, mp, st);
    // Masks only where the tile crosses some row's causal end or window start.
    const bool causal_cut = k0 + nk - 1 > p_lo;
    const bool window_cut = window > 0 && k0 < p_hi - window + 1;
    if (causal_cut || window_cut) {
      for (int64_t j = 0; j < nk; ++j) {
        const float kp = static_cast<float>(k0 + j);
        float* s = st + j * mp;
        for (int64_t r = 0; r < mp; ++r) {
          const bool after = kp > qpos[r];
          const bool before = window > 0 && kp < qpos[r] - static_cast<float>(window - 1);
          if (after || before) s[r] = kNegInf;
        }
      }
    }
    ops.softmax(st, nk, mp, m, l, alpha);
    ops.pv(vrows, nk, st, mp, d, alpha, o);
  }

  if (maybe_slot == nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t qi = r / group;
      float* dst = p.out + (u.q_lo + qi) * q_row + (u.kv_head * group + r % group) * d;
      const float inv = 1.0f / l[r];
      for (int64_t e = 0; e < d; ++e) dst[e] = o[r * d + e] * inv;
    }
    return;
  }
  std::copy(o, o + rows * d, maybe_slot);
  std::copy(m, m + rows, maybe_slot + cap * d);
  std::copy(l, l + rows, maybe_slot + cap * d + cap);
}

// Combines the splits of (kv_head, the one query tile) from their slots into the output.
void MergeSplits(const FlashAttentionParams& p, const Geometry& geo, int64_t kv_head, int64_t num_q,
                 int64_t num_splits, const float* slots) {
  const int64_t d = p.cache.head_dim;
  const int64_t mp = geo.mp;
  const int64_t group = geo.group;
  const int64_t q_row = p.num_heads * d;
  for (int64_t r = 0; r < num_q * group; ++r) {
    float mx = kNegInf;
    for (int64_t s = 0; s < num_splits; ++s) {
      mx = std::max(mx, slots[s * geo.slot_floats + mp * d + r]);
    }
    float* dst = p.out + (r / group) * q_row + (kv_head * group + r % group) * d;
    std::fill(dst, dst + d, 0.0f);
    float sum = 0.0f;
    for (int64_t s = 0; s < num_splits; ++s) {
      const float* slot = slots + s * geo.slot_floats;
      const float ms = slot[mp * d + r];
      if (ms == kNegInf) continue;  // this split held no key of the row
      const float w = std::exp2(ms - mx);
      sum += w * slot[mp * d + mp + r];
      for (int64_t e = 0; e < d; ++e) dst[e] += w * slot[r * d + e];
    }
    const float inv = 1.0f / sum;
    for (int64_t e = 0; e < d; ++e) dst[e] *= inv;
  }
}

}  // namespace

// ---- FlashAttention ----------------------------------------------------------------------------

int64_t FlashAttentionWorkspaceFloats(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                      int num_threads) {
  const Geometry geo = MakeGeometry(num_heads, num_kv_heads, head_dim);
  return std::max(1, num_threads) * geo.PerThread(num_kv_heads);
}

void FlashAttention(const FlashAttentionParams& p) {
  if (p.num_queries <= 0) return;
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t kv_heads = c.num_kv_heads;
  const Geometry geo = MakeGeometry(p.num_heads, kv_heads, d);
  const int64_t fit = p.workspace_floats / geo.PerThread(kv_heads);
  if (fit < 1 || p.workspace == nullptr) {
    std::fprintf(stderr, "FlashAttention: workspace of %lld floats, needs >= %lld\n",
                 static_cast<long long>(p.workspace_floats),
                 static_cast<long long>(geo.PerThread(kv_heads)));
    std::abort();
  }
  // Tiny problems (stories260K-sized) stay on the calling thread: a parallel region costs more.
  const double keys = static_cast<double>(p.query_start + p.num_queries);
  const double macs = 2.0 * static_cast<double>(p.num_heads * p.num_queries * d) * keys;
  const int64_t threads = macs < kParallelMinMacs ? 1 : std::min<int64_t>(NumThreads(), fit);
  const TileOps& ops = ActiveIsa() == VectorIsa::kAvx2 && d % 8 == 0 ? kAvx2Ops : kScalarOps;

  const int64_t bq = geo.queries_per_tile;
  const int64_t num_qtiles = (p.num_queries + bq - 1) / bq;
  const int64_t pairs = kv_heads * num_qtiles;
  int64_t splits = 1;
  if (num_qtiles == 1 && threads > 1) {
    // Few (kv head, query tile) pairs: split the keys so every thread gets work, when each split
    // keeps a few tiles.
    const int64_t p_lo = p.query_start;
    const int64_t key_begin =
        p.sliding_window > 0 ? std::max<int64_t>(0, p_lo - p.sliding_window + 1) : 0;
    const int64_t tiles = (p_lo + p.num_queries - key_begin + kKeyTile - 1) / kKeyTile;
    const int64_t target_units = pairs % threads == 0 ? pairs : 4 * threads;
    const int64_t max_splits = std::max<int64_t>(1, std::min(2 * threads, tiles / kMinSplitTiles));
    splits = std::clamp<int64_t>((target_units + pairs - 1) / pairs, 1, max_splits);
  }
  float* slots = p.workspace + threads * geo.thread_floats;  // [kv_heads][splits] slots
  const int64_t num_units = pairs * splits;

  ParallelFor(num_units, static_cast<int>(threads), [&](int64_t index, int thread) {
    // Longest units first: under the causal mask the last query tiles read the most keys.
    Unit u;
    u.num_splits = splits;
    u.split = index % splits;
    u.kv_head = (index / splits) % kv_heads;
    const int64_t qtile = num_qtiles - 1 - index / (splits * kv_heads);
    u.q_lo = qtile * bq;
    u.num_q = std::min(bq, p.num_queries - u.q_lo);
    float* scratch = p.workspace + thread * geo.thread_floats;
    float* slot = splits > 1 ? slots + (u.kv_head * splits + u.split) * geo.slot_floats : nullptr;
    RunUnit(p, geo, ops, u, scratch, slot);
  });
  if (splits > 1) {
    for (int64_t g = 0; g < kv_heads; ++g) {
      MergeSplits(p, geo, g, p.num_queries, splits, slots + g * splits * geo.slot_floats);
    }
  }
}

}  // namespace lychee::cpu
