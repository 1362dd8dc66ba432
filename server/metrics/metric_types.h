// SPDX-License-Identifier: Apache-2.0
// The three metric kinds of the registry, one labelled child each: Counter, Gauge, Histogram.
//
// Threading: recording (Increment, Set, Observe) is lock-free (relaxed atomics) so the engine
// thread never waits for a scrape; readers (Value, Snapshot) may run concurrently on the HTTP
// threads and see each update whole, though not necessarily all updates of one instant.
// Children live in their Family and are never destroyed while the registry lives, so a
// reference obtained once may be cached and used from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace lychee::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// A monotonically increasing total. Exposed with the "_total" suffix.
class Counter {
 public:
  // Negative and NaN increments are ignored: a counter never goes down.
  void Increment(double delta = 1.0) {
    if (!(delta >= 0)) return;
    value_.fetch_add(delta, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down: either set by the program, or computed by a callback at scrape
// time (SetFunction), which then wins over Set.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Decrement(double delta = 1.0) { value_.fetch_sub(delta, std::memory_order_relaxed); }

  // `fn` runs on the scraping thread, once per render; it must be thread-safe and quick.
  // An empty function switches back to the stored value.
  void SetFunction(std::function<double()> fn);

  double Value() const;

 private:
  std::atomic<double> value_{0.0};
  std::atomic<bool> has_fn_{false};
  mutable std::mutex fn_mu_;  // guards fn_ only (the Set path never takes it)
  std::function<double()> fn_;
};

// Observations counted into explicit buckets (upper bounds, inclusive, strictly increasing,
// finite; +Inf is implicit). Rendered cumulatively as Prometheus expects.
class Histogram {
 public:
  explicit Histogram(std::span<const double> upper_bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per upper bound, then one for +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back(), by construction
  };
  Snapshot Read() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  const std::vector<double> upper_bounds_;
  // Non-cumulative per-bucket counts; the last slot is the +Inf bucket. The count is derived
  // from them at read time so that _count always equals the +Inf bucket in one scrape.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
};

// True when `bounds` is non-empty, finite and strictly increasing.
bool ValidBucketBounds(std::span<const double> bounds);

}  // namespace lychee::metrics
