// SPDX-License-Identifier: Apache-2.0
// Sampler: greedy, seeding and batching independence, the empirical distribution against softmax
// (chi-square, fixed seed so deterministic), each filter's kept set, vLLM penalties, bad logits.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace lychee {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams Random(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

std::vector<float> SoftmaxOf(const std::vector<float>& logits, float temperature = 1.0f) {
  double max = -kInf, sum = 0;
  for (float x : logits) max = std::max<double>(max, x / temperature);
  std::vector<float> p;
  for (float x : logits) sum += std::exp(x / temperature - max);
  for (float x : logits) p.push_back(static_cast<float>(std::exp(x / temperature - max) / sum));
  return p;
}

// Token ids whose logits are still finite after a filter.
std::vector<int> Kept(const std::vector<float>& logits) {
  std::vector<int> ids;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] != -kInf) ids.push_back(static_cast<int>(i));
  }
  return ids;
}

std::vector<int32_t> Generate(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> copy = logits;
    out.push_back(sampler.Sample(absl::MakeSpan(copy), {}));
  }
  return out;
}

const std::vector<float> kLogits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 1.5f, -0.5f};

TEST(SamplerTest, GreedyIsArgmax) {
  Sampler sampler(SamplingParams{}, 1);
  std::vector<float> logits = kLogits;
  EXPECT_EQ(sampler.Sample(absl::MakeSpan(logits), {}), 4);
  std::vector<float> ties = {1, 5, 5, 2};
  EXPECT_EQ(sampler.Sample(absl::MakeSpan(ties), {}), 1);  // lowest id on ties
  EXPECT_EQ(Argmax(kLogits), 4);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    SamplingParams p = Random(1.5f);
    p.top_k = 1;
    Sampler sampler(p, seed);
    std::vector<float> logits = kLogits;
    EXPECT_EQ(sampler.Sample(absl::MakeSpan(logits), {}), 4);
  }
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferent) {
  Sampler a(Random(), 42), b(Random(), 42), c(Random(), 43);
  const std::vector<int32_t> ta = Generate(a, kLogits, 64);
  EXPECT_EQ(ta, Generate(b, kLogits, 64));
  EXPECT_NE(ta, Generate(c, kLogits, 64));
}

TEST(SamplerTest, InterleavingWithOtherRequestsChangesNothing) {
  // Batching = other requests' samplers stepping in between; each request's stream is its own.
  Sampler alone(Random(), 7);
  const std::vector<int32_t> expected = Generate(alone, kLogits, 32);
  Sampler mine(Random(), 7), other(Random(0.7f), 7);
  std::vector<int32_t> got;
  for (int i = 0; i < 32; ++i) {
    std::vector<float> l1 = kLogits, l2 = kLogits;
    other.Sample(absl::MakeSpan(l2), {});
    got.push_back(mine.Sample(absl::MakeSpan(l1), {}));
  }
  EXPECT_EQ(got, expected);
}

