// SPDX-License-Identifier: Apache-2.0
// Paged KV kernels against the contiguous reference: WritePagedKv scatters random K/V in random
// chunks through a random block table, PagedAttention must then equal kernels/cpu Attention over
// the same keys laid out contiguously, and every key summary must equal the min/max recomputed
// from scratch (and the key ball the mean and the largest distance from it). Also the pool sizing
// arithmetic. Fresh seed per run (LYCHEE_TEST_SEED replays).
#include "kernels/cpu/paged_kv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "common/host_memory.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kvcache/kv_pool.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

using ::lychee::testing::NanVector;
using ::lychee::testing::RandomVector;

class PagedKvTest : public ::testing::Test {
 protected:
  PagedKvTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }
  std::string SeedNote() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }
  int64_t Uniform(int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
};

struct Case {
  int64_t num_heads, num_kv_heads, head_dim, block_size, seq_len, num_queries, window;
};

TEST_F(PagedKvTest, PagedAttentionMatchesContiguousAndSummariesMatchScratch) {
  const Case cases[] = {
      {1, 1, 1, 1, 1, 1, 0},    // one token, one slot per block
      {8, 4, 8, 16, 37, 1, 0},  // decode, GQA, partial last block
      {8, 4, 8, 4, 13, 13, 0},  // whole prefill
      {6, 2, 17, 3, 40, 7, 0},  // chunk after history, odd head_dim and block size
      {4, 4, 16, 5, 29, 9, 6},  // sliding window (MHA)
      {12, 3, 64, 16, 100, 1, 32},
      {2, 1, 5, 7, 50, 30, 11},  // MQA, window, queries spanning blocks
      {4, 2, 8, 64, 70, 70, 0},  // block larger than most of the sequence
  };
  // bf16: the pool stores K/V rounded to bf16; summaries and attention must then equal those of
  // the rounded values exactly as fp32 does for its own.
  constexpr size_t kNumCases = sizeof(cases) / sizeof(cases[0]);
  for (size_t variant = 0; variant < 2 * kNumCases; ++variant) {
    const Case& c = cases[variant % kNumCases];
    const KvDtype dtype = variant < kNumCases ? KvDtype::kFp32 : KvDtype::kBf16;
    SCOPED_TRACE(SeedNote() + " dtype=" + KvDtypeName(dtype) +
                 " heads=" + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                 " dim=" + std::to_string(c.head_dim) + " bs=" + std::to_string(c.block_size) +
                 " len=" + std::to_string(c.seq_len) + " q=" + std::to_string(c.num_queries) +
                 " window=" + std::to_string(c.window));
    const int64_t num_table_blocks = (c.seq_len + c.block_size - 1) / c.block_size;
    const int64_t num_blocks = num_table_blocks * 2 + 3;
    KvPool pool({.num_layers = 2,
                 .num_kv_heads = c.num_kv_heads,
                 .head_dim = c.head_dim,
                 .block_size = c.block_size,
                 .dtype = dtype},
                num_blocks);
    const PagedKvView view = pool.View(1);
    // Stale contents in every block: summaries must not leak them.
    for (int64_t b = 0; b < num_blocks; ++b) {
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        if (dtype == KvDtype::kBf16) {
          std::fill(view.KBf16(b, h), view.KBf16(b, h) + view.head_stride(), FloatToBf16(1e6f));
        } else {
          std::fill(view.K(b, h), view.K(b, h) + view.head_stride(), 1e6f);
        }
        std::fill(view.KeyMin(b, h), view.KeyMin(b, h) + c.head_dim, -1e6f);
        std::fill(view.KeyMax(b, h), view.KeyMax(b, h) + c.head_dim, 1e6f);
      }
    }
    std::vector<int32_t> all(num_blocks);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng_);
    const std::vector<int32_t> table(all.begin(), all.begin() + num_table_blocks);

    const int64_t row = c.num_kv_heads * c.head_dim;
    const auto k = RandomVector(rng_, c.seq_len * row, -2.0f, 2.0f);
    const auto v = RandomVector(rng_, c.seq_len * row);
    // What the pool holds: the values, or the values rounded to bf16.
    std::vector<float> k_stored = k, v_stored = v;
    if (dtype == KvDtype::kBf16) {
      for (float& x : k_stored) x = RoundToBf16(x);
      for (float& x : v_stored) x = RoundToBf16(x);
    }
    // Write in random chunks; odd chunks come from a wider (fused-QKV-like) buffer.
    for (int64_t pos = 0; pos < c.seq_len;) {
      const int64_t n = std::min<int64_t>(c.seq_len - pos, Uniform(1, 2 * c.block_size + 1));
      const bool strided = Uniform(0, 1) == 1;
      const int64_t stride = strided ? row + 3 : 0;
      std::vector<float> kbuf, vbuf;
      if (strided) {
        kbuf.assign(n * stride, std::nanf(""));
        vbuf.assign(n * stride, std::nanf(""));
        for (int64_t t = 0; t < n; ++t) {
          std::copy_n(k.begin() + (pos + t) * row, row, kbuf.begin() + t * stride);
          std::copy_n(v.begin() + (pos + t) * row, row, vbuf.begin() + t * stride);
        }
      }
      cpu::WritePagedKvParams w;
      w.cache = view;
      w.k = strided ? kbuf.data() : k.data() + pos * row;
      w.v = strided ? vbuf.data() : v.data() + pos * row;
      w.block_table = table.data();
      w.num_tokens = n;
      w.num_table_blocks = num_table_blocks;
      w.start_position = pos;
      w.k_row_stride = stride;
      w.v_row_stride = stride;
      cpu::WritePagedKv(w);
      pos += n;
    }

    // Summaries vs scratch recomputation over the written slots of each block.
    for (int64_t i = 0; i < num_table_blocks; ++i) {
      const int64_t filled = std::min(c.block_size, c.seq_len - i * c.block_size);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        for (int64_t e = 0; e < c.head_dim; ++e) {
          float lo = INFINITY, hi = -INFINITY;
          for (int64_t s = 0; s < filled; ++s) {
            const float x = k_stored[(i * c.block_size + s) * row + h * c.head_dim + e];
            lo = std::min(lo, x);
            hi = std::max(hi, x);
          }
          ASSERT_EQ(view.KeyMin(table[i], h)[e], lo) << "block " << i << " head " << h;
          ASSERT_EQ(view.KeyMax(table[i], h)[e], hi) << "block " << i << " head " << h;
        }
        // The ball: centroid = mean of the written keys, radius >= every key's distance from
        // the stored centroid, and tight (within float rounding of the largest distance).
        const float* centroid = view.KeyCentroid(table[i], h);
        double max_dist = 0.0;
        for (int64_t e = 0; e < c.head_dim; ++e) {
          double mean = 0.0;
          for (int64_t s = 0; s < filled; ++s)
            mean += k_stored[(i * c.block_size + s) * row + h * c.head_dim + e];
          mean /= static_cast<double>(filled);
          ASSERT_NEAR(centroid[e], mean, 1e-6 * (1.0 + std::abs(mean))) << "block " << i;
        }
        for (int64_t s = 0; s < filled; ++s) {
          double dist2 = 0.0;
          for (int64_t e = 0; e < c.head_dim; ++e) {
            const double diff =
                static_cast<double>(k_stored[(i * c.block_size + s) * row + h * c.head_dim + e]) -
                centroid[e];
            dist2 += diff * diff;
          }
          max_dist = std::max(max_dist, std::sqrt(dist2));
        }
        const double radius = view.KeyRadius(table[i], h);
        ASSERT_GE(radius, max_dist) << "block " << i << " head " << h;
        ASSERT_LE(radius, max_dist * (1.0 + 1e-6) + 1e-30) << "block " << i << " head " << h;
      }
    }

    // Attention of the last num_queries tokens: paged vs contiguous.
    const int64_t query_start = c.seq_len - c.num_queries;
    const auto q = RandomVector(rng_, c.num_queries * c.num_heads * c.head_dim, -2.0f, 2.0f);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    auto want = NanVector(q.size());
    auto scratch = NanVector(c.seq_len);
    cpu::AttentionParams a{.q = q.data(),
                           .k_cache = k_stored.data(),
                           .v_cache = v_stored.data(),
                           .out = want.data(),
                           .scratch = scratch.data(),
                           .num_queries = c.num_queries,
                           .num_heads = c.num_heads,
                           .num_kv_heads = c.num_kv_heads,
                           .head_dim = c.head_dim,
                           .query_start = query_start,
                           .sliding_window = c.window,
                           .scale = scale};
    cpu::Attention(a);
    auto got = NanVector(q.size());
    auto scratch2 = NanVector(c.seq_len);
    cpu::PagedAttentionParams p;
    p.q = q.data();
    p.cache = view;
    p.block_table = table.data();
    p.out = got.data();
    p.scratch = scratch2.data();
    p.num_queries = c.num_queries;
    p.num_heads = c.num_heads;
    p.num_table_blocks = num_table_blocks;
    p.query_start = query_start;
    p.sliding_window = c.window;
    p.scale = scale;
    cpu::PagedAttention(p);
    // Same dot products and summation order, so in practice equal to the last bit; the bound
    // leaves room for a compiler contracting the two loops differently.
    EXPECT_LT(::lychee::testing::RelativeL2(got, want), 1e-6);
  }
}

