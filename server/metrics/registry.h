// SPDX-License-Identifier: Apache-2.0
// MetricsRegistry: a small Prometheus client (prometheus-cpp is not packaged for Debian).
// Families are registered once (at startup, by whoever owns the quantity), recorded into from any
// thread, and rendered by Render() in the text exposition format 0.0.4 for GET /metrics.
//
//   MetricsRegistry registry;
//   auto& tokens = registry.AddCounter("lychee_prompt_tokens", "Prefill tokens.", {"model"});
//   tokens.WithLabels({"qwen3"}).Increment(128);          // exposed as lychee_prompt_tokens_total
//   auto& ttft = registry.AddHistogram("lychee_time_to_first_token_seconds", "...", {"model"},
//                                      {0.01, 0.1, 1});
//   std::string text = registry.Render();
//
// Threading: every method is thread-safe. Registration takes a mutex; recording into a child is
// lock-free; Render runs the collect hooks, then reads each family under its own mutex. Families
// and children are never removed, so references stay valid for the registry's lifetime.
// Invalid or duplicate names are programming errors (LY_CHECK), not runtime input.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "server/metrics/family.h"
#include "server/metrics/metric_types.h"

namespace lychee::metrics {

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // `name` with or without "_total": the exposed name always ends in "_total" (as the Python
  // client does), so HELP, TYPE and the samples all use that name.
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  // `upper_bounds`: finite, strictly increasing; "+Inf" is added. "le" is not a valid label.
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> upper_bounds);

  // `hook` runs at the start of every Render, on the scraping thread: the place to copy a
  // snapshot (e.g. Engine::Stats()) into several gauges with one call. Thread-safe and quick.
  void AddCollectHook(std::function<void()> hook);

  // The whole exposition, families in registration order, children sorted by label values.
  std::string Render() const;

  // Content-Type of Render()'s output.
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  // Checks names and reserves every sample name the family will expose.
  void Reserve(const std::string& name, MetricType type,
               const std::vector<std::string>& label_names);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
  std::vector<std::function<void()>> hooks_;
  std::set<std::string> sample_names_;  // for duplicate detection (x, x_total, x_bucket, ...)
};

}  // namespace lychee::metrics
