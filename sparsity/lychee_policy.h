// SPDX-License-Identifier: Apache-2.0
// LycheePolicy: LycheeDecode's hybrid-head sparse decoding (arXiv 2602.04541; ALGORITHMS.md §1).
//
// A static head-role mask [layers × kv heads] (HeadRoles, made by lychee-calibrate) splits the
// kv heads into retrieval and sparse ones. Within one decode step, layer by layer:
//  - a retrieval head attends to every KV entry (its dropped mass is exactly 0) and chooses a
//    set for its kv-head index: the top blocks by max over the block of q̄·k (block mode, the
//    fast default) or the top tokens by q̄·k (token mode, the paper's quality reference), with
//    q̄ the mean of the GQA group's queries, the first `sink_tokens` and last `local_tokens`
//    always in, `budget_tokens` in all;
//  - a sparse head attends only to the set last chosen at its index by a shallower retrieval
//    head (sparse heads of a layer read the sets of the layers above, never their own layer's).
// Layer 0 is all retrieval, so every index has a set before a sparse head reads it; sets live
// for one step (the official code recomputes them every step).
//
// Widening (the runner doubles a sparse head's budget when its certified bound misses the
// request's max_dropped_mass): the head reads the inherited set plus its own top blocks by
// exact score up to the widened budget, so the bound can still be met without going dense.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

// Scratch for LycheeTopSet, kept by its caller between calls.
struct LycheeScratch {
  std::vector<float> qbar, scores;
  std::vector<int32_t> order;
};

// The set a retrieval head of kv head `kv_head` chooses (ascending; block indices, or positions
// when knobs.mode is "token"): the sink and local ranges plus the top scores of the group-mean
// query, `budget_tokens` in all. Shared with the head-role calibration.
void LycheeTopSet(const DecodeQuery& query, int64_t kv_head, const LycheeKnobs& knobs,
                  int64_t budget_tokens, LycheeScratch* scratch, std::vector<int32_t>* out);

class LycheePolicy final : public Policy {
 public:
  LycheePolicy(const PolicyLimits& limits, const LycheeKnobs& knobs,
               std::shared_ptr<const HeadRoles> roles);

  std::string_view name() const override { return "lychee"; }
  void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              Selection* selection) override;
  void AfterAttention(const DecodeQuery& query, absl::Span<const float> head_dropped_mass) override;
  PolicyCounters counters() const override { return counters_; }
  // Block mode only: token mode has no device form yet.
  DeviceSelection device_selection() const override {
    if (token_mode_) return {};
    return {DeviceSelection::Kind::kLychee, knobs_.sink_tokens, knobs_.local_tokens, roles_.get()};
  }

 private:
  LycheeKnobs knobs_;
  bool token_mode_;
  std::shared_ptr<const HeadRoles> roles_;
  // Per kv-head index: the set last chosen by a retrieval head in this step (ascending block
  // indices or positions), and the sets this layer's retrieval heads chose (committed in
  // AfterAttention, so that repeated Select calls of one layer see the same inherited sets).
  std::vector<std::vector<int32_t>> sets_, pending_;
  std::vector<uint8_t> has_pending_;
  std::vector<uint8_t> reused_;  // this layer: the head read an inherited set
  PolicyCounters counters_;
  LycheeScratch scratch_;
  std::vector<int32_t> own_;
};

}  // namespace lychee::sparsity
