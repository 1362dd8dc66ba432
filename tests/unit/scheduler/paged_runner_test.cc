// SPDX-License-Identifier: Apache-2.0
// The scheduler ↔ runner contract with the real paged kernels: a fake runner executes every
// SchedulerOutput by writing each chunk's K/V (a deterministic function of the sequence prefix, as
// real K/V is) through its block table with WritePagedKv, then runs PagedAttention for the chunk's
// queries. The result must equal contiguous Attention over K/V recomputed from scratch for the
// whole sequence, and every key summary must equal the min/max of its block's keys, through
// chunked prefill, prefix-cache hits, evictions and preemptions by recompute.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/paged_kv.h"
#include "kvcache/kv_pool.h"
#include "scheduler/scheduler.h"
#include "tests/unit/scheduler/scheduler_test_utils.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr int64_t kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 8;
constexpr int64_t kRow = kKvHeads * kHeadDim;

uint64_t PrefixValue(absl::Span<const int32_t> tokens, int64_t pos) {
  uint64_t h = 1469598103934665603ULL;
  for (int64_t i = 0; i <= pos; ++i) h = (h ^ static_cast<uint32_t>(tokens[i])) * 1099511628211ULL;
  return h;
}

// K and V rows of position `pos` in `layer`: depend on every token up to pos.
void KvRow(absl::Span<const int32_t> tokens, int64_t pos, int64_t layer, float* k, float* v) {
  std::mt19937_64 rng(PrefixValue(tokens, pos) + 7919 * layer);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (int64_t i = 0; i < kRow; ++i) k[i] = dist(rng);
  for (int64_t i = 0; i < kRow; ++i) v[i] = dist(rng);
}

