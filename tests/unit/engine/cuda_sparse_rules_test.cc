// SPDX-License-Identifier: Apache-2.0
// The GPU's policies as data (engine/cuda_sparse_decode.h: SeqRuleFor, RowModeFor, and
// kernels/cuda/block_select.h: ResolveSelectRule) against the CPU policies themselves, without a
// GPU: on random fp32 paged caches, the set the GPU's rule implies (forced ranges, then the best
// `take` by the same scores with AppendTopK's tie order, which the GPU's radix select follows:
// cuda_block_select_test) must be the CPU policy's selection, for Quest (box bounds: the view has
// no key balls), StreamingLLM and LycheeDecode's block mode, over random budgets, sinks, local
// windows, block sizes and context lengths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda_sparse_decode.h"
#include "kernels/cpu/sparse_attention.h"
#include "kernels/cuda/block_select.h"
#include "kvcache/paged_kv_view.h"
#include "sparsity/block_scoring.h"
#include "sparsity/head_roles.h"
#include "sparsity/lychee_policy.h"
#include "sparsity/prhs_policy.h"
#include "sparsity/quest_policy.h"
#include "sparsity/streaming_policy.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr int64_t kHeads = 4, kKvHeads = 2, kDim = 16;

// One sequence of `ctx` keys in shuffled pages of a fp32 pool, with box summaries.
struct RandomCache {
  std::vector<float> pool, summary;
  std::vector<int32_t> table;
  PagedKvView view;
};

void Fill(std::mt19937_64& rng, int64_t ctx, int64_t bs, RandomCache* c) {
  const int64_t n = (ctx + bs - 1) / bs;
  c->view = PagedKvView{nullptr, nullptr, n + 2, kKvHeads, bs, kDim};
  c->pool.assign(static_cast<size_t>((n + 2) * c->view.block_stride()), 0.0f);
  c->summary.assign(static_cast<size_t>((n + 2) * c->view.summary_block_stride()), 0.0f);
  c->view.kv = c->pool.data();
  c->view.key_summary = c->summary.data();
  c->table.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) c->table[static_cast<size_t>(i)] = static_cast<int32_t>(i + 2);
  std::shuffle(c->table.begin(), c->table.end(), rng);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = c->table[static_cast<size_t>(i)];
    const int64_t rows = std::min(bs, ctx - i * bs);
    for (int64_t g = 0; g < kKvHeads; ++g) {
      float* k = c->view.K(block, g);
      for (int64_t r = 0; r < rows * kDim; ++r) k[r] = u(rng);
      for (int64_t e = 0; e < kDim; ++e) {
        float lo = k[e], hi = k[e];
        for (int64_t r = 1; r < rows; ++r) {
          lo = std::min(lo, k[r * kDim + e]);
          hi = std::max(hi, k[r * kDim + e]);
        }
        c->view.KeyMin(block, g)[e] = lo;
        c->view.KeyMax(block, g)[e] = hi;
      }
    }
  }
}

// The set the GPU's rule gives with these scores (one kv head).
std::vector<int32_t> RuleSet(const cuda::SelectSeqRule& rule, const std::vector<float>& scores) {
  const int64_t n = static_cast<int64_t>(scores.size());
  const cuda::SelectRange r = cuda::ResolveSelectRule(rule, static_cast<int32_t>(n));
  std::vector<int32_t> out, order;
  const int64_t forced_last = n - r.last_begin;
  sparsity::AppendTopK(scores, r.first, forced_last, r.first + r.take + forced_last, {}, &order,
                       &out);
  return out;
}

std::vector<int32_t> HeadSet(const sparsity::Selection& sel, int64_t g) {
  return {sel.blocks.begin() + sel.offsets[static_cast<size_t>(g)],
          sel.blocks.begin() + sel.offsets[static_cast<size_t>(g + 1)]};
}

