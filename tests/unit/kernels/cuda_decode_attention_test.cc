// SPDX-License-Identifier: Apache-2.0
// Paged decode attention (kernels/cuda/decode_attention.h) against cpu::PagedAttention with one
// query per sequence: ragged batches (context lengths 0, 1, 17, 1000, 33000 in one launch), GQA
// groups 1 to 8 (7 runs the 8-wide kernel with an idle slot), head_dim 64/128, block_size
// 16/32/64, shuffled non-contiguous block tables, every pool slot that must not be read holding
// NaN, outputs poisoned before each launch, planned / forced single-split / many-split plans, and
// the LSE checked against a double-precision log-sum-exp. Plan and CanImplement tests are host
// logic and run without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_kv.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/runner_ops.h"
#include "kvcache/paged_kv_view.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;
using ::lychee::cuda::testing::RandomBf16Values;
using ::lychee::testing::RelativeL2;

DecodeAttentionShape LlamaShape(int64_t batch, int64_t max_context_len) {
  DecodeAttentionShape s;
  s.batch = batch;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  s.max_context_len = max_context_len;
  s.max_blocks_per_seq = (max_context_len + 15) / 16 + 1;
  return s;
}

// ---- Host logic (no GPU needed) ---------------------------------------------------------------

TEST(CudaDecodeAttentionPlanTest, CanImplementNamesWhatIsUnsupported) {
  EXPECT_TRUE(CanImplementDecodeAttention(LlamaShape(4, 4096)).ok());
  struct Bad {
    const char* what;
    void (*mutate)(DecodeAttentionShape&);
  };
  const Bad bad[] = {
      {"head_dim", [](DecodeAttentionShape& s) { s.head_dim = 96; }},
      {"head_dim", [](DecodeAttentionShape& s) { s.head_dim = 256; }},
      {"block_size", [](DecodeAttentionShape& s) { s.block_size = 8; }},
      {"group", [](DecodeAttentionShape& s) { s.num_kv_heads = 2; }},  // group 16
      {"multiple", [](DecodeAttentionShape& s) { s.num_kv_heads = 5; }},
      {"positive", [](DecodeAttentionShape& s) { s.batch = 0; }},
      {"exceeds the block table",
       [](DecodeAttentionShape& s) { s.max_context_len = s.max_blocks_per_seq * 16 + 1; }},
      {"grid", [](DecodeAttentionShape& s) { s.batch = 70000; }},
  };
  for (const Bad& b : bad) {
    DecodeAttentionShape s = LlamaShape(4, 4096);
    b.mutate(s);
    const absl::Status st = CanImplementDecodeAttention(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << b.what;
    EXPECT_NE(std::string(st.message()).find(b.what), std::string::npos) << st;
  }
  for (const int64_t kv : {1, 2, 4, 8, 16, 32}) {  // groups 32..1 with 32 heads
    DecodeAttentionShape s = LlamaShape(1, 100);
    s.num_kv_heads = kv;
    EXPECT_EQ(CanImplementDecodeAttention(s).ok(), 32 / kv <= 8) << "kv_heads " << kv;
  }
}

// Invariants every plan must satisfy, for random shapes and SM counts.
TEST(CudaDecodeAttentionPlanTest, PlansCoverTheContextInWholePages) {
  const uint64_t seed = ::lychee::testing::TestSeed();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> batch_dist(1, 256), ctx_dist(0, 200000);
  std::uniform_int_distribution<int> sms_dist(1, 160), bs_pick(0, 2), kv_pick(0, 3);
  for (int trial = 0; trial < 2000; ++trial) {
    DecodeAttentionShape s;
    s.batch = batch_dist(rng);
    s.num_kv_heads = int64_t{1} << kv_pick(rng);
    s.num_heads = s.num_kv_heads * 4;
    s.head_dim = 128;
    s.block_size = int64_t{16} << bs_pick(rng);
    s.max_context_len = trial % 7 == 0 ? ctx_dist(rng) % 40 : ctx_dist(rng);
    s.max_blocks_per_seq = (s.max_context_len + s.block_size - 1) / s.block_size + 1;
    const int sms = sms_dist(rng);
    SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed) + " trial " + std::to_string(trial));
    ASSERT_TRUE(CanImplementDecodeAttention(s).ok());
    const DecodeAttentionPlan plan = PlanDecodeAttention(s, sms);
    const DecodeAttentionPlanOptions defaults;
    ASSERT_GE(plan.num_splits, 1);
    ASSERT_LE(plan.num_splits, defaults.max_splits);
    ASSERT_GT(plan.chunk_tokens, 0);
    ASSERT_EQ(plan.chunk_tokens % s.block_size, 0);
    const int64_t ctx = std::max<int64_t>(1, s.max_context_len);
    // Every split starts inside the longest context and together they cover it.
    ASSERT_GE(int64_t{plan.num_splits} * plan.chunk_tokens, ctx);
    ASSERT_LT(int64_t{plan.num_splits - 1} * plan.chunk_tokens, ctx);
    if (plan.num_splits > 1) {
      // Splitting happens only when the batch alone does not fill two waves (of the plan's CTAs
      // per SM: 2 with 3 stages, 3 with 2), and never cuts chunks below the minimum; 2 stages
      // only for long splits.
      const int ctas_per_sm =
          plan.stages == 2 ? defaults.long_split_ctas_per_sm : defaults.ctas_per_sm;
      EXPECT_LT(s.batch * s.num_kv_heads, 2 * ctas_per_sm * sms);
      if (plan.stages == 2) {
        EXPECT_GE(plan.chunk_tokens, defaults.long_split_tokens);
      }
      EXPECT_GE(plan.chunk_tokens, defaults.min_chunk_tokens);
      EXPECT_EQ(DecodeAttentionWorkspaceBytes(s, plan),
                static_cast<size_t>(s.batch * s.num_heads * plan.num_splits) * (s.head_dim + 1) *
                    sizeof(float));
    } else {
      EXPECT_EQ(DecodeAttentionWorkspaceBytes(s, plan), 0u);
    }
  }
}

