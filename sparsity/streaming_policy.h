// SPDX-License-Identifier: Apache-2.0
// StreamingPolicy: attention sinks plus a recent window (StreamingLLM, arXiv 2309.17453), at
// block granularity.
#pragma once

#include <cstdint>
#include <string_view>

#include "sparsity/policy.h"

namespace lychee::sparsity {

/// @brief Every kv head reads the blocks holding the first `sink_tokens` positions and, within
/// the token budget, the most recent blocks (always the query's own, possibly partial, block).
/// No scoring: the selection depends on the position only, so it costs nothing per step.
class StreamingPolicy final : public Policy {
 public:
  static constexpr int64_t kDefaultSinkTokens = 4;  // the paper's 4 sink tokens

  explicit StreamingPolicy(const PolicyLimits& limits, int64_t sink_tokens = kDefaultSinkTokens)
      : Policy(limits), sink_tokens_(sink_tokens) {}

  std::string_view name() const override { return "streaming"; }
  void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              Selection* selection) override;

  DeviceSelection device_selection() const override {
    return {DeviceSelection::Kind::kStreaming, sink_tokens_, 0, nullptr};
  }

 private:
  int64_t sink_tokens_;
};

}  // namespace lychee::sparsity
