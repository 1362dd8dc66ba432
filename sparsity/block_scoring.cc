// SPDX-License-Identifier: Apache-2.0
#include "sparsity/block_scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/paged_kv.h"

namespace lychee::sparsity {

void GroupMeanQuery(const DecodeQuery& query, int64_t kv_head, float* out) {
  const int64_t d = query.cache.head_dim;
  const int64_t group = query.num_heads / query.cache.num_kv_heads;
  std::fill(out, out + d, 0.0f);
  for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    const float* q = query.q + h * d;
    for (int64_t e = 0; e < d; ++e) out[e] += q[e];
  }
  const float inv = 1.0f / static_cast<float>(group);
  for (int64_t e = 0; e < d; ++e) out[e] *= inv;
}

void ExactBlockScores(const DecodeQuery& query, int64_t kv_head, const float* qbar, float* out) {
  const PagedKvView& c = query.cache;
  const int64_t d = c.head_dim, bs = c.block_size, n = query.num_blocks();
  float row[cpu::kMaxWidenedRow];  // a bf16 cache's key, widened
  cpu::CheckWidenedRowFits(d);
  for (int64_t b = 0; b < n; ++b) {
    const int32_t block = query.block_table[static_cast<size_t>(b)];
    const int64_t run = std::min(bs, query.position + 1 - b * bs);
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t r = 0; r < run; ++r) {
      best = std::max(best, cpu::Dot(qbar, cpu::KeyRow(c, block, kv_head, r, row), d));
    }
    out[b] = best;
  }
}

void ExactTokenScores(const DecodeQuery& query, int64_t kv_head, const float* qbar, float* out) {
  const PagedKvView& c = query.cache;
  const int64_t d = c.head_dim, bs = c.block_size, n = query.num_blocks();
  float row[cpu::kMaxWidenedRow];  // a bf16 cache's key, widened
  cpu::CheckWidenedRowFits(d);
  for (int64_t b = 0; b < n; ++b) {
    const int32_t block = query.block_table[static_cast<size_t>(b)];
    const int64_t run = std::min(bs, query.position + 1 - b * bs);
    for (int64_t r = 0; r < run; ++r) {
      out[b * bs + r] = cpu::Dot(qbar, cpu::KeyRow(c, block, kv_head, r, row), d);
    }
  }
}

void AppendTopK(absl::Span<const float> scores, int64_t forced_first, int64_t forced_last,
                int64_t budget, absl::Span<const uint8_t> candidate, std::vector<int32_t>* order,
                std::vector<int32_t>* out) {
  const int64_t n = static_cast<int64_t>(scores.size());
  forced_first = std::clamp<int64_t>(forced_first, 0, n);
  const int64_t last_begin = std::max(forced_first, n - std::clamp<int64_t>(forced_last, 0, n));
  order->clear();
  for (int64_t i = forced_first; i < last_begin; ++i) {
    if (candidate.empty() || candidate[static_cast<size_t>(i)] != 0) {
      order->push_back(static_cast<int32_t>(i));
    }
  }
  const int64_t forced = forced_first + (n - last_begin);
  const int64_t take = std::clamp<int64_t>(budget - forced, 0, static_cast<int64_t>(order->size()));
  auto better = [&scores](int32_t a, int32_t b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    return sa != sb ? sa > sb : a < b;
  };
  std::nth_element(order->begin(), order->begin() + take, order->end(), better);
  std::sort(order->begin(), order->begin() + take);
  for (int64_t i = 0; i < forced_first; ++i) out->push_back(static_cast<int32_t>(i));
  out->insert(out->end(), order->begin(), order->begin() + take);
  for (int64_t i = last_begin; i < n; ++i) out->push_back(static_cast<int32_t>(i));
}

float Cosine(const float* a, const float* b, int64_t n) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int64_t e = 0; e < n; ++e) {
    ab += static_cast<double>(a[e]) * b[e];
    aa += static_cast<double>(a[e]) * a[e];
    bb += static_cast<double>(b[e]) * b[e];
  }
  if (aa == 0.0 || bb == 0.0) return 0.0f;
  return static_cast<float>(ab / std::sqrt(aa * bb));
}

}  // namespace lychee::sparsity