TEST(CudaDecodeAttentionPlanTest, LongSingleSequenceFillsTheGpu) {
  // Llama-3-8B, batch 1, 128K tokens, 132 SMs: 8 kv heads alone would use 8 of 132 SMs. Its
  // splits are long: 2 stages, 3 CTAs an SM.
  const DecodeAttentionPlan plan = PlanDecodeAttention(LlamaShape(1, 131072), 132);
  EXPECT_GE(plan.num_splits * 8, 132);
  EXPECT_LE(plan.num_splits * 8, 3 * 132 + 8);
  EXPECT_EQ(plan.stages, 2);
  // Batch 8 x 32K: 64 (sequence, kv head) pairs. With 3 stages (2 CTAs an SM, a wave of 264)
  // 4 splits fill one wave (97%); 5 would spill 56 CTAs into a second, mostly idle one. Its
  // splits are long, so it runs with 2 stages: 3 CTAs an SM, 6 splits (384 of 396).
  DecodeAttentionPlanOptions three_stages;
  three_stages.long_split_tokens = 0;
  const DecodeAttentionPlan fixed = PlanDecodeAttention(LlamaShape(8, 32768), 132, three_stages);
  EXPECT_EQ(fixed.num_splits, 4);
  EXPECT_EQ(fixed.stages, 3);
  const DecodeAttentionPlan long_splits = PlanDecodeAttention(LlamaShape(8, 32768), 132);
  EXPECT_EQ(long_splits.num_splits, 6);
  EXPECT_EQ(long_splits.stages, 2);
  // Short splits keep the third stage's prefetch: 1 x 4K, 1 x 32K, 32 x 4K.
  for (const auto& [batch, ctx] : {std::pair{1, 4096}, std::pair{1, 32768}, std::pair{32, 4096}}) {
    EXPECT_EQ(PlanDecodeAttention(LlamaShape(batch, ctx), 132).stages, 3) << batch << " x " << ctx;
  }
  // A batch that fills the GPU by itself is not split.
  EXPECT_EQ(PlanDecodeAttention(LlamaShape(64, 4096), 132).num_splits, 1);
  // Short contexts are not split below the minimum chunk.
  EXPECT_EQ(PlanDecodeAttention(LlamaShape(1, 200), 132).num_splits, 1);
  DecodeAttentionPlanOptions capped;
  capped.max_splits = 4;
  EXPECT_EQ(PlanDecodeAttention(LlamaShape(1, 131072), 132, capped).num_splits, 4);
  // The merge's fan-in comes from the options (default 16: two levels past 32 splits).
  EXPECT_EQ(PlanDecodeAttention(LlamaShape(1, 131072), 132).merge_fan_in, 16);
  DecodeAttentionPlanOptions one_level;
  one_level.merge_fan_in = 0;
  EXPECT_EQ(PlanDecodeAttention(LlamaShape(1, 131072), 132, one_level).merge_fan_in, 0);
}

// What a runner reserves covers every dense batch and, with row lists, every list length.
TEST(CudaDecodeAttentionPlanTest, MaxWorkspaceCoversBatchesAndRowLists) {
  const DecodeAttentionShape largest = LlamaShape(6, 131072);
  const size_t dense_only = DecodeAttentionMaxWorkspaceBytes(largest, 132, {}, false);
  const size_t with_lists = DecodeAttentionMaxWorkspaceBytes(largest, 132, {}, true);
  EXPECT_GE(with_lists, dense_only);
  for (int64_t b = 1; b <= largest.batch; ++b) {
    DecodeAttentionShape s = largest;
    s.batch = b;
    EXPECT_GE(dense_only, DecodeAttentionWorkspaceBytes(s, PlanDecodeAttention(s, 132)));
  }
  for (int64_t rows = 1; rows <= largest.batch * largest.num_kv_heads; ++rows) {
    DecodeAttentionShape alone = largest;
    alone.batch = rows;
    alone.num_heads = largest.num_heads / largest.num_kv_heads;
    alone.num_kv_heads = 1;
    EXPECT_GE(with_lists,
              DecodeAttentionWorkspaceBytesForRows(alone, PlanDecodeAttention(alone, 132), rows))
        << rows << " rows";
  }
  // One long row alone takes many more splits than a dense batch row would.
  DecodeAttentionShape one = largest;
  one.batch = 1;
  one.num_heads = 4;
  one.num_kv_heads = 1;
  EXPECT_GT(PlanDecodeAttention(one, 132).num_splits, PlanDecodeAttention(largest, 132).num_splits);
}

