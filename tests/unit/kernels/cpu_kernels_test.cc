// SPDX-License-Identifier: Apache-2.0
// Randomised checks of kernels/cpu against naive double-precision loops: fresh inputs every run
// (seed printed; replay with LYCHEE_TEST_SEED), outputs poisoned with NaN before each call so an
// element the kernel forgets to write fails the comparison, odd sizes included.
#include "kernels/cpu/cpu_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/gemv.h"
#include "tests/util/numeric.h"

namespace lychee::cpu {
namespace {

using ::lychee::testing::NanVector;
using ::lychee::testing::RandomVector;
using ::lychee::testing::RelativeL2;

class CpuKernelsTest : public ::testing::Test {
 protected:
  CpuKernelsTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }
  std::string SeedNote() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }

  uint64_t seed_;
  std::mt19937_64 rng_;
};

constexpr double kTol = 1e-5;

// ---- Gemm ----

std::vector<double> NaiveGemm(const std::vector<float>& x, const std::vector<float>& w,
                              const float* bias, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double s = bias ? bias[c] : 0.0;
      for (int64_t i = 0; i < k; ++i) s += static_cast<double>(x[r * k + i]) * w[c * k + i];
      y[r * n + c] = s;
    }
  }
  return y;
}

TEST_F(CpuKernelsTest, GemmMatchesNaive) {
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 37, 19}, Shape{1, 512, 64}, Shape{3, 5, 7},
                        Shape{17, 33, 65}, Shape{64, 172, 64}, Shape{129, 67, 255},
                        Shape{256, 512, 384} /* large enough for OpenBLAS to thread */}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(SeedNote() + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                   " k=" + std::to_string(s.k) + " bias=" + std::to_string(with_bias));
      const auto x = RandomVector(rng_, s.m * s.k);
      const auto w = RandomVector(rng_, s.n * s.k);
      const auto b = RandomVector(rng_, s.n);
      auto y = NanVector(s.m * s.n);
      Gemm(x.data(), w.data(), with_bias ? b.data() : nullptr, y.data(), s.m, s.n, s.k);
      const auto want = NaiveGemm(x, w, with_bias ? b.data() : nullptr, s.m, s.n, s.k);
      EXPECT_LT(RelativeL2(y, want), kTol);
    }
  }
}

// Decode's matrix-vector product on every ISA this CPU runs (AVX-512, AVX2, OpenBLAS): odd row
// counts and k with vector tails; beta 0 overwrites a NaN-poisoned y, beta 1 accumulates. Each
// element within the float dot product's rounding bound, (k + 2)·u·Σ|terms| (u = 2^-24, any
// summation order): a relative norm would fail on a single row whose terms cancel.
TEST_F(CpuKernelsTest, GemvMatchesNaiveOnEveryIsa) {
  std::vector<VectorIsa> isas = {VectorIsa::kScalar};
  for (VectorIsa isa : {VectorIsa::kAvx2, VectorIsa::kAvx512}) {
    if (static_cast<int>(DetectedIsa()) >= static_cast<int>(isa)) isas.push_back(isa);
  }
  for (const VectorIsa isa : isas) {
    SetIsaOverride(isa);
    for (const int64_t n : {1, 3, 4, 5, 37, 512}) {
      for (const int64_t k : {1, 7, 8, 15, 16, 17, 64, 100, 768}) {
        SCOPED_TRACE(SeedNote() + " isa=" + IsaName(isa) + " n=" + std::to_string(n) +
                     " k=" + std::to_string(k));
        const auto x = RandomVector(rng_, k);
        const auto w = RandomVector(rng_, n * k);
        const auto want = NaiveGemm(x, w, nullptr, 1, n, k);
        std::vector<double> magnitude(static_cast<size_t>(n), 0.0);  // Σ|w·x| per row
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t i = 0; i < k; ++i) magnitude[r] += std::abs(double{w[r * k + i]} * x[i]);
        }
        const double u = std::ldexp(1.0, -24);
        auto y = NanVector(n);
        Gemv(w.data(), x.data(), y.data(), n, k, 0.0f);
        const auto base = RandomVector(rng_, n);
        std::vector<float> acc = base;
        Gemv(w.data(), x.data(), acc.data(), n, k, 1.0f);
        for (int64_t r = 0; r < n; ++r) {
          const double bound = static_cast<double>(k + 2) * u * (magnitude[r] + std::abs(base[r]));
          ASSERT_LE(std::abs(y[r] - want[r]), bound) << "row " << r;  // NaN fails too
          ASSERT_LE(std::abs(acc[r] - (want[r] + base[r])), bound) << "row " << r;
        }
      }
    }
  }
  SetIsaOverride(std::nullopt);
}

