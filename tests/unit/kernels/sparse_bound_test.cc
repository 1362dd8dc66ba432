// SPDX-License-Identifier: Apache-2.0
// kernels/cpu/sparse_attention over a real KvPool (box and ball key summaries written by
// WritePagedKv): every-block and every-position selections equal PagedAttention bit for bit;
// the certified bound is never below the exact dropped mass of a float64 brute force, for block
// and token selections, on random and adversarial keys up to head_dim 128 (no slack in the
// comparison: the kernel's rounding margins must do it); block score bounds enclose every key's
// score; and how much tighter min(box, ball) is than the box alone, printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_kv.h"
#include "kernels/cpu/sparse_attention.h"
#include "kvcache/kv_pool.h"
#include "tests/util/numeric.h"
#include "tests/util/sparse_decode.h"

namespace lychee {
namespace {

using ::lychee::testing::RandomVector;

struct Shape {
  int64_t heads = 8, kv_heads = 2, block = 16, dim = 64;
};

// One layer of a KvPool holding `tokens` keys through a shuffled block table; `k`/`v` are the
// rows as written, [tokens, kv_heads, dim].
struct Cache {
  Cache(std::mt19937_64& rng, const Shape& s, int64_t num_tokens)
      : shape(s),
        tokens(num_tokens),
        pool(
            {.num_layers = 1, .num_kv_heads = s.kv_heads, .head_dim = s.dim, .block_size = s.block},
            (num_tokens + s.block - 1) / s.block + 2) {
    view = pool.View(0);
    std::vector<int32_t> ids(static_cast<size_t>(pool.num_blocks()));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + (tokens + s.block - 1) / s.block);
    k = RandomVector(rng, static_cast<size_t>(tokens * s.kv_heads * s.dim));
    v = RandomVector(rng, static_cast<size_t>(tokens * s.kv_heads * s.dim));
  }
  float& K(int64_t j, int64_t g, int64_t e) {
    return k[static_cast<size_t>((j * shape.kv_heads + g) * shape.dim + e)];
  }
  // Writes every row, in random chunks (the summaries see partial blocks grow).
  void Write(std::mt19937_64& rng) {
    for (int64_t pos = 0; pos < tokens;) {
      const int64_t n = std::min<int64_t>(tokens - pos, 1 + static_cast<int64_t>(rng() % 40));
      cpu::WritePagedKvParams w;
      w.cache = view;
      w.k = k.data() + pos * shape.kv_heads * shape.dim;
      w.v = v.data() + pos * shape.kv_heads * shape.dim;
      w.block_table = table.data();
      w.num_tokens = n;
      w.num_table_blocks = static_cast<int64_t>(table.size());
      w.start_position = pos;
      cpu::WritePagedKv(w);
      pos += n;
    }
  }

