// SPDX-License-Identifier: Apache-2.0
// Paged K/V scatter with incremental key summaries, and causal GQA attention through a block
// table: the paged counterpart of attention.cc (same loop order, so results match it closely).
#include "kernels/cpu/paged_kv.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/bf16.h"
#include "kernels/cpu/dot.h"

namespace lychee::cpu {

void WritePagedKv(const WritePagedKvParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t row = c.num_kv_heads * d;
  const int64_t k_stride = p.k_row_stride > 0 ? p.k_row_stride : row;
  const int64_t v_stride = p.v_row_stride > 0 ? p.v_row_stride : row;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int64_t pos = p.start_position + t;
    const int64_t block = p.block_table[pos / c.block_size];
    const int64_t slot = pos % c.block_size;
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      const float* k = p.k + t * k_stride + h * d;
      const float* v = p.v + t * v_stride + h * d;
      float* lo = c.KeyMin(block, h);
      float* hi = c.KeyMax(block, h);
      if (c.is_bf16()) {
        // The summaries bound the stored (rounded) keys.
        uint16_t* kd = c.KBf16(block, h) + slot * d;
        uint16_t* vd = c.VBf16(block, h) + slot * d;
        for (int64_t e = 0; e < d; ++e) {
          kd[e] = FloatToBf16(k[e]);
          vd[e] = FloatToBf16(v[e]);
          const float ke = Bf16ToFloat(kd[e]);
          lo[e] = slot == 0 ? ke : std::min(lo[e], ke);
          hi[e] = slot == 0 ? ke : std::max(hi[e], ke);
        }
        continue;
      }
      std::memcpy(c.K(block, h) + slot * d, k, d * sizeof(float));
      std::memcpy(c.V(block, h) + slot * d, v, d * sizeof(float));
      if (slot == 0) {
        // A block's first slot starts its summary: whatever the block held before belongs to a
        // freed sequence.
        std::memcpy(lo, k, d * sizeof(float));
        std::memcpy(hi, k, d * sizeof(float));
      } else {
        for (int64_t e = 0; e < d; ++e) {
          lo[e] = std::min(lo[e], k[e]);
          hi[e] = std::max(hi[e], k[e]);
        }
      }
    }
    // The ball of a block is recomputed once per write, at the chunk's last token in it.
    const bool block_ends = slot + 1 == c.block_size || t + 1 == p.num_tokens;
    if (c.key_ball != nullptr && block_ends) {
      for (int64_t h = 0; h < c.num_kv_heads; ++h) UpdateKeyBall(c, block, h, slot + 1);
    }
  }
}

void UpdateKeyBall(const PagedKvView& c, int64_t block, int64_t kv_head, int64_t filled) {
  const int64_t d = c.head_dim;
  // Key i, element e, as stored (fp32 or rounded bf16).
  const float* k = c.is_bf16() ? nullptr : c.K(block, kv_head);
  const uint16_t* kb = c.is_bf16() ? c.KBf16(block, kv_head) : nullptr;
  auto key = [&](int64_t i) { return k != nullptr ? k[i] : Bf16ToFloat(kb[i]); };
  float* centroid = c.KeyCentroid(block, kv_head);
  for (int64_t e = 0; e < d; ++e) {
    double sum = 0.0;
    for (int64_t s = 0; s < filled; ++s) sum += key(s * d + e);
    centroid[e] = static_cast<float>(sum / static_cast<double>(filled));
  }
  // The radius around the stored (rounded) centroid, in double, then rounded up to float with a
  // relative margin far above double's rounding: r >= ‖k − c‖ holds exactly for every key.
  double r2 = 0.0;
  for (int64_t s = 0; s < filled; ++s) {
    double dist2 = 0.0;
    for (int64_t e = 0; e < d; ++e) {
      const double diff = static_cast<double>(key(s * d + e)) - centroid[e];
      dist2 += diff * diff;
    }
    r2 = std::max(r2, dist2);
  }
  const double r = std::sqrt(r2) * (1.0 + 1e-12);
  float rf = static_cast<float>(r);
  if (static_cast<double>(rf) < r) rf = std::nextafter(rf, std::numeric_limits<float>::infinity());
  centroid[d] = rf;
}

void CheckWidenedRowFits(int64_t head_dim) {
  if (head_dim > kMaxWidenedRow) {
    std::fprintf(stderr, "paged KV kernels: head_dim %lld > %lld\n",
                 static_cast<long long>(head_dim), static_cast<long long>(kMaxWidenedRow));
    std::abort();
  }
}

void PagedAttention(const PagedAttentionParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  float row[kMaxWidenedRow];  // one K or V row of a bf16 cache, widened
  CheckWidenedRowFits(d);
  const int64_t bs = c.block_size;
  const int64_t group = p.num_heads / c.num_kv_heads;
  const int64_t q_row = p.num_heads * d;
  for (int64_t t = 0; t < p.num_queries; ++t) {
    const int64_t pos = p.query_start + t;
    const int64_t first =
        p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
    const int64_t n_keys = pos - first + 1;
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* q = p.q + t * q_row + h * d;
      const int64_t kvh = h / group;
      float* scores = p.scratch;
      float max_score = -std::numeric_limits<float>::infinity();
      // Walk block by block: within a block the keys of one head are contiguous rows.
      for (int64_t j = first; j <= pos;) {
        const int64_t block = p.block_table[j / bs];
        const int64_t slot = j % bs;
        const int64_t run = std::min(bs - slot, pos - j + 1);
        for (int64_t r = 0; r < run; ++r) {
          const float sc = Dot(q, KeyRow(c, block, kvh, slot + r, row), d) * p.scale;
          scores[j - first + r] = sc;
          max_score = std::max(max_score, sc);
        }
        j += run;
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n_keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* out = p.out + t * q_row + h * d;
      std::fill(out, out + d, 0.0f);
      for (int64_t j = first; j <= pos;) {
        const int64_t block = p.block_table[j / bs];
        const int64_t slot = j % bs;
        const int64_t run = std::min(bs - slot, pos - j + 1);
        for (int64_t r = 0; r < run; ++r) {
          const float w = scores[j - first + r];
          const float* vj = ValueRow(c, block, kvh, slot + r, row);
          for (int64_t e = 0; e < d; ++e) out[e] += w * vj[e];
        }
        j += run;
      }
      const float inv_sum = 1.0f / sum;
      for (int64_t e = 0; e < d; ++e) out[e] *= inv_sum;
    }
  }
}

}  // namespace lychee::cpu