TEST(CudaDecodeAttentionPlanTest, CanRunChecksParamsAgainstThePlan) {
  const DecodeAttentionShape s = LlamaShape(2, 1000);
  DecodeAttentionParams p;
  p.shape = s;
  p.q = reinterpret_cast<const bf16*>(uintptr_t{4096});
  p.cache = PagedKvBf16{reinterpret_cast<bf16*>(uintptr_t{8192}), nullptr, 100, 8, 16, 128};
  p.block_tables = reinterpret_cast<const int32_t*>(uintptr_t{64});
  p.context_lens = reinterpret_cast<const int32_t*>(uintptr_t{128});
  p.out = reinterpret_cast<bf16*>(uintptr_t{16384});
  p.scale = 0.088f;
  DecodeAttentionPlan one{1, 1008};
  EXPECT_TRUE(CanRunDecodeAttention(p, one).ok()) << CanRunDecodeAttention(p, one);
  DecodeAttentionPlan split{4, 256};
  EXPECT_FALSE(CanRunDecodeAttention(p, split).ok());  // no workspace
  p.workspace = reinterpret_cast<void*>(uintptr_t{32768});
  EXPECT_FALSE(CanRunDecodeAttention(p, split).ok());  // no split counters
  p.split_counters = reinterpret_cast<int32_t*>(uintptr_t{65536});
  EXPECT_TRUE(CanRunDecodeAttention(p, split).ok());
  // Merge groups: one level (0), or fan-ins of at least 16 (the counters hold 63 groups a row).
  DecodeAttentionPlan fan_in = split;
  fan_in.merge_fan_in = 0;
  EXPECT_TRUE(CanRunDecodeAttention(p, fan_in).ok());
  fan_in.merge_fan_in = 8;
  EXPECT_THAT(CanRunDecodeAttention(p, fan_in).message(), ::testing::HasSubstr("merge_fan_in"));
  DecodeAttentionPlan five_stages = one;
  five_stages.stages = 5;
  EXPECT_FALSE(CanRunDecodeAttention(p, five_stages).ok());
  DecodeAttentionPlan tma = one;
  tma.loader = DecodeLoader::kTma;
  EXPECT_TRUE(CanRunDecodeAttention(p, tma).ok());
  tma.loader = static_cast<DecodeLoader>(7);
  EXPECT_FALSE(CanRunDecodeAttention(p, tma).ok());
  DecodeAttentionParams strided = p;
  strided.q_row_stride = 32 * 128 + 2 * 8 * 128;  // q inside a fused QKV row
  EXPECT_TRUE(CanRunDecodeAttention(strided, one).ok());
  strided.q_row_stride = 32 * 128 - 2;  // rows would overlap
  EXPECT_FALSE(CanRunDecodeAttention(strided, one).ok());
  EXPECT_FALSE(CanRunDecodeAttention(p, DecodeAttentionPlan{2, 100}).ok());  // not whole pages
  DecodeAttentionParams bad = p;
  bad.cache.block_size = 32;
  EXPECT_FALSE(CanRunDecodeAttention(bad, one).ok());
  bad = p;
  bad.q = reinterpret_cast<const bf16*>(uintptr_t{4098});
  EXPECT_FALSE(CanRunDecodeAttention(bad, one).ok());
  bad = p;
  bad.context_lens = nullptr;
  EXPECT_FALSE(CanRunDecodeAttention(bad, one).ok());
  // Block scores: 16-token blocks, the sequences' own tables, rows at least a table wide.
  DecodeAttentionParams scored = p;
  scored.maybe_block_scores = reinterpret_cast<float*>(uintptr_t{1 << 20});
  scored.block_scores_row_stride = s.max_blocks_per_seq;
  EXPECT_TRUE(CanRunDecodeAttention(scored, one).ok()) << CanRunDecodeAttention(scored, one);
  bad = scored;
  bad.block_scores_row_stride = s.max_blocks_per_seq - 1;
  EXPECT_FALSE(CanRunDecodeAttention(bad, one).ok());
  bad = scored;
  bad.per_kv_head_tables = true;  // positions would not be the sequence's blocks
  EXPECT_FALSE(CanRunDecodeAttention(bad, one).ok());
  bad = scored;
  bad.shape.block_size = bad.cache.block_size = 32;
  EXPECT_THAT(CanRunDecodeAttention(bad, DecodeAttentionPlan{1, 1024}).message(),
              ::testing::HasSubstr("block scores need block_size 16"));
  // A hybrid launch (flagged rows read the sequences' tables): both full arrays, per-kv-head
  // tables for the others and a row list; its flagged rows may write block scores.
  DecodeAttentionParams hybrid = scored;
  hybrid.per_kv_head_tables = true;
  hybrid.full_block_tables = reinterpret_cast<const int32_t*>(uintptr_t{1 << 21});
  hybrid.full_context_lens = reinterpret_cast<const int32_t*>(uintptr_t{1 << 22});
  hybrid.maybe_row_list = reinterpret_cast<const int32_t*>(uintptr_t{1 << 23});
  hybrid.row_list_len = s.batch * s.num_kv_heads;
  EXPECT_TRUE(CanRunDecodeAttention(hybrid, one).ok()) << CanRunDecodeAttention(hybrid, one);
  for (auto unset : {+[](DecodeAttentionParams& q) { q.full_context_lens = nullptr; },
                     +[](DecodeAttentionParams& q) { q.per_kv_head_tables = false; },
                     +[](DecodeAttentionParams& q) { q.maybe_row_list = nullptr; }}) {
    bad = hybrid;
    unset(bad);
    EXPECT_THAT(CanRunDecodeAttention(bad, one).message(), ::testing::HasSubstr("hybrid launch"));
  }
  // The launcher validates before it touches the device.
  EXPECT_EQ(DecodeAttention(bad, one, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// ---- Against the CPU reference (GPU) ----------------------------------------------------------

struct AttnCase {
  int64_t num_heads, num_kv_heads, head_dim, block_size;
};

// kManySplitsOneLevel: kManySplits merged by one CTA per row (merge_fan_in 0) rather than in two
// levels.
enum class PlanKind { kPlanned, kSingleSplit, kManySplits, kManySplitsOneLevel, kUnderestimated };

const char* PlanName(PlanKind k) {
  switch (k) {
    case PlanKind::kPlanned:
      return "planned";
    case PlanKind::kSingleSplit:
      return "single-split";
    case PlanKind::kManySplits:
      return "many-splits";
    case PlanKind::kManySplitsOneLevel:
      return "many-splits-one-level-merge";
    case PlanKind::kUnderestimated:
      return "max_context_len-underestimated";
  }
  return "?";
}

// Sequence b's block scores against double: for each block the row reads, the max over its keys
// of the group-mean query's dot product (unscaled); past the row's blocks, and for rows the launch
// did not compute, the poison (NaN) is still there.
void ExpectBlockScores(const std::vector<float>& q, const PagedKvView& view,
                       const std::vector<int32_t>& tables, int64_t max_blocks, int64_t b,
                       int64_t ctx, const std::vector<uint8_t>& in_list, int64_t h, int64_t kvh,
                       const std::vector<float>& scores, int64_t stride) {
  const int64_t d = view.head_dim, bs = view.block_size, group = h / kvh;
  const int64_t n = (ctx + bs - 1) / bs;
  for (int64_t g = 0; g < kvh; ++g) {
    const float* row = scores.data() + (b * kvh + g) * stride;
    const bool listed = in_list[b * kvh + g] != 0;
    for (int64_t blk = 0; blk < stride; ++blk) {
      if (!listed || blk >= n) {
        ASSERT_TRUE(std::isnan(row[blk])) << "kv head " << g << " block " << blk << " written";
        continue;
      }
      double want = -INFINITY, magnitude = 0.0;
      for (int64_t pos = blk * bs; pos < std::min(ctx, (blk + 1) * bs); ++pos) {
        const float* k = view.K(tables[b * max_blocks + blk], g) + (pos % bs) * d;
        double dot = 0.0;
        for (int64_t e = 0; e < d; ++e) {
          double qbar = 0.0;
          for (int64_t i = 0; i < group; ++i) qbar += q[(b * h + g * group + i) * d + e];
          dot += qbar / static_cast<double>(group) * k[e];
          magnitude += std::fabs(qbar / static_cast<double>(group) * k[e]);
        }
        want = std::max(want, dot);
      }
      // fp32 sums of bf16 products: a few ulps of the sum of magnitudes.
      ASSERT_NEAR(row[blk], want, 1e-5 * magnitude + 1e-6)
          << "kv head " << g << " block " << blk << " of " << n;
    }
  }
}

// The natural-log LSE of query head `head` (of `h`, GQA group `group`) of sequence b over the first
// `len` tokens of `table`, in double: log Σ_j exp(scale · q·k_j).
double ReferenceLse(const std::vector<float>& q, const PagedKvView& view, const int32_t* table,
                    int64_t len, int64_t b, int64_t head, int64_t h, int64_t group, float scale) {
  const int64_t d = view.head_dim, bs = view.block_size, g = head / group;
  const float* qh = q.data() + (b * h + head) * d;
  std::vector<double> sc(static_cast<size_t>(len));
  double mx = -INFINITY;
  for (int64_t pos = 0; pos < len; ++pos) {
    const float* k = view.K(table[pos / bs], g) + (pos % bs) * d;
    double dot = 0.0;
    for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(qh[e]) * k[e];
    sc[static_cast<size_t>(pos)] = dot * scale;
    mx = std::max(mx, sc[static_cast<size_t>(pos)]);
  }
  double sum = 0.0;
  for (double v : sc) sum += std::exp(v - mx);
  return mx + std::log(sum);
}

// Shuffled pages for `contexts` (tables max_blocks wide, -1 past each sequence) and a pool that
// is NaN everywhere but in the slots the sequences hold, random bf16 there, so a stray read
// shows up as NaN in the output. `spare` more blocks than needed.
struct RandomPagedPool {
  int64_t num_blocks = 0;
  std::vector<int32_t> tables;
  std::vector<float> pool;
};
RandomPagedPool MakeRandomPagedPool(const std::vector<int64_t>& contexts, int64_t max_blocks,
                                    const PagedKvBf16& shape, int64_t spare, std::mt19937_64& rng) {
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t bs = shape.block_size, d = shape.head_dim;
  RandomPagedPool r;
  int64_t total_pages = 0;
  for (int64_t ctx : contexts) total_pages += (ctx + bs - 1) / bs;
  r.num_blocks = total_pages + spare;
  std::vector<int32_t> perm(r.num_blocks);
  for (int64_t i = 0; i < r.num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  r.tables.assign(batch * max_blocks, -1);  // -1: never read
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t page = 0; page < (contexts[b] + bs - 1) / bs; ++page) {
      r.tables[b * max_blocks + page] = perm[next++];
    }
  }
  PagedKvBf16 sized = shape;
  sized.num_blocks = r.num_blocks;
  r.pool.assign(r.num_blocks * sized.block_stride(), std::numeric_limits<float>::quiet_NaN());
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t pos = 0; pos < contexts[b]; ++pos) {
      const int64_t block = r.tables[b * max_blocks + pos / bs];
      for (int64_t half = 0; half < 2; ++half) {
        for (int64_t g = 0; g < shape.num_kv_heads; ++g) {
          float* row = r.pool.data() + block * sized.block_stride() + half * sized.kv_stride() +
                       g * sized.head_stride() + (pos % bs) * d;
          for (int64_t e = 0; e < d; ++e) row[e] = RoundToBf16(uni(rng));
        }
      }
    }
  }
  return r;
}

