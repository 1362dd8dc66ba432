// SPDX-License-Identifier: Apache-2.0
// sparsity/: the factory's validation, StreamingPolicy's sink + window, and QuestPolicy against a
// brute-force top-k by block bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/sparse_attention.h"
#include "sparsity/policy_factory.h"
#include "sparsity/quest_policy.h"
#include "sparsity/streaming_policy.h"
#include "tests/unit/sparsity/random_paged_cache.h"
#include "tests/util/numeric.h"

namespace lychee::sparsity {
namespace {

using lychee::testing::RandomPagedCache;
using lychee::testing::RandomVector;

std::vector<int32_t> HeadBlocks(const Selection& s, int64_t g) {
  return std::vector<int32_t>(s.blocks.begin() + s.offsets[static_cast<size_t>(g)],
                              s.blocks.begin() + s.offsets[static_cast<size_t>(g + 1)]);
}

PolicySpec Spec(const std::string& name, int64_t budget, double max_mass = 1.0) {
  PolicySpec spec;
  spec.name = name;
  spec.budget_tokens = budget;
  spec.max_dropped_mass = max_mass;
  return spec;
}

TEST(PolicyFactoryTest, ValidatesAndMakes) {
  auto unknown = MakePolicy(Spec("lychee", 64), 16);
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unknown.status().message()).find("dense, streaming, quest"),
            std::string::npos);
  EXPECT_EQ(MakePolicy(Spec("quest", 8), 16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakePolicy(Spec("quest", 64, 1.5), 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakePolicy(Spec("quest", 64, -0.1), 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dense = MakePolicy(Spec("dense", 1), 16);  // dense ignores the budget
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(*dense, nullptr);
  auto quest = MakePolicy(Spec("quest", 64, 0.5), 16);
  ASSERT_TRUE(quest.ok());
  EXPECT_EQ((*quest)->name(), "quest");
  EXPECT_EQ((*quest)->limits().budget_tokens, 64);
  EXPECT_EQ((*quest)->limits().max_dropped_mass, 0.5);
  auto streaming = MakePolicy(Spec("streaming", 16), 16);
  ASSERT_TRUE(streaming.ok());
  EXPECT_EQ((*streaming)->name(), "streaming");
}

DecodeQuery Query(const RandomPagedCache& c, const std::vector<float>& q, int64_t pos,
                  int64_t heads) {
  DecodeQuery query;
  query.q = q.data();
  query.cache = c.view;
  query.block_table = c.table;
  query.position = pos;
  query.num_heads = heads;
  query.scale = 1.0f / std::sqrt(static_cast<float>(c.view.head_dim));
  return query;
}

TEST(StreamingPolicyTest, SinkBlockAndRecentWindow) {
  std::mt19937_64 rng(1);
  RandomPagedCache c(rng, 200, 2, 16, 8);
  c.Write(200);
  const auto q = RandomVector(rng, 4 * 8);
  StreamingPolicy policy(PolicyLimits{64, 1.0});
  Selection sel;
  policy.Select(Query(c, q, 199, 4), 64, &sel);  // 13 blocks: 0 and the last three
  for (int64_t g = 0; g < 2; ++g)
    EXPECT_EQ(HeadBlocks(sel, g), (std::vector<int32_t>{0, 10, 11, 12}));
  policy.Select(Query(c, q, 20, 4), 64, &sel);  // 2 blocks: both
  EXPECT_EQ(HeadBlocks(sel, 0), (std::vector<int32_t>{0, 1}));
  policy.Select(Query(c, q, 199, 4), 16, &sel);  // budget of one block: sink and query block
  EXPECT_EQ(HeadBlocks(sel, 1), (std::vector<int32_t>{0, 12}));
  policy.Select(Query(c, q, 199, 4), 4096, &sel);  // everything
  EXPECT_EQ(HeadBlocks(sel, 0).size(), 13u);
}

TEST(QuestPolicyTest, EqualsBruteForceTopKByBound) {
  const uint64_t seed = lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t heads = 8, kv_heads = 4, bs = 16, dim = 8;
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t tokens = 1 + static_cast<int64_t>(rng() % 300);
    const int64_t pos = tokens - 1, nb = pos / bs + 1;
    RandomPagedCache c(rng, tokens, kv_heads, bs, dim);
    c.Write(tokens);
    const auto q = RandomVector(rng, static_cast<size_t>(heads * dim));
    const int64_t budget = bs * (1 + static_cast<int64_t>(rng() % 8));
    QuestPolicy policy(PolicyLimits{budget, 1.0});
    Selection sel;
    const DecodeQuery query = Query(c, q, pos, heads);
    policy.Select(query, budget, &sel);

    std::vector<float> bounds(static_cast<size_t>(heads * nb));
    cpu::BlockScoreBoundsParams bp;
    bp.q = q.data();
    bp.cache = c.view;
    bp.block_table = c.table.data();
    bp.out = bounds.data();
    bp.num_heads = heads;
    bp.num_blocks = nb;
    bp.scale = query.scale;
    cpu::BlockScoreBounds(bp);
    for (int64_t g = 0; g < kv_heads; ++g) {
      std::vector<int32_t> want;
      if (budget / bs >= nb) {
        for (int64_t b = 0; b < nb; ++b) want.push_back(static_cast<int32_t>(b));
      } else {
        // Mandatory: block 0 (4 sink tokens) and the last block; then the best by bound.
        std::vector<std::pair<float, int32_t>> cand;
        for (int64_t b = 1; b < nb - 1; ++b) {
          float u = -INFINITY;
          for (int64_t h = g * 2; h < g * 2 + 2; ++h) {
            u = std::max(u, bounds[static_cast<size_t>(h * nb + b)]);
          }
          cand.emplace_back(-u, static_cast<int32_t>(b));
        }
        std::sort(cand.begin(), cand.end());
        want.push_back(0);
        const size_t take =
            std::min(cand.size(), static_cast<size_t>(budget / bs - 2 > 0 ? budget / bs - 2 : 0));
        for (size_t i = 0; i < take; ++i) want.push_back(cand[i].second);
        if (nb > 1) want.push_back(static_cast<int32_t>(nb - 1));
        std::sort(want.begin(), want.end());
      }
      EXPECT_EQ(HeadBlocks(sel, g), want)
          << "trial " << trial << " nb " << nb << " budget " << budget;
    }
  }
}

}  // namespace
}  // namespace lychee::sparsity
