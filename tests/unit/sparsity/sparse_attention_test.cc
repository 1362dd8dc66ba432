// SPDX-License-Identifier: Apache-2.0
// kernels/cpu/sparse_attention: an all-blocks selection equals PagedAttention with a zero bound;
// the certified bound is >= the exact dropped mass of dense attention on random and adversarial
// keys; block bounds are >= every key's score.
#include "kernels/cpu/sparse_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_kv.h"
#include "tests/unit/sparsity/random_paged_cache.h"
#include "tests/util/numeric.h"
#include "tests/util/sparse_decode.h"

namespace lychee {
namespace {

using testing::RandomPagedCache;
using testing::RandomVector;

struct Shape {
  int64_t heads = 8, kv_heads = 4, block = 16, dim = 8;
};

// Runs SparseDecodeAttention for the query at `pos` with `per_head` blocks per kv head.
void RunSparse(const RandomPagedCache& c, const Shape& s, const std::vector<float>& q, int64_t pos,
               const std::vector<std::vector<int32_t>>& per_head, std::vector<float>* out,
               std::vector<float>* mass) {
  lychee::testing::RunSparseDecode(c.view, c.table, q, s.heads, pos, per_head, false, out, mass);
}

// Exact softmax mass (double) that head h puts on keys outside `selected` blocks.
double ExactDropped(const RandomPagedCache& c, const Shape& s, const std::vector<float>& q,
                    int64_t pos, int64_t h, const std::vector<int32_t>& selected) {
  const int64_t kvh = h / (s.heads / s.kv_heads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
  std::vector<double> sc;
  for (int64_t j = 0; j <= pos; ++j) {
    double dot = 0;
    for (int64_t e = 0; e < s.dim; ++e) {
      dot += static_cast<double>(q[static_cast<size_t>(h * s.dim + e)]) *
             c.k[static_cast<size_t>((j * s.kv_heads + kvh) * s.dim + e)];
    }
    sc.push_back(dot * scale);
  }
  const double m = *std::max_element(sc.begin(), sc.end());
  double all = 0, dropped = 0;
  for (int64_t j = 0; j <= pos; ++j) {
    const double w = std::exp(sc[static_cast<size_t>(j)] - m);
    all += w;
    if (!std::binary_search(selected.begin(), selected.end(), static_cast<int32_t>(j / s.block))) {
      dropped += w;
    }
  }
  return dropped / all;
}

TEST(SparseDecodeAttentionTest, AllBlocksEqualsPagedAttentionWithZeroBound) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s;
  for (int64_t tokens : {1, 15, 16, 17, 64, 100}) {
    RandomPagedCache c(rng, tokens, s.kv_heads, s.block, s.dim);
    c.Write(tokens);
    const int64_t pos = tokens - 1;
    const auto q = RandomVector(rng, static_cast<size_t>(s.heads * s.dim));
    std::vector<int32_t> all(static_cast<size_t>(pos / s.block + 1));
    for (size_t b = 0; b < all.size(); ++b) all[b] = static_cast<int32_t>(b);
    std::vector<float> out, mass;
    RunSparse(c, s, q, pos, std::vector<std::vector<int32_t>>(s.kv_heads, all), &out, &mass);

    std::vector<float> want(out.size()), scratch(static_cast<size_t>(tokens));
    cpu::PagedAttentionParams p;
    p.q = q.data();
    p.cache = c.view;
    p.block_table = c.table.data();
    p.out = want.data();
    p.scratch = scratch.data();
    p.num_queries = 1;
    p.num_heads = s.heads;
    p.num_table_blocks = static_cast<int64_t>(c.table.size());
    p.query_start = pos;
    p.scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
    cpu::PagedAttention(p);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], 1e-6) << tokens;
    for (float m : mass) EXPECT_EQ(m, 0.0f);
  }
}

