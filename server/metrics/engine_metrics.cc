// SPDX-License-Identifier: Apache-2.0
// EngineMetrics: registration of the lychee_* families and the observer callbacks (see
// engine_metrics.h). Bucket boundaries follow vLLM's loggers.py (ANCHORS.md 4.1), except the
// inter-token latency, which starts at 1 ms (vLLM's 10 ms is too coarse for H100 decode steps).
#include "server/metrics/engine_metrics.h"

#include <vector>

#include "server/metrics/buckets.h"

namespace lychee {
namespace {

using metrics::Counter;
using metrics::Family;
using metrics::Gauge;
using metrics::Histogram;

// vLLM time_to_first_token_seconds.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
// vLLM inter_token_latency_seconds with SGLang-like fine low end (1, 2, 4, 6, 8 ms, ...).
const std::vector<double> kItlBuckets = {
    0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.15,  0.2,   0.3,   0.4,   0.5,   0.75, 1.0,   2.5,  5.0,   7.5,  10.0, 20.0, 40.0,  80.0};
// vLLM request_latency_buckets (e2e and queue time).
const std::vector<double> kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// vLLM iteration_tokens_total.
const std::vector<double> kIterationTokenBuckets = {1,   8,    16,   32,   64,   128,  256,
                                                    512, 1024, 2048, 4096, 8192, 16384};
// Dropped softmax mass: fine near 0, where a quality bound lives.
const std::vector<double> kDroppedMassBuckets = {1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01,
                                                 0.02, 0.05, 0.1,  0.2,  0.5,   1.0};

}  // namespace

struct EngineMetrics::PolicySeries {
  Histogram* ttft;
  Histogram* itl;
  Histogram* e2e;
  Histogram* queue_time;
  Histogram* prompt_len;
  Histogram* generation_len;
  Histogram* dropped_mass;
  Histogram* dropped_mass_bound;
  Histogram* dropped_mass_exact;
  Counter* kv_tokens_read;
  Counter* kv_tokens_dense;
  Counter* widenings;
  Counter* dense_fallbacks;
  Counter* selection_seconds;
  Counter* selections;
  Counter* reused_selections;
  Counter* cache_corrections;
};

struct EngineMetrics::CollectState {
  std::mutex mu;
  EngineMetrics* maybe_owner = nullptr;  // null once the EngineMetrics is gone
};

EngineMetrics::EngineMetrics(metrics::MetricsRegistry* registry, EngineMetricsOptions options)
    : registry_(registry), options_(std::move(options)) {
  const std::string& model = options_.model_name;
  auto gauge = [&](const char* name, const char* help) {
    return &registry_->AddGauge(name, help, {"model"}).WithLabels({model});
  };
  auto counter = [&](const char* name, const char* help) {
    return &registry_->AddCounter(name, help, {"model"}).WithLabels({model});
  };
  auto per_policy = [&](const char* name, const char* help, std::vector<double> buckets) {
    return &registry_->AddHistogram(name, help, {"model", "policy"}, std::move(buckets));
  };

  running_ = gauge("lychee_num_requests_running", "Number of requests in model execution batches.");
  waiting_ = gauge("lychee_num_requests_waiting", "Number of requests waiting to be scheduled.");
  kv_usage_ = gauge("lychee_kv_cache_usage_perc",
                    "KV-cache usage: fraction of KV blocks in use, 0 to 1 (1 = full).");
  prompt_tokens_ = counter("lychee_prompt_tokens",
                           "Number of prefill tokens processed (including recomputation).");
  generation_tokens_ = counter("lychee_generation_tokens", "Number of generation tokens produced.");
  preemptions_ = counter("lychee_num_preemptions", "Cumulative number of preemptions.");
  prefix_queries_ = counter("lychee_prefix_cache_queries",
                            "Prefix cache queries, in tokens looked up at admission.");
  prefix_hits_ = counter("lychee_prefix_cache_hits", "Prefix cache hits, in tokens found.");
  iteration_tokens_ = &registry_
                           ->AddHistogram("lychee_iteration_tokens",
                                          "Number of tokens (prefill and decode) per engine step.",
                                          {"model"}, kIterationTokenBuckets)
                           .WithLabels({model});
  request_success_ = &registry_->AddCounter("lychee_request_success",
                                            "Number of finished requests, by finish reason.",
                                            {"model", "policy", "finished_reason"});
  ttft_ = per_policy("lychee_time_to_first_token_seconds",
                     "Time from arrival to the first generated token, in seconds.", kTtftBuckets);
  itl_ = per_policy("lychee_inter_token_latency_seconds",
                    "Time between consecutive generated tokens of a request, in seconds.",
                    kItlBuckets);
  e2e_ = per_policy("lychee_e2e_request_latency_seconds",
                    "End-to-end request latency (arrival to finish), in seconds.",
                    kRequestLatencyBuckets);
  queue_time_ = per_policy("lychee_request_queue_time_seconds",
                           "Time a request spent waiting before first scheduled, in seconds.",
                           kRequestLatencyBuckets);
  const std::vector<double> length_buckets = metrics::OneTwoFiveBuckets(options_.max_model_len);
  prompt_len_ = per_policy("lychee_request_prompt_tokens",
                           "Number of prompt tokens per finished request.", length_buckets);
  generation_len_ = per_policy("lychee_request_generation_tokens",
                               "Number of generated tokens per finished request.", length_buckets);
  dropped_mass_ =
      per_policy("lychee_dropped_mass",
                 "Certified upper bound of the softmax mass not read by sparse attention, per step "
                 "(0 to 1). Recorded by the sparse policies; empty until one runs.",
                 kDroppedMassBuckets);
  dropped_mass_bound_ = per_policy(
      "lychee_dropped_mass_bound",
      "Certified upper bound of the softmax mass not read by sparse attention: per sparse decode "
      "step, the largest over layers and KV heads (0 to 1).",
      kDroppedMassBuckets);
  dropped_mass_exact_ = per_policy(
      "lychee_dropped_mass_exact",
      "Exact softmax mass not read by sparse attention, measured on audited decode steps "
      "(audit_rate): the largest over layers and KV heads (0 to 1).",
      kDroppedMassBuckets);
  auto per_policy_counter = [&](const char* name, const char* help) {
    return &registry_->AddCounter(name, help, {"model", "policy"});
  };
  kv_tokens_read_ = per_policy_counter(
      "lychee_kv_tokens_read",
      "KV tokens read by sparse-attention decode steps, summed over layers and KV heads.");
  kv_tokens_dense_ = per_policy_counter(
      "lychee_kv_tokens_dense",
      "KV tokens dense attention would have read in the same sparse decode steps (read / dense "
      "is the fraction of the KV cache read).");
  widenings_ = per_policy_counter(
      "lychee_policy_widenings",
      "KV-head budgets widened because the dropped-mass bound exceeded max_dropped_mass.");
  dense_fallbacks_ = per_policy_counter(
      "lychee_policy_dense_fallbacks",
      "KV heads that read everything because the dropped-mass bound could not be met in "
      "advance (counted when the request finishes).");
  selection_seconds_ =
      per_policy_counter("lychee_policy_selection_seconds",
                         "Time the sparse policies spent choosing which KV to read, in seconds.");
  selections_ = per_policy_counter(
      "lychee_policy_selections",
      "Sparse selections made, one per (decode step, layer, KV head) (counted when the request "
      "finishes).");
  reused_selections_ = per_policy_counter(
      "lychee_policy_reused_selections",
      "Selections that reused an earlier set without scoring: LycheeDecode sparse heads, PrHS "
      "CIS hits (counted when the request finishes; reused / selections is the reuse rate).");
  cache_corrections_ = per_policy_counter(
      "lychee_cache_corrections",
      "LycheeDecode cache corrections: dense recomputes of a request's last generated tokens' "
      "KV.");
  cache_config_ = &registry_->AddGauge(
      "lychee_cache_config_info",
      "Information of the KV cache configuration (value 1; the labels carry it).",
      {"model", "block_size", "num_gpu_blocks"});

  collect_state_ = std::make_shared<CollectState>();
  collect_state_->maybe_owner = this;
  registry_->AddCollectHook([state = collect_state_] {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->maybe_owner != nullptr) state->maybe_owner->Collect();
  });
}

