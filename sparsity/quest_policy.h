// SPDX-License-Identifier: Apache-2.0
// QuestPolicy: query-aware block selection by key-summary upper bounds (Quest, arXiv 2406.10774).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "sparsity/policy.h"

namespace lychee::sparsity {

/// @brief Per kv head, reads the sink blocks (the first `sink_tokens` positions), the query's
/// own block, and fills the rest of the token budget with the blocks of the highest score upper
/// bound u_b = scale · Σ_e max(q_e·min_e, q_e·max_e) (kernels/cpu BlockScoreBounds). A kv head
/// ranks a block by the largest bound over its query heads (GQA). Ties go to the earlier block.
/// Deviation from the paper: every layer is sparse (Quest keeps the first two dense).
class QuestPolicy final : public Policy {
 public:
  static constexpr int64_t kDefaultSinkTokens = 4;

  explicit QuestPolicy(const PolicyLimits& limits, int64_t sink_tokens = kDefaultSinkTokens)
      : Policy(limits), sink_tokens_(sink_tokens) {}

  std::string_view name() const override { return "quest"; }
  void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              Selection* selection) override;

  DeviceSelection device_selection() const override {
    return {DeviceSelection::Kind::kQuest, sink_tokens_, 0, nullptr};
  }

 private:
  int64_t sink_tokens_;
  // Scratch kept between steps so that a step does not allocate once the context stopped growing.
  std::vector<float> head_bounds_;  // [num_heads, num_blocks]
  std::vector<float> kv_bounds_;    // [num_blocks] of one kv head
  std::vector<int32_t> order_;      // candidate blocks of one kv head
};

}  // namespace lychee::sparsity