  Shape shape;
  int64_t tokens;
  KvPool pool;
  PagedKvView view;
  std::vector<int32_t> table;
  std::vector<float> k, v;
};

float Scale(const Shape& s) { return 1.0f / std::sqrt(static_cast<float>(s.dim)); }

// SparseDecodeAttention for the query at `pos` with per kv head selections (box bounds only
// when `with_ball` is false).
void RunSparse(const Cache& c, const std::vector<float>& q, int64_t pos,
               const std::vector<std::vector<int32_t>>& per_head, bool token_level,
               std::vector<float>* out, std::vector<float>* mass, bool with_ball = true) {
  PagedKvView view = c.view;
  if (!with_ball) view.key_ball = nullptr;
  lychee::testing::RunSparseDecode(view, c.table, q, c.shape.heads, pos, per_head, token_level, out,
                                   mass);
}

// Exact scores in float64 (with the kernel's scale, the definition the bound certifies).
std::vector<double> ExactScores(Cache& c, const std::vector<float>& q, int64_t pos, int64_t h) {
  const Shape& s = c.shape;
  const int64_t g = h / (s.heads / s.kv_heads);
  std::vector<double> sc;
  for (int64_t j = 0; j <= pos; ++j) {
    double dot = 0;
    for (int64_t e = 0; e < s.dim; ++e) {
      dot += static_cast<double>(q[static_cast<size_t>(h * s.dim + e)]) * c.K(j, g, e);
    }
    sc.push_back(dot * static_cast<double>(Scale(s)));
  }
  return sc;
}

// The exact softmax mass head h puts on keys it did not read.
double ExactDropped(Cache& c, const std::vector<float>& q, int64_t pos, int64_t h,
                    const std::vector<int32_t>& selected, bool token_level) {
  const std::vector<double> sc = ExactScores(c, q, pos, h);
  const double m = *std::max_element(sc.begin(), sc.end());
  double all = 0, dropped = 0;
  for (int64_t j = 0; j <= pos; ++j) {
    const double w = std::exp(sc[static_cast<size_t>(j)] - m);
    all += w;
    const int32_t id = static_cast<int32_t>(token_level ? j : j / c.shape.block);
    if (!std::binary_search(selected.begin(), selected.end(), id)) dropped += w;
  }
  return dropped / all;
}

void DenseAttention(const Cache& c, const std::vector<float>& q, int64_t pos,
                    std::vector<float>* out) {
  const Shape& s = c.shape;
  out->assign(static_cast<size_t>(s.heads * s.dim), 0.0f);
  std::vector<float> scratch(static_cast<size_t>(pos + 1));
  cpu::PagedAttentionParams p;
  p.q = q.data();
  p.cache = c.view;
  p.block_table = c.table.data();
  p.out = out->data();
  p.scratch = scratch.data();
  p.num_queries = 1;
  p.num_heads = s.heads;
  p.num_table_blocks = static_cast<int64_t>(c.table.size());
  p.query_start = pos;
  p.scale = Scale(s);
  cpu::PagedAttention(p);
}

class SparseBoundTest : public ::testing::Test {
 protected:
  SparseBoundTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }
  std::string SeedNote() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }
  uint64_t seed_;
  std::mt19937_64 rng_;
};

TEST_F(SparseBoundTest, EveryBlockAndEveryPositionEqualPagedAttentionBitwise) {
  SCOPED_TRACE(SeedNote());
  for (const Shape s : {Shape{8, 2, 16, 64}, Shape{4, 4, 16, 128}, Shape{6, 3, 5, 17}}) {
    for (int64_t tokens : {1, 15, 16, 17, 100, 257}) {
      Cache c(rng_, s, tokens);
      c.Write(rng_);
      const int64_t pos = tokens - 1;
      const auto q = RandomVector(rng_, static_cast<size_t>(s.heads * s.dim), -2.0f, 2.0f);
      std::vector<int32_t> blocks(static_cast<size_t>(pos / s.block + 1));
      std::iota(blocks.begin(), blocks.end(), 0);
      std::vector<int32_t> positions(static_cast<size_t>(tokens));
      std::iota(positions.begin(), positions.end(), 0);
      std::vector<float> want, out, mass;
      DenseAttention(c, q, pos, &want);
      RunSparse(c, q, pos, std::vector<std::vector<int32_t>>(s.kv_heads, blocks), false, &out,
                &mass);
      EXPECT_EQ(std::memcmp(out.data(), want.data(), out.size() * sizeof(float)), 0)
          << "blocks, tokens " << tokens << " dim " << s.dim;
      for (float m : mass) EXPECT_EQ(m, 0.0f);
      RunSparse(c, q, pos, std::vector<std::vector<int32_t>>(s.kv_heads, positions), true, &out,
                &mass);
      EXPECT_EQ(std::memcmp(out.data(), want.data(), out.size() * sizeof(float)), 0)
          << "positions, tokens " << tokens << " dim " << s.dim;
      for (float m : mass) EXPECT_EQ(m, 0.0f);
    }
  }
}