TEST_F(PagedKvTest, RewritingABlockFromSlotZeroResetsItsSummary) {
  KvPool pool({.num_layers = 1, .num_kv_heads = 1, .head_dim = 2, .block_size = 4}, 2);
  const PagedKvView view = pool.View(0);
  const std::vector<int32_t> table = {1};
  const std::vector<float> first = {5, -5, 6, -6, 7, -7};  // 3 tokens, head_dim 2
  cpu::WritePagedKvParams w{.cache = view,
                            .k = first.data(),
                            .v = first.data(),
                            .block_table = table.data(),
                            .num_tokens = 3,
                            .num_table_blocks = 1,
                            .start_position = 0};
  cpu::WritePagedKv(w);
  EXPECT_EQ(view.KeyMin(1, 0)[0], 5);
  EXPECT_EQ(view.KeyMax(1, 0)[0], 7);
  EXPECT_EQ(view.KeyMin(1, 0)[1], -7);
  // A new owner writes one token into slot 0: the old keys no longer count.
  const std::vector<float> second = {1, 2};
  w.k = w.v = second.data();
  w.num_tokens = 1;
  cpu::WritePagedKv(w);
  EXPECT_EQ(view.KeyMin(1, 0)[0], 1);
  EXPECT_EQ(view.KeyMax(1, 0)[0], 1);
  EXPECT_EQ(view.KeyMin(1, 0)[1], 2);
  EXPECT_EQ(view.KeyMax(1, 0)[1], 2);
}

