// SPDX-License-Identifier: Apache-2.0
// EngineObserver: how the engine reports events to metrics (server/engine_metrics) without
// knowing about Prometheus. Callbacks run on the engine thread inside the step loop, so they must
// be cheap and must not block (atomics, a short lock at most) and must not call back into the
// engine. Gauges (running, waiting, KV usage) are not events: exporters read Engine::Stats().
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/model_runner.h"
#include "engine/request.h"

namespace lychee {

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;

  // A request left the engine (any reason). `final_event` carries the finish reason, cumulative
  // token counts, timings (queue, TTFT, end-to-end) and the policy report (bounds, audits, KV
  // read, widenings, the policy's counters: reuse, dense fallbacks, corrections).
  virtual void OnRequestFinished(const GenerationRequest& request,
                                 const GenerationOutput& final_event) {}
  // One step computed `prompt_tokens` prompt tokens (prefill, including recompute) and generated
  // `generated_tokens` tokens.
  virtual void OnStep(int64_t prompt_tokens, int64_t generated_tokens, double step_seconds) {}
  // Time between two consecutive tokens of one request (inter-token latency).
  virtual void OnInterTokenLatency(std::string_view policy, double seconds) {}
  // Prefix-cache lookups at admission: tokens queried and tokens found.
  virtual void OnPrefixCacheLookup(int64_t queried_tokens, int64_t hit_tokens) {}
  // A running request was preempted (its blocks freed, to be recomputed).
  virtual void OnPreemption() {}
  // One decode step of a request under a sparse policy: the largest certified dropped-mass
  // bound (0..1) over the step's layers and heads.
  virtual void OnDroppedMass(std::string_view policy, double dropped_mass) {}
  // The same step in full (called right after OnDroppedMass): bounds (max, and sum over
  // `heads` (layer, kv head) pairs), KV tokens read vs the dense equivalent, budget widenings,
  // the exact dropped mass when the step was audited (exact_max >= 0), and selection time.
  virtual void OnSparseStep(std::string_view policy, const SparseChunkStats& stats) {}
  // A LycheeDecode cache correction ran (a dense recompute of a request's last generated
  // tokens' K/V).
  virtual void OnCacheCorrection(std::string_view policy) {}
};

}  // namespace lychee