// A token-level selection reads exactly its positions: the output equals attention over those
// keys alone (float64 reference), and a block-aligned token selection equals the block one.
TEST_F(SparseBoundTest, TokenSelectionReadsExactlyItsPositions) {
  SCOPED_TRACE(SeedNote());
  const Shape s{8, 2, 16, 64};
  const int64_t tokens = 150, pos = tokens - 1;
  Cache c(rng_, s, tokens);
  c.Write(rng_);
  const auto q = RandomVector(rng_, static_cast<size_t>(s.heads * s.dim), -2.0f, 2.0f);
  std::vector<std::vector<int32_t>> per_head(static_cast<size_t>(s.kv_heads));
  for (auto& ids : per_head) {
    for (int64_t j = 0; j <= pos; ++j) {
      if (rng_() % 3 == 0 || j == pos) ids.push_back(static_cast<int32_t>(j));
    }
  }
  std::vector<float> out, mass;
  RunSparse(c, q, pos, per_head, true, &out, &mass);
  for (int64_t h = 0; h < s.heads; ++h) {
    const auto& ids = per_head[static_cast<size_t>(h / (s.heads / s.kv_heads))];
    const std::vector<double> sc = ExactScores(c, q, pos, h);
    double m = -1e300, sum = 0;
    for (int32_t j : ids) m = std::max(m, sc[static_cast<size_t>(j)]);
    std::vector<double> want(static_cast<size_t>(s.dim), 0.0);
    for (int32_t j : ids) {
      const double w = std::exp(sc[static_cast<size_t>(j)] - m);
      sum += w;
      for (int64_t e = 0; e < s.dim; ++e) {
        want[static_cast<size_t>(e)] +=
            w * c.v[static_cast<size_t>((j * s.kv_heads + h / (s.heads / s.kv_heads)) * s.dim + e)];
      }
    }
    for (int64_t e = 0; e < s.dim; ++e) {
      EXPECT_NEAR(out[static_cast<size_t>(h * s.dim + e)], want[static_cast<size_t>(e)] / sum, 1e-5)
          << "head " << h;
    }
    EXPECT_GT(mass[static_cast<size_t>(h)], 0.0f);
  }
  // Blocks {0, 2, last} as blocks and as their positions: same output, same bound.
  const int64_t last = pos / s.block;
  std::vector<int32_t> blocks{0, 2, static_cast<int32_t>(last)}, positions;
  for (int32_t b : blocks) {
    for (int64_t j = b * s.block; j < std::min<int64_t>((b + 1) * s.block, tokens); ++j) {
      positions.push_back(static_cast<int32_t>(j));
    }
  }
  std::vector<float> out_b, mass_b, out_t, mass_t;
  RunSparse(c, q, pos, std::vector<std::vector<int32_t>>(s.kv_heads, blocks), false, &out_b,
            &mass_b);
  RunSparse(c, q, pos, std::vector<std::vector<int32_t>>(s.kv_heads, positions), true, &out_t,
            &mass_t);
  EXPECT_EQ(out_b, out_t);
  EXPECT_EQ(mass_b, mass_t);
}

enum class Keys { kRandom, kIdenticalInBlock, kAlignedUnread, kWideRange, kConcentrated, kTies };

const char* KeysName(Keys k) {
  switch (k) {
    case Keys::kRandom:
      return "random";
    case Keys::kIdenticalInBlock:
      return "identical-in-block";
    case Keys::kAlignedUnread:
      return "aligned-unread";
    case Keys::kWideRange:
      return "wide-range";
    case Keys::kConcentrated:
      return "concentrated";
    case Keys::kTies:
      return "ties";
  }
  return "?";
}

