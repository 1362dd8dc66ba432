// SPDX-License-Identifier: Apache-2.0
// StreamingPolicy: sink blocks + the most recent blocks up to the budget.
#include "sparsity/streaming_policy.h"

#include <algorithm>

namespace lychee::sparsity {

void StreamingPolicy::Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
                             Selection* selection) {
  const int64_t bs = query.cache.block_size;
  const int64_t n = query.num_blocks();
  const int64_t sinks = std::min(n, (sink_tokens_ + bs - 1) / bs);
  selection->Clear();
  for (int64_t g = 0; g < query.cache.num_kv_heads; ++g) {
    const int64_t budget = std::max<int64_t>(1, budget_tokens[static_cast<size_t>(g)] / bs);
    // The recent window gets what the sinks leave, but always at least the query's block.
    const int64_t recent_first = std::max(sinks, n - std::max<int64_t>(1, budget - sinks));
    for (int64_t b = 0; b < sinks; ++b) selection->blocks.push_back(static_cast<int32_t>(b));
    for (int64_t b = std::min(recent_first, n - 1); b < n; ++b) {
      if (b >= sinks) selection->blocks.push_back(static_cast<int32_t>(b));
    }
    selection->EndHead();
  }
}

}  // namespace lychee::sparsity
