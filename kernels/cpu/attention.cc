// SPDX-License-Identifier: Apache-2.0
// Causal GQA attention over a contiguous KV cache: the dense reference for later paged and
// sparse kernels.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/dot.h"

namespace lychee::cpu {

void Attention(const AttentionParams& p) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t q_row = p.num_heads * p.head_dim;
  const int64_t kv_row = p.num_kv_heads * p.head_dim;
  for (int64_t t = 0; t < p.num_queries; ++t) {
    const int64_t pos = p.query_start + t;
    const int64_t first =
        p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
    const int64_t n_keys = pos - first + 1;
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* q = p.q + t * q_row + h * p.head_dim;
      const int64_t kvh = h / group;
      const float* k = p.k_cache + first * kv_row + kvh * p.head_dim;
      const float* v = p.v_cache + first * kv_row + kvh * p.head_dim;
      float* scores = p.scratch;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n_keys; ++j) {
        const float sc = Dot(q, k + j * kv_row, p.head_dim) * p.scale;
        scores[j] = sc;
        max_score = std::max(max_score, sc);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n_keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* out = p.out + t * q_row + h * p.head_dim;
      std::fill(out, out + p.head_dim, 0.0f);
      for (int64_t j = 0; j < n_keys; ++j) {
        const float w = scores[j];
        const float* vj = v + j * kv_row;
        for (int64_t d = 0; d < p.head_dim; ++d) out[d] += w * vj[d];
      }
      const float inv_sum = 1.0f / sum;
      for (int64_t d = 0; d < p.head_dim; ++d) out[d] *= inv_sum;
    }
  }
}

}  // namespace lychee::cpu
