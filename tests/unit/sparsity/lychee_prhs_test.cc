// SPDX-License-Identifier: Apache-2.0
// LycheeDecode and PrHS policies against brute-force references on random paged caches:
//  - HeadRoles: the file round-trips, bad files are refused with the reason;
//  - lychee: retrieval heads read everything, sparse heads read exactly the set the nearest
//    shallower retrieval head of their index chose (top-k by max block score of the group-mean
//    query, or top tokens, with sink and local forced), in block and token mode; repeated
//    Select of one layer is idempotent; a widened sparse head reads a superset;
//  - prhs: the anchor's choice equals brute-force top-k (no dilation); dilation brings the
//    neighbours of the top blocks; CIS reuses the anchor while the query stays similar and
//    rescores when it turns; PSAW's window start; the pre-read bound control makes the
//    kernel's certified bound meet max_dropped_mass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/sparse_attention.h"
#include "sparsity/head_roles.h"
#include "sparsity/lychee_policy.h"
#include "sparsity/prhs_policy.h"
#include "tests/unit/sparsity/random_paged_cache.h"
#include "tests/util/numeric.h"
#include "tests/util/sparse_decode.h"

namespace lychee::sparsity {
namespace {

using lychee::testing::RandomPagedCache;
using lychee::testing::RandomVector;

std::vector<int32_t> HeadList(const Selection& s, int64_t g) {
  return std::vector<int32_t>(s.blocks.begin() + s.offsets[static_cast<size_t>(g)],
                              s.blocks.begin() + s.offsets[static_cast<size_t>(g + 1)]);
}

std::vector<int32_t> Iota(int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  return v;
}

DecodeQuery Query(const RandomPagedCache& c, const std::vector<float>& q, int64_t pos,
                  int64_t heads, int64_t layer, int64_t layers) {
  DecodeQuery query;
  query.q = q.data();
  query.cache = c.view;
  query.block_table = c.table;
  query.position = pos;
  query.num_heads = heads;
  query.layer = layer;
  query.num_layers = layers;
  query.scale = 1.0f / std::sqrt(static_cast<float>(c.view.head_dim));
  return query;
}

// Brute force: scores of kv head g's group-mean query, per block (max) or per token.
std::vector<float> BruteScores(const RandomPagedCache& c, const std::vector<float>& q, int64_t pos,
                               int64_t heads, int64_t g, bool tokens) {
  const int64_t d = c.view.head_dim, kv = c.view.num_kv_heads, group = heads / kv;
  const int64_t bs = c.view.block_size;
  std::vector<double> qbar(static_cast<size_t>(d), 0.0);
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (int64_t e = 0; e < d; ++e)
      qbar[static_cast<size_t>(e)] += q[static_cast<size_t>(h * d + e)];
  }
  std::vector<float> out(static_cast<size_t>(tokens ? pos + 1 : pos / bs + 1),
                         -std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j <= pos; ++j) {
    double s = 0.0;
    for (int64_t e = 0; e < d; ++e) {
      s += qbar[static_cast<size_t>(e)] / static_cast<double>(group) *
           c.k[static_cast<size_t>((j * kv + g) * d + e)];
    }
    float& o = out[static_cast<size_t>(tokens ? j : j / bs)];
    o = std::max(o, static_cast<float>(s));
  }
  return out;
}

// Brute force top-k with [0, first) and [n - last, n) forced; ties to the earlier index. Scores
// are compared with a small tolerance (the policy's fp32 dots may round differently), so the
// check is on the set of clear winners: indices within `tol` of the cut are accepted either way.
void ExpectTopK(const std::vector<int32_t>& got, const std::vector<float>& scores, int64_t first,
                int64_t last, int64_t budget, const std::string& what) {
  const int64_t n = static_cast<int64_t>(scores.size());
  first = std::min(first, n);
  const int64_t last_begin = std::max(first, n - std::min(last, n));
  std::vector<int32_t> forced;
  for (int64_t i = 0; i < first; ++i) forced.push_back(static_cast<int32_t>(i));
  for (int64_t i = last_begin; i < n; ++i) forced.push_back(static_cast<int32_t>(i));
  std::vector<float> rest;
  for (int64_t i = first; i < last_begin; ++i) rest.push_back(scores[static_cast<size_t>(i)]);
  std::sort(rest.rbegin(), rest.rend());
  const int64_t take = std::clamp<int64_t>(budget - static_cast<int64_t>(forced.size()), 0,
                                           static_cast<int64_t>(rest.size()));
  ASSERT_EQ(static_cast<int64_t>(got.size()), static_cast<int64_t>(forced.size()) + take) << what;
  ASSERT_TRUE(std::is_sorted(got.begin(), got.end())) << what;
  for (int32_t f : forced) {
    EXPECT_TRUE(std::binary_search(got.begin(), got.end(), f)) << what << " misses forced " << f;
  }
  if (take == 0) return;
  const float cut = rest[static_cast<size_t>(take - 1)];
  const float tol = 1e-4f * (1.0f + std::abs(cut));
  for (int32_t i : got) {
    if (i < first || i >= last_begin) continue;
    EXPECT_GE(scores[static_cast<size_t>(i)], cut - tol) << what << " took a loser " << i;
  }
}

// ---- HeadRoles -----------------------------------------------------------------------------

TEST(HeadRolesTest, RoundTripsAndRefusesBadFiles) {
  HeadRoles roles(4, 3);
  roles.set_retrieval(2, 1, true);
  roles.set_retrieval(3, 0, true);
  roles.set_retrieval(0, 2, false);  // ignored: layer 0 stays retrieval
  EXPECT_EQ(roles.num_retrieval(), 5);
  auto back = HeadRoles::FromJson(roles.ToJson(R"({"objective": "test"})"));
  ASSERT_TRUE(back.ok()) << back.status();
  for (int64_t l = 0; l < 4; ++l) {
    for (int64_t h = 0; h < 3; ++h) EXPECT_EQ(back->retrieval(l, h), roles.retrieval(l, h));
  }
  const struct {
    const char* text;
    const char* reason;
  } bad[] = {
      {"[]", "not a JSON object"},
      {R"({"format": "x", "num_layers": 1, "num_kv_heads": 1, "retrieval": [[0]]})", "format"},
      {R"({"format": "lychee-head-roles/1", "num_layers": 2, "num_kv_heads": 2,
           "retrieval": [[0, 1]]})",
       "array of 2 layers"},
      {R"({"format": "lychee-head-roles/1", "num_layers": 2, "num_kv_heads": 2,
           "retrieval": [[0], [1]]})",
       "layer 0 must list every kv head"},
      {R"({"format": "lychee-head-roles/1", "num_layers": 2, "num_kv_heads": 2,
           "retrieval": [[0, 1], [2]]})",
       "is not a kv head"},
      {R"({"format": "lychee-head-roles/1", "num_layers": 2, "num_kv_heads": 2,
           "retrieval": [[0, 1], [1, 1]]})",
       "repeated"},
  };
  for (const auto& b : bad) {
    auto r = HeadRoles::FromJson(b.text);
    ASSERT_FALSE(r.ok()) << b.text;
    EXPECT_NE(std::string(r.status().message()).find(b.reason), std::string::npos) << r.status();
  }
}

