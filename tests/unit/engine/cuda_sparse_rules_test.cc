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
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
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
#include "tests/unit/kernels/prhs_grow_reference.h"
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

// One randomized trial's sequence: blocks of 16 tokens on even trials and 32 on odd ones, a
// length from ctx_dist, its cache, and `q_heads` query heads from qd (drawn in this order, so a
// seed replays the same trial).
struct Trial {
  int64_t bs = 0, ctx = 0, n = 0;  // block size, keys, blocks
  RandomCache cache;
  std::vector<float> q;  // [q_heads, kDim]
};
void MakeTrial(std::mt19937_64& rng, int trial, std::uniform_int_distribution<int64_t>& ctx_dist,
               std::uniform_real_distribution<float>& qd, int64_t q_heads, Trial* t) {
  t->bs = trial % 2 == 0 ? 16 : 32;
  t->ctx = ctx_dist(rng);
  t->n = (t->ctx + t->bs - 1) / t->bs;
  Fill(rng, t->ctx, t->bs, &t->cache);
  t->q.resize(static_cast<size_t>(q_heads * kDim));
  for (float& v : t->q) v = qd(rng);
}

// The box bounds of every block for each query head of `query` ([heads, n]; the cache has no
// balls, so these are what Quest ranks by on both backends), and their lower bounds into
// `maybe_lower` when given.
std::vector<float> BoxBounds(const sparsity::DecodeQuery& query, const RandomCache& cache,
                             int64_t n, std::vector<float>* maybe_lower = nullptr) {
  std::vector<float> bounds(static_cast<size_t>(query.num_heads * n));
  cpu::BlockScoreBoundsParams bp;
  bp.q = query.q;
  bp.cache = cache.view;
  bp.block_table = cache.table.data();
  bp.out = bounds.data();
  bp.num_heads = query.num_heads;
  bp.num_blocks = n;
  bp.scale = query.scale;
  if (maybe_lower != nullptr) {
    maybe_lower->resize(bounds.size());
    bp.lower = maybe_lower->data();
  }
  cpu::BlockScoreBounds(bp);
  return bounds;
}

