// SPDX-License-Identifier: Apache-2.0
// QuestPolicy: score bounds for all blocks, forced sink and recent blocks, top-k of the rest.
#include "sparsity/quest_policy.h"

#include <algorithm>

#include "kernels/cpu/sparse_attention.h"

namespace lychee::sparsity {

void QuestPolicy::Select(const DecodeQuery& query, int64_t budget_tokens, Selection* selection) {
  const int64_t bs = query.cache.block_size;
  const int64_t n = query.num_blocks();
  const int64_t kv_heads = query.cache.num_kv_heads;
  const int64_t group = query.num_heads / kv_heads;
  const int64_t budget = std::max<int64_t>(1, budget_tokens / bs);
  const int64_t sinks = std::min(n - 1, (sink_tokens_ + bs - 1) / bs);  // the last is recent
  selection->Clear();
  if (budget >= n) {
    // Everything fits: no scoring needed.
    for (int64_t g = 0; g < kv_heads; ++g) {
      for (int64_t b = 0; b < n; ++b) selection->blocks.push_back(static_cast<int32_t>(b));
      selection->EndHead();
    }
    return;
  }

  head_bounds_.resize(static_cast<size_t>(query.num_heads * n));
  cpu::BlockScoreBoundsParams sp;
  sp.q = query.q;
  sp.cache = query.cache;
  sp.block_table = query.block_table.data();
  sp.out = head_bounds_.data();
  sp.num_heads = query.num_heads;
  sp.num_blocks = n;
  sp.scale = query.scale;
  cpu::BlockScoreBounds(sp);

  // Candidates: the blocks between the sinks and the query's block.
  const int64_t free_slots = std::max<int64_t>(0, budget - sinks - 1);
  kv_bounds_.resize(static_cast<size_t>(n));
  for (int64_t g = 0; g < kv_heads; ++g) {
    for (int64_t b = 0; b < n; ++b) {
      float best = head_bounds_[static_cast<size_t>(g * group * n + b)];
      for (int64_t h = 1; h < group; ++h) {
        best = std::max(best, head_bounds_[static_cast<size_t>((g * group + h) * n + b)]);
      }
      kv_bounds_[static_cast<size_t>(b)] = best;
    }
    order_.clear();
    for (int64_t b = sinks; b < n - 1; ++b) order_.push_back(static_cast<int32_t>(b));
    const int64_t take = std::min<int64_t>(free_slots, static_cast<int64_t>(order_.size()));
    auto better = [&](int32_t a, int32_t b) {
      const float ua = kv_bounds_[static_cast<size_t>(a)];
      const float ub = kv_bounds_[static_cast<size_t>(b)];
      return ua != ub ? ua > ub : a < b;
    };
    std::nth_element(order_.begin(), order_.begin() + take, order_.end(), better);
    std::sort(order_.begin(), order_.begin() + take);

    for (int64_t b = 0; b < sinks; ++b) selection->blocks.push_back(static_cast<int32_t>(b));
    selection->blocks.insert(selection->blocks.end(), order_.begin(), order_.begin() + take);
    selection->blocks.push_back(static_cast<int32_t>(n - 1));
    selection->EndHead();
  }
}

}  // namespace lychee::sparsity