// Random selections over random and adversarial keys: the bound is >= the exact δ with no slack
// at all, for block and token selections, with and without the ball summary.
TEST_F(SparseBoundTest, BoundIsNeverBelowTheExactDroppedMass) {
  SCOPED_TRACE(SeedNote());
  int positive = 0, trials = 0;
  for (int trial = 0; trial < 360; ++trial) {
    const Keys kind = static_cast<Keys>(trial % 6);
    const bool token_level = (trial / 6) % 2 == 1;
    Shape s;
    s.dim = (trial / 12) % 3 == 0 ? 128 : ((trial / 12) % 3 == 1 ? 64 : 8);
    s.block = trial % 5 == 0 ? 1 : 16;
    const int64_t tokens = 1 + static_cast<int64_t>(rng_() % 300);
    const int64_t pos = tokens - 1;
    const int64_t nb = pos / s.block + 1;
    SCOPED_TRACE(std::string("keys ") + KeysName(kind) + " trial " + std::to_string(trial) +
                 " dim " + std::to_string(s.dim) + " tokens " + std::to_string(tokens) +
                 (token_level ? " token-level" : " block-level"));
    Cache c(rng_, s, tokens);
    auto q = RandomVector(rng_, static_cast<size_t>(s.heads * s.dim), -2.0f, 2.0f);
    const int64_t group = s.heads / s.kv_heads;
    std::vector<std::vector<int32_t>> per_head(static_cast<size_t>(s.kv_heads));
    const int64_t n_ids = token_level ? tokens : nb;
    for (auto& ids : per_head) {
      for (int64_t i = 0; i < n_ids; ++i) {
        if (rng_() % 3 == 0) ids.push_back(static_cast<int32_t>(i));
      }
    }
    auto read = [&](int64_t g, int64_t j) {
      const auto& ids = per_head[static_cast<size_t>(g)];
      return std::binary_search(ids.begin(), ids.end(),
                                static_cast<int32_t>(token_level ? j : j / s.block));
    };
    switch (kind) {
      case Keys::kRandom:
        break;
      case Keys::kIdenticalInBlock:  // the box and the ball are exact: the bound is tight
        for (int64_t j = 0; j < tokens; ++j) {
          for (int64_t g = 0; g < s.kv_heads; ++g) {
            for (int64_t e = 0; e < s.dim; ++e) c.K(j, g, e) = c.K((j / s.block) * s.block, g, e);
          }
        }
        break;
      case Keys::kAlignedUnread:  // unread keys aligned with the group's first query: most mass
        for (int64_t j = 0; j < tokens; ++j) {
          for (int64_t g = 0; g < s.kv_heads; ++g) {
            if (read(g, j) || rng_() % 4 != 0) continue;
            for (int64_t e = 0; e < s.dim; ++e) {
              c.K(j, g, e) = 0.5f * q[static_cast<size_t>(g * group * s.dim + e)];
            }
          }
        }
        break;
      case Keys::kWideRange:  // scores hundreds apart: exp under/overflow paths
        for (float& x : c.k) x *= 30.0f;
        break;
      case Keys::kConcentrated:  // all the mass in two blocks, the rest far below
        for (int64_t j = 0; j < tokens; ++j) {
          const bool hot = (j / s.block) % 7 == 3;
          for (int64_t g = 0; g < s.kv_heads; ++g) {
            for (int64_t e = 0; e < s.dim; ++e) {
              const float qe = q[static_cast<size_t>(g * group * s.dim + e)];
              c.K(j, g, e) = hot ? qe + 0.01f * c.K(j, g, e) : 0.1f * c.K(j, g, e) - 0.2f * qe;
            }
          }
        }
        break;
      case Keys::kTies:  // one key repeated everywhere: every score equal, δ = unread fraction
        for (int64_t j = 0; j < tokens; ++j) {
          for (int64_t g = 0; g < s.kv_heads; ++g) {
            for (int64_t e = 0; e < s.dim; ++e) c.K(j, g, e) = c.K(0, g, e);
          }
        }
        break;
    }
    c.Write(rng_);
    for (bool with_ball : {true, false}) {
      std::vector<float> out, mass;
      RunSparse(c, q, pos, per_head, token_level, &out, &mass, with_ball);
      for (int64_t h = 0; h < s.heads; ++h) {
        const auto& ids = per_head[static_cast<size_t>(h / group)];
        const double exact = ExactDropped(c, q, pos, h, ids, token_level);
        const double bound = mass[static_cast<size_t>(h)];
        ++trials;
        ASSERT_GE(bound, exact) << "head " << h << (with_ball ? " ball" : " box");
        ASSERT_LE(bound, 1.0);
        if (static_cast<int64_t>(ids.size()) == n_ids) {
          EXPECT_EQ(bound, 0.0);
        }
        if (exact > 1e-3) ++positive;
        if (kind == Keys::kIdenticalInBlock && s.dim == 8 && exact > 1e-3) {
          EXPECT_LE(bound, exact * 1.01) << "exact summaries give a tight bound";
        }
      }
    }
  }
  EXPECT_GT(positive, trials / 4);  // the trials did drop real mass
}

