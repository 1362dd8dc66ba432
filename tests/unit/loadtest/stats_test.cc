// SPDX-License-Identifier: Apache-2.0
// lychee-load's statistics against hand-computed values: numpy-style percentiles, TPOT, the
// ITL accounting of TokenClock, goodput under SLOs, throughput and concurrency.
#include "loadtest/stats.h"

#include <gtest/gtest.h>

#include <vector>

#include "loadtest/driver.h"

namespace lychee::loadtest {
namespace {

RequestRecord Ok(double ttft, double e2e, int64_t output, int64_t input = 10) {
  RequestRecord r;
  r.ok = true;
  r.ttft_seconds = ttft;
  r.e2e_seconds = e2e;
  r.output_tokens = output;
  r.input_len = input;
  if (output > 1) {
    r.itl_seconds.assign(static_cast<size_t>(output - 1),
                         (e2e - ttft) / static_cast<double>(output - 1));
  }
  return r;
}

TEST(Percentile, InterpolatesLinearlyLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 99, 100]) = [1, 2.5, 3.7, 3.97, 4]
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_NEAR(Percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(Percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4.0);
}

TEST(Percentile, EdgeCases) {
  EXPECT_EQ(Percentile({}, 50), 0.0);
  EXPECT_EQ(Percentile({7}, 99), 7.0);
  // numpy.percentile(range(1, 101), 99) = 99.01
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_NEAR(Percentile(hundred, 99), 99.01, 1e-9);
  EXPECT_NEAR(Percentile(hundred, 90), 90.1, 1e-9);
}

TEST(Describe, MeanMedianStd) {
  const Distribution d = Describe({2, 4, 4, 4, 5, 5, 7, 9});
  EXPECT_DOUBLE_EQ(d.mean, 5.0);
  EXPECT_DOUBLE_EQ(d.median, 4.5);
  EXPECT_DOUBLE_EQ(d.std, 2.0);  // population std
  EXPECT_EQ(d.count, 8);
  EXPECT_EQ(d.min, 2);
  EXPECT_EQ(d.max, 9);
}

TEST(RequestRecord, Tpot) {
  EXPECT_DOUBLE_EQ(*Ok(0.1, 1.1, 11).TpotSeconds(), 0.1);
  EXPECT_FALSE(Ok(0.1, 0.1, 1).TpotSeconds().has_value());
}

TEST(Summarize, ThroughputGoodputAndConcurrency) {
  // TTFT 100/300/50 ms, TPOT 10/10/40 ms.
  std::vector<RequestRecord> records = {Ok(0.1, 0.1 + 0.09, 10), Ok(0.3, 0.3 + 0.09, 10),
                                        Ok(0.05, 0.05 + 0.36, 10)};
  RequestRecord failed;
  failed.error_code = "RESOURCE_EXHAUSTED";
  records.push_back(failed);
  records.push_back(failed);

  Slo slo;
  slo.ttft_ms = 200;
  slo.tpot_ms = 20;
  const Summary s = Summarize(records, 2.0, slo);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_EQ(s.total_output_tokens, 30);
  EXPECT_EQ(s.total_input_tokens, 30);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 15.0);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 30.0);
  // Only the first request meets both SLOs: the second misses TTFT, the third TPOT.
  EXPECT_EQ(s.good_requests, 1);
  ASSERT_TRUE(s.request_goodput.has_value());
  EXPECT_DOUBLE_EQ(*s.request_goodput, 0.5);
  EXPECT_NEAR(s.concurrency, (0.19 + 0.39 + 0.41) / 2.0, 1e-12);
  EXPECT_NEAR(s.ttft_ms.mean, 150.0, 1e-9);
  EXPECT_NEAR(s.tpot_ms.median, 10.0, 1e-9);
  EXPECT_EQ(s.itl_ms.count, 27);
}

// Requests the client gave up (--cancel-fraction) are neither completed nor failed.
TEST(Summarize, ClientCancellationsAreCountedApart) {
  RequestRecord cancelled, disconnected, rejected;
  cancelled.error_code = kClientCancelled;
  disconnected.error_code = kClientDisconnected;
  rejected.error_code = "HTTP 429";
  const Summary s = Summarize({Ok(0.1, 0.2, 2), cancelled, disconnected, rejected}, 1.0, Slo{});
  EXPECT_EQ(s.completed, 1);
  EXPECT_EQ(s.cancelled, 2);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.errors.size(), 1u);
  EXPECT_EQ(s.errors.at("HTTP 429"), 1);
}

TEST(Summarize, GoodputOnlyWithAnSlo) {
  const Summary s = Summarize({Ok(0.1, 0.2, 2)}, 1.0, Slo{});
  EXPECT_FALSE(s.request_goodput.has_value());
  Slo only_ttft;
  only_ttft.ttft_ms = 50;
  EXPECT_DOUBLE_EQ(*Summarize({Ok(0.1, 0.2, 2)}, 1.0, only_ttft).request_goodput, 0.0);
  // One token: no TPOT, so a TPOT SLO is met.
  Slo only_tpot;
  only_tpot.tpot_ms = 1;
  EXPECT_DOUBLE_EQ(*Summarize({Ok(0.1, 0.1, 1)}, 1.0, only_tpot).request_goodput, 1.0);
}

TEST(TokenClock, OneItlPerTokenAfterTheFirst) {
  TokenClock clock(3, 100, Clock::now());
  clock.OnTokens(0);  // an empty chunk is not the first token
  clock.OnTokens(2);  // first chunk with two tokens: TTFT, and one gap of 0
  clock.OnTokens(1);
  clock.OnTokens(3);  // three tokens in one chunk: three equal shares of the gap
  const RequestRecord r = clock.Finish(true);
  EXPECT_EQ(r.index, 3);
  EXPECT_EQ(r.input_len, 100);
  EXPECT_EQ(r.output_tokens, 6);
  ASSERT_EQ(r.itl_seconds.size(), 5u);
  EXPECT_EQ(r.itl_seconds[0], 0.0);
  EXPECT_EQ(r.itl_seconds[2], r.itl_seconds[3]);
  EXPECT_EQ(r.itl_seconds[3], r.itl_seconds[4]);
  EXPECT_LE(r.ttft_seconds, r.e2e_seconds);
  EXPECT_TRUE(r.ok);
}

}  // namespace
}  // namespace lychee::loadtest
