// SPDX-License-Identifier: Apache-2.0
// LycheePolicy: retrieval heads read everything and choose; sparse heads read the inherited set.
#include "sparsity/lychee_policy.h"

#include <algorithm>
#include <iterator>

#include "sparsity/block_scoring.h"

namespace lychee::sparsity {

LycheePolicy::LycheePolicy(const PolicyLimits& limits, const LycheeKnobs& knobs,
                           std::shared_ptr<const HeadRoles> roles)
    : Policy(limits), knobs_(knobs), token_mode_(knobs.mode == "token"), roles_(std::move(roles)) {}

void LycheeTopSet(const DecodeQuery& query, int64_t kv_head, const LycheeKnobs& knobs,
                  int64_t budget_tokens, LycheeScratch* scratch, std::vector<int32_t>* out) {
  const int64_t bs = query.cache.block_size;
  scratch->qbar.resize(static_cast<size_t>(query.cache.head_dim));
  GroupMeanQuery(query, kv_head, scratch->qbar.data());
  out->clear();
  if (knobs.mode == "token") {
    scratch->scores.resize(static_cast<size_t>(query.position + 1));
    ExactTokenScores(query, kv_head, scratch->qbar.data(), scratch->scores.data());
    AppendTopK(scratch->scores, knobs.sink_tokens, std::max<int64_t>(1, knobs.local_tokens),
               budget_tokens, {}, &scratch->order, out);
  } else {
    scratch->scores.resize(static_cast<size_t>(query.num_blocks()));
    ExactBlockScores(query, kv_head, scratch->qbar.data(), scratch->scores.data());
    const int64_t sink_blocks = (knobs.sink_tokens + bs - 1) / bs;
    // The query's own (possibly partial) block plus enough whole blocks for the local window.
    const int64_t local_blocks = 1 + (std::max<int64_t>(0, knobs.local_tokens - 1) + bs - 1) / bs;
    AppendTopK(scratch->scores, sink_blocks, local_blocks, std::max<int64_t>(1, budget_tokens / bs),
               {}, &scratch->order, out);
  }
}

void LycheePolicy::Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
                          Selection* selection) {
  const int64_t kv_heads = query.cache.num_kv_heads;
  const int64_t n = token_mode_ ? query.position + 1 : query.num_blocks();
  if (query.layer == 0) sets_.assign(static_cast<size_t>(kv_heads), {});
  pending_.resize(static_cast<size_t>(kv_heads));
  has_pending_.assign(static_cast<size_t>(kv_heads), 0);
  reused_.assign(static_cast<size_t>(kv_heads), 0);
  selection->Clear(token_mode_);
  for (int64_t g = 0; g < kv_heads; ++g) {
    const size_t gi = static_cast<size_t>(g);
    const std::vector<int32_t>& inherited = sets_[gi];
    const bool retrieval = query.layer == 0 || roles_->retrieval(query.layer, g) ||
                           inherited.empty();  // no set yet (cannot happen after layer 0)
    if (retrieval) {
      // Dense attention over everything, and the set for the deeper sparse heads.
      for (int64_t i = 0; i < n; ++i) selection->blocks.push_back(static_cast<int32_t>(i));
      LycheeTopSet(query, g, knobs_, limits().budget_tokens, &scratch_, &pending_[gi]);
      has_pending_[gi] = 1;
    } else if (budget_tokens[gi] <= limits().budget_tokens) {
      selection->blocks.insert(selection->blocks.end(), inherited.begin(), inherited.end());
      reused_[gi] = 1;
    } else {
      // Widened: the inherited set plus the head's own best up to the widened budget.
      LycheeTopSet(query, g, knobs_, budget_tokens[gi], &scratch_, &own_);
      std::set_union(inherited.begin(), inherited.end(), own_.begin(), own_.end(),
                     std::back_inserter(selection->blocks));
    }
    selection->EndHead();
  }
}

void LycheePolicy::AfterAttention(const DecodeQuery& query,
                                  absl::Span<const float> /*head_dropped_mass*/) {
  const int64_t kv_heads = query.cache.num_kv_heads;
  for (int64_t g = 0; g < kv_heads; ++g) {
    const size_t gi = static_cast<size_t>(g);
    if (has_pending_[gi] != 0) sets_[gi].swap(pending_[gi]);
    ++counters_.head_selections;
    counters_.reused += reused_[gi];
  }
}

}  // namespace lychee::sparsity