TEST(KvPoolSizing, DefaultCpuBudgetIsAFractionOfHostMemory) {
  const int64_t host = HostMemoryBytes();
  EXPECT_GT(host, 0);
  EXPECT_EQ(host, HostMemoryBytes()) << "read once";
  EXPECT_EQ(DefaultCpuKvCacheBytes(),
            static_cast<int64_t>(kDefaultCpuKvMemoryFraction * static_cast<double>(host)));
}

TEST(KvPoolSizing, LargePoolIsZeroedAndTakesMemoryOnlyWhereWritten) {
  // 2 GiB of K/V on a host that may have less free: calloc maps zero pages lazily, so this
  // allocates address space only; what is read back is zero and what is written sticks.
  const KvCacheShape shape{.num_layers = 8, .num_kv_heads = 8, .head_dim = 128, .block_size = 16};
  const int64_t num_blocks = (int64_t{2} << 30) / KvBytesPerBlock(shape);
  KvPool pool(shape, num_blocks);
  EXPECT_GE(pool.bytes(), (int64_t{2} << 30) - KvBytesPerBlock(shape));
  PagedKvView last = pool.View(7);
  EXPECT_EQ(last.V(num_blocks - 1, 7)[16 * 128 - 1], 0.0f);
  EXPECT_EQ(last.KeyMax(num_blocks - 1, 7)[127], 0.0f);
  last.K(num_blocks / 2, 3)[5] = 1.5f;
  EXPECT_EQ(pool.KPtr(7, num_blocks / 2, 3)[5], 1.5f);
  EXPECT_EQ(pool.KPtr(7, num_blocks / 2, 3)[4], 0.0f);
}

