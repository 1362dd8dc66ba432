// SPDX-License-Identifier: Apache-2.0
// Policy: which KV blocks each kv head reads in one decode step (sparse attention). Policies
// decide; kernels (kernels/cpu/sparse_attention.h) read the chosen blocks and certify the mass
// they skipped.
//
// Data flow, per decode chunk (one query token) and layer: the model runner fills a DecodeQuery
// (the rotated query and the layer's paged K/V), calls Select, runs the sparse kernel over the
// Selection, then AfterAttention with the per-head dropped-mass bounds. Prefill chunks always run
// dense: policies apply to one-token chunks only, i.e. decode steps (and a prompt, or the last
// piece of a chunked prefill, that is a single token: the same computation as a decode step).
//
// Ownership and threading: the engine owns one Policy per request (created by MakePolicy in
// policy_factory.h) and uses it on the engine thread only; a Policy may keep scratch between
// calls, so it is not shared. "dense" has no Policy object at all, so the dense path costs
// nothing. Stateless policies (streaming, quest) ignore AfterAttention; stateful ones (lychee,
// prhs, later) keep per-request state there.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "kvcache/paged_kv_view.h"

namespace lychee::sparsity {

// One decode query at one layer, as the policy sees it.
struct DecodeQuery {
  const float* q = nullptr;               // [num_heads, head_dim], after RoPE (and q-norm)
  PagedKvView cache;                      // the layer; the query's own key is already written
  absl::Span<const int32_t> block_table;  // the sequence's pool blocks in order
  int64_t position = 0;                   // of the query token
  int64_t num_heads = 0;                  // query heads (GQA: a multiple of cache.num_kv_heads)
  int64_t layer = 0;
  float scale = 1.0f;  // score scale (1/sqrt(head_dim))
  int64_t num_blocks() const { return position / cache.block_size + 1; }  // blocks with keys
};

// The blocks read per kv head: logical block indices (into block_table), strictly ascending,
// blocks[offsets[g] .. offsets[g + 1]) for kv head g. Reused across calls without reallocating.
struct Selection {
  std::vector<int32_t> blocks;
  std::vector<int64_t> offsets;  // [num_kv_heads + 1]

  void Clear() {
    blocks.clear();
    offsets.assign(1, 0);
  }
  // Ends kv head offsets.size() - 1's list.
  void EndHead() { offsets.push_back(static_cast<int64_t>(blocks.size())); }
};

// The request's limits, fixed when the policy is made (PolicySpec's fields).
struct PolicyLimits {
  int64_t budget_tokens = 2048;   // KV tokens read per kv head and step
  double max_dropped_mass = 1.0;  // certified bound to meet per step; 1 = no constraint
};

class Policy {
 public:
  explicit Policy(const PolicyLimits& limits) : limits_(limits) {}
  virtual ~Policy() = default;

  const PolicyLimits& limits() const { return limits_; }

  // The policy's name as requests spell it ("streaming", "quest").
  virtual std::string_view name() const = 0;

  // Fills `selection` for `query` reading about `budget_tokens` KV tokens per kv head (the
  // request's budget, or more when the runner grows it to meet max_dropped_mass). A budget
  // covering every block selects every block.
  virtual void Select(const DecodeQuery& query, int64_t budget_tokens, Selection* selection) = 0;

  // After the sparse kernel ran: the certified dropped-mass bound per query head. For stateful
  // policies (refreshing a selection when the bound grows); stateless ones ignore it.
  virtual void AfterAttention(const DecodeQuery& /*query*/,
                              absl::Span<const float> /*head_dropped_mass*/) {}

 private:
  PolicyLimits limits_;
};

}  // namespace lychee::sparsity