// Random selections (always containing the query's block or not), over random keys and three
// adversarial kinds: identical keys within a block (the bound is tight), unread blocks holding a
// key aligned with q (most mass unread), and large key ranges (scores far apart).
TEST(SparseDecodeAttentionTest, BoundIsAtLeastTheExactDroppedMass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s;
  int checked_positive = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int kind = trial % 4;
    const int64_t tokens = 1 + static_cast<int64_t>(rng() % 160);
    const int64_t pos = tokens - 1;
    const int64_t nb = pos / s.block + 1;
    RandomPagedCache c(rng, tokens, s.kv_heads, s.block, s.dim, kind == 3 ? 8.0f : 1.0f);
    const auto q = RandomVector(rng, static_cast<size_t>(s.heads * s.dim), -2.0f, 2.0f);
    if (kind == 1) {  // every key of a block equals the block's first key
      for (int64_t j = 0; j < tokens; ++j) {
        const int64_t first = (j / s.block) * s.block;
        for (int64_t x = 0; x < s.kv_heads * s.dim; ++x) {
          c.k[static_cast<size_t>(j * s.kv_heads * s.dim + x)] =
              c.k[static_cast<size_t>(first * s.kv_heads * s.dim + x)];
        }
      }
    }
    std::vector<std::vector<int32_t>> per_head(static_cast<size_t>(s.kv_heads));
    for (auto& blocks : per_head) {
      for (int64_t b = 0; b < nb; ++b) {
        if (rng() % 3 == 0) blocks.push_back(static_cast<int32_t>(b));
      }
    }
    if (kind == 2) {  // a key aligned with the group's first query head, in an unread block
      for (int64_t g = 0; g < s.kv_heads; ++g) {
        for (int64_t j = 0; j < tokens; ++j) {
          if (std::binary_search(per_head[g].begin(), per_head[g].end(),
                                 static_cast<int32_t>(j / s.block)) ||
              rng() % 4 != 0) {
            continue;
          }
          for (int64_t e = 0; e < s.dim; ++e) {
            c.k[static_cast<size_t>((j * s.kv_heads + g) * s.dim + e)] =
                4.0f * q[static_cast<size_t>(g * (s.heads / s.kv_heads) * s.dim + e)];
          }
        }
      }
    }
    c.Write(tokens);
    std::vector<float> out, mass;
    RunSparse(c, s, q, pos, per_head, &out, &mass);
    for (int64_t h = 0; h < s.heads; ++h) {
      const auto& sel = per_head[static_cast<size_t>(h / (s.heads / s.kv_heads))];
      const double exact = ExactDropped(c, s, q, pos, h, sel);
      const double bound = mass[static_cast<size_t>(h)];
      EXPECT_GE(bound, 0.0);
      EXPECT_LE(bound, 1.0);
      // Slack for the float normaliser S of the read keys (a few ulps of relative error).
      EXPECT_GE(bound * (1 + 1e-5) + 1e-7, exact) << "trial " << trial << " head " << h;
      if (static_cast<int64_t>(sel.size()) == nb) {
        EXPECT_EQ(bound, 0.0);
      }
      if (exact > 1e-3) ++checked_positive;
    }
  }
  EXPECT_GT(checked_positive, 100);  // the trials did drop real mass
}

TEST(BlockScoreBoundsTest, BoundsEveryKeyScoreOfItsBlock) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s;
  const int64_t tokens = 77;
  const int64_t nb = (tokens + s.block - 1) / s.block;
  RandomPagedCache c(rng, tokens, s.kv_heads, s.block, s.dim);
  c.Write(tokens);
  const auto q = RandomVector(rng, static_cast<size_t>(s.heads * s.dim));
  std::vector<float> bounds(static_cast<size_t>(s.heads * nb));
  cpu::BlockScoreBoundsParams p;
  p.q = q.data();
  p.cache = c.view;
  p.block_table = c.table.data();
  p.out = bounds.data();
  p.num_heads = s.heads;
  p.num_blocks = nb;
  p.scale = 0.5f;
  cpu::BlockScoreBounds(p);
  for (int64_t h = 0; h < s.heads; ++h) {
    const int64_t kvh = h / (s.heads / s.kv_heads);
    for (int64_t j = 0; j < tokens; ++j) {
      float dot = 0;
      for (int64_t e = 0; e < s.dim; ++e) {
        dot += q[static_cast<size_t>(h * s.dim + e)] *
               c.k[static_cast<size_t>((j * s.kv_heads + kvh) * s.dim + e)];
      }
      EXPECT_GE(bounds[static_cast<size_t>(h * nb + j / s.block)], 0.5f * dot - 1e-6f);
    }
  }
}

}  // namespace
}  // namespace lychee
