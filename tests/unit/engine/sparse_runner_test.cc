// SPDX-License-Identifier: Apache-2.0
// CpuModelRunner's sparse decode on the embedded stories260K model (5 layers, 8 query / 4 kv
// heads) with the real policies (sparsity/policy_factory): budgets widen per kv head (only the
// heads whose certified bound misses max_dropped_mass, and each bound then meets it);
// SparseChunkStats add up; an audited step reports an exact dropped mass below its certified
// bound and the same logits as unaudited; a one-token chunk that is not a decode step runs
// dense; token-level (LycheeDecode token mode) selections of every position are dense bit for
// bit. Random prompts from a fresh seed (LYCHEE_TEST_SEED replays).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/cpu_model_runner.h"
#include "model/safetensors.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy_factory.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr char kModelDir[] = "models/stories260K";
constexpr int64_t kBlock = 8;

// Forwards to a real policy and records the budgets of every Select call.
class RecordingPolicy final : public sparsity::Policy {
 public:
  explicit RecordingPolicy(std::unique_ptr<sparsity::Policy> inner)
      : Policy(inner->limits()), inner_(std::move(inner)) {}
  std::string_view name() const override { return inner_->name(); }
  void Select(const sparsity::DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
              sparsity::Selection* selection) override {
    calls.push_back({query.layer, query.num_blocks() * query.cache.block_size,
                     std::vector<int64_t>(budget_tokens.begin(), budget_tokens.end())});
    inner_->Select(query, budget_tokens, selection);
  }
  void AfterAttention(const sparsity::DecodeQuery& query,
                      absl::Span<const float> head_dropped_mass) override {
    final_bounds.push_back(
        {query.layer, query.num_blocks() * query.cache.block_size,
         std::vector<float>(head_dropped_mass.begin(), head_dropped_mass.end())});
    inner_->AfterAttention(query, head_dropped_mass);
  }
  sparsity::PolicyCounters counters() const override { return inner_->counters(); }

  struct Call {
    int64_t layer, all_tokens;
    std::vector<int64_t> budgets;
  };
  struct Final {
    int64_t layer, all_tokens;
    std::vector<float> bounds;  // per query head
  };
  std::vector<Call> calls;
  std::vector<Final> final_bounds;

 private:
  std::unique_ptr<sparsity::Policy> inner_;
};

// Budget doublings between consecutive Select calls of the same layer (the runner's widenings).
int64_t CountDoublings(const std::vector<RecordingPolicy::Call>& calls) {
  int64_t n = 0;
  for (size_t i = 1; i < calls.size(); ++i) {
    if (calls[i].layer != calls[i - 1].layer) continue;
    for (size_t g = 0; g < calls[i].budgets.size(); ++g) {
      n += calls[i].budgets[g] != calls[i - 1].budgets[g];
    }
  }
  return n;
}

