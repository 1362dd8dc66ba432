// SPDX-License-Identifier: Apache-2.0
// QuestPolicy: score bounds for all blocks, forced sink and recent blocks, top-k of the rest.
#include "sparsity/quest_policy.h"

#include <algorithm>

#include "kernels/cpu/sparse_attention.h"
#include "sparsity/block_scoring.h"

namespace lychee::sparsity {

void QuestPolicy::Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
                         Selection* selection) {
  const int64_t bs = query.cache.block_size;
  const int64_t n = query.num_blocks();
  const int64_t kv_heads = query.cache.num_kv_heads;
  const int64_t group = query.num_heads / kv_heads;
  const int64_t sinks = std::min(n - 1, (sink_tokens_ + bs - 1) / bs);  // the last is recent
  selection->Clear();
  auto budget_blocks = [&](int64_t g) {
    return std::max<int64_t>(1, budget_tokens[static_cast<size_t>(g)] / bs);
  };
  bool scoring = false;
  for (int64_t g = 0; g < kv_heads; ++g) scoring = scoring || budget_blocks(g) < n;
  if (scoring) {
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
  }
  kv_bounds_.resize(static_cast<size_t>(n));
  for (int64_t g = 0; g < kv_heads; ++g) {
    if (budget_blocks(g) >= n) {  // everything fits: no ranking needed
      for (int64_t b = 0; b < n; ++b) selection->blocks.push_back(static_cast<int32_t>(b));
      selection->EndHead();
      continue;
    }
    // A kv head ranks a block by the largest bound over its query heads.
    for (int64_t b = 0; b < n; ++b) {
      float best = head_bounds_[static_cast<size_t>(g * group * n + b)];
      for (int64_t h = 1; h < group; ++h) {
        best = std::max(best, head_bounds_[static_cast<size_t>((g * group + h) * n + b)]);
      }
      kv_bounds_[static_cast<size_t>(b)] = best;
    }
    AppendTopK(kv_bounds_, sinks, 1, budget_blocks(g), {}, &order_, &selection->blocks);
    selection->EndHead();
  }
}

}  // namespace lychee::sparsity
