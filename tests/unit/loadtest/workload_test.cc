// SPDX-License-Identifier: Apache-2.0
// lychee-load's workload: seeded (same flags → same requests), lengths within the range, the
// shared prefix really shared, token ids within the vocabulary, Poisson arrivals ordered with
// roughly the asked rate, and flags out of range refused.
#include "loadtest/workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace lychee::loadtest {
namespace {

WorkloadOptions Options() {
  WorkloadOptions o;
  o.num_prompts = 200;
  o.input_len = 100;
  o.input_len_range = 0.5;
  o.output_len = 8;
  o.vocab_size = 512;
  o.request_rate = 20;
  o.seed = 7;
  return o;
}

TEST(Workload, SameSeedSameRequests) {
  const auto a = BuildWorkload(Options());
  const auto b = BuildWorkload(Options());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), 200u);
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    EXPECT_EQ((*a)[i].arrival_seconds, (*b)[i].arrival_seconds);
  }
  WorkloadOptions other = Options();
  other.seed = 8;
  EXPECT_NE(BuildWorkload(other)->front().prompt, a->front().prompt);
}

TEST(Workload, LengthsIdsAndArrivals) {
  const auto w = BuildWorkload(Options());
  ASSERT_TRUE(w.ok());
  size_t min_len = 1000, max_len = 0;
  double previous = 0.0;
  for (const PlannedRequest& r : *w) {
    min_len = std::min(min_len, r.prompt.size());
    max_len = std::max(max_len, r.prompt.size());
    for (int32_t id : r.prompt) {
      ASSERT_GE(id, kMinTokenId);
      ASSERT_LT(id, 512);
    }
    EXPECT_EQ(r.output_len, 8);
    EXPECT_GE(r.arrival_seconds, previous);
    previous = r.arrival_seconds;
  }
  EXPECT_GE(min_len, 50u);
  EXPECT_LE(max_len, 150u);
  EXPECT_LT(min_len, max_len);
  EXPECT_EQ(w->front().arrival_seconds, 0.0);
  // 199 exponential gaps of mean 1/20 s: about 10 s (a generous band, the seed is fixed).
  EXPECT_GT(w->back().arrival_seconds, 6.0);
  EXPECT_LT(w->back().arrival_seconds, 14.0);
}

TEST(Workload, FixedLengthAndAllAtOnce) {
  WorkloadOptions o = Options();
  o.input_len_range = 0.0;
  o.request_rate = std::numeric_limits<double>::infinity();
  const auto w = BuildWorkload(o);
  ASSERT_TRUE(w.ok());
  for (const PlannedRequest& r : *w) {
    EXPECT_EQ(r.prompt.size(), 100u);
    EXPECT_EQ(r.arrival_seconds, 0.0);
  }
}

TEST(Workload, SharedPrefix) {
  WorkloadOptions o = Options();
  o.shared_prefix_fraction = 0.4;  // 40 of the nominal 100 tokens; every prompt has >= 50
  const auto w = BuildWorkload(o);
  ASSERT_TRUE(w.ok());
  const std::vector<int32_t> prefix(w->front().prompt.begin(), w->front().prompt.begin() + 40);
  for (const PlannedRequest& r : *w) {
    EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), r.prompt.begin()));
  }
  EXPECT_NE((*w)[0].prompt[40], (*w)[1].prompt[40]);  // differs after (these two do; seed fixed)
}

TEST(Workload, RefusesBadOptions) {
  auto bad = [](auto change) {
    WorkloadOptions o = Options();
    change(o);
    return BuildWorkload(o).status();
  };
  EXPECT_EQ(bad([](WorkloadOptions& o) { o.num_prompts = 0; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](WorkloadOptions& o) { o.input_len_range = 1.0; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](WorkloadOptions& o) { o.output_len = 0; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](WorkloadOptions& o) { o.shared_prefix_fraction = 1.5; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](WorkloadOptions& o) { o.vocab_size = 2; }).code(),
            absl::StatusCode::kInvalidArgument);
}

// --cancel-fraction marks about that share, with delays in range, seeded, and leaves the
// prompts and arrivals of the seed as they were.
TEST(Workload, CancellationsAreSeededAndLeaveTheRestAlone) {
  WorkloadOptions o = Options();
  o.num_prompts = 2000;
  o.cancel_fraction = 0.25;
  o.cancel_after_max_seconds = 3.0;
  const auto a = BuildWorkload(o);
  const auto b = BuildWorkload(o);
  WorkloadOptions plain = Options();
  plain.num_prompts = 2000;
  const auto c = BuildWorkload(plain);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  int cancelled = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    const PlannedRequest& r = (*a)[i];
    EXPECT_EQ(r.cancel_after_seconds, (*b)[i].cancel_after_seconds);
    EXPECT_EQ(r.prompt, (*c)[i].prompt);
    EXPECT_EQ(r.arrival_seconds, (*c)[i].arrival_seconds);
    EXPECT_LT((*c)[i].cancel_after_seconds, 0.0);
    if (r.cancel_after_seconds >= 0) {
      ++cancelled;
      EXPECT_LE(r.cancel_after_seconds, 3.0);
    }
  }
  EXPECT_NEAR(cancelled, 500, 75);
  o.cancel_fraction = 1.5;
  EXPECT_EQ(BuildWorkload(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lychee::loadtest