class CudaDecodeAttentionTest : public CudaKernelTest {
 protected:
  // graph: capture the launch into a CUDA graph while the device holds other context lengths,
  // then store the real ones and replay: the plan and the launch must not depend on them.
  // listed: a random half of the (sequence, kv head) rows, in random order, as a row list
  // planned alone (many splits for few rows); the other rows must stay untouched.
  void RunCase(const AttnCase& c, const std::vector<int64_t>& contexts, PlanKind plan_kind,
               bool graph = false, int stages = 3, bool listed = false);
  DecodeLoader loader_ = DecodeLoader::kTma;  // the plans' loader (the default)
};

void CudaDecodeAttentionTest::RunCase(const AttnCase& c, const std::vector<int64_t>& contexts,
                                      PlanKind plan_kind, bool graph, int stages, bool listed) {
  SCOPED_TRACE(SeedNote() + " heads=" + std::to_string(c.num_heads) + "/" +
               std::to_string(c.num_kv_heads) + " d=" + std::to_string(c.head_dim) +
               " bs=" + std::to_string(c.block_size) + " plan=" + PlanName(plan_kind) +
               " stages=" + std::to_string(stages) + (graph ? " graph" : "") +
               (listed ? " row-list" : "") + (loader_ == DecodeLoader::kTma ? " tma" : ""));
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = (max_ctx + bs - 1) / bs + 2;  // wider than needed: padding columns

  // Physical blocks: a random permutation over all sequences' pages plus spare blocks; the pool
  // NaN but in the slots the sequences hold.
  RandomPagedPool paged = MakeRandomPagedPool(
      contexts, max_blocks, PagedKvBf16{nullptr, nullptr, 0, kvh, bs, d}, 5, rng_);
  const int64_t num_blocks = paged.num_blocks;
  const std::vector<int32_t>& tables = paged.tables;
  std::vector<float>& pool = paged.pool;
  PagedKvBf16 shape{nullptr, nullptr, num_blocks, kvh, bs, d};
  // Queries spread enough that softmax is far from uniform; in the longest sequence one key
  // per kv head is planted along its first query head to make a sharp peak mid-context.
  std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
  const int64_t group = h / kvh;
  for (int64_t b = 0; b < batch; ++b) {
    if (contexts[b] < 3000) continue;
    const int64_t pos = contexts[b] * 2 / 3;
    const int64_t block = tables[b * max_blocks + pos / bs];
    for (int64_t g = 0; g < kvh; ++g) {
      float* key =
          pool.data() + block * shape.block_stride() + g * shape.head_stride() + (pos % bs) * d;
      for (int64_t e = 0; e < d; ++e) key[e] = RoundToBf16(q[(b * h + g * group) * d + e] * 2.0f);
    }
  }

  // Plan.
  DecodeAttentionShape s;
  s.batch = batch;
  s.num_heads = h;
  s.num_kv_heads = kvh;
  s.head_dim = d;
  s.block_size = bs;
  s.max_blocks_per_seq = max_blocks;
  s.max_context_len = max_ctx;
  LY_ASSERT_OK(CanImplementDecodeAttention(s));
  const int sms = ::lychee::cuda::testing::NumSms();
  DecodeAttentionPlan plan;
  switch (plan_kind) {
    case PlanKind::kPlanned:
      plan = PlanDecodeAttention(s, sms);
      break;
    case PlanKind::kSingleSplit:
      plan = DecodeAttentionPlan{1, static_cast<int>(((max_ctx + bs - 1) / bs) * bs)};
      plan.chunk_tokens = std::max<int>(plan.chunk_tokens, static_cast<int>(bs));
      break;
    case PlanKind::kManySplits:
    case PlanKind::kManySplitsOneLevel: {
      DecodeAttentionPlanOptions o;
      o.min_chunk_tokens = 1;  // as many splits as max_splits allows, some one page long
      o.ctas_per_sm = 64;
      o.max_splits = 1000;
      if (plan_kind == PlanKind::kManySplitsOneLevel) o.merge_fan_in = 0;
      plan = PlanDecodeAttention(s, sms, o);
      break;
    }
    case PlanKind::kUnderestimated: {
      DecodeAttentionShape small = s;
      small.max_context_len = std::min<int64_t>(max_ctx, 300);  // the last split takes the rest
      plan = PlanDecodeAttention(small, sms);
      break;
    }
  }
  // The row list: a random half of the rows, shuffled, planned as a batch of its own.
  std::vector<int32_t> row_list;
  std::vector<uint8_t> in_list(batch * kvh, 1);
  if (listed) {
    for (int64_t r = 0; r < batch * kvh; ++r) row_list.push_back(static_cast<int32_t>(r));
    std::shuffle(row_list.begin(), row_list.end(), rng_);
    row_list.resize(std::max<size_t>(1, row_list.size() / 2));
    std::fill(in_list.begin(), in_list.end(), 0);
    for (int32_t r : row_list) in_list[r] = 1;
    DecodeAttentionShape alone = s;
    alone.batch = static_cast<int64_t>(row_list.size());
    alone.num_heads = h / kvh;
    alone.num_kv_heads = 1;
    plan = PlanDecodeAttention(alone, sms);
  }
  plan.stages = stages;
  plan.loader = loader_;
  std::printf("  %s: %d splits of %d tokens, %d stages, %s\n", PlanName(plan_kind), plan.num_splits,
              plan.chunk_tokens, plan.stages, loader_ == DecodeLoader::kTma ? "tma" : "cp.async");

  std::vector<int32_t> lens(contexts.begin(), contexts.end());
  DeviceBuffer<bf16> d_q, d_pool, d_out;
  DeviceBuffer<int32_t> d_tables, d_lens;
  DeviceBuffer<float> d_lse;
  DeviceBuffer<uint8_t> d_ws;
  LY_ASSERT_OK(d_q.Upload(ToBf16(q)));
  LY_ASSERT_OK(d_pool.Upload(ToBf16(pool)));
  LY_ASSERT_OK(d_tables.Upload(tables));
  LY_ASSERT_OK(d_lens.Upload(lens));
  LY_ASSERT_OK(d_out.Allocate(batch * h * d));
  LY_ASSERT_OK(d_out.FillBytes(0xff));
  LY_ASSERT_OK(d_lse.Allocate(batch * h));
  LY_ASSERT_OK(d_lse.FillBytes(0xff));
  const size_t ws_bytes =
      listed ? DecodeAttentionWorkspaceBytesForRows(s, plan, static_cast<int64_t>(row_list.size()))
             : DecodeAttentionWorkspaceBytes(s, plan);
  DeviceBuffer<int32_t> d_list;
  if (listed) LY_ASSERT_OK(d_list.Upload(row_list));
  LY_ASSERT_OK(d_ws.Allocate(ws_bytes));
  LY_ASSERT_OK(d_ws.FillBytes(0xff));
  DeviceBuffer<int32_t> d_counters;  // zeroed once, as the contract asks
  LY_ASSERT_OK(d_counters.Allocate(batch * kvh * kDecodeSplitCountersPerRow));
  LY_ASSERT_OK(d_counters.FillBytes(0));
  // Block scores (LycheeDecode's retrieval heads) where the kernel can write them: every 16-token
  // case but the single-split ones, which keep the plain path. NaN-poisoned, rows wider than the
  // tables.
  const bool block_scores = bs == kBlockScoresBlockSize && plan_kind != PlanKind::kSingleSplit;
  const int64_t scores_stride = max_blocks + 3;
  DeviceBuffer<float> d_scores;
  if (block_scores) {
    LY_ASSERT_OK(d_scores.Allocate(batch * kvh * scores_stride));
    LY_ASSERT_OK(d_scores.FillBytes(0xff));
  }

  DecodeAttentionParams p;
  p.q = d_q.get();
  p.cache = shape;
  p.cache.kv = d_pool.get();
  p.block_tables = d_tables.get();
  p.context_lens = d_lens.get();
  p.out = d_out.get();
  p.maybe_lse = d_lse.get();
  p.workspace = ws_bytes > 0 ? d_ws.get() : nullptr;
  p.split_counters = d_counters.get();
  p.shape = s;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  if (listed) {
    p.maybe_row_list = d_list.get();
    p.row_list_len = static_cast<int64_t>(row_list.size());
  }
  if (block_scores) {
    p.maybe_block_scores = d_scores.get();
    p.block_scores_row_stride = scores_stride;
  }
  if (graph) {
    LY_ASSERT_OK(d_lens.Write(std::vector<int32_t>(batch, 1)));
    cudaStream_t stream;
    LY_ASSERT_OK(CudaStatus(cudaStreamCreate(&stream), "cudaStreamCreate"));
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    LY_ASSERT_OK(CudaStatus(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                            "cudaStreamBeginCapture"));
    const absl::Status launched = DecodeAttention(p, plan, stream);
    LY_ASSERT_OK(CudaStatus(cudaStreamEndCapture(stream, &g), "cudaStreamEndCapture"));
    LY_ASSERT_OK(launched);
    LY_ASSERT_OK(CudaStatus(cudaGraphInstantiate(&exec, g, 0), "cudaGraphInstantiate"));
    LY_ASSERT_OK(d_lens.Write(lens));  // the real lengths, after capture, same address
    LY_ASSERT_OK(CudaStatus(cudaGraphLaunch(exec, stream), "cudaGraphLaunch"));
    LY_ASSERT_OK(CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
    cudaStreamDestroy(stream);
  } else {
    LY_ASSERT_OK(DecodeAttention(p, plan, nullptr));
  }
  // The last split of each (sequence, kv head) put its arrival counter back to zero, so the next
  // launch (or graph replay) merges again.
  std::vector<int32_t> counters;
  LY_ASSERT_OK(d_counters.Download(counters));
  for (size_t i = 0; i < counters.size(); ++i) ASSERT_EQ(counters[i], 0) << "counter " << i;
  std::vector<bf16> out_raw;
  std::vector<float> lse;
  LY_ASSERT_OK(d_out.Download(out_raw));
  LY_ASSERT_OK(d_lse.Download(lse));
  const std::vector<float> out = ToFloat(out_raw);
  std::vector<float> scores;
  if (block_scores) LY_ASSERT_OK(d_scores.Download(scores));

  // CPU reference, one sequence at a time: its query is the last position of its context.
  PagedKvView view{pool.data(), nullptr, num_blocks, kvh, bs, d};
  std::vector<float> scratch(max_ctx + 1);
  for (int64_t b = 0; b < batch; ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b) + " context " + std::to_string(contexts[b]));
    if (block_scores)
      ExpectBlockScores(q, view, tables, max_blocks, b, contexts[b], in_list, h, kvh, scores,
                        scores_stride);
    const float* got = out.data() + b * h * d;
    // Rows left out of the list keep their poison (0xffff bits: NaN).
    for (int64_t g = 0; g < kvh; ++g) {
      if (in_list[b * kvh + g] != 0) continue;
      for (int64_t i = g * group * d; i < (g + 1) * group * d; ++i) {
        uint16_t bits;
        std::memcpy(&bits, &out_raw[b * h * d + i], sizeof(bits));
        ASSERT_EQ(bits, 0xffffu) << "unlisted kv head " << g << " element " << i;
      }
    }
    if (contexts[b] == 0) {  // nothing to attend: zeros and lse = -inf
      for (int64_t i = 0; i < h * d; ++i) {
        if (in_list[b * kvh + i / (group * d)] != 0) {
          ASSERT_EQ(got[i], 0.0f) << i;
        }
      }
      for (int64_t i = 0; i < h; ++i) {
        if (in_list[b * kvh + i / group] != 0) {
          EXPECT_EQ(lse[b * h + i], -INFINITY);
        }
      }
      continue;
    }
    std::vector<float> want(h * d);
    cpu::PagedAttentionParams r;
    r.q = q.data() + b * h * d;
    r.cache = view;
    r.block_table = tables.data() + b * max_blocks;
    r.out = want.data();
    r.scratch = scratch.data();
    r.num_queries = 1;
    r.num_heads = h;
    r.num_table_blocks = max_blocks;
    r.query_start = contexts[b] - 1;
    r.scale = p.scale;
    cpu::PagedAttention(r);
    for (int64_t g = 0; g < kvh; ++g) {
      if (in_list[b * kvh + g] == 0) continue;
      EXPECT_LT(RelativeL2(got + g * group * d, want.data() + g * group * d, group * d), 1e-2)
          << "kv head " << g;
    }

    // LSE in double: log Σ_j exp(scale * q·k_j), natural log.
    for (int64_t head = 0; head < h; ++head) {
      if (in_list[b * kvh + head / group] == 0) continue;
      const double want_lse = ReferenceLse(q, view, tables.data() + b * max_blocks, contexts[b], b,
                                           head, h, group, p.scale);
      EXPECT_NEAR(lse[b * h + head], want_lse, 1e-3 * std::max(1.0, std::fabs(want_lse)))
          << "head " << head;
    }
  }
}

