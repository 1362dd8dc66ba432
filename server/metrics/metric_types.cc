// SPDX-License-Identifier: Apache-2.0
// Gauge callbacks and histogram bucketing (see metric_types.h for the threading contract).
#include "server/metrics/metric_types.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

namespace lychee::metrics {

void Gauge::SetFunction(std::function<double()> fn) {
  std::lock_guard<std::mutex> lock(fn_mu_);
  has_fn_.store(static_cast<bool>(fn), std::memory_order_release);
  fn_ = std::move(fn);
}

double Gauge::Value() const {
  if (has_fn_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(fn_mu_);
    if (fn_) return fn_();
  }
  return value_.load(std::memory_order_relaxed);
}

bool ValidBucketBounds(std::span<const double> bounds) {
  if (bounds.empty()) return false;
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) return false;
    if (i > 0 && !(bounds[i] > bounds[i - 1])) return false;
  }
  return true;
}

Histogram::Histogram(std::span<const double> upper_bounds)
    : upper_bounds_(upper_bounds.begin(), upper_bounds.end()),
      buckets_(new std::atomic<uint64_t>[upper_bounds.size() + 1]) {
  LY_CHECK(ValidBucketBounds(upper_bounds)) << "histogram buckets must be finite and increasing";
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  // First bound >= value: buckets are "less than or equal" (le). NaN lands in +Inf.
  const size_t index = std::isnan(value)
                           ? upper_bounds_.size()
                           : static_cast<size_t>(std::lower_bound(upper_bounds_.begin(),
                                                                  upper_bounds_.end(), value) -
                                                 upper_bounds_.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.cumulative.resize(upper_bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    snapshot.cumulative[i] = running;
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

}  // namespace lychee::metrics