TEST(CudaSparseRulesTest, RulesReproduceTheCpuPolicies) {
  const uint64_t seed = ::lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> ctx_dist(1, 3000), budget_dist(1, 1200), sink_dist(0, 40),
      local_dist(0, 100);
  std::uniform_real_distribution<float> qd(-2.0f, 2.0f);
  int64_t compared = 0, ranked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t bs = trial % 2 == 0 ? 16 : 32;
    const int64_t ctx = ctx_dist(rng);
    const int64_t n = (ctx + bs - 1) / bs;
    RandomCache cache;
    Fill(rng, ctx, bs, &cache);
    std::vector<float> q(kHeads * kDim);
    for (float& v : q) v = qd(rng);
    sparsity::DecodeQuery query;
    query.q = q.data();
    query.cache = cache.view;
    query.block_table = cache.table;
    query.position = ctx - 1;
    query.num_heads = kHeads;
    query.num_layers = 2;
    query.scale = 0.25f;
    const int64_t budget = budget_dist(rng), sinks = sink_dist(rng), local = local_dist(rng);
    SCOPED_TRACE("trial " + std::to_string(trial) + ": context " + std::to_string(ctx) + " block " +
                 std::to_string(bs) + " budget " + std::to_string(budget) + " sinks " +
                 std::to_string(sinks) + " local " + std::to_string(local));
    const sparsity::PolicyLimits limits{budget, 1.0};
    const std::vector<int64_t> budgets(kKvHeads, budget);

    // Quest: the GPU ranks by the max over the group of the box bound, as the CPU without balls.
    sparsity::QuestPolicy quest(limits, sinks);
    sparsity::Selection sel;
    quest.Select(query, budgets, &sel);
    std::vector<float> bounds(static_cast<size_t>(kHeads * n));
    cpu::BlockScoreBoundsParams bp;
    bp.q = q.data();
    bp.cache = cache.view;
    bp.block_table = cache.table.data();
    bp.out = bounds.data();
    bp.num_heads = kHeads;
    bp.num_blocks = n;
    bp.scale = query.scale;
    cpu::BlockScoreBounds(bp);
    const cuda::SelectSeqRule quest_rule = SeqRuleFor(quest.device_selection(), budget, bs);
    for (int64_t g = 0; g < kKvHeads; ++g) {
      std::vector<float> kv_bounds(static_cast<size_t>(n));
      for (int64_t b = 0; b < n; ++b) {
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t h = g * 2; h < g * 2 + 2; ++h) {
          best = std::max(best, bounds[static_cast<size_t>(h * n + b)]);
        }
        kv_bounds[static_cast<size_t>(b)] = best;
      }
      ASSERT_EQ(RuleSet(quest_rule, kv_bounds), HeadSet(sel, g)) << "quest kv head " << g;
      EXPECT_EQ(RowModeFor(quest.device_selection(), 1, g), cuda::SelectRowMode::kTopK);
      ++compared;
    }
    ranked += budget / bs < n;

    // StreamingLLM: no scores at all.
    sparsity::StreamingPolicy streaming(limits, sinks);
    streaming.Select(query, budgets, &sel);
    const cuda::SelectSeqRule streaming_rule = SeqRuleFor(streaming.device_selection(), budget, bs);
    const std::vector<float> no_scores(static_cast<size_t>(n), 0.0f);
    ASSERT_EQ(RuleSet(streaming_rule, no_scores), HeadSet(sel, 0)) << "streaming";
    ++compared;

    // LycheeDecode (block mode): a retrieval head's set by exact scores of the group-mean query.
    LycheeKnobs knobs;
    knobs.sink_tokens = sinks;
    knobs.local_tokens = local;
    auto roles = std::make_shared<sparsity::HeadRoles>(2, kKvHeads);
    roles->set_retrieval(1, 1, true);
    sparsity::LycheePolicy lychee(limits, knobs, roles);
    const sparsity::DeviceSelection d = lychee.device_selection();
    ASSERT_EQ(d.kind, sparsity::DeviceSelection::Kind::kLychee);
    const cuda::SelectSeqRule lychee_rule = SeqRuleFor(d, budget, bs);
    sparsity::LycheeScratch scratch;
    for (int64_t g = 0; g < kKvHeads; ++g) {
      std::vector<int32_t> want;
      sparsity::LycheeTopSet(query, g, knobs, budget, &scratch, &want);
      std::vector<float> qbar(kDim), exact(static_cast<size_t>(n));
      sparsity::GroupMeanQuery(query, g, qbar.data());
      sparsity::ExactBlockScores(query, g, qbar.data(), exact.data());
      ASSERT_EQ(RuleSet(lychee_rule, exact), want) << "lychee kv head " << g;
      ++compared;
    }
    EXPECT_EQ(RowModeFor(d, 0, 0), cuda::SelectRowMode::kExactTopK);  // layer 0: all retrieval
    EXPECT_EQ(RowModeFor(d, 1, 0), cuda::SelectRowMode::kInherit);
    EXPECT_EQ(RowModeFor(d, 1, 1), cuda::SelectRowMode::kExactTopK);

    // PrHS: the forced ranges of PrhsPolicy (sinks, local window) as kTopK's, kPrhs everywhere.
    PrhsKnobs prhs_knobs;
    prhs_knobs.sink_tokens = sinks;
    prhs_knobs.local_tokens = local;
    sparsity::PrhsPolicy prhs(limits, prhs_knobs);
    const sparsity::DeviceSelection pd = prhs.device_selection();
    ASSERT_EQ(pd.kind, sparsity::DeviceSelection::Kind::kPrhs);
    ASSERT_EQ(pd.prhs->tau, prhs_knobs.tau);
    const cuda::SelectSeqRule prhs_rule = SeqRuleFor(pd, budget, bs);
    EXPECT_EQ(prhs_rule.rule, cuda::SelectRule::kTopK);
    EXPECT_EQ(prhs_rule.sink_blocks, (sinks + bs - 1) / bs);
    EXPECT_EQ(prhs_rule.local_blocks, 1 + (std::max<int64_t>(0, local - 1) + bs - 1) / bs);
    EXPECT_EQ(prhs_rule.budget_blocks, std::max<int64_t>(1, budget / bs));
    EXPECT_EQ(RowModeFor(pd, 1, 1), cuda::SelectRowMode::kPrhs);
  }
  EXPECT_GT(ranked, 100);  // most trials had to rank, not take everything
  std::printf("%lld selections compared, %lld trials ranked blocks\n",
              static_cast<long long>(compared), static_cast<long long>(ranked));
  sparsity::DeviceSelection dense;
  EXPECT_EQ(RowModeFor(dense, 3, 0), cuda::SelectRowMode::kAll);
}