TEST_F(CudaDecodeAttentionTest, RaggedBatchMatchesCpuForEveryPlanKind) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {1, 17, 0, 1000, 33000};
  for (const PlanKind kind : {PlanKind::kPlanned, PlanKind::kSingleSplit, PlanKind::kManySplits,
                              PlanKind::kManySplitsOneLevel, PlanKind::kUnderestimated}) {
    RunCase({32, 8, 128, 16}, contexts, kind);  // Llama-3-8B: group 4
  }
  // The other ring depths the plan may pick.
  for (const int stages : {2, 4}) {
    RunCase({32, 8, 128, 16}, contexts, PlanKind::kManySplits, false, stages);
    RunCase({12, 4, 64, 32}, contexts, PlanKind::kPlanned, false, stages);
  }
}

TEST_F(CudaDecodeAttentionTest, GqaGroupsHeadDimsAndBlockSizes) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {1, 17, 1000, 33000};
  const AttnCase cases[] = {
      {8, 8, 64, 32},    // group 1, head_dim 64
      {16, 2, 128, 64},  // group 8
      {28, 4, 128, 16},  // group 7: the 8-wide kernel with an idle query slot
      {12, 4, 64, 16},   // group 3, head_dim 64
      {4, 2, 128, 32},   // group 2
      {20, 4, 128, 16},  // group 5
      {24, 4, 64, 16},   // group 6, head_dim 64
      {16, 2, 64, 16},   // group 8, head_dim 64
  };
  for (const AttnCase& c : cases) RunCase(c, contexts, PlanKind::kPlanned);
}

