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
// prhs) keep per-request state there. Select is called for layers 0 .. N-1 in order within a
// decode step.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "kvcache/paged_kv_view.h"

namespace lychee {
struct PrhsKnobs;  // engine/request.h
}  // namespace lychee

namespace lychee::sparsity {

// One decode query at one layer, as the policy sees it.
struct DecodeQuery {
  const float* q = nullptr;               // [num_heads, head_dim], after RoPE (and q-norm)
  PagedKvView cache;                      // the layer; the query's own key is already written
  absl::Span<const int32_t> block_table;  // the sequence's pool blocks in order
  int64_t position = 0;                   // of the query token
  int64_t num_heads = 0;                  // query heads (GQA: a multiple of cache.num_kv_heads)
  int64_t layer = 0;
  int64_t num_layers = 0;
  float scale = 1.0f;  // score scale (1/sqrt(head_dim))
  int64_t num_blocks() const { return position / cache.block_size + 1; }  // blocks with keys
};

// What each kv head reads: strictly ascending indices per kv head, indices[offsets[g] ..
// offsets[g + 1]) for kv head g. Block granularity (the default): logical block indices (into
// block_table); token granularity (LycheeDecode's token mode): token positions. Reused across
// calls without reallocating.
struct Selection {
  bool token_level = false;
  std::vector<int32_t> blocks;   // block indices, or token positions when token_level
  std::vector<int64_t> offsets;  // [num_kv_heads + 1]

  void Clear(bool tokens = false) {
    token_level = tokens;
    blocks.clear();
    offsets.assign(1, 0);
  }
  // Ends kv head offsets.size() - 1's list.
  void EndHead() { offsets.push_back(static_cast<int64_t>(blocks.size())); }
};

// Counters a policy accumulates over its request (metrics and the per-request report).
struct PolicyCounters {
  int64_t head_selections = 0;    // (step, layer, kv head) selections made
  int64_t reused = 0;             // of which reused an earlier set without scoring (LycheeDecode
                                  // sparse heads, PrHS CIS hits)
  int64_t dense_fallbacks = 0;    // heads that read everything because the bound could not be
                                  // met in advance (PrHS)
  int64_t cache_corrections = 0;  // LycheeDecode cache corrections scheduled
};

// The request's limits, fixed when the policy is made (PolicySpec's fields).
struct PolicyLimits {
  int64_t budget_tokens = 2048;   // KV tokens read per kv head and step
  double max_dropped_mass = 1.0;  // certified bound to meet per step; 1 = no constraint
};

class HeadRoles;

// A policy as data, for a backend that selects on its device (the CUDA runner cannot call Select
// per layer without a host round trip): which rule, and its knobs. kNone: no device form.
struct DeviceSelection {
  enum class Kind { kNone, kQuest, kStreaming, kLychee, kPrhs };
  Kind kind = Kind::kNone;
  int64_t sink_tokens = 0;
  int64_t local_tokens = 0;          // kLychee, kPrhs
  const HeadRoles* roles = nullptr;  // kLychee: owned by the policy, valid while it lives
  const PrhsKnobs* prhs = nullptr;   // kPrhs: owned by the policy, valid while it lives
};

class Policy {
 public:
  explicit Policy(const PolicyLimits& limits) : limits_(limits), serial_(NextSerial()) {}
  virtual ~Policy() = default;

  const PolicyLimits& limits() const { return limits_; }
  // Unique over the process's policies (a GPU runner keys device-side state by it: an address
  // can be reused by the next request's policy, a serial cannot).
  uint64_t serial() const { return serial_; }

  // The policy's name as requests spell it ("streaming", "quest").
  virtual std::string_view name() const = 0;

  // Fills `selection` for `query`, kv head g reading about `budget_tokens[g]` KV tokens (the
  // request's budget, or more for the heads whose bound the runner widens to meet
  // max_dropped_mass). A budget covering every block selects every block. May be called more
  // than once for the same layer (widening): only AfterAttention commits state.
  virtual void Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
                      Selection* selection) = 0;

  // After the sparse kernel ran with the last Select's selection: the certified dropped-mass
  // bound per query head. Stateful policies (lychee, prhs) commit the layer's state here.
  virtual void AfterAttention(const DecodeQuery& /*query*/,
                              absl::Span<const float> /*head_dropped_mass*/) {}

  virtual PolicyCounters counters() const { return {}; }

  // This policy's rule as data (the CUDA backend runs it with kernels/cuda/block_select.h).
  virtual DeviceSelection device_selection() const { return {}; }

 private:
  static uint64_t NextSerial() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  PolicyLimits limits_;
  uint64_t serial_;
};

}  // namespace lychee::sparsity
