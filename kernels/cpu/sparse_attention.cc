// SPDX-License-Identifier: Apache-2.0
// Block score bounds from key summaries, and block-sparse decode attention with the certified
// dropped-mass bound. The read loop mirrors PagedAttention's so that an all-blocks selection
// reproduces it.
#include "kernels/cpu/sparse_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/dot.h"

namespace lychee::cpu {

float BlockScoreBound(const float* q, const float* lo, const float* hi, int64_t head_dim,
                      float scale) {
  // Double accumulation plus a slack of head_dim float roundings of Σ|q·k|: the fp32 Dot that
  // scores a real key may round up past the exact bound, and the bound must still hold.
  double sum = 0.0, mag = 0.0;
  for (int64_t e = 0; e < head_dim; ++e) {
    const double a = static_cast<double>(q[e]) * lo[e];
    const double b = static_cast<double>(q[e]) * hi[e];
    sum += std::max(a, b);
    mag += std::max(std::abs(a), std::abs(b));
  }
  const double slack = static_cast<double>(head_dim + 2) * std::numeric_limits<float>::epsilon();
  return static_cast<float>((sum + slack * mag) * scale);
}

void BlockScoreBounds(const BlockScoreBoundsParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t group = p.num_heads / c.num_kv_heads;
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const float* q = p.q + h * d;
    const int64_t kvh = h / group;
    float* out = p.out + h * p.num_blocks;
    for (int64_t b = 0; b < p.num_blocks; ++b) {
      const int64_t block = p.block_table[b];
      out[b] = BlockScoreBound(q, c.KeyMin(block, kvh), c.KeyMax(block, kvh), d, p.scale);
    }
  }
}

void SparseDecodeAttention(const SparseDecodeAttentionParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t bs = c.block_size;
  const int64_t group = p.num_heads / c.num_kv_heads;
  const int64_t pos = p.position;
  const int64_t num_blocks = pos / bs + 1;
  auto keys_in = [&](int64_t b) { return std::min(bs, pos + 1 - b * bs); };
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const float* q = p.q + h * d;
    const int64_t kvh = h / group;
    const int32_t* sel = p.selected + p.selected_offsets[kvh];
    const int64_t num_sel = p.selected_offsets[kvh + 1] - p.selected_offsets[kvh];
    float* scores = p.scratch;

    // Scores of the read keys, in block order.
    float max_score = -std::numeric_limits<float>::infinity();
    int64_t n_read = 0;
    for (int64_t i = 0; i < num_sel; ++i) {
      const int64_t b = sel[i];
      const float* k = c.K(p.block_table[b], kvh);
      const int64_t run = keys_in(b);
      for (int64_t r = 0; r < run; ++r) {
        const float sc = Dot(q, k + r * d, d) * p.scale;
        scores[n_read++] = sc;
        max_score = std::max(max_score, sc);
      }
    }
    // The read keys' normaliser relative to their max: exactly PagedAttention's softmax.
    float sum = 0.0f;
    for (int64_t j = 0; j < n_read; ++j) {
      scores[j] = std::exp(scores[j] - max_score);
      sum += scores[j];
    }
    // The unread blocks' bounded mass on the same scale (a merge walk against the ascending
    // selection), in double: a bound far above the read max may exceed float's range, and then
    // the certificate is simply 1.
    double unread_mass = 0.0;
    bool any_unread = false;
    for (int64_t b = 0, i = 0; b < num_blocks; ++b) {
      if (i < num_sel && sel[i] == b) {
        ++i;
        continue;
      }
      any_unread = true;
      const int64_t block = p.block_table[b];
      const double u = BlockScoreBound(q, c.KeyMin(block, kvh), c.KeyMax(block, kvh), d, p.scale);
      unread_mass += static_cast<double>(keys_in(b)) * std::exp(u - static_cast<double>(max_score));
    }
    float delta = 0.0f;
    if (any_unread) {
      const double total = static_cast<double>(sum) + unread_mass;
      delta =
          (n_read == 0 || !std::isfinite(total)) ? 1.0f : static_cast<float>(unread_mass / total);
    }
    p.dropped_mass[h] = delta;

    float* out = p.out + h * d;
    std::fill(out, out + d, 0.0f);
    int64_t j = 0;
    for (int64_t i = 0; i < num_sel; ++i) {
      const int64_t b = sel[i];
      const float* v = c.V(p.block_table[b], kvh);
      const int64_t run = keys_in(b);
      for (int64_t r = 0; r < run; ++r) {
        const float w = scores[j++];
        const float* vj = v + r * d;
        for (int64_t e = 0; e < d; ++e) out[e] += w * vj[e];
      }
    }
    // No key read (an empty selection): the output stays zero and everything was dropped.
    if (n_read > 0) {
      const float inv_sum = 1.0f / sum;
      for (int64_t e = 0; e < d; ++e) out[e] *= inv_sum;
    }
  }
}

}  // namespace lychee::cpu