TEST(CudaSparseRulesTest, PoliciesTheGpuRefusesSayWhy) {
  PolicySpec spec;
  EXPECT_TRUE(CudaSparsePolicySupport(spec).ok());
  for (const char* name : {"quest", "streaming", "lychee", "prhs"}) {
    spec.name = name;
    EXPECT_TRUE(CudaSparsePolicySupport(spec).ok()) << name;
  }
  spec.name = "prhs";  // an anchor holds at most kPrhsMaxAnchorBlocks blocks
  spec.budget_tokens = 16 * (cuda::kPrhsMaxAnchorBlocks + 1);
  EXPECT_NE(CudaSparsePolicySupport(spec, 16).message().find("anchor"), std::string::npos);
  EXPECT_TRUE(CudaSparsePolicySupport(spec, 32).ok());
  spec.budget_tokens = 2048;
  spec.name = "unknown";
  EXPECT_NE(CudaSparsePolicySupport(spec).message().find("unknown"), std::string::npos);
  spec.name = "lychee";
  spec.lychee.mode = "token";
  EXPECT_NE(CudaSparsePolicySupport(spec).message().find("token mode"), std::string::npos);
  spec.lychee.mode = "block";
  spec.max_dropped_mass = 0.05;
  EXPECT_NE(CudaSparsePolicySupport(spec).message().find("max_dropped_mass"), std::string::npos);
}

}  // namespace
}  // namespace lychee