EngineMetrics::~EngineMetrics() {
  std::lock_guard<std::mutex> lock(collect_state_->mu);
  collect_state_->maybe_owner = nullptr;
}

void EngineMetrics::SetStatsSource(std::function<EngineStats()> stats) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = std::move(stats);
}

void EngineMetrics::Collect() {
  std::function<EngineStats()> stats;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats = stats_;
  }
  if (!stats) return;
  const EngineStats snapshot = stats();
  running_->Set(static_cast<double>(snapshot.num_running));
  waiting_->Set(static_cast<double>(snapshot.num_waiting));
  kv_usage_->Set(snapshot.kv_usage);
}

void EngineMetrics::SetCacheConfig(int64_t block_size, int64_t num_gpu_blocks) {
  std::lock_guard<std::mutex> lock(cache_config_mu_);
  // A changed config leaves the old series at 0 rather than two series at 1.
  if (maybe_cache_config_child_ != nullptr) maybe_cache_config_child_->Set(0);
  maybe_cache_config_child_ = &cache_config_->WithLabels(
      {options_.model_name, std::to_string(block_size), std::to_string(num_gpu_blocks)});
  maybe_cache_config_child_->Set(1);
}

EngineMetrics::PolicySeries& EngineMetrics::ForPolicy(std::string_view policy) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = policies_.find(policy);
  if (it != policies_.end()) return *it->second;
  const std::initializer_list<std::string_view> labels = {options_.model_name, policy};
  auto series = std::make_unique<PolicySeries>(PolicySeries{
      .ttft = &ttft_->WithLabels(labels),
      .itl = &itl_->WithLabels(labels),
      .e2e = &e2e_->WithLabels(labels),
      .queue_time = &queue_time_->WithLabels(labels),
      .prompt_len = &prompt_len_->WithLabels(labels),
      .generation_len = &generation_len_->WithLabels(labels),
      .dropped_mass = &dropped_mass_->WithLabels(labels),
      .dropped_mass_bound = &dropped_mass_bound_->WithLabels(labels),
      .dropped_mass_exact = &dropped_mass_exact_->WithLabels(labels),
      .kv_tokens_read = &kv_tokens_read_->WithLabels(labels),
      .kv_tokens_dense = &kv_tokens_dense_->WithLabels(labels),
      .widenings = &widenings_->WithLabels(labels),
      .dense_fallbacks = &dense_fallbacks_->WithLabels(labels),
      .selection_seconds = &selection_seconds_->WithLabels(labels),
      .selections = &selections_->WithLabels(labels),
      .reused_selections = &reused_selections_->WithLabels(labels),
      .cache_corrections = &cache_corrections_->WithLabels(labels),
  });
  return *policies_.emplace(std::string(policy), std::move(series)).first->second;
}