TEST_F(CudaDecodeAttentionTest, RandomRaggedBatches) {
  LY_SKIP_WITHOUT_GPU();
  std::uniform_int_distribution<int64_t> len(1, 3000), batch(1, 24);
  std::uniform_int_distribution<int> pick(0, 2);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<int64_t> contexts(batch(rng_));
    for (int64_t& c : contexts) c = len(rng_);
    const int64_t block_sizes[] = {16, 32, 64};
    const int64_t kv_heads[] = {1, 2, 4};
    const int64_t groups[] = {1, 4, 8};
    const int64_t kv = kv_heads[pick(rng_)];
    RunCase({kv * groups[pick(rng_)], kv, pick(rng_) == 0 ? 64 : 128, block_sizes[pick(rng_)]},
            contexts, trial % 2 == 0 ? PlanKind::kPlanned : PlanKind::kManySplits);
  }
}

// A row list (the runner's sparse steps: each part of the rows planned alone) computes exactly
// its rows, with their workspace and counters indexed by list position, whatever the order.
TEST_F(CudaDecodeAttentionTest, RowListComputesOnlyItsRows) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {1, 700, 33000, 0, 5000};
  RunCase({32, 8, 128, 16}, contexts, PlanKind::kPlanned, false, 3, true);
  RunCase({28, 4, 64, 32}, contexts, PlanKind::kPlanned, false, 2, true);  // group 7
  RunCase({8, 8, 128, 16}, {130000}, PlanKind::kPlanned, true, 3, true);   // one long row, graph
}

// q = 0 makes every score 0: the LSE must be ln(context) for every head, whatever the plan, so a
// token dropped or counted twice at any split, tile or page boundary shows. In a pool of more than
// 4 GiB (2^31 bf16 elements) with the used pages at its top, contexts past 128K.
TEST_F(CudaDecodeAttentionTest, ZeroQueryLseCountsEveryTokenInAHugePool) {
  LY_SKIP_WITHOUT_GPU();
  SCOPED_TRACE(SeedNote());
  const std::vector<int64_t> contexts = {140001, 1, 4103, 65536, 17};
  const int64_t h = 32, kvh = 8, d = 128, bs = 16, batch = static_cast<int64_t>(contexts.size());
  int64_t pages = 0;
  for (int64_t c : contexts) pages += (c + bs - 1) / bs;
  PagedKvBf16 cache{nullptr, nullptr, 0, kvh, bs, d};
  const int64_t top = (int64_t{1} << 31) / cache.block_stride() + 2 * pages;  // > 4 GiB of bf16
  cache.num_blocks = top;
  ASSERT_GT(top * cache.block_stride(), int64_t{1} << 31);
  DeviceBuffer<bf16> pool, q, out;
  LY_ASSERT_OK(pool.Allocate(top * cache.block_stride()));
  // Random K/V in the used pages only (the rest stays unwritten memory that must not be read
  // into the result: it only could be through a wrong page id).
  const int64_t max_blocks = (*std::max_element(contexts.begin(), contexts.end()) + bs - 1) / bs;
  std::vector<int32_t> tables(batch * max_blocks, 0);
  std::vector<int32_t> used;
  for (int64_t i = 0; i < pages; ++i) used.push_back(static_cast<int32_t>(top - 1 - i));
  std::shuffle(used.begin(), used.end(), rng_);
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < (contexts[b] + bs - 1) / bs; ++i)
      tables[b * max_blocks + i] = used[next++];
  }
  for (const int32_t page : used) {
    LY_ASSERT_OK(FillUniform({pool.get() + page * cache.block_stride(), cache.block_stride(),
                              static_cast<uint64_t>(page)},
                             nullptr));
  }
  cache.kv = pool.get();
  LY_ASSERT_OK(q.Allocate(batch * h * d));
  LY_ASSERT_OK(q.FillBytes(0));
  LY_ASSERT_OK(out.Allocate(batch * h * d));
  DeviceBuffer<int32_t> d_tables, d_lens, counters;
  LY_ASSERT_OK(d_tables.Upload(tables));
  LY_ASSERT_OK(d_lens.Upload(std::vector<int32_t>(contexts.begin(), contexts.end())));
  LY_ASSERT_OK(counters.Allocate(batch * kvh * kDecodeSplitCountersPerRow));
  LY_ASSERT_OK(counters.FillBytes(0));
  DecodeAttentionShape s{batch, h, kvh, d, bs, max_blocks, max_blocks * bs};
  const int sms = ::lychee::cuda::testing::NumSms();
  DecodeAttentionPlanOptions many;
  many.min_chunk_tokens = 1;
  many.max_splits = 1000;
  many.ctas_per_sm = 64;
  DecodeAttentionPlan single{1, static_cast<int>(max_blocks * bs)};
  DecodeAttentionPlan cp_async = PlanDecodeAttention(s, sms);
  cp_async.loader = DecodeLoader::kCpAsync;
  DecodeAttentionPlan cp_async_many = PlanDecodeAttention(s, sms, many);
  cp_async_many.loader = DecodeLoader::kCpAsync;
  DecodeAttentionPlan one_level_many = PlanDecodeAttention(s, sms, many);
  one_level_many.merge_fan_in = 0;
  for (const DecodeAttentionPlan plan :
       {PlanDecodeAttention(s, sms), PlanDecodeAttention(s, sms, many), single, cp_async,
        cp_async_many, one_level_many}) {
    SCOPED_TRACE(std::to_string(plan.num_splits) + " splits of " +
                 std::to_string(plan.chunk_tokens) + ", merge fan-in " +
                 std::to_string(plan.merge_fan_in) +
                 (plan.loader == DecodeLoader::kTma ? ", tma" : ", cp.async"));
    DeviceBuffer<uint8_t> ws;
    DeviceBuffer<float> lse;
    LY_ASSERT_OK(ws.Allocate(std::max<size_t>(16, DecodeAttentionWorkspaceBytes(s, plan))));
    LY_ASSERT_OK(lse.Allocate(batch * h));
    LY_ASSERT_OK(lse.FillBytes(0xff));
    LY_ASSERT_OK(out.FillBytes(0xff));
    DecodeAttentionParams p;
    p.q = q.get();
    p.cache = cache;
    p.block_tables = d_tables.get();
    p.context_lens = d_lens.get();
    p.out = out.get();
    p.maybe_lse = lse.get();
    p.workspace = ws.get();
    p.split_counters = counters.get();
    p.shape = s;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    LY_ASSERT_OK(DecodeAttention(p, plan, nullptr));
    std::vector<float> got_lse;
    std::vector<bf16> got_out;
    LY_ASSERT_OK(lse.Download(got_lse));
    LY_ASSERT_OK(out.Download(got_out));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t head = 0; head < h; ++head) {
        ASSERT_NEAR(got_lse[b * h + head], std::log(static_cast<double>(contexts[b])), 1e-5)
            << "sequence " << b << " (context " << contexts[b] << ") head " << head;
      }
    }
    for (const float v : ToFloat(got_out)) ASSERT_TRUE(std::isfinite(v));
  }
}