void RunOne(uint64_t seed, int64_t& preemptions, int64_t& hits) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  SchedulerConfig c;
  c.block_size = static_cast<int32_t>(std::vector<int64_t>{1, 3, 4, 16}[uniform(0, 3)]);
  c.num_blocks = static_cast<int32_t>(uniform(6, 40));
  c.max_num_seqs = uniform(1, 6);
  c.max_num_batched_tokens = uniform(4, 48);
  c.enable_prefix_caching = uniform(0, 3) != 0;
  c.policy = uniform(0, 1) ? SchedulingPolicy::kPriority : SchedulingPolicy::kFcfs;
  const int64_t capacity = static_cast<int64_t>(c.num_blocks) * c.block_size;
  SCOPED_TRACE("seed " + std::to_string(seed) + " bs=" + std::to_string(c.block_size) +
               " blocks=" + std::to_string(c.num_blocks));
  Scheduler s(c);
  KvPool pool({.num_layers = kLayers,
               .num_kv_heads = kKvHeads,
               .head_dim = kHeadDim,
               .block_size = c.block_size},
              c.num_blocks);
  const int64_t window = uniform(0, 1) ? 0 : uniform(1, 12);

  std::vector<int32_t> doc(uniform(1, std::max<int64_t>(1, capacity / 3)));
  for (int32_t& t : doc) t = static_cast<int32_t>(uniform(0, 3));
  SeqId next = 0;
  int64_t checked = 0;

  auto runner = [&](const SchedulerOutput& out) {
    for (const ScheduledChunk& ch : out.chunks) {
      const SchedRequest* r = s.Find(ch.seq_id);
      const auto tokens = absl::MakeConstSpan(r->tokens);
      const int64_t n = static_cast<int64_t>(ch.token_ids.size());
      const int64_t end = ch.start_position + n;
      for (int64_t layer = 0; layer < kLayers; ++layer) {
        std::vector<float> k(n * kRow), v(n * kRow);
        for (int64_t t = 0; t < n; ++t) {
          KvRow(tokens, ch.start_position + t, layer, &k[t * kRow], &v[t * kRow]);
        }
        const PagedKvView view = pool.View(layer);
        cpu::WritePagedKv({.cache = view,
                           .k = k.data(),
                           .v = v.data(),
                           .block_table = ch.block_table.data(),
                           .num_tokens = n,
                           .num_table_blocks = static_cast<int64_t>(ch.block_table.size()),
                           .start_position = ch.start_position});
        // Reference: the whole sequence's K/V from scratch, contiguous.
        std::vector<float> kc(end * kRow), vc(end * kRow);
        for (int64_t p = 0; p < end; ++p) KvRow(tokens, p, layer, &kc[p * kRow], &vc[p * kRow]);
        const auto q = ::lychee::testing::RandomVector(rng, n * kHeads * kHeadDim, -1.0f, 1.0f);
        const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
        std::vector<float> want(q.size()), got(q.size()), scratch(end);
        cpu::Attention({.q = q.data(),
                        .k_cache = kc.data(),
                        .v_cache = vc.data(),
                        .out = want.data(),
                        .scratch = scratch.data(),
                        .num_queries = n,
                        .num_heads = kHeads,
                        .num_kv_heads = kKvHeads,
                        .head_dim = kHeadDim,
                        .query_start = ch.start_position,
                        .sliding_window = window,
                        .scale = scale});
        cpu::PagedAttention({.q = q.data(),
                             .cache = view,
                             .block_table = ch.block_table.data(),
                             .out = got.data(),
                             .scratch = scratch.data(),
                             .num_queries = n,
                             .num_heads = kHeads,
                             .num_table_blocks = static_cast<int64_t>(ch.block_table.size()),
                             .query_start = ch.start_position,
                             .sliding_window = window,
                             .scale = scale});
        ASSERT_LT(::lychee::testing::RelativeL2(got, want), 1e-6)
            << "seq " << ch.seq_id << " layer " << layer << " start " << ch.start_position;
        // Key summaries of every block the sequence has filled so far.
        for (int64_t b = 0; b * c.block_size < end; ++b) {
          const int64_t filled = std::min<int64_t>(c.block_size, end - b * c.block_size);
          for (int64_t h = 0; h < kKvHeads; ++h) {
            for (int64_t e = 0; e < kHeadDim; ++e) {
              float lo = INFINITY, hi = -INFINITY;
              for (int64_t sl = 0; sl < filled; ++sl) {
                const float x = kc[(b * c.block_size + sl) * kRow + h * kHeadDim + e];
                lo = std::min(lo, x);
                hi = std::max(hi, x);
              }
              ASSERT_EQ(view.KeyMin(ch.block_table[b], h)[e], lo) << "block " << b;
              ASSERT_EQ(view.KeyMax(ch.block_table[b], h)[e], hi) << "block " << b;
            }
          }
        }
        ++checked;
      }
    }
  };

  int64_t steps = 0;
  while (next < 25 || s.has_unfinished()) {
    ASSERT_LT(++steps, 5000);
    if (next < 25 && uniform(0, 1) == 0) {
      std::vector<int32_t> prompt;
      if (uniform(0, 2) != 0) prompt.assign(doc.begin(), doc.begin() + uniform(1, doc.size()));
      for (int64_t x = uniform(prompt.empty() ? 1 : 0, 6); x > 0; --x) {
        prompt.push_back(static_cast<int32_t>(uniform(10, 40)));
      }
      const int64_t max_tokens =
          std::min<int64_t>(uniform(1, 12), capacity - static_cast<int64_t>(prompt.size()));
      if (max_tokens >= 1) {
        ASSERT_TRUE(
            s.AddRequest(next, prompt, max_tokens, static_cast<int32_t>(uniform(0, 2)), next).ok());
      }
      ++next;
    }
    (void)::lychee::testing::Step(s, /*stop_token=*/-1, runner);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(checked, 0);
  preemptions += s.num_preemptions();
  hits += s.prefix_cache_hits();
}

TEST(PagedRunnerTest, PagedKernelsThroughScheduledBlockTablesMatchContiguousAttention) {
  const uint64_t base = ::lychee::testing::TestSeed();
  RecordProperty("seed", std::to_string(base));
  int64_t preemptions = 0, hits = 0;
  for (int i = 0; i < 30; ++i) {
    SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(base) + " run " + std::to_string(i));
    RunOne(base + i, preemptions, hits);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(hits, 0);
  RecordProperty("preemptions", std::to_string(preemptions));
  RecordProperty("prefix_hit_tokens", std::to_string(hits));
}

}  // namespace
}  // namespace lychee