TEST_F(SparseBoundTest, BlockBoundsEncloseEveryKeyScore) {
  SCOPED_TRACE(SeedNote());
  for (const Shape s : {Shape{8, 2, 16, 64}, Shape{4, 2, 16, 128}, Shape{4, 4, 3, 9}}) {
    const int64_t tokens = 203;
    const int64_t nb = (tokens + s.block - 1) / s.block;
    Cache c(rng_, s, tokens);
    for (float& x : c.k) x = x * 3.0f + 0.5f;  // off-centre keys
    c.Write(rng_);
    const auto q = RandomVector(rng_, static_cast<size_t>(s.heads * s.dim), -2.0f, 2.0f);
    std::vector<float> upper(static_cast<size_t>(s.heads * nb)), lower(upper.size());
    cpu::BlockScoreBoundsParams p;
    p.q = q.data();
    p.cache = c.view;
    p.block_table = c.table.data();
    p.out = upper.data();
    p.lower = lower.data();
    p.num_heads = s.heads;
    p.num_blocks = nb;
    p.scale = Scale(s);
    cpu::BlockScoreBounds(p);
    const int64_t group = s.heads / s.kv_heads;
    for (int64_t h = 0; h < s.heads; ++h) {
      const std::vector<double> exact = ExactScores(c, q, tokens - 1, h);
      for (int64_t j = 0; j < tokens; ++j) {
        const int64_t b = j / s.block;
        const float fp32 =
            cpu::BlockScoreBound(q.data() + h * s.dim, c.view.KeyMin(c.table[b], h / group),
                                 c.view.KeyMax(c.table[b], h / group), s.dim, p.scale);
        const size_t i = static_cast<size_t>(h * nb + b);
        ASSERT_GE(upper[i], exact[static_cast<size_t>(j)]) << "head " << h << " key " << j;
        ASSERT_LE(lower[i], exact[static_cast<size_t>(j)]) << "head " << h << " key " << j;
        ASSERT_LE(upper[i], fp32) << "min(box, ball) is never above the box";
        const cpu::BlockScoreRange r =
            cpu::BlockScoreRangeOf(q.data() + h * s.dim, c.view, c.table[b], h / group, p.scale);
        ASSERT_EQ(r.upper, upper[i]);
        ASSERT_EQ(r.lower, lower[i]);
      }
    }
  }
}

