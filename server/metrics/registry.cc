// SPDX-License-Identifier: Apache-2.0
// MetricsRegistry: registration checks and the rendering loop (see registry.h).
#include "server/metrics/registry.h"

#include "common/logging.h"
#include "server/metrics/exposition_text.h"

namespace lychee::metrics {
namespace {
constexpr std::string_view kTotal = "_total";
}  // namespace

void MetricsRegistry::Reserve(const std::string& name, MetricType type,
                              const std::vector<std::string>& label_names) {
  LY_CHECK(IsValidMetricName(name)) << "invalid metric name '" << name << "'";
  std::set<std::string> seen;
  for (const std::string& label : label_names) {
    LY_CHECK(IsValidLabelName(label)) << name << ": invalid label name '" << label << "'";
    LY_CHECK(seen.insert(label).second) << name << ": duplicate label '" << label << "'";
    LY_CHECK(!(type == MetricType::kHistogram && label == "le"))
        << name << ": 'le' is reserved in histograms";
  }
  std::vector<std::string> samples = {name};
  if (type == MetricType::kHistogram) {
    samples = {name + "_bucket", name + "_sum", name + "_count"};
  }
  for (const std::string& sample : samples) {
    LY_CHECK(sample_names_.insert(sample).second) << "metric '" << sample << "' registered twice";
  }
}

Family<Counter>& MetricsRegistry::AddCounter(std::string name, std::string help,
                                             std::vector<std::string> label_names) {
  if (!name.ends_with(kTotal)) name += kTotal;
  std::lock_guard<std::mutex> lock(mu_);
  Reserve(name, MetricType::kCounter, label_names);
  auto family = std::make_unique<Family<Counter>>(std::move(name), std::move(help),
                                                  MetricType::kCounter, std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  Family<Counter>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Gauge>& MetricsRegistry::AddGauge(std::string name, std::string help,
                                         std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  Reserve(name, MetricType::kGauge, label_names);
  auto family = std::make_unique<Family<Gauge>>(std::move(name), std::move(help),
                                                MetricType::kGauge, std::move(label_names),
                                                [] { return std::make_unique<Gauge>(); });
  Family<Gauge>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Histogram>& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                                 std::vector<std::string> label_names,
                                                 std::vector<double> upper_bounds) {
  LY_CHECK(ValidBucketBounds(upper_bounds))
      << name << ": buckets must be non-empty, finite and strictly increasing";
  std::lock_guard<std::mutex> lock(mu_);
  Reserve(name, MetricType::kHistogram, label_names);
  auto family = std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), MetricType::kHistogram, std::move(label_names),
      [bounds = std::move(upper_bounds)] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

void MetricsRegistry::AddCollectHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string MetricsRegistry::Render() const {
  // Copy the lists and render without the registry lock: hooks may be slow-ish (Stats() takes
  // the engine's lock) and must not block registration. Families are never removed.
  std::vector<const FamilyBase*> families;
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    families.reserve(families_.size());
    for (const auto& family : families_) families.push_back(family.get());
    hooks = hooks_;
  }
  for (const auto& hook : hooks) hook();
  std::string out;
  out.reserve(4096);
  for (const FamilyBase* family : families) family->Render(out);
  return out;
}

}  // namespace lychee::metrics