// ---- RmsNorm ----

TEST_F(CpuKernelsTest, RmsNormMatchesNaive) {
  for (const auto& [rows, dim] :
       {std::pair<int64_t, int64_t>{1, 1}, {1, 64}, {7, 13}, {33, 128}, {5, 4099}}) {
    SCOPED_TRACE(SeedNote() + " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim));
    const auto x = RandomVector(rng_, rows * dim, -3.0f, 3.0f);
    const auto w = RandomVector(rng_, dim, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<double> want(rows * dim);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = x[r * dim + i] * inv * w[i];
    }
    auto out = NanVector(rows * dim);
    RmsNorm(x.data(), w.data(), out.data(), rows, dim, eps);
    EXPECT_LT(RelativeL2(out, want), kTol);
    // In place (the aliasing the header allows).
    auto inplace = x;
    RmsNorm(inplace.data(), w.data(), inplace.data(), rows, dim, eps);
    EXPECT_LT(RelativeL2(inplace, want), kTol);
  }
}

TEST_F(CpuKernelsTest, RmsNormPerHeadNormalisesEachHead) {
  const int64_t tokens = 3, heads = 5, head_dim = 6;
  const auto x = RandomVector(rng_, tokens * heads * head_dim, -2.0f, 2.0f);
  const auto w = RandomVector(rng_, head_dim, 0.5f, 1.5f);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < tokens * heads; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < head_dim; ++i) ss += std::pow(x[r * head_dim + i], 2);
    const double inv = 1.0 / std::sqrt(ss / head_dim + 1e-6);
    for (int64_t i = 0; i < head_dim; ++i)
      want[r * head_dim + i] = x[r * head_dim + i] * inv * w[i];
  }
  auto got = x;
  RmsNormPerHead(got.data(), w.data(), tokens, heads, head_dim, 1e-6f);
  EXPECT_LT(RelativeL2(got, want), kTol) << SeedNote();
}

// ---- RoPE ----

// transformers' inverse frequencies, written out independently in double.
std::vector<double> NaiveInvFreq(const RopeParams& p) {
  std::vector<double> f(p.head_dim / 2);
  for (int64_t i = 0; i < p.head_dim / 2; ++i) {
    f[i] = 1.0 / std::pow(p.theta, (2.0 * i) / p.head_dim);
  }
  if (p.scaling == RopeScalingKind::kLinear) {
    for (double& v : f) v /= p.factor;
  } else if (p.scaling == RopeScalingKind::kLlama3) {
    const double low_wl = p.original_max_position_embeddings / p.low_freq_factor;
    const double high_wl = p.original_max_position_embeddings / p.high_freq_factor;
    for (double& v : f) {
      const double wl = 2 * std::numbers::pi / v;
      double scaled = wl > low_wl ? v / p.factor : v;
      const double smooth = (p.original_max_position_embeddings / wl - p.low_freq_factor) /
                            (p.high_freq_factor - p.low_freq_factor);
      const double smoothed = (1 - smooth) * scaled / p.factor + smooth * scaled;
      const bool medium = !(wl < high_wl) && !(wl > low_wl);
      v = medium ? smoothed : scaled;
    }
  }
  return f;
}

TEST_F(CpuKernelsTest, RopeInvFreqMatchesTransformersSchedules) {
  RopeParams none{.head_dim = 128, .theta = 500000.0};
  RopeParams linear{
      .head_dim = 64, .theta = 10000.0, .scaling = RopeScalingKind::kLinear, .factor = 4.0};
  RopeParams llama3{.head_dim = 128,
                    .theta = 500000.0,
                    .scaling = RopeScalingKind::kLlama3,
                    .factor = 8.0,
                    .low_freq_factor = 1.0,
                    .high_freq_factor = 4.0,
                    .original_max_position_embeddings = 8192};
  // A small llama3 setup whose bands all hold frequencies (as in tiny golden models).
  RopeParams llama3_small = llama3;
  llama3_small.head_dim = 16;
  llama3_small.theta = 10000.0;
  llama3_small.original_max_position_embeddings = 64;
  llama3_small.factor = 2.0;
  for (const RopeParams& p : {none, linear, llama3, llama3_small}) {
    std::vector<float> got(p.head_dim / 2, std::nanf(""));
    ComputeRopeInvFreq(p, got.data());
    EXPECT_LT(RelativeL2(got, NaiveInvFreq(p)), 1e-7);
  }
  // Spot values: llama3 keeps high frequencies and divides the lowest by the factor.
  std::vector<float> f(64);
  ComputeRopeInvFreq(llama3, f.data());
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f[63], 1.0 / std::pow(500000.0, 126.0 / 128) / 8.0, 1e-12);
}

