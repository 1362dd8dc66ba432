// SPDX-License-Identifier: Apache-2.0
// PrhsPolicy: Pre-hoc Sparsity (arXiv 2602.08329; ALGORITHMS.md §2): the KV subset is fixed
// before scoring, from signals with a guarantee, and bounded by the dropped mass δ.
//
// CIS (clustered indices sharing), per layer and kv head, with q̄ the GQA group's mean query:
//  - an anchor step scores every candidate block exactly (max over the block of q̄·k, the
//    near-oracle choice of §4.7) and keeps the best blocks within the budget, widening each of
//    the top `dilate_fraction` of them by ±`dilation` neighbouring blocks (the paper dilates
//    token indices by ±r; at block granularity a neighbour is a block). Dilation is taken
//    inside the budget: blocks are added in score order, the top ones with their neighbours,
//    until the budget is full, so a request never reads more than it asked for;
//  - later steps reuse the anchor's blocks without scoring while cos(q̄, q̄_anchor) > tau, plus
//    the sink blocks and the local window at the current position; otherwise they rescore and
//    become the new anchor (§4.6: compare with the last anchor, not the previous step).
// PSAW (progressive sliding attention window), our reading of §2.3 in decode: in layers
// l >= psaw_start_layer the oldest P_l(t) = floor((1 - phi^(alpha (l - l_s) / (N - l_s))) t)
// tokens are not candidates (sink blocks stay); phi = 1 turns it off (the default).
// ETF (early token freezing) is not implemented: the sources place it in prefill (our prefill
// is dense) and its semantics are unresolved (§2.4, §4.8).
//
// Accuracy control in advance (max_dropped_mass < 1): before any KV is read, the bound
//   δ_pre(h) = U / (U + L),  U = Σ_{b unselected} n_b·e^{ub_b},  L = Σ_{b selected} n_b·e^{lb_b}
// (ub/lb: upper/lower bounds of q·k over the block from its key summaries, min/max of the box
// and ball bounds of kernels/cpu/sparse_attention.h, per query head) must
// meet max_dropped_mass for every query head of the group; unselected blocks are added by
// highest bound until it does. A head whose set would grow past 4x its budget reads everything
// instead (a dense fallback). The kernel then certifies the real bound after reading.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

class PrhsPolicy final : public Policy {
 public:
  PrhsPolicy(const PolicyLimits& limits, const PrhsKnobs& knobs);

  std::string_view name() const override { return "prhs"; }
  void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              Selection* selection) override;
  void AfterAttention(const DecodeQuery& query, absl::Span<const float> head_dropped_mass) override;
  PolicyCounters counters() const override { return counters_; }
  // On the GPU (kernels/cuda/block_select.h, SelectRowMode::kPrhs) the anchors live on the
  // device; under max_dropped_mass < 1 the select kernel grows the set in advance (GrowPrhsToBound
  // in kernels/cuda/select_search.cuh: box bounds only, the kv head's for the unread blocks).
  DeviceSelection device_selection() const override {
    DeviceSelection d;
    d.kind = DeviceSelection::Kind::kPrhs;
    d.sink_tokens = knobs_.sink_tokens;
    d.local_tokens = knobs_.local_tokens;
    d.prhs = &knobs_;
    return d;
  }

  // The first token position layer `layer` of `num_layers` may read at context `tokens` (PSAW).
  static int64_t PsawWindowStart(const PrhsKnobs& knobs, int64_t layer, int64_t num_layers,
                                 int64_t tokens);

 private:
  struct Anchor {
    bool valid = false;
    int64_t budget = 0;           // the budget it was chosen under (a widened rerun rescores)
    std::vector<float> q;         // q̄ at the anchor step
    std::vector<int32_t> blocks;  // chosen blocks, sinks and local window excluded
  };
  Anchor& AnchorFor(int64_t layer, int64_t kv_head, int64_t kv_heads);
  // Anchor choice: top blocks by exact score with dilation, inside `budget_blocks`.
  void Rescore(const DecodeQuery& query, int64_t kv_head, int64_t budget_blocks,
               std::vector<int32_t>* chosen);
  // Grows `set` (ascending, all blocks of the head) until the pre-read bound meets the
  // request's max_dropped_mass; false when it would pass `cap_blocks` (read everything).
  bool GrowToBound(const DecodeQuery& query, int64_t kv_head, int64_t cap_blocks,
                   std::vector<int32_t>* set);

  PrhsKnobs knobs_;
  std::vector<Anchor> anchors_;  // [layer × kv head]
  std::vector<Anchor> pending_;  // this layer's new anchors, committed by AfterAttention
  std::vector<uint8_t> has_pending_, reused_, fallback_;
  PolicyCounters counters_;
  // Scratch.
  std::vector<float> qbar_, scores_, ub_, lb_;
  std::vector<uint8_t> candidate_, in_set_;
  std::vector<int32_t> order_, chosen_, set_;
};

}  // namespace lychee::sparsity
