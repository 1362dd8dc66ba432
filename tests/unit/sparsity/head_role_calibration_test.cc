// SPDX-License-Identifier: Apache-2.0
// Head-role calibration: ChooseHeadRoles equals an exhaustive search over masks on random cost
// tables; InheritanceRecorder reads every block, charges nothing when every layer's query is
// the same, and charges a layer whose query differs from its ancestor's.
#include "sparsity/head_role_calibration.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/sparsity/random_paged_cache.h"
#include "tests/util/numeric.h"

namespace lychee::sparsity {
namespace {

using lychee::testing::RandomPagedCache;
using lychee::testing::RandomVector;

TEST(ChooseHeadRolesTest, EqualsExhaustiveSearch) {
  const uint64_t seed = lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> cost(-0.05, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t N = 2 + static_cast<int64_t>(rng() % 4), H = 1 + static_cast<int64_t>(rng() % 2);
    InheritanceCosts c;
    c.num_layers = N;
    c.num_kv_heads = H;
    c.steps = 1;
    c.cost.resize(static_cast<size_t>(N * H * N));
    for (double& v : c.cost) v = cost(rng);
    // Every mask of the layers 1 .. N-1 of every column.
    const int64_t free_bits = (N - 1) * H;
    for (int64_t total = H; total <= N * H; ++total) {
      double best = INFINITY;
      for (int64_t mask = 0; mask < (int64_t{1} << free_bits); ++mask) {
        if (__builtin_popcountll(static_cast<unsigned long long>(mask)) != total - H) continue;
        HeadRoles roles(N, H);
        for (int64_t bit = 0; bit < free_bits; ++bit) {
          if ((mask >> bit) & 1) roles.set_retrieval(1 + bit / H, bit % H, true);
        }
        best = std::min(best, TotalInheritanceCost(c, roles));
      }
      const HeadRoles chosen = ChooseHeadRoles(c, total);
      EXPECT_EQ(chosen.num_retrieval(), total);
      EXPECT_NEAR(TotalInheritanceCost(c, chosen), best, 1e-9)
          << "trial " << trial << " N " << N << " H " << H << " total " << total;
    }
  }
}

TEST(InheritanceRecorderTest, ChargesOnlyWhereTheQueryChanges) {
  std::mt19937_64 rng(5);
  const int64_t heads = 4, kv_heads = 2, dim = 16, layers = 3, tokens = 300;
  RandomPagedCache c(rng, tokens, kv_heads, 16, dim, 2.0f);
  c.Write(tokens);
  LycheeKnobs knobs;
  knobs.sink_tokens = 16;
  knobs.local_tokens = 16;
  InheritanceRecorder recorder(layers, kv_heads, knobs, /*budget_tokens=*/64);
  const auto same = RandomVector(rng, heads * dim, -3.0f, 3.0f);
  const auto other = RandomVector(rng, heads * dim, -3.0f, 3.0f);
  Selection sel;
  for (int64_t l = 0; l < layers; ++l) {
    DecodeQuery q;
    q.q = (l == 2 ? other : same).data();
    q.cache = c.view;
    q.block_table = c.table;
    q.position = tokens - 1;
    q.num_heads = heads;
    q.layer = l;
    q.num_layers = layers;
    q.scale = 0.25f;
    recorder.Select(q, std::vector<int64_t>(kv_heads, 64), &sel);
    for (int64_t g = 0; g < kv_heads; ++g) {  // dense: every block
      EXPECT_EQ(sel.offsets[static_cast<size_t>(g + 1)] - sel.offsets[static_cast<size_t>(g)],
                (tokens + 15) / 16);
    }
  }
  const InheritanceCosts costs = recorder.MeanCosts();
  EXPECT_EQ(costs.steps, 1);
  for (int64_t h = 0; h < kv_heads; ++h) {
    EXPECT_NEAR(costs.Cost(1, h, 0), 0.0, 1e-12);  // layer 1 asks what layer 0 asked
    // Layer 2's query differs: inheriting layer 0's (or 1's) set loses mass (peaked random
    // attention over 19 blocks, 4 read).
    EXPECT_GT(costs.Cost(2, h, 0), 0.01) << "head " << h;
    EXPECT_NEAR(costs.Cost(2, h, 0), costs.Cost(2, h, 1), 1e-12);
  }
  // So a mask with one retrieval head per column beyond layer 0 puts it at layer 2.
  const HeadRoles roles = ChooseHeadRoles(costs, 2 * kv_heads);
  for (int64_t h = 0; h < kv_heads; ++h) {
    EXPECT_TRUE(roles.retrieval(2, h));
    EXPECT_FALSE(roles.retrieval(1, h));
  }
}

}  // namespace
}  // namespace lychee::sparsity