// How much the ball tightens the certificate, on the same selections: random keys (uniform in
// [-1, 1]^d) and clustered keys (a shared direction plus small noise, closer to real attention
// keys), keeping the top quarter of blocks by exact mass. Prints mean bound (box alone vs
// min(box, ball)) and mean exact δ; asserts the ball never loosens it and helps at d = 128.
TEST_F(SparseBoundTest, BallTightensTheBoxBound) {
  SCOPED_TRACE(SeedNote());
  for (int64_t dim : {64, 128}) {
    for (bool clustered : {false, true}) {
      const Shape s{8, 2, 16, dim};
      const int64_t tokens = 1024, pos = tokens - 1, nb = tokens / s.block;
      double sum_box = 0, sum_ball = 0, sum_exact = 0, sum_gap_box = 0, sum_gap_ball = 0;
      int n = 0, n_gap = 0;
      for (int trial = 0; trial < 6; ++trial) {
        Cache c(rng_, s, tokens);
        const auto dir = RandomVector(rng_, static_cast<size_t>(dim));
        if (clustered) {
          for (int64_t j = 0; j < tokens; ++j) {
            for (int64_t g = 0; g < s.kv_heads; ++g) {
              for (int64_t e = 0; e < dim; ++e) {
                c.K(j, g, e) = 2.0f * dir[static_cast<size_t>(e)] + 0.5f * c.K(j, g, e);
              }
            }
          }
        }
        c.Write(rng_);
        const auto q = RandomVector(rng_, static_cast<size_t>(s.heads * dim), -2.0f, 2.0f);
        // Per kv head: the top quarter of blocks by the group's exact mass.
        const int64_t group = s.heads / s.kv_heads;
        std::vector<std::vector<int32_t>> per_head(static_cast<size_t>(s.kv_heads));
        for (int64_t g = 0; g < s.kv_heads; ++g) {
          std::vector<double> block_mass(static_cast<size_t>(nb), 0.0);
          for (int64_t h = g * group; h < (g + 1) * group; ++h) {
            const std::vector<double> sc = ExactScores(c, q, pos, h);
            const double m = *std::max_element(sc.begin(), sc.end());
            for (int64_t j = 0; j < tokens; ++j) {
              block_mass[static_cast<size_t>(j / s.block)] +=
                  std::exp(sc[static_cast<size_t>(j)] - m);
            }
          }
          std::vector<int32_t> order(static_cast<size_t>(nb));
          std::iota(order.begin(), order.end(), 0);
          std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
            return block_mass[static_cast<size_t>(a)] > block_mass[static_cast<size_t>(b)];
          });
          auto& ids = per_head[static_cast<size_t>(g)];
          ids.assign(order.begin(), order.begin() + nb / 4);
          std::sort(ids.begin(), ids.end());
        }
        std::vector<float> out, ball, box;
        RunSparse(c, q, pos, per_head, false, &out, &ball, true);
        RunSparse(c, q, pos, per_head, false, &out, &box, false);
        for (int64_t h = 0; h < s.heads; ++h) {
          const auto& ids = per_head[static_cast<size_t>(h / group)];
          const double exact = ExactDropped(c, q, pos, h, ids, false);
          ASSERT_LE(ball[static_cast<size_t>(h)], box[static_cast<size_t>(h)]);
          ASSERT_GE(ball[static_cast<size_t>(h)], exact);
          sum_box += box[static_cast<size_t>(h)];
          sum_ball += ball[static_cast<size_t>(h)];
          sum_exact += exact;
          ++n;
          // Per-block: bound minus the block's true max score, box vs min(box, ball).
          const std::vector<double> sc = ExactScores(c, q, pos, h);
          for (int64_t b = 0; b < nb; ++b) {
            double true_max = -1e300;
            for (int64_t j = b * s.block; j < (b + 1) * s.block; ++j) {
              true_max = std::max(true_max, sc[static_cast<size_t>(j)]);
            }
            const float* qh = q.data() + h * dim;
            sum_gap_box +=
                cpu::BlockScoreBound(qh, c.view.KeyMin(c.table[b], h / group),
                                     c.view.KeyMax(c.table[b], h / group), dim, Scale(s)) -
                true_max;
            sum_gap_ball +=
                cpu::BlockScoreRangeOf(qh, c.view, c.table[b], h / group, Scale(s)).upper -
                true_max;
            ++n_gap;
          }
        }
      }
      std::printf(
          "[tightness] d=%lld %s keys, top 25%% of blocks read: mean delta bound box %.4f, "
          "min(box, ball) %.4f, exact %.5f; mean (u_b - true block max) box %.3f, "
          "min(box, ball) %.3f\n",
          static_cast<long long>(dim), clustered ? "clustered" : "uniform", sum_box / n,
          sum_ball / n, sum_exact / n, sum_gap_box / n_gap, sum_gap_ball / n_gap);
      EXPECT_LE(sum_gap_ball, sum_gap_box);
      if (dim == 128) {
        EXPECT_LT(sum_gap_ball, 0.9 * sum_gap_box);
      }
    }
  }
}

TEST(SelectionErrorTest, NamesWhatBreaksTheContract) {
  KvPool pool({.num_layers = 1, .num_kv_heads = 2, .head_dim = 4, .block_size = 4}, 4);
  cpu::SparseDecodeAttentionParams p;
  p.cache = pool.View(0);
  p.position = 9;  // blocks 0..2, positions 0..9
  auto check = [&](std::vector<int32_t> sel, std::vector<int64_t> off, bool tokens) {
    p.selected = sel.data();
    p.selected_offsets = off.data();
    p.token_level = tokens;
    return cpu::SelectionError(p);
  };
  EXPECT_EQ(check({0, 2, 1}, {0, 2, 3}, false), "");
  EXPECT_EQ(check({0, 5, 9}, {0, 3, 3}, true), "");
  EXPECT_NE(check({0, 3}, {0, 2, 2}, false).find("block 3 is outside [0, 3)"), std::string::npos);
  EXPECT_NE(check({10}, {0, 0, 1}, true).find("position 10"), std::string::npos);
  EXPECT_NE(check({2, 1}, {0, 2, 2}, false).find("not strictly ascending"), std::string::npos);
  EXPECT_NE(check({1, 1}, {0, 2, 2}, true).find("not strictly ascending"), std::string::npos);
  EXPECT_NE(check({1}, {0, 1, 0}, false).find("offsets decrease"), std::string::npos);
  EXPECT_NE(check({-1}, {0, 1, 1}, true).find("outside"), std::string::npos);
}

}  // namespace
}  // namespace lychee
