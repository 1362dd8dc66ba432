// SPDX-License-Identifier: Apache-2.0
// MetricsRegistry and the text exposition: exact text for small registries, escaping, number
// spelling, cumulative histogram buckets, and exact totals under concurrent recording.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "server/metrics/buckets.h"
#include "server/metrics/exposition_text.h"
#include "server/metrics/registry.h"

namespace lychee::metrics {
namespace {

TEST(ExpositionTextTest, FormatsNumbersAsPrometheusReadsThem) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1e-6), "1e-06");
  EXPECT_EQ(FormatValue(123456789012.0), "123456789012");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  // Round trip of a value with many digits.
  const double third = 1.0 / 3.0;
  EXPECT_EQ(std::stod(FormatValue(third)), third);
}

TEST(ExpositionTextTest, EscapesLabelValuesAndHelp) {
  std::string out;
  AppendEscapedLabelValue("a\\b\"c\nd'e", out);
  EXPECT_EQ(out, R"(a\\b\"c\nd'e)");
  out.clear();
  AppendEscapedHelp("a\\b\"c\nd", out);
  EXPECT_EQ(out, R"(a\\b"c\nd)");
}

TEST(ExpositionTextTest, ValidatesNames) {
  EXPECT_TRUE(IsValidMetricName("lychee_x:y_1"));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("model_name"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
}

TEST(MetricsRegistryTest, RendersExactTextForSmallRegistry) {
  MetricsRegistry registry;
  auto& requests = registry.AddCounter("app_requests", "Requests served.", {"code"});
  auto& temperature = registry.AddGauge("app_temperature_celsius", "Temperature.");
  auto& latency = registry.AddHistogram("app_latency_seconds", "Latency.", {"path"}, {0.1, 0.5, 1});
  requests.WithLabels({"200"}).Increment(3);
  requests.WithLabels({"404"}).Increment();
  temperature.Get().Set(21.5);
  auto& root = latency.WithLabels({"/"});
  root.Observe(0.05);
  root.Observe(0.1);  // le is inclusive
  root.Observe(0.7);
  root.Observe(3);

  EXPECT_EQ(registry.Render(),
            "# HELP app_requests_total Requests served.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{code=\"200\"} 3\n"
            "app_requests_total{code=\"404\"} 1\n"
            "# HELP app_temperature_celsius Temperature.\n"
            "# TYPE app_temperature_celsius gauge\n"
            "app_temperature_celsius 21.5\n"
            "# HELP app_latency_seconds Latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{path=\"/\",le=\"0.1\"} 2\n"
            "app_latency_seconds_bucket{path=\"/\",le=\"0.5\"} 2\n"
            "app_latency_seconds_bucket{path=\"/\",le=\"1\"} 3\n"
            "app_latency_seconds_bucket{path=\"/\",le=\"+Inf\"} 4\n"
            "app_latency_seconds_sum{path=\"/\"} 3.85\n"
            "app_latency_seconds_count{path=\"/\"} 4\n");
}

TEST(MetricsRegistryTest, CounterNameWithTotalIsNotDoubled) {
  MetricsRegistry registry;
  registry.AddCounter("x_total", "X.").Get().Increment(2);
  EXPECT_EQ(registry.Render(), "# HELP x_total X.\n# TYPE x_total counter\nx_total 2\n");
}

TEST(MetricsRegistryTest, CounterIgnoresNegativeAndNaN) {
  MetricsRegistry registry;
  Counter& c = registry.AddCounter("c", "C.").Get();
  c.Increment(1.5);
  c.Increment(-1);
  c.Increment(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.Value(), 1.5);
}

TEST(MetricsRegistryTest, EscapesLabelValuesAndHelpInOutput) {
  MetricsRegistry registry;
  auto& g = registry.AddGauge("g", "Line one\nback\\slash \"quoted\".", {"path"});
  g.WithLabels({"C:\\dir\n\"x\""}).Set(1);
  EXPECT_EQ(registry.Render(),
            "# HELP g Line one\\nback\\\\slash \"quoted\".\n"
            "# TYPE g gauge\n"
            "g{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
}

TEST(MetricsRegistryTest, SpecialValuesAndGaugeCallbacks) {
  MetricsRegistry registry;
  auto& g = registry.AddGauge("g", "G.", {"k"});
  g.WithLabels({"nan"}).Set(std::numeric_limits<double>::quiet_NaN());
  g.WithLabels({"pinf"}).Set(std::numeric_limits<double>::infinity());
  g.WithLabels({"ninf"}).Set(-std::numeric_limits<double>::infinity());
  int calls = 0;
  g.WithLabels({"fn"}).SetFunction([&calls] { return ++calls * 10.0; });
  const std::string expected_head = "# HELP g G.\n# TYPE g gauge\n";
  EXPECT_EQ(registry.Render(), expected_head +
                                   "g{k=\"fn\"} 10\n"
                                   "g{k=\"nan\"} NaN\n"
                                   "g{k=\"ninf\"} -Inf\n"
                                   "g{k=\"pinf\"} +Inf\n");
  EXPECT_NE(registry.Render().find("g{k=\"fn\"} 20\n"), std::string::npos);  // per scrape
  g.WithLabels({"fn"}).SetFunction(nullptr);                                 // back to Set
  g.WithLabels({"fn"}).Set(7);
  EXPECT_NE(registry.Render().find("g{k=\"fn\"} 7\n"), std::string::npos);
}

TEST(MetricsRegistryTest, FamilyWithLabelsButNoChildrenRendersOnlyMetadata) {
  MetricsRegistry registry;
  registry.AddHistogram("h", "H.", {"policy"}, {1});
  EXPECT_EQ(registry.Render(), "# HELP h H.\n# TYPE h histogram\n");
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeAndCountMatchesInf) {
  MetricsRegistry registry;
  Histogram& h = registry.AddHistogram("h", "H.", {}, {1, 2, 4, 8}).Get();
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 9.0, 100.0, -1.0}) h.Observe(v);
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 5, 6, 7, 9}));
  EXPECT_EQ(s.count, 9u);
  EXPECT_DOUBLE_EQ(s.sum, 121.0);
  h.Observe(std::numeric_limits<double>::quiet_NaN());  // counted in +Inf, like the Go client
  EXPECT_EQ(h.Read().cumulative.back(), 10u);
}

