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

// A context of 16-token blocks for a 4-layer, 2-kv-head model, without a head-role mask.
PolicyContext Context(bool with_roles = false) {
  PolicyContext c;
  c.block_size = 16;
  c.num_layers = 4;
  c.num_kv_heads = 2;
  if (with_roles) c.head_roles = std::make_shared<HeadRoles>(4, 2);
  return c;
}

// The same budget for every kv head.
std::vector<int64_t> Budgets(int64_t budget, int64_t kv_heads) {
  return std::vector<int64_t>(static_cast<size_t>(kv_heads), budget);
}

TEST(PolicyFactoryTest, ValidatesAndMakes) {
  auto unknown = MakePolicy(Spec("sparse", 64), Context());
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unknown.status().message()).find("dense, streaming, quest, lychee, prhs"),
            std::string::npos);
  EXPECT_EQ(MakePolicy(Spec("quest", 8), Context()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakePolicy(Spec("quest", 64, 1.5), Context()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakePolicy(Spec("quest", 64, -0.1), Context()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dense = MakePolicy(Spec("dense", 1), Context());  // dense ignores the budget
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(*dense, nullptr);
  auto quest = MakePolicy(Spec("quest", 64, 0.5), Context());
  ASSERT_TRUE(quest.ok());
  EXPECT_EQ((*quest)->name(), "quest");
  EXPECT_EQ((*quest)->limits().budget_tokens, 64);
  EXPECT_EQ((*quest)->limits().max_dropped_mass, 0.5);
  auto streaming = MakePolicy(Spec("streaming", 16), Context());
  ASSERT_TRUE(streaming.ok());
  EXPECT_EQ((*streaming)->name(), "streaming");
}

TEST(PolicyFactoryTest, LycheeNeedsAMaskAndKnobsAreChecked) {
  auto no_mask = MakePolicy(Spec("lychee", 64), Context());
  ASSERT_EQ(no_mask.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(no_mask.status().message()).find("lychee-calibrate"), std::string::npos);
  auto lychee = MakePolicy(Spec("lychee", 64), Context(/*with_roles=*/true));
  ASSERT_TRUE(lychee.ok()) << lychee.status();
  EXPECT_EQ((*lychee)->name(), "lychee");
  PolicySpec bad_mode = Spec("lychee", 64);
  bad_mode.lychee.mode = "tokens";
  auto st = ValidatePolicySpec(bad_mode, Context(true));
  EXPECT_NE(std::string(st.message()).find("policy.lychee.mode"), std::string::npos) << st;
  auto prhs = MakePolicy(Spec("prhs", 64, 0.1), Context());
  ASSERT_TRUE(prhs.ok()) << prhs.status();
  EXPECT_EQ((*prhs)->name(), "prhs");
  const struct {
    void (*edit)(PolicySpec&);
    const char* field;
  } bad[] = {{[](PolicySpec& p) { p.prhs.tau = 1.5; }, "policy.prhs.tau"},
             {[](PolicySpec& p) { p.prhs.dilation = -1; }, "policy.prhs.dilation"},
             {[](PolicySpec& p) { p.prhs.dilate_fraction = 2; }, "policy.prhs.dilate_fraction"},
             {[](PolicySpec& p) { p.prhs.local_tokens = 0; }, "policy.prhs.local_tokens"},
             {[](PolicySpec& p) { p.prhs.psaw_phi = 0; }, "policy.prhs.psaw_phi"},
             {[](PolicySpec& p) { p.audit_rate = 1.5; }, "policy.audit_rate"}};
  for (const auto& b : bad) {
    PolicySpec spec = Spec("prhs", 64);
    b.edit(spec);
    auto status = ValidatePolicySpec(spec, Context());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << b.field;
    EXPECT_NE(std::string(status.message()).find(b.field), std::string::npos) << status;
  }
  // Sliding-window models: sparse policies are refused, dense is fine.
  PolicyContext sliding = Context(true);
  sliding.sliding_window = true;
  EXPECT_EQ(ValidatePolicySpec(Spec("quest", 64), sliding).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidatePolicySpec(Spec("dense", 64), sliding).ok());
  // max_dropped_mass 0 (read everything) is valid.
  EXPECT_TRUE(ValidatePolicySpec(Spec("prhs", 64, 0.0), Context()).ok());
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
  policy.Select(Query(c, q, 199, 4), Budgets(64, 2), &sel);  // 13 blocks: 0 and the last three
  for (int64_t g = 0; g < 2; ++g)
    EXPECT_EQ(HeadBlocks(sel, g), (std::vector<int32_t>{0, 10, 11, 12}));
  policy.Select(Query(c, q, 20, 4), Budgets(64, 2), &sel);  // 2 blocks: both
  EXPECT_EQ(HeadBlocks(sel, 0), (std::vector<int32_t>{0, 1}));
  // Budget of one block: sink and query block; per-kv-head budgets are independent.
  policy.Select(Query(c, q, 199, 4), std::vector<int64_t>{64, 16}, &sel);
  EXPECT_EQ(HeadBlocks(sel, 0), (std::vector<int32_t>{0, 10, 11, 12}));
  EXPECT_EQ(HeadBlocks(sel, 1), (std::vector<int32_t>{0, 12}));
  policy.Select(Query(c, q, 199, 4), Budgets(4096, 2), &sel);  // everything
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
    policy.Select(query, Budgets(budget, kv_heads), &sel);

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