// Pearson chi-square of `n` draws against softmax(kLogits / T); 7 degrees of freedom, critical
// value 24.32 at p = 0.001. The seed is fixed, so the outcome is deterministic.
double ChiSquare(float temperature, uint64_t seed, int n) {
  Sampler sampler(Random(temperature), seed);
  std::vector<int> counts(kLogits.size(), 0);
  for (int32_t t : Generate(sampler, kLogits, n)) ++counts[t];
  const std::vector<float> p = SoftmaxOf(kLogits, temperature);
  double chi2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

TEST(SamplerTest, EmpiricalDistributionMatchesSoftmax) {
  EXPECT_LT(ChiSquare(1.0f, 2024, 40000), 24.32);
  EXPECT_LT(ChiSquare(2.0f, 99, 40000), 24.32);
  // And the test has power: compared with the wrong temperature it fails by far.
  Sampler sampler(Random(1.0f), 2024);
  std::vector<int> counts(kLogits.size(), 0);
  for (int32_t t : Generate(sampler, kLogits, 40000)) ++counts[t];
  const std::vector<float> wrong = SoftmaxOf(kLogits, 1.3f);
  double chi2 = 0;
  for (size_t i = 0; i < wrong.size(); ++i) {
    chi2 += (counts[i] - wrong[i] * 40000) * (counts[i] - wrong[i] * 40000) / (wrong[i] * 40000);
  }
  EXPECT_GT(chi2, 100);
}

// Probabilities 0.1, 0.5, 0.15, 0.25 (ids 0..3).
std::vector<float> FourWay() {
  return {std::log(0.1f), std::log(0.5f), std::log(0.15f), std::log(0.25f)};
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  struct Case {
    float top_p;
    std::vector<int> kept;
  };
  for (const Case& c : std::vector<Case>{{0.3f, {1}},
                                         {0.49f, {1}},
                                         {0.51f, {1, 3}},
                                         {0.6f, {1, 3}},
                                         {0.8f, {1, 2, 3}},
                                         {0.95f, {0, 1, 2, 3}},
                                         {1.0f, {0, 1, 2, 3}}}) {
    std::vector<float> logits = FourWay();
    ApplyTopP(c.top_p, absl::MakeSpan(logits));
    EXPECT_EQ(Kept(logits), c.kept) << "top_p " << c.top_p;
  }
}

TEST(SamplerTest, TopKAndMinPKeptSets) {
  std::vector<float> logits = FourWay();
  ApplyTopK(2, absl::MakeSpan(logits));
  EXPECT_EQ(Kept(logits), (std::vector<int>{1, 3}));
  std::vector<float> ties = {1, 2, 2, 2, 0};
  ApplyTopK(2, absl::MakeSpan(ties));
  EXPECT_EQ(Kept(ties), (std::vector<int>{1, 2}));
  logits = FourWay();
  ApplyMinP(0.35f, absl::MakeSpan(logits));  // threshold 0.175
  EXPECT_EQ(Kept(logits), (std::vector<int>{1, 3}));
  logits = FourWay();
  ApplyMinP(0.0f, absl::MakeSpan(logits));
  EXPECT_EQ(Kept(logits).size(), 4u);
}

TEST(SamplerTest, FilteredTokensAreNeverDrawn) {
  SamplingParams p = Random(1.0f);
  p.top_p = 0.6f;  // keeps ids 1 and 3
  Sampler sampler(p, 5);
  for (int32_t t : Generate(sampler, FourWay(), 2000)) EXPECT_TRUE(t == 1 || t == 3) << t;
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  std::vector<float> logits = {2, -2, 1, 3};
  const std::vector<int32_t> prompt = {0}, output = {1, 1, 99, -5};  // 99, -5: out of range
  ApplyPenalties(p, prompt, output, absl::MakeSpan(logits));
  EXPECT_EQ(logits, (std::vector<float>{1, -4, 1, 3}));
}

TEST(SamplerTest, PresenceAndFrequencyPenalizeOutputTokensOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  std::vector<float> logits = {2, -2, 1, 3};
  const std::vector<int32_t> prompt = {0, 3}, output = {1, 1, 2};
  ApplyPenalties(p, prompt, output, absl::MakeSpan(logits));
  EXPECT_EQ(logits, (std::vector<float>{2, -2 - 0.5f - 0.5f, 1 - 0.5f - 0.25f, 3}));
}

TEST(SamplerTest, SamplePreviousTokensCountAsOutput) {
  SamplingParams p;  // greedy
  p.frequency_penalty = 2.0f;
  Sampler sampler(p, 0);
  std::vector<float> logits = {1.0f, 1.5f};
  const std::vector<int32_t> previous = {1};
  EXPECT_EQ(sampler.Sample(absl::MakeSpan(logits), previous), 0);
  EXPECT_FLOAT_EQ(logits[1], -0.5f);
}

TEST(SamplerTest, NanAndInfLogitsDoNotCrash) {
  for (float temperature : {0.0f, 1.0f}) {
    for (uint64_t seed = 0; seed < 20; ++seed) {
      SamplingParams p = Random(temperature);
      p.top_p = 0.9f;
      p.min_p = 0.05f;
      p.top_k = 3;
      p.repetition_penalty = 1.3f;
      Sampler sampler(p, seed);
      std::vector<float> nan_mixed = {kNaN, 1.0f, kNaN, 0.5f};
      const int32_t t = sampler.Sample(absl::MakeSpan(nan_mixed), std::vector<int32_t>{0, 1});
      EXPECT_TRUE(t == 1 || t == 3) << t;
      std::vector<float> pos_inf = {0.0f, kInf, 1.0f, kNaN};
      EXPECT_EQ(sampler.Sample(absl::MakeSpan(pos_inf), {}), 1);
      std::vector<float> all_nan = {kNaN, kNaN, kNaN};
      const int32_t u = sampler.Sample(absl::MakeSpan(all_nan), {});
      EXPECT_TRUE(u >= 0 && u < 3);
      std::vector<float> all_neg_inf = {-kInf, -kInf};
      const int32_t v = sampler.Sample(absl::MakeSpan(all_neg_inf), {});
      EXPECT_TRUE(v >= 0 && v < 2);
      std::vector<float> one_left = {-kInf, 2.0f, -kInf};
      EXPECT_EQ(sampler.Sample(absl::MakeSpan(one_left), {}), 1);
    }
  }
  EXPECT_EQ(TopLogprobs(std::vector<float>{kNaN, kNaN}, 2).size(), 0u);
}

TEST(SamplerTest, TopLogprobsAreLogSoftmaxBestFirst) {
  const std::vector<float> p = SoftmaxOf(kLogits);
  const std::vector<TokenLogprob> top = TopLogprobs(kLogits, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token, 4);
  EXPECT_EQ(top[1].token, 1);
  EXPECT_EQ(top[2].token, 6);
  for (const TokenLogprob& t : top) EXPECT_NEAR(t.logprob, std::log(p[t.token]), 1e-5);
  EXPECT_EQ(TopLogprobs(kLogits, 100).size(), kLogits.size());
  EXPECT_TRUE(TopLogprobs(kLogits, 0).empty());
}

// PenaltyTokens is what the GPU sampler applies instead of ApplyPenalties: applying its entries
// the way the kernel does (repetition on every entry, presence/frequency on entries with a
// count) gives ApplyPenalties' logits bit for bit, and appending tokens one at a time gives the
// entries a rebuild from the token lists gives.
TEST(SamplerTest, PenaltyTokensReproduceApplyPenalties) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> value(-5.0f, 5.0f), rep(0.5f, 2.0f), occ(-2.0f, 2.0f);
  const int64_t vocab = 40;
  std::uniform_int_distribution<int32_t> token(-3, static_cast<int32_t>(vocab + 2));  // some out
  for (int trial = 0; trial < 200; ++trial) {
    SamplingParams p;
    p.repetition_penalty = trial % 4 == 0 ? 1.0f : rep(rng);
    p.presence_penalty = trial % 3 == 0 ? 0.0f : occ(rng);
    p.frequency_penalty = trial % 5 == 0 ? 0.0f : occ(rng);
    std::vector<int32_t> prompt(static_cast<size_t>(trial % 30)), output;
    for (int32_t& t : prompt) t = token(rng);
    PenaltyTokens incremental(p, prompt, {}, vocab);
    for (int k = 0; k < trial % 25; ++k) {
      output.push_back(token(rng));
      incremental.Append(output.back());
    }
    const PenaltyTokens rebuilt(p, prompt, output, vocab);
    ASSERT_EQ(std::vector<int32_t>(incremental.ids().begin(), incremental.ids().end()),
              std::vector<int32_t>(rebuilt.ids().begin(), rebuilt.ids().end()));
    ASSERT_EQ(std::vector<int32_t>(incremental.counts().begin(), incremental.counts().end()),
              std::vector<int32_t>(rebuilt.counts().begin(), rebuilt.counts().end()));
    ASSERT_TRUE(std::is_sorted(rebuilt.ids().begin(), rebuilt.ids().end()));
    std::vector<float> want(static_cast<size_t>(vocab));
    for (float& x : want) x = value(rng);
    std::vector<float> got = want;
    ApplyPenalties(p, prompt, output, absl::MakeSpan(want));
    const bool repetition = p.repetition_penalty != 1.0f;
    const bool occurrence = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
    if (!repetition && !occurrence) {
      EXPECT_TRUE(rebuilt.ids().empty());
    }
    for (size_t j = 0; j < rebuilt.ids().size(); ++j) {
      const int32_t id = rebuilt.ids()[j];
      ASSERT_GE(id, 0);
      ASSERT_LT(id, vocab);
      float& x = got[static_cast<size_t>(id)];
      if (repetition) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
      const int32_t c = rebuilt.counts()[j];
      if (occurrence && c > 0) {
        x -= p.frequency_penalty * static_cast<float>(c) + p.presence_penalty;
      }
    }
    ASSERT_EQ(got, want) << "trial " << trial;
  }
}

TEST(SamplerTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  auto field_of = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    return std::string(ValidateSamplingParams(p).message());
  };
  EXPECT_NE(field_of([](auto& p) { p.temperature = -1; }).find("temperature"), std::string::npos);
  EXPECT_NE(field_of([](auto& p) { p.top_p = 0; }).find("top_p"), std::string::npos);
  EXPECT_NE(field_of([](auto& p) { p.min_p = 2; }).find("min_p"), std::string::npos);
  EXPECT_NE(field_of([](auto& p) { p.repetition_penalty = 0; }).find("repetition_penalty"),
            std::string::npos);
  EXPECT_NE(field_of([](auto& p) { p.presence_penalty = 3; }).find("presence_penalty"),
            std::string::npos);
  EXPECT_NE(field_of([](auto& p) { p.frequency_penalty = kNaN; }).find("frequency_penalty"),
            std::string::npos);
}

}  // namespace
}  // namespace lychee