// ---- LycheeDecode --------------------------------------------------------------------------

class LycheePolicyTest : public ::testing::TestWithParam<bool> {};  // token mode?

TEST_P(LycheePolicyTest, SparseHeadsReadTheNearestShallowerRetrievalSet) {
  const bool tokens = GetParam();
  const uint64_t seed = lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t heads = 4, kv_heads = 2, bs = 16, dim = 16, layers = 4;
  // Layer 0 all retrieval; layer 1: head 0 retrieval; layer 2 all sparse; layer 3: head 1.
  auto roles = std::make_shared<HeadRoles>(layers, kv_heads);
  roles->set_retrieval(1, 0, true);
  roles->set_retrieval(3, 1, true);
  // Which layer's choice each (layer, head) reads: -1 for retrieval heads.
  const int64_t source[4][2] = {{-1, -1}, {-1, 0}, {1, 0}, {1, -1}};
  LycheeKnobs knobs;
  knobs.mode = tokens ? "token" : "block";
  knobs.sink_tokens = 16;
  knobs.local_tokens = 32;
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n_tokens = 40 + static_cast<int64_t>(rng() % 400);
    const int64_t pos = n_tokens - 1;
    RandomPagedCache c(rng, n_tokens, kv_heads, bs, dim);
    c.Write(n_tokens);
    const int64_t budget = bs * (4 + static_cast<int64_t>(rng() % 6));
    LycheePolicy policy(PolicyLimits{budget, 1.0}, knobs, roles);
    std::vector<std::vector<float>> qs;
    for (int64_t l = 0; l < layers; ++l) qs.push_back(RandomVector(rng, heads * dim));
    const int64_t n = tokens ? pos + 1 : pos / bs + 1;
    const std::vector<int64_t> budgets(kv_heads, budget);
    Selection sel, again;
    for (int64_t l = 0; l < layers; ++l) {
      const DecodeQuery query = Query(c, qs[static_cast<size_t>(l)], pos, heads, l, layers);
      policy.Select(query, budgets, &sel);
      policy.Select(query, budgets, &again);  // idempotent within a layer
      EXPECT_EQ(sel.blocks, again.blocks);
      EXPECT_EQ(sel.token_level, tokens);
      for (int64_t g = 0; g < kv_heads; ++g) {
        const std::string what = "trial " + std::to_string(trial) + " layer " + std::to_string(l) +
                                 " head " + std::to_string(g);
        const int64_t src = source[l][g];
        if (src < 0) {
          EXPECT_EQ(HeadList(sel, g), Iota(n)) << what;
          continue;
        }
        const auto scores = BruteScores(c, qs[static_cast<size_t>(src)], pos, heads, g, tokens);
        if (tokens) {
          ExpectTopK(HeadList(sel, g), scores, 16, 32, budget, what);
        } else {
          // Sink: one block; local: the query's block plus ceil(31 / 16) = 2 more.
          ExpectTopK(HeadList(sel, g), scores, 1, 3, budget / bs, what);
        }
      }
      // A widened sparse head reads a superset of its inherited set.
      if (l == 2) {
        const std::vector<int32_t> inherited = HeadList(sel, 1);
        policy.Select(query, std::vector<int64_t>{budget, 4 * budget}, &again);
        const std::vector<int32_t> widened = HeadList(again, 1);
        EXPECT_TRUE(
            std::includes(widened.begin(), widened.end(), inherited.begin(), inherited.end()));
        EXPECT_GE(widened.size(), inherited.size());
        policy.Select(query, budgets, &again);  // and the last Select is what commits
      }
      std::vector<float> mass(static_cast<size_t>(heads), 0.0f);
      policy.AfterAttention(query, mass);
    }
    const PolicyCounters counters = policy.counters();
    EXPECT_EQ(counters.head_selections, layers * kv_heads);
    EXPECT_EQ(counters.reused, 4);  // (1,1), (2,0), (2,1), (3,0)
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, LycheePolicyTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return std::string(p.param ? "token" : "block");
                         });