std::string_view EngineMetrics::FinishedReasonLabel(FinishReason reason) {
  const std::string_view name = FinishReasonName(reason);
  return name.empty() ? "none" : name;
}

void EngineMetrics::RecordDroppedMass(std::string_view policy, double dropped_mass) {
  ForPolicy(policy).dropped_mass->Observe(dropped_mass);
}

void EngineMetrics::OnRequestFinished(const GenerationRequest& request,
                                      const GenerationOutput& final_event) {
  const std::string& policy = request.policy.name;
  PolicySeries& series = ForPolicy(policy);
  request_success_
      ->WithLabels({options_.model_name, policy, FinishedReasonLabel(final_event.finish_reason)})
      .Increment();
  const RequestTimings& timings = final_event.timings;
  // A request aborted before its first token has no TTFT (vLLM records none either).
  if (final_event.completion_tokens > 0) series.ttft->Observe(timings.first_token_seconds);
  series.e2e->Observe(timings.e2e_seconds);
  series.queue_time->Observe(timings.queue_seconds);
  series.prompt_len->Observe(static_cast<double>(final_event.prompt_tokens));
  series.generation_len->Observe(static_cast<double>(final_event.completion_tokens));
  const PolicyReport& report = final_event.policy_report;
  if (report.head_selections > 0) {
    series.selections->Increment(static_cast<double>(report.head_selections));
  }
  if (report.reused > 0) series.reused_selections->Increment(static_cast<double>(report.reused));
  if (report.dense_fallbacks > 0) {
    series.dense_fallbacks->Increment(static_cast<double>(report.dense_fallbacks));
  }
}

void EngineMetrics::OnStep(int64_t prompt_tokens, int64_t generated_tokens, double step_seconds) {
  if (prompt_tokens > 0) prompt_tokens_->Increment(static_cast<double>(prompt_tokens));
  if (generated_tokens > 0) generation_tokens_->Increment(static_cast<double>(generated_tokens));
  const int64_t step_tokens = prompt_tokens + generated_tokens;
  if (step_tokens > 0) iteration_tokens_->Observe(static_cast<double>(step_tokens));
}

void EngineMetrics::OnInterTokenLatency(std::string_view policy, double seconds) {
  ForPolicy(policy).itl->Observe(seconds);
}

void EngineMetrics::OnPrefixCacheLookup(int64_t queried_tokens, int64_t hit_tokens) {
  prefix_queries_->Increment(static_cast<double>(queried_tokens));
  prefix_hits_->Increment(static_cast<double>(hit_tokens));
}

void EngineMetrics::OnPreemption() { preemptions_->Increment(); }

void EngineMetrics::OnDroppedMass(std::string_view policy, double dropped_mass) {
  RecordDroppedMass(policy, dropped_mass);
}

void EngineMetrics::OnSparseStep(std::string_view policy, const SparseChunkStats& stats) {
  PolicySeries& series = ForPolicy(policy);
  if (stats.max_bound >= 0.0f) series.dropped_mass_bound->Observe(stats.max_bound);
  if (stats.exact_max >= 0.0f) series.dropped_mass_exact->Observe(stats.exact_max);
  if (stats.kv_tokens_read > 0) {
    series.kv_tokens_read->Increment(static_cast<double>(stats.kv_tokens_read));
  }
  if (stats.kv_tokens_dense > 0) {
    series.kv_tokens_dense->Increment(static_cast<double>(stats.kv_tokens_dense));
  }
  if (stats.widenings > 0) series.widenings->Increment(static_cast<double>(stats.widenings));
  if (stats.selection_seconds > 0) series.selection_seconds->Increment(stats.selection_seconds);
}

void EngineMetrics::OnCacheCorrection(std::string_view policy) {
  ForPolicy(policy).cache_corrections->Increment();
}

}  // namespace lychee