TEST_F(CpuKernelsTest, ApplyRopeMatchesRotateHalf) {
  for (const auto& [tokens, heads, head_dim] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 1, 2}, {5, 3, 8}, {9, 7, 14}, {4, 2, 128}}) {
    SCOPED_TRACE(SeedNote() + " head_dim=" + std::to_string(head_dim));
    const int64_t stride = heads * head_dim + 3;  // padded rows exercise the stride
    auto x = RandomVector(rng_, tokens * stride);
    std::vector<int64_t> positions(tokens);
    std::uniform_int_distribution<int64_t> pos_dist(0, 5000);
    for (auto& p : positions) p = pos_dist(rng_);
    RopeParams params{.head_dim = head_dim, .theta = 10000.0};
    std::vector<float> inv_freq(head_dim / 2);
    ComputeRopeInvFreq(params, inv_freq.data());

    std::vector<double> want(x.begin(), x.end());
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < head_dim; ++i) {
          const double ang = positions[t] * static_cast<double>(inv_freq[i % half]);
          const double xi = x[t * stride + h * head_dim + i];
          // rotate_half(x) = cat(-x2, x1).
          const double rot = i < half ? -x[t * stride + h * head_dim + i + half]
                                      : x[t * stride + h * head_dim + i - half];
          want[t * stride + h * head_dim + i] = xi * std::cos(ang) + rot * std::sin(ang);
        }
      }
    }
    ApplyRope(x.data(), tokens, heads, head_dim, stride, positions.data(), inv_freq.data());
    EXPECT_LT(RelativeL2(x, want), kTol);
  }
}

// ---- Attention ----

struct AttnCase {
  int64_t num_queries, num_heads, num_kv_heads, head_dim, query_start, window;
};

std::vector<double> NaiveAttention(const AttnCase& c, const std::vector<float>& q,
                                   const std::vector<float>& k, const std::vector<float>& v) {
  const int64_t group = c.num_heads / c.num_kv_heads;
  std::vector<double> out(c.num_queries * c.num_heads * c.head_dim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  for (int64_t t = 0; t < c.num_queries; ++t) {
    const int64_t pos = c.query_start + t;
    for (int64_t h = 0; h < c.num_heads; ++h) {
      const int64_t kvh = h / group;
      std::vector<double> s;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j <= pos; ++j) {
        if (c.window > 0 && pos - j >= c.window) continue;
        double d = 0;
        for (int64_t e = 0; e < c.head_dim; ++e) {
          d += static_cast<double>(q[(t * c.num_heads + h) * c.head_dim + e]) *
               k[(j * c.num_kv_heads + kvh) * c.head_dim + e];
        }
        s.push_back(d * scale);
        keys.push_back(j);
      }
      double mx = -1e300, sum = 0;
      for (double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t e = 0; e < c.head_dim; ++e) {
        double acc = 0;
        for (size_t i = 0; i < keys.size(); ++i) {
          acc += s[i] * v[(keys[i] * c.num_kv_heads + kvh) * c.head_dim + e];
        }
        out[(t * c.num_heads + h) * c.head_dim + e] = acc / sum;
      }
    }
  }
  return out;
}