// ---- PrHS ----------------------------------------------------------------------------------

PrhsKnobs Knobs(int64_t dilation, double tau = 0.8) {
  PrhsKnobs k;
  k.dilation = dilation;
  k.tau = tau;
  k.sink_tokens = 16;
  k.local_tokens = 16;
  return k;
}

TEST(PrhsPolicyTest, AnchorIsTheTopKWithoutDilation) {
  const uint64_t seed = lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t heads = 4, kv_heads = 2, bs = 16, dim = 16;
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t n_tokens = 40 + static_cast<int64_t>(rng() % 600);
    const int64_t pos = n_tokens - 1;
    RandomPagedCache c(rng, n_tokens, kv_heads, bs, dim);
    c.Write(n_tokens);
    const int64_t budget = bs * (3 + static_cast<int64_t>(rng() % 8));
    PrhsPolicy policy(PolicyLimits{budget, 1.0}, Knobs(/*dilation=*/0));
    const auto q = RandomVector(rng, heads * dim);
    Selection sel;
    policy.Select(Query(c, q, pos, heads, 0, 1), std::vector<int64_t>(kv_heads, budget), &sel);
    for (int64_t g = 0; g < kv_heads; ++g) {
      // Sink: block 0; local 16 tokens: the query's block and the one before it.
      ExpectTopK(HeadList(sel, g), BruteScores(c, q, pos, heads, g, false), 1, 2, budget / bs,
                 "trial " + std::to_string(trial));
    }
  }
}