// A decode query at the end of `cache`'s `ctx` keys, layer 0 of two, scale 1/4.
sparsity::DecodeQuery MakeQuery(const std::vector<float>& q, const RandomCache& cache, int64_t ctx,
                                int64_t num_heads) {
  sparsity::DecodeQuery query;
  query.q = q.data();
  query.cache = cache.view;
  query.block_table = cache.table;
  query.position = ctx - 1;
  query.num_heads = num_heads;
  query.num_layers = 2;
  query.scale = 0.25f;
  return query;
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
    Trial trial_data;
    MakeTrial(rng, trial, ctx_dist, qd, kHeads, &trial_data);
    const int64_t bs = trial_data.bs, ctx = trial_data.ctx, n = trial_data.n;
    const RandomCache& cache = trial_data.cache;
    const std::vector<float>& q = trial_data.q;
    sparsity::DecodeQuery query = MakeQuery(q, cache, ctx, kHeads);
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
    const std::vector<float> bounds = BoxBounds(query, cache, n);
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

// max_dropped_mass as the GPU runs it (SeqRuleFor's budget in tokens, WideningRounds rounds of
// WidenBudgets' doubling, the rule over the kv head's box bounds — for a LycheeDecode sparse head
// its inherited set plus the rule over its own exact scores —, KvHeadBound over the LSE of what
// was read) against the CPU runner's loop (Policy::Select with per-kv-head budgets,
// cpu::SparseDecodeAttention's certified bound, doubling while it misses): with one query head
// per kv head the two bounds are the same quantity (the CPU's per-head upper bounds are then the
// kv head's), so the final sets and the widening counts must agree, and the rounds the host
// plans must suffice. Trials where a bound lands within 1e-4 of max_dropped_mass are left out:
// the CPU's certified rounding decides those.
TEST(CudaSparseRulesTest, WideningAsTheGpuRunsItMatchesTheCpuRunner) {
  const uint64_t seed = ::lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> ctx_dist(1, 2500), budget_dist(1, 400), sink_dist(0, 40);
  std::uniform_real_distribution<float> qd(-3.0f, 3.0f);
  const double masses[] = {0.0, 1e-3, 0.02, 0.1, 0.3, 0.7};
  constexpr int64_t kGroupOne = kKvHeads;  // query heads: one per kv head
  int64_t trials = 0, widened = 0, lychee_widened = 0, ambiguous = 0;
  for (int trial = 0; trial < 240; ++trial) {
    Trial trial_data;
    MakeTrial(rng, trial, ctx_dist, qd, kGroupOne, &trial_data);
    const int64_t bs = trial_data.bs, ctx = trial_data.ctx, n = trial_data.n;
    const RandomCache& cache = trial_data.cache;
    const std::vector<float>& q = trial_data.q;
    const int64_t budget = budget_dist(rng), sinks = sink_dist(rng);
    const double max_mass = masses[(trial / 3) % 6];
    // Quest, streaming, and LycheeDecode at its layer 1 (kv head 0 retrieval, kv head 1 inheriting
    // what layer 0 chose at index 1).
    const int kind = trial % 3;
    const bool is_quest = kind == 0, is_lychee = kind == 2;
    SCOPED_TRACE("trial " + std::to_string(trial) +
                 (is_quest    ? " quest"
                  : is_lychee ? " lychee"
                              : " streaming") +
                 ": context " + std::to_string(ctx) + " block " + std::to_string(bs) + " budget " +
                 std::to_string(budget) + " sinks " + std::to_string(sinks) + " max_dropped_mass " +
                 std::to_string(max_mass));
    const sparsity::PolicyLimits limits{budget, max_mass};
    LycheeKnobs knobs;
    knobs.sink_tokens = sinks;
    knobs.local_tokens = sink_dist(rng);
    auto roles = std::make_shared<sparsity::HeadRoles>(2, kKvHeads);
    roles->set_retrieval(1, 0, true);
    std::unique_ptr<sparsity::Policy> policy;
    if (is_quest) {
      policy = std::make_unique<sparsity::QuestPolicy>(limits, sinks);
    } else if (is_lychee) {
      policy = std::make_unique<sparsity::LycheePolicy>(limits, knobs, roles);
    } else {
      policy = std::make_unique<sparsity::StreamingPolicy>(limits, sinks);
    }
    sparsity::DecodeQuery query = MakeQuery(q, cache, ctx, kGroupOne);

    // The CPU runner's loop (CpuModelRunner::Impl::SparseDecode, one query head per kv head).
    const int64_t all_tokens = n * bs;
    std::vector<int64_t> budgets(kKvHeads, max_mass <= 0.0 ? all_tokens : budget);
    std::vector<float> out(static_cast<size_t>(kGroupOne * kDim)), mass(kGroupOne);
    std::vector<float> scratch(static_cast<size_t>(ctx));
    std::vector<uint8_t> mask(kKvHeads, 1);
    sparsity::Selection cpu_sel;
    int64_t cpu_widenings = 0;
    bool near_threshold = false;
    if (is_lychee) {  // layer 0: every head retrieval, reading everything, choosing the sets
      policy->Select(query, budgets, &cpu_sel);
      policy->AfterAttention(query, std::vector<float>(kGroupOne, 0.0f));
      query.layer = 1;
    }
    for (;;) {
      policy->Select(query, budgets, &cpu_sel);
      cpu::SparseDecodeAttentionParams sp;
      sp.q = q.data();
      sp.cache = cache.view;
      sp.block_table = cache.table.data();
      sp.selected = cpu_sel.blocks.data();
      sp.selected_offsets = cpu_sel.offsets.data();
      sp.out = out.data();
      sp.dropped_mass = mass.data();
      sp.scratch = scratch.data();
      sp.num_heads = kGroupOne;
      sp.num_table_blocks = n;
      sp.position = ctx - 1;
      sp.scale = query.scale;
      sp.kv_head_mask = mask.data();
      cpu::SparseDecodeAttention(sp);
      bool again = false;
      for (int64_t g = 0; g < kKvHeads; ++g) {
        if (mask[static_cast<size_t>(g)] != 0 && max_mass > 0.0) {
          near_threshold = near_threshold || std::fabs(mass[static_cast<size_t>(g)] - max_mass) <
                                                 1e-4 * std::max(1e-3, max_mass);
        }
        const bool widen =
            mass[static_cast<size_t>(g)] > max_mass && budgets[static_cast<size_t>(g)] < all_tokens;
        mask[static_cast<size_t>(g)] = widen ? 1 : 0;
        if (!widen) continue;
        budgets[static_cast<size_t>(g)] = std::min(all_tokens, 2 * budgets[static_cast<size_t>(g)]);
        ++cpu_widenings;
        again = true;
      }
      if (!again) break;
    }
    if (near_threshold) {
      ++ambiguous;
      continue;
    }

    // The GPU's loop as data: the box bounds a kv head ranks by (its one query head's).
    const std::vector<float> bounds = BoxBounds(query, cache, n);
    const sparsity::DeviceSelection device = policy->device_selection();
    const cuda::SelectSeqRule rule = SeqRuleFor(device, budget, bs, max_mass);
    const int64_t rounds = cuda::WideningRounds(n, bs, rule.budget_tokens);
    int64_t gpu_widenings = 0;
    for (int64_t g = 0; g < kKvHeads; ++g) {
      const std::vector<float> kv_bounds(bounds.begin() + g * n, bounds.begin() + (g + 1) * n);
      // LycheeDecode: the exact scores of the head's (group-mean) query rank its own choice; a
      // retrieval head reads everything, a sparse head its inherited set (layer 0's choice).
      std::vector<float> exact(static_cast<size_t>(n));
      std::vector<int32_t> inherited;
      const cuda::SelectRowMode mode =
          is_lychee && max_mass <= 0.0 ? cuda::SelectRowMode::kAll : RowModeFor(device, 1, g);
      if (is_lychee) {
        std::vector<float> qbar(kDim);
        sparsity::GroupMeanQuery(query, g, qbar.data());
        sparsity::ExactBlockScores(query, g, qbar.data(), exact.data());
        inherited = RuleSet(rule, exact);
      }
      int32_t tokens = rule.budget_tokens;
      std::vector<int32_t> set;
      for (int64_t round = 0;; ++round) {
        cuda::SelectSeqRule r = rule;
        r.budget_blocks = static_cast<int32_t>(tokens / bs);
        if (mode == cuda::SelectRowMode::kAll || mode == cuda::SelectRowMode::kExactTopK) {
          set.resize(static_cast<size_t>(n));
          std::iota(set.begin(), set.end(), 0);
        } else if (mode == cuda::SelectRowMode::kInherit) {
          set = inherited;
          if (round > 0) {
            const std::vector<int32_t> own = RuleSet(r, exact);
            set.clear();
            std::set_union(inherited.begin(), inherited.end(), own.begin(), own.end(),
                           std::back_inserter(set));
          }
        } else {
          set = RuleSet(r, is_quest ? kv_bounds : std::vector<float>(kv_bounds.size(), 0.0f));
        }
        // What the device computes: the LSE of the read keys, the bound of the unread blocks.
        std::vector<uint8_t> read(static_cast<size_t>(n), 0);
        double lse_max = -INFINITY, unread_max = -INFINITY;
        std::vector<double> scores;
        for (const int32_t b : set) {
          read[static_cast<size_t>(b)] = 1;
          const float* k = cache.view.K(cache.table[static_cast<size_t>(b)], g);
          for (int64_t t = 0; t < std::min(bs, ctx - b * bs); ++t) {
            double dot = 0.0;
            for (int64_t e = 0; e < kDim; ++e) dot += double{q[g * kDim + e]} * k[t * kDim + e];
            scores.push_back(dot * query.scale);
            lse_max = std::max(lse_max, scores.back());
          }
        }
        for (int64_t b = 0; b < n; ++b) {
          if (read[static_cast<size_t>(b)] == 0)
            unread_max = std::max(unread_max, double{kv_bounds[b]});
        }
        double read_sum = 0.0, unread_sum = 0.0;
        for (const double v : scores) read_sum += std::exp(v - lse_max);
        for (int64_t b = 0; b < n && unread_max != -INFINITY; ++b) {
          if (read[static_cast<size_t>(b)] != 0) continue;
          unread_sum += std::min(bs, ctx - b * bs) * std::exp(kv_bounds[b] - unread_max);
        }
        const float lse = static_cast<float>(lse_max + std::log(read_sum));
        const float log_unread = unread_max == -INFINITY
                                     ? -INFINITY
                                     : static_cast<float>(unread_max + std::log(unread_sum));
        int64_t doubled = tokens;
        if (!cuda::WidenRow(static_cast<float>(max_mass), &lse, 1, log_unread, &doubled)) break;
        ASSERT_LT(round, rounds) << "kv head " << g << ": the planned rounds do not suffice";
        tokens = static_cast<int32_t>(doubled);
        ++gpu_widenings;
      }
      ASSERT_EQ(set, HeadSet(cpu_sel, g)) << "kv head " << g;
    }
    EXPECT_EQ(gpu_widenings, cpu_widenings);
    ++trials;
    widened += cpu_widenings > 0;
    lychee_widened += is_lychee && cpu_widenings > 0;
  }
  EXPECT_GT(trials, 200);
  EXPECT_GT(widened, 50);
  EXPECT_GT(lychee_widened, 10);
  std::printf("%lld trials compared (%lld widened), %lld left out near the threshold\n",
              static_cast<long long>(trials), static_cast<long long>(widened),
              static_cast<long long>(ambiguous));
  EXPECT_EQ(cuda::WideningRounds(100, 16, 16 * 100), 0);
  EXPECT_EQ(cuda::WideningRounds(100, 16, 16 * 99), 1);
  EXPECT_EQ(cuda::WideningRounds(8192, 16, 2048), 6);
  EXPECT_EQ(cuda::WideningRounds(3, 16, 8), 3);  // 8 and 16 tokens are one block, 32 two, 64 four
  sparsity::QuestPolicy zero({2048, 0.0}, 16);
  const cuda::SelectSeqRule all = SeqRuleFor(zero.device_selection(), 2048, 16, 0.0);
  EXPECT_EQ(cuda::WideningRounds(51200, 16, all.budget_tokens), 0);  // reads everything at once
}

// PrHS under max_dropped_mass as the GPU runs it (GrowPrhsToBound, read as
// tests/unit/kernels/prhs_grow_reference.h) against PrhsPolicy::Select's GrowToBound: with one
// query head per kv head and no ball summaries the two bounds are the same quantity (the kv
// head's upper bound is its one head's, the lower bound the box's), so from the same first set
// (the policy's choice without the bound) and the same bounds (cpu::BlockScoreBounds) they must
// grow to the same set, and give up (read everything) on the same heads.
TEST(CudaSparseRulesTest, PrhsControlAsTheGpuRunsItMatchesTheCpuPolicy) {
  const uint64_t seed = ::lychee::testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> ctx_dist(1, 2500), budget_dist(1, 400), sink_dist(0, 40);
  std::uniform_real_distribution<float> qd(-3.0f, 3.0f);
  const double masses[] = {1e-3, 0.02, 0.1, 0.3, 0.7, 0.95};
  constexpr int64_t kGroupOne = kKvHeads;  // query heads: one per kv head
  int64_t heads = 0, grown = 0, fell_back = 0, met = 0, ambiguous = 0;
  for (int trial = 0; trial < 240; ++trial) {
    Trial trial_data;
    MakeTrial(rng, trial, ctx_dist, qd, kGroupOne, &trial_data);
    const int64_t bs = trial_data.bs, ctx = trial_data.ctx, n = trial_data.n;
    const RandomCache& cache = trial_data.cache;
    const std::vector<float>& q = trial_data.q;
    // Every fourth trial reads most of its context from the start under a loose bound, so that
    // some meet it at once.
    const bool most = trial % 4 == 3;
    const int64_t budget = most ? std::max<int64_t>(1, ctx * 9 / 10) : budget_dist(rng);
    const double max_mass = most ? 0.999999 : masses[trial % 6];
    PrhsKnobs knobs;
    knobs.sink_tokens = sink_dist(rng);
    knobs.local_tokens = sink_dist(rng);
    knobs.dilation = trial % 3;
    SCOPED_TRACE("trial " + std::to_string(trial) + ": context " + std::to_string(ctx) + " block " +
                 std::to_string(bs) + " budget " + std::to_string(budget) + " max_dropped_mass " +
                 std::to_string(max_mass));
    sparsity::DecodeQuery query = MakeQuery(q, cache, ctx, kGroupOne);
    const std::vector<int64_t> budgets(kKvHeads, budget);
    sparsity::PrhsPolicy plain({budget, 1.0}, knobs), bounded({budget, max_mass}, knobs);
    sparsity::Selection first, got;
    plain.Select(query, budgets, &first);
    bounded.Select(query, budgets, &got);
    bounded.AfterAttention(query, std::vector<float>(kGroupOne, 0.0f));
    std::vector<float> lower;
    const std::vector<float> upper = BoxBounds(query, cache, n, &lower);
    const int64_t budget_blocks = std::max<int64_t>(1, budget / bs);
    int64_t fallbacks = 0;
    for (int64_t g = 0; g < kKvHeads; ++g) {
      const std::vector<int32_t> want_first = HeadSet(first, g), cpu_set = HeadSet(got, g);
      if (budget_blocks >= n) {  // reads everything: no control on either backend
        ASSERT_EQ(cpu_set, want_first);
        continue;
      }
      std::vector<uint8_t> read(static_cast<size_t>(n), 0);
      for (const int32_t b : want_first) read[static_cast<size_t>(b)] = 1;
      const cuda::PrhsGrowOutcome gpu =
          cuda::PrhsGrowReference(read, upper.data() + g * n, lower.data() + g * n, n, 1, bs, ctx,
                                  max_mass, 4 * budget_blocks);
      if (gpu.margin < 1e-9) {
        ++ambiguous;
        continue;
      }
      std::vector<int32_t> gpu_set;
      for (int64_t b = 0; b < n; ++b) {
        if (gpu.read[static_cast<size_t>(b)] != 0) gpu_set.push_back(static_cast<int32_t>(b));
      }
      ASSERT_EQ(gpu_set, cpu_set) << "kv head " << g;
      fallbacks += gpu.fallback;
      ++heads;
      fell_back += gpu.fallback;
      grown += !gpu.fallback && gpu_set.size() > want_first.size();
      met += gpu_set.size() == want_first.size();
    }
    if (ambiguous == 0) {
      EXPECT_EQ(bounded.counters().dense_fallbacks, fallbacks);
    }
  }
  std::printf(
      "%lld prhs heads compared: %lld met at once, %lld grew, %lld fell back, %lld too "
      "close to call\n",
      static_cast<long long>(heads), static_cast<long long>(met), static_cast<long long>(grown),
      static_cast<long long>(fell_back), static_cast<long long>(ambiguous));
  EXPECT_GT(met, 0);
  EXPECT_GT(grown, 0);
  EXPECT_GT(fell_back, 0);
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
  spec.max_dropped_mass = 0.05;  // widened on the GPU (prhs: grown in advance)
  for (const char* name : {"quest", "streaming", "lychee", "prhs"}) {
    spec.name = name;
    EXPECT_TRUE(CudaSparsePolicySupport(spec).ok()) << name;
  }
}

}  // namespace
}  // namespace lychee