class SparseRunnerTest : public ::testing::Test {
 protected:
  SparseRunnerTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}

  void SetUp() override {
    RecordProperty("seed", std::to_string(seed_));
    auto config = LoadModelConfig(kModelDir);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    auto archive = SafetensorsArchive::Open(kModelDir);
    ASSERT_TRUE(archive.ok()) << archive.status();
    auto weights = LoadModelWeights(*archive, config_);
    ASSERT_TRUE(weights.ok()) << weights.status();
    pool_ = std::make_unique<KvPool>(KvCacheShapeFor(config_, kBlock), 160);
    CpuModelRunnerOptions options;
    options.max_num_batched_tokens = 512;
    options.max_num_seqs = 8;
    // Dense chunks on the reference kernel (PagedAttention), whose scores the sparse kernel
    // shares bit for bit: "a selection of every position is dense" is checked exactly.
    // FlashAttention agrees with it to fp32 rounding only (cpu_flash_attention_test).
    options.reference_attention = true;
    auto runner = CpuModelRunner::Create(config_, std::move(*weights), pool_.get(), options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
    context_.block_size = kBlock;
    context_.num_layers = config_.num_layers;
    context_.num_kv_heads = config_.num_kv_heads;
  }

  std::string Seed() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }

  // A sequence with its own blocks (shuffled) and tokens; Prefill computes its prompt densely.
  struct Seq {
    SeqId id = 0;
    std::vector<int32_t> tokens;
    std::vector<int32_t> table;
  };
  Seq MakeSeq(SeqId id, int64_t prompt_len, int64_t max_len, int32_t first_block) {
    Seq s;
    s.id = id;
    std::uniform_int_distribution<int32_t> tok(3, static_cast<int32_t>(config_.vocab_size) - 1);
    s.tokens.push_back(1);
    for (int64_t i = 1; i < prompt_len; ++i) s.tokens.push_back(tok(rng_));
    const int32_t blocks = static_cast<int32_t>((max_len + kBlock - 1) / kBlock);
    s.table.resize(static_cast<size_t>(blocks));
    std::iota(s.table.begin(), s.table.end(), first_block);
    std::shuffle(s.table.begin(), s.table.end(), rng_);
    s.tokens.reserve(static_cast<size_t>(max_len));
    return s;
  }
  ScheduledChunk Chunk(const Seq& s, int64_t start, int64_t n, bool is_decode) {
    ScheduledChunk c;
    c.seq_id = s.id;
    c.token_ids =
        absl::MakeConstSpan(s.tokens).subspan(static_cast<size_t>(start), static_cast<size_t>(n));
    c.start_position = start;
    c.block_table = s.table;
    c.needs_logits = true;
    c.is_decode = is_decode;
    return c;
  }
  // On the fixture's runner unless another is given.
  void Prefill(const Seq& s, CpuModelRunner* runner = nullptr) {
    if (runner == nullptr) runner = runner_.get();
    SchedulerOutput step;
    step.chunks.push_back(Chunk(s, 0, static_cast<int64_t>(s.tokens.size()), false));
    ASSERT_TRUE(runner->Execute(step).ok());
  }
  // One decode step of `s` (its last token) through `policy`; returns the logits and stats.
  std::pair<std::vector<float>, SparseChunkStats> Decode(Seq& s, sparsity::Policy* policy,
                                                         bool audit = false,
                                                         CpuModelRunner* runner = nullptr) {
    if (runner == nullptr) runner = runner_.get();
    SchedulerOutput step;
    step.chunks.push_back(Chunk(s, static_cast<int64_t>(s.tokens.size()) - 1, 1, true));
    step.chunks.back().audit = audit;
    sparsity::Policy* const policies[] = {policy};
    auto logits =
        runner->Execute(step, policy != nullptr ? absl::Span<sparsity::Policy* const>(policies)
                                                : absl::Span<sparsity::Policy* const>());
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    return {std::vector<float>(logits->begin(), logits->end()), runner->sparse_stats()[0]};
  }
  static int32_t Argmax(const std::vector<float>& v) {
    return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
  }
  std::unique_ptr<sparsity::Policy> Make(const PolicySpec& spec) {
    auto policy = sparsity::MakePolicy(spec, context_);
    EXPECT_TRUE(policy.ok()) << policy.status();
    return policy.ok() ? std::move(*policy) : nullptr;
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  ModelConfig config_;
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<CpuModelRunner> runner_;
  sparsity::PolicyContext context_;
};