// Keys: all small except block `hot`, whose keys align with the query: it is the clear winner.
RandomPagedCache HotBlockCache(std::mt19937_64& rng, int64_t tokens, int64_t hot,
                               const std::vector<float>& dir) {
  const int64_t dim = static_cast<int64_t>(dir.size());
  RandomPagedCache c(rng, tokens, 1, 16, dim, 0.01f);
  for (int64_t j = hot * 16; j < (hot + 1) * 16; ++j) {
    for (int64_t e = 0; e < dim; ++e)
      c.k[static_cast<size_t>(j * dim + e)] = dir[static_cast<size_t>(e)];
  }
  c.Write(tokens);
  return c;
}

TEST(PrhsPolicyTest, DilationBringsTheNeighboursOfTheTopBlocks) {
  std::mt19937_64 rng(7);
  const std::vector<float> dir = {1, 0, 0, 0, 0, 0, 0, 0};
  RandomPagedCache c = HotBlockCache(rng, 320, 10, dir);  // 20 blocks, block 10 hot
  const std::vector<float> q = {4, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<int64_t> budget = {6 * 16};  // sink + 2 local + 3 chosen
  for (int64_t dilation : {0, 1}) {
    PrhsPolicy policy(PolicyLimits{budget[0], 1.0}, Knobs(dilation));
    Selection sel;
    policy.Select(Query(c, q, 319, 1, 0, 1), budget, &sel);
    const std::vector<int32_t> got = HeadList(sel, 0);
    EXPECT_TRUE(std::binary_search(got.begin(), got.end(), 10));
    const bool neighbours = std::binary_search(got.begin(), got.end(), 9) &&
                            std::binary_search(got.begin(), got.end(), 11);
    EXPECT_EQ(neighbours, dilation == 1) << "dilation " << dilation;
    EXPECT_EQ(got.size(), 6u);  // dilation stays inside the budget
  }
}

TEST(PrhsPolicyTest, CisReusesWhileTheQueryStaysSimilar) {
  std::mt19937_64 rng(11);
  const std::vector<float> dir = {1, 0, 0, 0, 0, 0, 0, 0};
  RandomPagedCache c = HotBlockCache(rng, 480, 10, dir);  // 30 blocks, block 10 hot
  const std::vector<int64_t> budget = {4 * 16};
  PrhsPolicy policy(PolicyLimits{budget[0], 1.0}, Knobs(0, /*tau=*/0.8));
  std::vector<float> mass(1, 0.0f);
  Selection sel;
  auto step = [&](const std::vector<float>& q, int64_t pos) {
    const DecodeQuery query = Query(c, q, pos, 1, 0, 1);
    policy.Select(query, budget, &sel);
    policy.AfterAttention(query, mass);
    return HeadList(sel, 0);
  };
  const auto first = step({4, 0, 0, 0, 0, 0, 0, 0}, 400);
  EXPECT_TRUE(std::binary_search(first.begin(), first.end(), 10));
  EXPECT_EQ(policy.counters().reused, 0);
  // A similar query later (cos ≈ 0.99): the anchor's blocks without scoring, and the local
  // window follows the position.
  const auto second = step({4, 0.5f, 0, 0, 0, 0, 0, 0}, 470);
  EXPECT_EQ(policy.counters().reused, 1);
  EXPECT_TRUE(std::binary_search(second.begin(), second.end(), 10));
  EXPECT_EQ(second.back(), 470 / 16);
  // A query at a right angle: rescored (a new anchor), so no reuse.
  step({0, 4, 0, 0, 0, 0, 0, 0}, 471);
  EXPECT_EQ(policy.counters().reused, 1);
  EXPECT_EQ(policy.counters().head_selections, 3);
}

TEST(PrhsPolicyTest, PsawWindowStartFollowsTheFormula) {
  PrhsKnobs k;
  k.psaw_start_layer = 2;
  k.psaw_phi = 0.5;
  k.psaw_alpha = 2.0;
  EXPECT_EQ(PrhsPolicy::PsawWindowStart(k, 1, 10, 1000), 0);  // before l_s
  EXPECT_EQ(PrhsPolicy::PsawWindowStart(k, 2, 10, 1000), 0);  // 1 - 0.5^0 = 0
  // layer 6: 1 - 0.5^(2 * 4 / 8) = 0.5
  EXPECT_EQ(PrhsPolicy::PsawWindowStart(k, 6, 10, 1000), 500);
  // layer 9: 1 - 0.5^(2 * 7 / 8) = 0.7027
  EXPECT_EQ(PrhsPolicy::PsawWindowStart(k, 9, 10, 1000),
            static_cast<int64_t>(std::floor((1 - std::pow(0.5, 1.75)) * 1000)));
  k.psaw_phi = 1.0;  // off
  EXPECT_EQ(PrhsPolicy::PsawWindowStart(k, 9, 10, 1000), 0);
  // In a selection: no block wholly before the window start is chosen (sinks excepted).
  std::mt19937_64 rng(3);
  RandomPagedCache c(rng, 640, 1, 16, 8);
  c.Write(640);
  PrhsKnobs on = Knobs(1);
  on.psaw_start_layer = 0;
  on.psaw_phi = 0.5;
  on.psaw_alpha = 1.0;
  PrhsPolicy policy(PolicyLimits{20 * 16, 1.0}, on);
  const auto q = RandomVector(rng, 8);
  Selection sel;
  // Layer 1 of 2: start = floor((1 - 0.5^0.5) · 640) = 187, so blocks 1 .. 10 are out.
  policy.Select(Query(c, q, 639, 1, 1, 2), std::vector<int64_t>{20 * 16}, &sel);
  for (int32_t b : HeadList(sel, 0)) EXPECT_TRUE(b == 0 || (b + 1) * 16 > 187) << b;
}

TEST(PrhsPolicyTest, PreReadControlMeetsMaxDroppedMass) {
  const uint64_t seed = lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t heads = 4, kv_heads = 2, bs = 16, dim = 16;
  int fallbacks = 0, grown = 0, flat_fallbacks = 0, flat_grown = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t n_tokens = 200 + static_cast<int64_t>(rng() % 600);
    const int64_t pos = n_tokens - 1;
    // Odd trials: nearly flat attention (small keys), where the bounds are tight and the
    // control must meet the target by growing, without falling back to dense.
    const bool flat = trial % 4 == 1;
    RandomPagedCache c(rng, n_tokens, kv_heads, bs, dim, /*key_range=*/flat ? 0.02f : 2.0f);
    c.Write(n_tokens);
    const double max_mass = flat ? 0.85 : trial % 2 == 0 ? 0.5 : 0.9;
    const int64_t budget = 4 * bs;
    PrhsPolicy policy(PolicyLimits{budget, max_mass}, Knobs(1));
    const auto q = RandomVector(rng, heads * dim, -2.0f, 2.0f);
    const DecodeQuery query = Query(c, q, pos, heads, 0, 1);
    Selection sel;
    policy.Select(query, std::vector<int64_t>(kv_heads, budget), &sel);
    std::vector<std::vector<int32_t>> per_head;
    for (int64_t g = 0; g < kv_heads; ++g) per_head.push_back(HeadList(sel, g));
    std::vector<float> out, mass;
    lychee::testing::RunSparseDecode(c.view, c.table, q, heads, pos, per_head, false, &out, &mass);
    for (int64_t h = 0; h < heads; ++h) {
      EXPECT_LE(mass[static_cast<size_t>(h)], max_mass) << "trial " << trial << " head " << h;
    }
    policy.AfterAttention(query, mass);
    const int f = static_cast<int>(policy.counters().dense_fallbacks);
    int g_count = 0;
    for (int64_t g = 0; g < kv_heads; ++g) g_count += HeadList(sel, g).size() > 4 ? 1 : 0;
    (flat ? flat_fallbacks : fallbacks) += f;
    (flat ? flat_grown : grown) += g_count;
  }
  // Flat attention over a long context: 4 blocks cannot hold 15% of the mass, so every head
  // grew, and tight bounds let it stop short of dense.
  EXPECT_EQ(flat_fallbacks, 0);
  EXPECT_GT(flat_grown, 0);
  std::printf(
      "pre-read control: peaked keys %d heads grown, %d dense fallbacks; flat keys %d "
      "grown, %d fallbacks\n",
      grown, fallbacks, flat_grown, flat_fallbacks);
}

}  // namespace
}  // namespace lychee::sparsity