TEST_F(CpuKernelsTest, AttentionMatchesNaive) {
  const AttnCase cases[] = {
      {1, 1, 1, 1, 0, 0},      // single token, single element
      {1, 8, 4, 8, 0, 0},      // first decode step
      {1, 8, 4, 8, 37, 0},     // decode with history
      {13, 8, 4, 8, 0, 0},     // prefill, GQA
      {7, 6, 2, 17, 11, 0},    // chunked prefill after history, odd head_dim
      {9, 4, 4, 16, 20, 5},    // sliding window (MHA)
      {1, 12, 3, 64, 99, 32},  // decode with window
      {30, 2, 1, 5, 0, 7},     // prefill with window, MQA
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(SeedNote() + " queries=" + std::to_string(c.num_queries) +
                 " heads=" + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                 " dim=" + std::to_string(c.head_dim) + " start=" + std::to_string(c.query_start) +
                 " window=" + std::to_string(c.window));
    const int64_t keys = c.query_start + c.num_queries;
    const auto q = RandomVector(rng_, c.num_queries * c.num_heads * c.head_dim, -2.0f, 2.0f);
    const auto k = RandomVector(rng_, keys * c.num_kv_heads * c.head_dim, -2.0f, 2.0f);
    const auto v = RandomVector(rng_, keys * c.num_kv_heads * c.head_dim);
    auto out = NanVector(q.size());
    auto scratch = NanVector(keys);
    AttentionParams p;
    p.q = q.data();
    p.k_cache = k.data();
    p.v_cache = v.data();
    p.out = out.data();
    p.scratch = scratch.data();
    p.num_queries = c.num_queries;
    p.num_heads = c.num_heads;
    p.num_kv_heads = c.num_kv_heads;
    p.head_dim = c.head_dim;
    p.query_start = c.query_start;
    p.sliding_window = c.window;
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    Attention(p);
    EXPECT_LT(RelativeL2(out, NaiveAttention(c, q, k, v)), kTol);
  }
}

TEST_F(CpuKernelsTest, AttentionIsStableForLargeScores) {
  // Scores around 1e4 overflow exp() without the max subtraction.
  const AttnCase c{4, 2, 1, 8, 3, 0};
  const int64_t keys = c.query_start + c.num_queries;
  const auto q = RandomVector(rng_, c.num_queries * c.num_heads * c.head_dim, 50.0f, 60.0f);
  const auto k = RandomVector(rng_, keys * c.num_kv_heads * c.head_dim, 50.0f, 60.0f);
  const auto v = RandomVector(rng_, keys * c.num_kv_heads * c.head_dim);
  auto out = NanVector(q.size());
  std::vector<float> scratch(keys);
  AttentionParams p{.q = q.data(),
                    .k_cache = k.data(),
                    .v_cache = v.data(),
                    .out = out.data(),
                    .scratch = scratch.data(),
                    .num_queries = c.num_queries,
                    .num_heads = c.num_heads,
                    .num_kv_heads = c.num_kv_heads,
                    .head_dim = c.head_dim,
                    .query_start = c.query_start,
                    .sliding_window = 0,
                    .scale = static_cast<float>(1.0 / std::sqrt(8.0))};
  Attention(p);
  EXPECT_LT(RelativeL2(out, NaiveAttention(c, q, k, v)), 1e-4) << SeedNote();
}

// ---- Element-wise ----

TEST_F(CpuKernelsTest, SiluMulMatchesNaive) {
  for (int64_t n : {1, 7, 172, 1001}) {
    const auto g = RandomVector(rng_, n, -8.0f, 8.0f);
    const auto u = RandomVector(rng_, n, -2.0f, 2.0f);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i)
      want[i] = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    auto out = NanVector(n);
    SiluMul(g.data(), u.data(), out.data(), n);
    EXPECT_LT(RelativeL2(out, want), kTol) << SeedNote() << " n=" << n;
  }
}

TEST_F(CpuKernelsTest, AddInPlaceAndEmbeddingGather) {
  const int64_t vocab = 11, hidden = 9, tokens = 6;
  const auto table = RandomVector(rng_, vocab * hidden);
  std::vector<int32_t> ids = {3, 0, 10, 3, 7, 1};
  auto out = NanVector(tokens * hidden);
  EmbeddingGather(table.data(), ids.data(), out.data(), tokens, hidden);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < hidden; ++i) ASSERT_EQ(out[t * hidden + i], table[ids[t] * hidden + i]);
  }
  const auto y = RandomVector(rng_, out.size());
  auto want = out;
  for (size_t i = 0; i < want.size(); ++i) want[i] += y[i];
  AddInPlace(out.data(), y.data(), static_cast<int64_t>(out.size()));
  EXPECT_EQ(out, want);
}

}  // namespace
}  // namespace lychee::cpu
