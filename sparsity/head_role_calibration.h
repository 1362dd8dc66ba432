// SPDX-License-Identifier: Apache-2.0
// Head-role calibration for LycheeDecode (ALGORITHMS.md §4.1(b)): a training-free,
// objective-matched choice of the retrieval heads.
//
// During dense decoding of calibration prompts, InheritanceRecorder (a Policy that reads every
// block, so the model computes exactly what dense attention computes) measures per decode step,
// layer l and kv head h, with p the head's real attention (softmax of each query head's scores,
// averaged over the GQA group):
//   own(l, h)      = p's mass outside the set head (l, h) would choose itself (LycheeTopSet),
//   inherit(l,h|a) = p's mass outside the set head (a, h) chose, for every shallower layer a,
// and accumulates cost(l, h | a) = inherit(l, h | a) − own(l, h): the attention mass head
// (l, h) loses by inheriting layer a's set instead of choosing its own. A retrieval head costs
// nothing (it reads everything); a sparse head at l reads the set of the nearest retrieval
// layer above it at the same index.
//
// ChooseHeadRoles then minimises the summed cost for a number of retrieval heads: per kv-head
// column, a DP over where to put k retrieval layers (layer 0 always); across columns, a
// knapsack that spends the total.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "sparsity/head_roles.h"
#include "sparsity/lychee_policy.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

// cost[(l * H + h) * N + a] for a < l, averaged over the recorded steps.
struct InheritanceCosts {
  int64_t num_layers = 0, num_kv_heads = 0;
  int64_t steps = 0;         // decode steps recorded
  std::vector<double> cost;  // [layer][kv head][ancestor layer], summed until Finalized
  double Cost(int64_t layer, int64_t head, int64_t ancestor) const {
    return cost[static_cast<size_t>((layer * num_kv_heads + head) * num_layers + ancestor)];
  }
};

class InheritanceRecorder final : public Policy {
 public:
  // `knobs` and `budget_tokens`: the lychee configuration the mask is made for.
  InheritanceRecorder(int64_t num_layers, int64_t num_kv_heads, const LycheeKnobs& knobs,
                      int64_t budget_tokens);

  std::string_view name() const override { return "calibration"; }
  void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              Selection* selection) override;

  // The mean costs over the steps recorded so far.
  InheritanceCosts MeanCosts() const;

 private:
  LycheeKnobs knobs_;
  int64_t budget_tokens_;
  InheritanceCosts sums_;
  std::vector<std::vector<int32_t>> sets_;  // [layer × kv head] chosen this step
  std::vector<double> mass_;                // per block (or token) attention mass of one head
  std::vector<float> scores_;
  LycheeScratch scratch_;
};

// The retrieval heads minimising the total inheritance cost with `num_retrieval` retrieval kv
// heads in all (at least the num_kv_heads of layer 0; at most every head).
HeadRoles ChooseHeadRoles(const InheritanceCosts& costs, int64_t num_retrieval);

// The total cost of `roles` under `costs` (what ChooseHeadRoles minimises).
double TotalInheritanceCost(const InheritanceCosts& costs, const HeadRoles& roles);

}  // namespace lychee::sparsity