// The cp.async loader (the other tests run the default, TMA) over the same ground: partial pages
// at every length, every plan kind and ring depth, head dims 64/128, block sizes 16/32/64, odd
// groups, a row list, a captured graph.
TEST_F(CudaDecodeAttentionTest, CpAsyncLoaderMatchesCpu) {
  LY_SKIP_WITHOUT_GPU();
  loader_ = DecodeLoader::kCpAsync;
  const std::vector<int64_t> contexts = {1, 17, 0, 1000, 33000};
  for (const PlanKind kind : {PlanKind::kPlanned, PlanKind::kSingleSplit, PlanKind::kManySplits,
                              PlanKind::kUnderestimated}) {
    RunCase({32, 8, 128, 16}, contexts, kind);
  }
  for (const int stages : {2, 4}) {
    RunCase({32, 8, 128, 16}, contexts, PlanKind::kManySplits, false, stages);
    RunCase({12, 4, 64, 32}, contexts, PlanKind::kPlanned, false, stages);
  }
  RunCase({16, 2, 128, 64}, {1, 17, 1000, 33000}, PlanKind::kPlanned);  // group 8, block 64
  RunCase({28, 4, 64, 16}, {1, 700, 5003}, PlanKind::kPlanned);         // group 7, head_dim 64
  RunCase({32, 8, 128, 16}, {1, 700, 33000, 0, 5000}, PlanKind::kPlanned, false, 3, true);
  RunCase({32, 8, 128, 16}, {5, 300, 0, 4000}, PlanKind::kPlanned, /*graph=*/true);
}

TEST_F(CudaDecodeAttentionTest, CapturedGraphReadsContextLengthsAtReplay) {
  LY_SKIP_WITHOUT_GPU();
  RunCase({32, 8, 128, 16}, {5, 300, 0, 4000}, PlanKind::kPlanned, /*graph=*/true);
  RunCase({16, 2, 64, 32}, {4000, 1, 2999}, PlanKind::kSingleSplit, /*graph=*/true);
}