// A bf16 pool runs every policy (the sparse kernels widen bf16 rows exactly, the summaries
// bound the rounded keys): audited steps report an exact dropped mass at or below the certified
// bound, sparse steps read fewer keys, and a selection of every block equals dense attention
// over the same bf16 pages bit for bit.
TEST_F(SparseRunnerTest, Bf16PoolRunsEveryPolicyWithCertifiedBounds) {
  SCOPED_TRACE(Seed());
  KvCacheShape shape = pool_->shape();
  shape.dtype = KvDtype::kBf16;
  KvPool pool(shape, pool_->num_blocks());
  auto archive = SafetensorsArchive::Open(kModelDir);
  ASSERT_TRUE(archive.ok()) << archive.status();
  auto weights = LoadModelWeights(*archive, config_);
  ASSERT_TRUE(weights.ok()) << weights.status();
  CpuModelRunnerOptions options;
  options.reference_attention = true;  // dense steps on PagedAttention, as the fixture's
  auto runner = CpuModelRunner::Create(config_, std::move(*weights), &pool, options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  auto roles = std::make_shared<sparsity::HeadRoles>(config_.num_layers, config_.num_kv_heads);
  roles->set_retrieval(0, 0, true);
  context_.head_roles = roles;

  Seq s = MakeSeq(1, 150, 230, 0);
  Prefill(s, runner->get());
  PolicySpec full;
  full.name = "quest";
  full.budget_tokens = 512;
  auto all = Make(full);
  for (const char* name : {"quest", "streaming", "prhs", "lychee"}) {
    SCOPED_TRACE(name);
    PolicySpec spec;
    spec.name = name;
    spec.budget_tokens = 4 * kBlock;
    if (spec.name == "prhs") spec.max_dropped_mass = 0.2;
    ASSERT_TRUE((*runner)->SupportsPolicy(spec).ok());
    auto policy = Make(spec);
    ASSERT_NE(policy, nullptr);
    for (int step = 0; step < 5; ++step) {
      auto [logits, st] = Decode(s, policy.get(), /*audit=*/true, runner->get());
      ASSERT_FALSE(logits.empty());
      ASSERT_GE(st.exact_max, 0.0f);
      EXPECT_LE(st.exact_max, st.max_bound) << "step " << step;
      if (spec.name == "prhs") {
        EXPECT_LE(st.max_bound, 0.2f) << "step " << step;  // widens up to reading everything
      } else {
        EXPECT_LT(st.kv_tokens_read, st.kv_tokens_dense) << "step " << step;
      }
      auto [dense, none] = Decode(s, nullptr, false, runner->get());
      auto [every, st_every] = Decode(s, all.get(), false, runner->get());
      EXPECT_EQ(every, dense) << "a selection of every block is dense attention";
      EXPECT_EQ(st_every.kv_tokens_read, st_every.kv_tokens_dense);
      s.tokens.push_back(Argmax(dense));
    }
  }
}

// Quest at 2 blocks with max_dropped_mass 0.02: the heads that miss it double their budget
// (alone), the others keep theirs; every final bound meets it or the head reads everything.
TEST_F(SparseRunnerTest, BudgetsWidenPerKvHeadUntilTheBoundHolds) {
  SCOPED_TRACE(Seed());
  PolicySpec spec;
  spec.name = "quest";
  spec.budget_tokens = 2 * kBlock;
  spec.max_dropped_mass = 0.02;
  RecordingPolicy policy(Make(spec));
  Seq s = MakeSeq(1, 200, 260, 0);
  Prefill(s);
  const int64_t kv_heads = config_.num_kv_heads;
  const int64_t group = config_.num_heads / kv_heads;
  int64_t widened_rounds = 0, partial_rounds = 0, widenings = 0;
  for (int step = 0; step < 40; ++step) {
    policy.calls.clear();
    policy.final_bounds.clear();
    auto [logits, st] = Decode(s, &policy);
    ASSERT_FALSE(logits.empty());
    // Consecutive calls of one layer: each head keeps its budget or doubles it (capped).
    for (size_t i = 1; i < policy.calls.size(); ++i) {
      const auto& prev = policy.calls[i - 1];
      const auto& cur = policy.calls[i];
      if (cur.layer != prev.layer) continue;
      int64_t doubled = 0;
      for (int64_t g = 0; g < kv_heads; ++g) {
        const int64_t a = prev.budgets[static_cast<size_t>(g)];
        const int64_t b = cur.budgets[static_cast<size_t>(g)];
        ASSERT_TRUE(b == a || b == std::min(2 * a, cur.all_tokens)) << a << " -> " << b;
        doubled += b != a;
      }
      ASSERT_GT(doubled, 0) << "a Select round without any widened head";
      widenings += doubled;
      ++widened_rounds;
      partial_rounds += doubled < kv_heads;
    }
    // Final per-head bounds meet max_dropped_mass unless that head reads everything, and a head
    // whose budget never changed met it at the first round.
    ASSERT_EQ(policy.final_bounds.size(), static_cast<size_t>(config_.num_layers));
    for (const auto& f : policy.final_bounds) {
      const RecordingPolicy::Call* last = nullptr;
      for (const auto& c : policy.calls) {
        if (c.layer == f.layer) last = &c;
      }
      ASSERT_NE(last, nullptr);
      for (int64_t h = 0; h < config_.num_heads; ++h) {
        const bool reads_all = last->budgets[static_cast<size_t>(h / group)] >= f.all_tokens;
        EXPECT_TRUE(f.bounds[static_cast<size_t>(h)] <= spec.max_dropped_mass || reads_all)
            << "layer " << f.layer << " head " << h << " bound "
            << f.bounds[static_cast<size_t>(h)];
      }
    }
    EXPECT_LE(st.max_bound, spec.max_dropped_mass);
    EXPECT_EQ(st.widenings, CountDoublings(policy.calls));
    s.tokens.push_back(Argmax(logits));
  }
  EXPECT_GT(widened_rounds, 0) << "max_dropped_mass 0.02 at 2 blocks never widened";
  EXPECT_GT(partial_rounds, 0) << "every widening widened every kv head";
  std::printf("[widening] %lld widened rounds, %lld of them partial, %lld head widenings\n",
              static_cast<long long>(widened_rounds), static_cast<long long>(partial_rounds),
              static_cast<long long>(widenings));
}

// The stats of a sparse step add up against the selections' real sizes.
TEST_F(SparseRunnerTest, ChunkStatsAddUp) {
  SCOPED_TRACE(Seed());
  for (const char* name : {"quest", "streaming", "prhs"}) {
    PolicySpec spec;
    spec.name = name;
    spec.budget_tokens = 4 * kBlock;
    spec.max_dropped_mass = 0.1;
    RecordingPolicy policy(Make(spec));
    Seq s = MakeSeq(1, 150, 200, 0);
    Seq dense = MakeSeq(2, 40, 60, 40);
    Prefill(s);
    Prefill(dense);
    for (int step = 0; step < 10; ++step) {
      policy.calls.clear();
      // A batch of the sparse decode and a dense decode.
      SchedulerOutput out;
      out.chunks.push_back(Chunk(s, static_cast<int64_t>(s.tokens.size()) - 1, 1, true));
      out.chunks.push_back(Chunk(dense, static_cast<int64_t>(dense.tokens.size()) - 1, 1, true));
      sparsity::Policy* const policies[] = {&policy, nullptr};
      auto logits = runner_->Execute(out, policies);
      ASSERT_TRUE(logits.ok()) << logits.status();
      const SparseChunkStats st = runner_->sparse_stats()[0];
      const SparseChunkStats none = runner_->sparse_stats()[1];
      const int64_t pos = static_cast<int64_t>(s.tokens.size()) - 1;
      const int64_t heads = config_.num_layers * config_.num_kv_heads;
      EXPECT_EQ(st.heads, heads) << name;
      EXPECT_EQ(st.kv_tokens_dense, heads * (pos + 1)) << name;
      EXPECT_GT(st.kv_tokens_read, 0) << name;
      EXPECT_LE(st.kv_tokens_read, st.kv_tokens_dense) << name;
      EXPECT_GE(st.max_bound, 0.0f);
      EXPECT_LE(st.max_bound, 1.0f);
      EXPECT_LE(st.sum_bound, static_cast<double>(heads) * st.max_bound + 1e-9);
      EXPECT_EQ(st.widenings, CountDoublings(policy.calls)) << name;
      EXPECT_GT(st.selection_seconds, 0.0);
      EXPECT_EQ(st.exact_max, -1.0f);
      EXPECT_EQ(none.max_bound, -1.0f);
      EXPECT_EQ(none.heads, 0);
      EXPECT_EQ(none.kv_tokens_read, 0);
      const int64_t v = config_.vocab_size;
      s.tokens.push_back(Argmax(std::vector<float>(logits->begin(), logits->begin() + v)));
      dense.tokens.push_back(
          Argmax(std::vector<float>(logits->begin() + v, logits->begin() + 2 * v)));
    }
  }
}

// An audit reports an exact dropped mass that the certified bound covers, and leaves the step's
// logits exactly as without it (quest is stateless, so the step can run twice).
TEST_F(SparseRunnerTest, AuditedStepsReportExactMassBelowTheBoundWithSparseOutput) {
  SCOPED_TRACE(Seed());
  PolicySpec spec;
  spec.name = "quest";
  spec.budget_tokens = 3 * kBlock;
  auto policy = Make(spec);
  Seq s = MakeSeq(1, 180, 230, 0);
  Prefill(s);
  int positive = 0;
  for (int step = 0; step < 20; ++step) {
    auto [plain, st_plain] = Decode(s, policy.get(), false);
    auto [audited, st] = Decode(s, policy.get(), true);
    ASSERT_EQ(plain, audited) << "an audit changed the output";
    EXPECT_EQ(st_plain.exact_max, -1.0f);
    ASSERT_GE(st.exact_max, 0.0f);
    EXPECT_LE(st.exact_max, st.max_bound) << "step " << step;
    EXPECT_EQ(st.max_bound, st_plain.max_bound);
    positive += st.exact_max > 1e-4f;
    s.tokens.push_back(Argmax(plain));
  }
  EXPECT_GT(positive, 0) << "3 of 23+ blocks never dropped measurable mass";
  // The same with PrHS (stateful: one run per step), whose accuracy control reads bounds too.
  PolicySpec prhs = spec;
  prhs.name = "prhs";
  prhs.max_dropped_mass = 0.2;
  auto p = Make(prhs);
  for (int step = 0; step < 10; ++step) {
    auto [logits, st] = Decode(s, p.get(), true);
    ASSERT_GE(st.exact_max, 0.0f);
    EXPECT_LE(st.exact_max, st.max_bound);
    EXPECT_LE(st.max_bound, 0.2f);
    s.tokens.push_back(Argmax(logits));
  }
}

// A one-token chunk that is not a decode step (the tail of a chunked prompt or recompute) runs
// dense even with a policy, and so does a decode step whose policy reads every block.
TEST_F(SparseRunnerTest, OnlyDecodeStepsRunSparse) {
  SCOPED_TRACE(Seed());
  PolicySpec spec;
  spec.name = "streaming";
  spec.budget_tokens = kBlock;
  auto policy = Make(spec);
  Seq s = MakeSeq(1, 120, 130, 0);
  SchedulerOutput head;
  head.chunks.push_back(Chunk(s, 0, 119, false));
  ASSERT_TRUE(runner_->Execute(head).ok());
  SchedulerOutput tail;
  tail.chunks.push_back(Chunk(s, 119, 1, false));  // the prompt's last token, one-token prefill
  sparsity::Policy* const policies[] = {policy.get()};
  auto with_policy = runner_->Execute(tail, policies);
  ASSERT_TRUE(with_policy.ok());
  const std::vector<float> a(with_policy->begin(), with_policy->end());
  EXPECT_EQ(runner_->sparse_stats()[0].max_bound, -1.0f);
  auto without = runner_->Execute(tail);
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(a, std::vector<float>(without->begin(), without->end()));
  // The same chunk as a decode step does run sparse (and drops something at one block).
  tail.chunks[0].is_decode = true;
  auto sparse = runner_->Execute(tail, policies);
  ASSERT_TRUE(sparse.ok());
  EXPECT_GT(runner_->sparse_stats()[0].max_bound, 0.0f);
  EXPECT_NE(a, std::vector<float>(sparse->begin(), sparse->end()));
  // A decode step must be one token.
  SchedulerOutput bad;
  bad.chunks.push_back(Chunk(s, 100, 2, true));
  EXPECT_EQ(runner_->Execute(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// LycheeDecode token mode: token-level selections; with a budget covering the context every
// position is read and the logits are dense bit for bit; with a small one each kv head reads
// exactly its budget of tokens.
TEST_F(SparseRunnerTest, TokenLevelSelectionsRunAndFullBudgetIsDense) {
  SCOPED_TRACE(Seed());
  auto roles = std::make_shared<sparsity::HeadRoles>(config_.num_layers, config_.num_kv_heads);
  roles->set_retrieval(2, 1, true);
  context_.head_roles = roles;
  PolicySpec spec;
  spec.name = "lychee";
  spec.lychee.mode = "token";
  spec.lychee.sink_tokens = 4;
  spec.lychee.local_tokens = 8;
  Seq s = MakeSeq(1, 150, 200, 0);
  Prefill(s);
  spec.budget_tokens = 512;
  auto full = Make(spec);
  spec.budget_tokens = 40;
  auto small = Make(spec);
  for (int step = 0; step < 8; ++step) {
    auto [dense, none] = Decode(s, nullptr);
    auto [all, st_all] = Decode(s, full.get());
    EXPECT_EQ(all, dense) << "every position read must be dense attention";
    EXPECT_EQ(st_all.max_bound, 0.0f);
    EXPECT_EQ(st_all.kv_tokens_read, st_all.kv_tokens_dense);
    auto [part, st] = Decode(s, small.get());
    // Retrieval heads read everything, sparse heads their inherited 40 positions.
    const int64_t pos = static_cast<int64_t>(s.tokens.size()) - 1;
    const int64_t retrieval = roles->num_retrieval();
    const int64_t sparse = config_.num_layers * config_.num_kv_heads - retrieval;
    EXPECT_EQ(st.kv_tokens_read, retrieval * (pos + 1) + sparse * 40);
    EXPECT_GT(st.max_bound, 0.0f);
    EXPECT_LE(st.max_bound, 1.0f);
    s.tokens.push_back(Argmax(dense));
  }
}

// LycheeDecode cache correction at the runner: after W sparse decode steps the K/V of those
// positions differs from a dense run's over the same tokens; the correction chunk (dense, W + 1
// tokens from the first sparse position) rewrites it to what the dense run computed, in every
// layer, and its logits are the dense step's.
TEST_F(SparseRunnerTest, CacheCorrectionRewritesTheDenseKv) {
  SCOPED_TRACE(Seed());
  auto roles = std::make_shared<sparsity::HeadRoles>(config_.num_layers, config_.num_kv_heads);
  context_.head_roles = roles;
  PolicySpec spec;
  spec.name = "lychee";
  spec.budget_tokens = 2 * kBlock;
  spec.lychee.sink_tokens = 0;
  spec.lychee.local_tokens = 1;
  spec.lychee.correction_interval = 6;
  auto policy = Make(spec);
  const int64_t prompt = 90, w = spec.lychee.correction_interval;
  Seq dense = MakeSeq(1, prompt, prompt + w + 1, 0);
  Seq sparse = MakeSeq(2, prompt, prompt + w + 1, 40);
  sparse.tokens = dense.tokens;  // same prompt
  std::uniform_int_distribution<int32_t> tok(3, static_cast<int32_t>(config_.vocab_size) - 1);
  std::vector<int32_t> forced(static_cast<size_t>(w + 1));
  for (int32_t& t : forced) t = tok(rng_);
  Prefill(dense);
  Prefill(sparse);
  std::vector<float> dense_last;
  for (int64_t i = 0; i <= w; ++i) {  // the dense run decodes all W + 1 tokens
    dense.tokens.push_back(forced[static_cast<size_t>(i)]);
    dense_last = Decode(dense, nullptr).first;
  }
  for (int64_t i = 0; i < w; ++i) {  // the sparse run decodes W of them through lychee
    sparse.tokens.push_back(forced[static_cast<size_t>(i)]);
    Decode(sparse, policy.get());
  }
  // Largest relative difference of K and V rows at positions [prompt, prompt + n), over layers
  // (layer 0's K/V depends on the tokens only, so the sparse effect shows from layer 1 on).
  const int64_t d = config_.head_dim;
  auto kv_diff = [&](int64_t n) {
    double worst = 0.0;
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const PagedKvView v = pool_->View(l);
      for (int64_t pos = prompt; pos < prompt + n; ++pos) {
        const int32_t ba = dense.table[static_cast<size_t>(pos / kBlock)];
        const int32_t bb = sparse.table[static_cast<size_t>(pos / kBlock)];
        for (int64_t h = 0; h < config_.num_kv_heads; ++h) {
          for (const bool values : {false, true}) {
            const float* a = (values ? v.V(ba, h) : v.K(ba, h)) + (pos % kBlock) * d;
            const float* b = (values ? v.V(bb, h) : v.K(bb, h)) + (pos % kBlock) * d;
            worst = std::max(worst, ::lychee::testing::RelativeL2(b, a, static_cast<size_t>(d)));
          }
        }
      }
    }
    return worst;
  };
  const double polluted = kv_diff(w);
  EXPECT_GT(polluted, 1e-3) << "sparse decoding at 2 blocks left the K/V dense: no test";
  // The correction chunk: dense over the W sparse positions and the new token.
  sparse.tokens.push_back(forced[static_cast<size_t>(w)]);
  SchedulerOutput step;
  step.chunks.push_back(Chunk(sparse, prompt, w + 1, /*is_decode=*/false));
  step.chunks.back().cache_correction = true;
  sparsity::Policy* const policies[] = {policy.get()};
  auto logits = runner_->Execute(step, policies);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(runner_->sparse_stats()[0].max_bound, -1.0f);  // it ran dense
  const double corrected = kv_diff(w + 1);
  EXPECT_LT(corrected, 1e-5) << "before the correction: " << polluted;
  EXPECT_LT(::lychee::testing::RelativeL2(logits->data(), dense_last.data(), dense_last.size()),
            1e-5);
  std::printf("[correction] K/V relative difference to dense: %.3g sparse, %.3g corrected\n",
              polluted, corrected);
}

}  // namespace
}  // namespace lychee