TEST(KvPoolSizing, BytesPerBlockAndBudget) {
  const KvCacheShape shape{.num_layers = 3, .num_kv_heads = 2, .head_dim = 8, .block_size = 16};
  // Per layer: K+V 2*2*16*8 = 512 floats, box summaries 2*2*8 = 32 floats, balls 2*(8+1).
  EXPECT_EQ(KvBytesPerBlock(shape), 3 * (512 + 32 + 18) * 4);
  // bf16 pages halve the K/V bytes; summaries stay fp32.
  KvCacheShape bf16_shape = shape;
  bf16_shape.dtype = KvDtype::kBf16;
  EXPECT_EQ(KvBytesPerBlock(bf16_shape), 3 * (512 * 2 + (32 + 18) * 4));
  KvPool bf16_pool(bf16_shape, 10);
  EXPECT_EQ(bf16_pool.bytes(), KvBytesPerBlock(bf16_shape) * 10);
  EXPECT_TRUE(bf16_pool.View(2).is_bf16());
  EXPECT_EQ(bf16_pool.View(2).kv, nullptr);
  EXPECT_EQ(bf16_pool.View(2).kv_bf16 - bf16_pool.View(1).kv_bf16,
            10 * shape.num_kv_heads * 2 * 16 * 8);
  EXPECT_EQ(*ParseKvDtype("bf16"), KvDtype::kBf16);
  EXPECT_EQ(*ParseKvDtype(KvDtypeName(KvDtype::kFp32)), KvDtype::kFp32);
  EXPECT_FALSE(ParseKvDtype("fp16").ok());
  const int64_t per_block = KvBytesPerBlock(shape);
  EXPECT_EQ(*NumKvBlocksForBudget(shape, per_block * 10 + per_block - 1), 10);
  EXPECT_FALSE(NumKvBlocksForBudget(shape, per_block - 1).ok());
  EXPECT_FALSE(NumKvBlocksForBudget(KvCacheShape{}, 1 << 20).ok());
  EXPECT_EQ(KvBytesForTokens(shape, 33), 3 * per_block);
  EXPECT_EQ(*NumKvBlocksForBudget(shape, KvBytesForTokens(shape, 32)), 2);
  KvPool pool(shape, 10);
  EXPECT_EQ(pool.bytes(), per_block * 10);
  // Views of consecutive layers do not overlap and strides follow the documented layout.
  const PagedKvView v0 = pool.View(0), v1 = pool.View(1);
  EXPECT_EQ(v1.kv - v0.kv, 10 * v0.block_stride());
  EXPECT_EQ(v0.V(3, 1) - v0.K(3, 1), 2 * 16 * 8);
  EXPECT_EQ(v0.K(3, 1) - v0.K(3, 0), 16 * 8);
  EXPECT_EQ(pool.KPtr(2, 4, 1), pool.View(2).K(4, 1));
  EXPECT_EQ(v0.KeyMax(2, 1) - v0.KeyMin(2, 1), 8);
  EXPECT_EQ(v1.key_ball - v0.key_ball, 10 * v0.ball_block_stride());
  EXPECT_EQ(v0.KeyCentroid(3, 1) - v0.KeyCentroid(3, 0), 9);
}

}  // namespace
}  // namespace lychee