TEST(MetricsRegistryTest, CollectHooksRunBeforeEachRender) {
  MetricsRegistry registry;
  Gauge& g = registry.AddGauge("g", "G.").Get();
  int scrapes = 0;
  registry.AddCollectHook([&] { g.Set(++scrapes); });
  EXPECT_EQ(registry.Render(), "# HELP g G.\n# TYPE g gauge\ng 1\n");
  EXPECT_EQ(registry.Render(), "# HELP g G.\n# TYPE g gauge\ng 2\n");
}

TEST(MetricsRegistryTest, ChildrenAreSortedByLabelValuesAndStable) {
  MetricsRegistry registry;
  auto& c = registry.AddCounter("c", "C.", {"a", "b"});
  Counter& first = c.WithLabels({"y", "1"});
  c.WithLabels({"x", "2"}).Increment();
  EXPECT_EQ(&first, &c.WithLabels({"y", "1"}));
  EXPECT_EQ(registry.Render(),
            "# HELP c_total C.\n# TYPE c_total counter\n"
            "c_total{a=\"x\",b=\"2\"} 1\n"
            "c_total{a=\"y\",b=\"1\"} 0\n");
}

TEST(MetricsRegistryTest, ConcurrentRecordingGivesExactTotals) {
  MetricsRegistry registry;
  auto& counter = registry.AddCounter("c", "C.", {"t"});
  auto& gauge = registry.AddGauge("g", "G.");
  auto& histogram = registry.AddHistogram("h", "H.", {"t"}, {0.5, 1.5});
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::vector<std::thread> threads;
  std::atomic<bool> stop_scraping{false};
  // A scraper renders concurrently: it must never see _count differ from the +Inf bucket.
  std::thread scraper([&] {
    while (!stop_scraping.load()) {
      const Histogram::Snapshot s = histogram.WithLabels({"shared"}).Read();
      EXPECT_EQ(s.count, s.cumulative.back());
      (void)registry.Render();
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads share one child (contention); the rest create their own.
      const std::string label = t % 2 == 0 ? "shared" : "own" + std::to_string(t);
      for (int i = 0; i < kIterations; ++i) {
        counter.WithLabels({label}).Increment();
        gauge.Get().Increment(2);
        histogram.WithLabels({"shared"}).Observe(i % 2 == 0 ? 1.0 : 2.0);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  stop_scraping.store(true);
  scraper.join();
  EXPECT_EQ(counter.WithLabels({"shared"}).Value(), kThreads / 2 * kIterations);
  EXPECT_EQ(counter.WithLabels({"own1"}).Value(), kIterations);
  EXPECT_EQ(gauge.Get().Value(), 2.0 * kThreads * kIterations);
  const Histogram::Snapshot s = histogram.WithLabels({"shared"}).Read();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIterations));
  EXPECT_EQ(s.cumulative[0], 0u);
  EXPECT_EQ(s.cumulative[1], static_cast<uint64_t>(kThreads * kIterations / 2));
  EXPECT_DOUBLE_EQ(s.sum, 1.5 * kThreads * kIterations);
}

TEST(BucketsTest, OneTwoFive) {
  EXPECT_EQ(OneTwoFiveBuckets(100), (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(OneTwoFiveBuckets(4), (std::vector<double>{1, 2}));
  EXPECT_EQ(OneTwoFiveBuckets(0), (std::vector<double>{1}));
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

TEST(MetricsRegistryDeathTest, RejectsBadRegistrations) {
  MetricsRegistry registry;
  registry.AddGauge("dup", "D.");
  EXPECT_DEATH(registry.AddGauge("dup", "D."), "registered twice");
  EXPECT_DEATH(registry.AddCounter("bad-name", "B."), "invalid metric name");
  EXPECT_DEATH(registry.AddHistogram("h", "H.", {"le"}, {1}), "reserved");
  EXPECT_DEATH(registry.AddHistogram("h2", "H.", {}, {2, 1}), "increasing");
  registry.AddHistogram("h3", "H.", {}, {1});
  EXPECT_DEATH(registry.AddGauge("h3_count", "C."), "registered twice");
  auto& c = registry.AddCounter("c", "C.", {"a"});
  EXPECT_DEATH(c.WithLabels({"x", "y"}), "label values");
}

}  // namespace
}  // namespace lychee::metrics
