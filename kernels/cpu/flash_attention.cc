// SPDX-License-Identifier: Apache-2.0
// FlashAttention (flash_attention.h): the unit driver (geometry, work split, masks, merge) in
// portable C++. The tile operations it calls (Q·Kᵀ, online softmax, P·V) are per vector ISA in
// flash_tiles.h, picked at run time.
//
// Sections: geometry, one unit, FlashAttention.
#include "kernels/cpu/flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/flash_tiles.h"
#include "kernels/cpu/thread_pool.h"

namespace lychee::cpu {
namespace {

constexpr int64_t kKeyTile = kFlashKeyTile;
constexpr int64_t kRowAlign = kFlashRowAlign;
constexpr float kNegInf = kFlashNegInf;
constexpr int64_t kTargetRows = 32;    // rows (queries × group heads) per unit, before padding
constexpr int64_t kMinSplitTiles = 4;  // a key split reads at least this many key tiles
constexpr double kParallelMinMacs = 1 << 17;  // below this, one thread (a region costs ~µs)
constexpr float kLog2e = 1.4426950408889634f;

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
void RunUnit(const FlashAttentionParams& p, const Geometry& geo, const FlashTileOps& ops,
             const Unit& u, float* scratch, float* maybe_slot) {
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
    ops.pv(vrows, nk, st, mp, rows, d, alpha, o);
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
  const FlashTileOps& ops = FlashTileOpsFor(ActiveIsa(), d);
  // Units of at most one 8-row vector (decode: one query's GQA group) run the AVX2 tiles even on
  // an AVX-512 CPU: half-masked 512-bit vectors measured 1.2-1.4x slower there (Zen 5).
  const VectorIsa isa = ActiveIsa();
  const FlashTileOps& narrow_ops =
      FlashTileOpsFor(isa == VectorIsa::kAvx512 ? VectorIsa::kAvx2 : isa, d);

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
    RunUnit(p, geo, u.num_q * geo.group <= kRowAlign ? narrow_ops : ops, u, scratch, slot);
  });
  if (splits > 1) {
    for (int64_t g = 0; g < kv_heads; ++g) {
      MergeSplits(p, geo, g, p.num_queries, splits, slots + g * splits * geo.slot_floats);
    }
  }
}

}  // namespace lychee::cpu
