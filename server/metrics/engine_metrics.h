// SPDX-License-Identifier: Apache-2.0
// EngineMetrics: the engine's Prometheus metrics, named and bucketed after vLLM's (ANCHORS.md
// section 4.1/4.7) with the prefix "lychee_" and labels `model` (every series) and `policy` (the
// sparse-attention policy, on per-request series).
//
// Sparse attention (none of the anchors has these; ANCHORS.md section 10), per policy:
//   lychee_dropped_mass_bound        histogram  per sparse decode step: the largest certified
//                                               dropped-mass bound over layers and KV heads
//   lychee_dropped_mass              histogram  the same values (the older name; rules use it)
//   lychee_dropped_mass_exact        histogram  audited steps: the exact dropped mass (max)
//   lychee_kv_tokens_read_total      counter    KV tokens read by sparse decode steps ...
//   lychee_kv_tokens_dense_total     counter    ... and what dense attention would have read
//                                               (read / dense = fraction of KV read)
//   lychee_policy_widenings_total    counter    KV-head budgets widened to meet the bound
//   lychee_policy_selection_seconds_total  counter  time spent choosing what to read
//   lychee_policy_selections_total   counter    (step, layer, KV head) selections ...
//   lychee_policy_reused_selections_total  counter  ... of which reused an earlier set without
//                                               scoring (PrHS reuse rate = reused / selections)
//   lychee_policy_dense_fallbacks_total    counter  heads that read everything (bound unmet)
//   lychee_cache_corrections_total   counter    LycheeDecode cache corrections
// Step figures arrive per decode step; selections, reuse and dense fallbacks are the policy's
// own counters, added when its request finishes.
//
//   events  ── EngineObserver callbacks (engine thread) ──► counters and histograms
//   gauges  ── collect hook at scrape time (HTTP thread) ──► stats_source() → running, waiting,
//                                                            KV usage
//
// The engine is created with this object as its observer, so the stats source is bound later
// (SetStatsSource) once the engine exists; tests bind a plain function instead of an engine.
//
// Threading: the observer callbacks are cheap and never wait for a scrape: recording is atomic,
// and the per-policy series are found under a short lock (a map lookup; children are created on
// a policy's first use). SetStatsSource/SetCacheConfig may be called from any thread. The
// registry must outlive this object; the collect hook left in the registry becomes a no-op when
// this object is destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/engine_client.h"
#include "engine/engine_observer.h"
#include "server/metrics/registry.h"

namespace lychee {

struct EngineMetricsOptions {
  std::string model_name;          // the `model` label (served model name)
  int64_t max_model_len = 131072;  // top of the token-count histograms (1-2-5 buckets up to it)
};

class EngineMetrics final : public EngineObserver {
 public:
  EngineMetrics(metrics::MetricsRegistry* registry, EngineMetricsOptions options);
  ~EngineMetrics() override;

  // The gauges (running, waiting, KV usage) call `stats` once per scrape. Empty: gauges stay at
  // their last values.
  void SetStatsSource(std::function<EngineStats()> stats);

  // vLLM's cache_config_info: one series fixed at 1 whose labels carry the static cache config
  // (routers read block_size and num_gpu_blocks from it). Call once the KV pool is sized.
  void SetCacheConfig(int64_t block_size, int64_t num_gpu_blocks);

  // The certified dropped-mass bound of one sparse-attention step (0..1), per policy
  // (OnDroppedMass forwards here).
  void RecordDroppedMass(std::string_view policy, double dropped_mass);

  // EngineObserver (engine thread).
  void OnRequestFinished(const GenerationRequest& request,
                         const GenerationOutput& final_event) override;
  void OnStep(int64_t prompt_tokens, int64_t generated_tokens, double step_seconds) override;
  void OnInterTokenLatency(std::string_view policy, double seconds) override;
  void OnPrefixCacheLookup(int64_t queried_tokens, int64_t hit_tokens) override;
  void OnPreemption() override;
  void OnDroppedMass(std::string_view policy, double dropped_mass) override;
  void OnSparseStep(std::string_view policy, const SparseChunkStats& stats) override;
  void OnCacheCorrection(std::string_view policy) override;

  // The label value of a finish reason: stop, length, abort, error.
  static std::string_view FinishedReasonLabel(FinishReason reason);

 private:
  // The per-policy histogram children, resolved once per policy name.
  struct PolicySeries;
  PolicySeries& ForPolicy(std::string_view policy);
  void Collect();
  struct CollectState;

  metrics::MetricsRegistry* const registry_;
  const EngineMetricsOptions options_;

  // Gauges set from the stats snapshot at scrape time.
  metrics::Gauge* running_;
  metrics::Gauge* waiting_;
  metrics::Gauge* kv_usage_;
  // Counters (model label only).
  metrics::Counter* prompt_tokens_;
  metrics::Counter* generation_tokens_;
  metrics::Counter* preemptions_;
  metrics::Counter* prefix_queries_;
  metrics::Counter* prefix_hits_;
  metrics::Histogram* iteration_tokens_;
  // Families with a policy label.
  metrics::Family<metrics::Counter>* request_success_;
  metrics::Family<metrics::Histogram>* ttft_;
  metrics::Family<metrics::Histogram>* itl_;
  metrics::Family<metrics::Histogram>* e2e_;
  metrics::Family<metrics::Histogram>* queue_time_;
  metrics::Family<metrics::Histogram>* prompt_len_;
  metrics::Family<metrics::Histogram>* generation_len_;
  metrics::Family<metrics::Histogram>* dropped_mass_;
  // Sparse-attention families (model, policy): per sparse decode step (OnSparseStep), per
  // finished request (the policy report's counters) and per cache correction.
  metrics::Family<metrics::Histogram>* dropped_mass_bound_;
  metrics::Family<metrics::Histogram>* dropped_mass_exact_;
  metrics::Family<metrics::Counter>* kv_tokens_read_;
  metrics::Family<metrics::Counter>* kv_tokens_dense_;
  metrics::Family<metrics::Counter>* widenings_;
  metrics::Family<metrics::Counter>* dense_fallbacks_;
  metrics::Family<metrics::Counter>* selection_seconds_;
  metrics::Family<metrics::Counter>* selections_;
  metrics::Family<metrics::Counter>* reused_selections_;
  metrics::Family<metrics::Counter>* cache_corrections_;
  metrics::Family<metrics::Gauge>* cache_config_;

  std::mutex mu_;  // guards the two members below
  std::map<std::string, std::unique_ptr<PolicySeries>, std::less<>> policies_;
  std::function<EngineStats()> stats_;
  std::shared_ptr<CollectState> collect_state_;  // shared with the registry's hook
  std::mutex cache_config_mu_;
  metrics::Gauge* maybe_cache_config_child_ = nullptr;  // guarded by cache_config_mu_
};

}  // namespace lychee
