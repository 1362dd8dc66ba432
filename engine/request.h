// SPDX-License-Identifier: Apache-2.0
// What a front end (gRPC service, HTTP gateway, lychee-generate) hands the engine, and what the
// engine streams back. Plain value types: front ends never touch engine state.
//
// Flow: front end tokenizes and validates its wire format → GenerationRequest → EngineClient::
// Submit → TokenStream of GenerationOutput events (one per engine step that produced tokens for
// the request, coalesced when the reader is slow) → the last event has finished == true.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/sampler.h"

namespace lychee {

// Which KV blocks each attention head reads (sparsity/). Only "dense" exists yet; the field
// travels with every request so that policies plug in without changing the front ends.
// LycheeDecode's per-request knobs (sparsity/lychee_policy.h).
struct LycheeKnobs {
  std::string mode = "block";       // "block" (top blocks, the fast default) or "token"
  int64_t sink_tokens = 16;         // always read: the first tokens
  int64_t local_tokens = 64;        // always read: the most recent tokens
  int64_t correction_interval = 0;  // > 0: recompute the last N generated tokens' K/V densely
                                    // every N generated tokens (cache correction); 0: off
};

// PrHS's per-request knobs (sparsity/prhs_policy.h).
struct PrhsKnobs {
  double tau = 0.8;      // CIS: reuse the anchor's selection while cos(q, q_anchor) > tau
  int64_t dilation = 1;  // CIS: widen the top selected blocks by ±dilation blocks
  double dilate_fraction = 1.0 / 3.0;  // CIS: the fraction of selected blocks that are widened
  int64_t sink_tokens = 16;            // always read
  int64_t local_tokens = 64;           // always read
  // PSAW: layers l >= psaw_start_layer skip the oldest floor((1 - phi^(alpha (l - l_s) /
  // (N - l_s))) t) tokens (sinks excepted). psaw_phi = 1 turns it off.
  int64_t psaw_start_layer = 0;
  double psaw_phi = 1.0;
  double psaw_alpha = 1.0;
};

struct PolicySpec {
  std::string name = "dense";
  int64_t budget_tokens = 2048;   // sparse policies: KV tokens read per kv head and step
                                  // (sink and local tokens included)
  double max_dropped_mass = 1.0;  // certified bound on the softmax mass of skipped keys, per
                                  // layer, kv head and step; 1 = no constraint, 0 = read all
  double audit_rate = 0.0;        // fraction of sparse decode steps also run densely to
                                  // measure the exact dropped mass (metrics, report)
  LycheeKnobs lychee;
  PrhsKnobs prhs;
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };

// OpenAI spelling: "stop", "length", "abort", "error" ("" for kNone).
std::string_view FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::string request_id;       // unique among live requests; empty: the engine assigns one
  std::vector<int32_t> prompt;  // token ids; front ends tokenize
  SamplingParams sampling;
  int64_t max_tokens = 16;        // generated tokens at most (the engine also caps by context)
  int64_t min_tokens = 0;         // EOS and stop ids are ignored before this many
  std::vector<std::string> stop;  // stop strings, matched on the detokenized output
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;  // for the text deltas
  int32_t top_logprobs = 0;         // 0: no logprobs; k > 0: the k best per generated token
  PolicySpec policy;
  int32_t priority = 0;  // lower is scheduled sooner (as vLLM); FCFS among equals
  absl::Time deadline = absl::InfiniteFuture();
};

// A generated token's log-probability under the model's raw distribution, and the best others.
struct OutputLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<TokenLogprob> top;  // the top_logprobs best, best first (engine/sampler.h)
};

struct RequestTimings {
  double queue_seconds = 0;        // arrival → first scheduled
  double first_token_seconds = 0;  // arrival → first generated token (TTFT)
  double e2e_seconds = 0;          // arrival → finished
};

// What a request's sparse policy did over its whole run (the per-request report: gRPC
// GenerateComplete, OpenAI usage). Filled by the engine on the final event; dense requests get
// policy "dense" and the defaults. Bounds are per (layer, kv head, decode step): the certified
// dropped-mass bound of a kv head is the worst of its query heads'.
struct PolicyReport {
  std::string policy;             // the request's policy name
  float max_bound = -1.0f;        // largest certified dropped-mass bound; -1: no sparse step
  double mean_bound = 0.0;        // mean over (step, layer, kv head) of the bound
  float max_exact = -1.0f;        // largest exact dropped mass of an audited step; -1: none
  int64_t audited_steps = 0;      // decode steps also run densely (PolicySpec::audit_rate)
  double kv_read_fraction = 1.0;  // KV tokens read / what dense attention reads, decode steps
  int64_t widenings = 0;          // kv-head budgets doubled to meet max_dropped_mass
  int64_t head_selections = 0;    // Policy::counters() at finish (sparsity/policy.h)
  int64_t reused = 0;
  int64_t dense_fallbacks = 0;
  int64_t cache_corrections = 0;   // LycheeDecode cache corrections run (counted by the engine)
  double selection_seconds = 0.0;  // time in Policy::Select
};

struct GenerationOutput {
  std::vector<int32_t> token_ids;       // tokens generated since the previous event
  std::string text;                     // their text (UTF-8 complete; never half a character)
  std::vector<OutputLogprob> logprobs;  // one per token_ids entry when top_logprobs > 0
  int64_t prompt_tokens = 0;            // cumulative counts
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string matched_stop;    // the stop string, or the stop token's text
  absl::Status error;          // set when finish_reason == kError
  RequestTimings timings;      // filled on the last event
  PolicyReport policy_report;  // filled on the last event
};

}  // namespace lychee