// LycheeDecode's hybrid launch (DecodeAttentionParams::full_block_tables): in one launch over a
// row list, the flagged rows read their sequence's own table over its whole context and write
// block scores; the others read their own row of per-(sequence, kv head) tables (a random subset
// of the sequence's pages, the last one included) over its token count, with the splits of the
// flagged rows' plan, and write no block scores. Every row against the CPU reference over the
// pages it was given; rows listed in random order, flagged ones first as the runner lists them.
TEST_F(CudaDecodeAttentionTest, HybridLaunchReadsEachRowsOwnTable) {
  LY_SKIP_WITHOUT_GPU();
  struct Hybrid {
    AttnCase shape;
    std::vector<int64_t> contexts;
  };
  for (const Hybrid& c : {Hybrid{{32, 8, 128, 16}, {33000, 300, 17}},
                          Hybrid{{28, 4, 64, 16}, {5000, 130000}},  // group 7, d64
                          Hybrid{{32, 8, 128, 16}, {1, 70000}}}) {
    const int64_t batch = static_cast<int64_t>(c.contexts.size());
    const int64_t h = c.shape.num_heads, kvh = c.shape.num_kv_heads, d = c.shape.head_dim;
    const int64_t bs = c.shape.block_size, group = h / kvh;
    SCOPED_TRACE(SeedNote() + " heads=" + std::to_string(h) + "/" + std::to_string(kvh) +
                 " d=" + std::to_string(d));
    const int64_t max_ctx = *std::max_element(c.contexts.begin(), c.contexts.end());
    const int64_t max_blocks = (max_ctx + bs - 1) / bs + 1;
    RandomPagedPool paged = MakeRandomPagedPool(
        c.contexts, max_blocks, PagedKvBf16{nullptr, nullptr, 0, kvh, bs, d}, 3, rng_);
    const int64_t num_blocks = paged.num_blocks;
    const std::vector<int32_t>& tables = paged.tables;
    std::vector<float>& pool = paged.pool;
    PagedKvBf16 shape{nullptr, nullptr, num_blocks, kvh, bs, d};
    const std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);

    // Flags: kv head 0 of every sequence (a retrieval head) and a random quarter of the rest.
    // The other rows: a random subset of the sequence's full pages in random order, then its
    // last page (every page full but the last, as the selection writes them).
    std::vector<uint8_t> flagged(batch * kvh, 0);
    std::vector<int32_t> row_tables(batch * kvh * max_blocks, -1), row_lens(batch * kvh, 0);
    std::vector<int32_t> list_flagged, list_budget;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t ctx = c.contexts[b], n = (ctx + bs - 1) / bs;
      for (int64_t g = 0; g < kvh; ++g) {
        const int64_t r = b * kvh + g;
        flagged[r] = g == 0 || std::uniform_int_distribution<int>(0, 3)(rng_) == 0;
        if (flagged[r] != 0) {
          list_flagged.push_back(static_cast<int32_t>(r) | kDecodeRowReadsSequence);
          continue;
        }
        list_budget.push_back(static_cast<int32_t>(r));
        std::vector<int32_t> full;
        for (int64_t page = 0; page + 1 < n; ++page) {
          if (std::uniform_int_distribution<int>(0, 7)(rng_) == 0) full.push_back(page);
        }
        std::shuffle(full.begin(), full.end(), rng_);
        int32_t* row = row_tables.data() + r * max_blocks;
        for (size_t i = 0; i < full.size(); ++i) row[i] = tables[b * max_blocks + full[i]];
        row[full.size()] = tables[b * max_blocks + n - 1];
        row_lens[r] =
            static_cast<int32_t>(static_cast<int64_t>(full.size()) * bs + ctx - (n - 1) * bs);
      }
    }
    std::shuffle(list_flagged.begin(), list_flagged.end(), rng_);
    std::shuffle(list_budget.begin(), list_budget.end(), rng_);
    std::vector<int32_t> row_list = list_flagged;
    row_list.insert(row_list.end(), list_budget.begin(), list_budget.end());

    DecodeAttentionShape s;
    s.batch = batch;
    s.num_heads = h;
    s.num_kv_heads = kvh;
    s.head_dim = d;
    s.block_size = bs;
    s.max_blocks_per_seq = max_blocks;
    s.max_context_len = max_ctx;
    LY_ASSERT_OK(CanImplementDecodeAttention(s));
    DecodeAttentionShape alone = s;  // the flagged rows alone, as the runner plans it
    alone.batch = static_cast<int64_t>(list_flagged.size());
    alone.num_heads = group;
    alone.num_kv_heads = 1;
    const DecodeAttentionPlan plan = PlanDecodeAttention(alone, ::lychee::cuda::testing::NumSms());
    std::printf("  hybrid: %zu flagged + %zu budget rows, %d splits of %d tokens\n",
                list_flagged.size(), list_budget.size(), plan.num_splits, plan.chunk_tokens);

    const int64_t scores_stride = max_blocks + 2;
    DeviceBuffer<bf16> d_q, d_pool, d_out;
    DeviceBuffer<int32_t> d_tables, d_lens, d_row_tables, d_row_lens, d_list, d_counters;
    DeviceBuffer<float> d_lse, d_scores;
    DeviceBuffer<uint8_t> d_ws;
    LY_ASSERT_OK(d_q.Upload(ToBf16(q)));
    LY_ASSERT_OK(d_pool.Upload(ToBf16(pool)));
    LY_ASSERT_OK(d_tables.Upload(tables));
    LY_ASSERT_OK(d_lens.Upload(std::vector<int32_t>(c.contexts.begin(), c.contexts.end())));
    LY_ASSERT_OK(d_row_tables.Upload(row_tables));
    LY_ASSERT_OK(d_row_lens.Upload(row_lens));
    LY_ASSERT_OK(d_list.Upload(row_list));
    LY_ASSERT_OK(d_out.Allocate(batch * h * d));
    LY_ASSERT_OK(d_out.FillBytes(0xff));
    LY_ASSERT_OK(d_lse.Allocate(batch * h));
    LY_ASSERT_OK(d_lse.FillBytes(0xff));
    LY_ASSERT_OK(d_scores.Allocate(batch * kvh * scores_stride));
    LY_ASSERT_OK(d_scores.FillBytes(0xff));
    const size_t ws_bytes =
        DecodeAttentionWorkspaceBytesForRows(s, plan, static_cast<int64_t>(row_list.size()));
    LY_ASSERT_OK(d_ws.Allocate(std::max<size_t>(ws_bytes, 16)));
    LY_ASSERT_OK(d_ws.FillBytes(0xff));
    LY_ASSERT_OK(d_counters.Allocate(batch * kvh * kDecodeSplitCountersPerRow));
    LY_ASSERT_OK(d_counters.FillBytes(0));

    DecodeAttentionParams p;
    p.q = d_q.get();
    p.cache = shape;
    p.cache.kv = d_pool.get();
    p.block_tables = d_row_tables.get();
    p.context_lens = d_row_lens.get();
    p.per_kv_head_tables = true;
    p.full_block_tables = d_tables.get();
    p.full_context_lens = d_lens.get();
    p.maybe_row_list = d_list.get();
    p.row_list_len = static_cast<int64_t>(row_list.size());
    p.maybe_block_scores = d_scores.get();
    p.block_scores_row_stride = scores_stride;
    p.out = d_out.get();
    p.maybe_lse = d_lse.get();
    p.workspace = d_ws.get();
    p.split_counters = d_counters.get();
    p.shape = s;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    LY_ASSERT_OK(DecodeAttention(p, plan, nullptr));
    std::vector<int32_t> counters;
    LY_ASSERT_OK(d_counters.Download(counters));
    for (size_t i = 0; i < counters.size(); ++i) ASSERT_EQ(counters[i], 0) << "counter " << i;
    std::vector<bf16> out_raw;
    std::vector<float> lse, scores;
    LY_ASSERT_OK(d_out.Download(out_raw));
    LY_ASSERT_OK(d_lse.Download(lse));
    LY_ASSERT_OK(d_scores.Download(scores));
    const std::vector<float> out = ToFloat(out_raw);

    PagedKvView view{pool.data(), nullptr, num_blocks, kvh, bs, d};
    std::vector<float> scratch(max_ctx + 1);
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("sequence " + std::to_string(b) + " context " + std::to_string(c.contexts[b]));
      // Flagged rows write their block scores, the others leave the poison.
      ExpectBlockScores(q, view, tables, max_blocks, b, c.contexts[b], flagged, h, kvh, scores,
                        scores_stride);
      for (int64_t g = 0; g < kvh; ++g) {
        const int64_t r = b * kvh + g;
        const bool full = flagged[r] != 0;
        const int64_t len = full ? c.contexts[b] : row_lens[r];
        SCOPED_TRACE("kv head " + std::to_string(g) + (full ? " (sequence's table)" : " (own)"));
        // The reference over the pages this row was given (all heads; group g's are compared).
        std::vector<float> want(h * d);
        cpu::PagedAttentionParams ref;
        ref.q = q.data() + b * h * d;
        ref.cache = view;
        ref.block_table =
            full ? tables.data() + b * max_blocks : row_tables.data() + r * max_blocks;
        ref.out = want.data();
        ref.scratch = scratch.data();
        ref.num_queries = 1;
        ref.num_heads = h;
        ref.num_table_blocks = max_blocks;
        ref.query_start = len - 1;
        ref.scale = p.scale;
        cpu::PagedAttention(ref);
        EXPECT_LT(RelativeL2(out.data() + b * h * d + g * group * d, want.data() + g * group * d,
                             group * d),
                  1e-2);
        for (int64_t head = g * group; head < (g + 1) * group; ++head) {
          const double want_lse =
              ReferenceLse(q, view, ref.block_table, len, b, head, h, group, p.scale);
          EXPECT_NEAR(lse[b * h + head], want_lse, 1e-3 * std::max(1.0, std::fabs(want_lse)))
              << "head " << head;
        }
      }
    }
  }
}

}  // namespace
}  // namespace lychee::cuda
