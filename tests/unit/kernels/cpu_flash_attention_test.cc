// SPDX-License-Identifier: Apache-2.0
// FlashAttention against its reference PagedAttention on random paged caches: fresh inputs every
// run (seed printed; replay with LYCHEE_TEST_SEED), outputs poisoned with NaN, block tables
// shuffled, head_dim 8/64/128 (and odd ones on the scalar path), GQA groups 1-8 including 7,
// ragged chunks (a chunk attending to earlier cached pages plus itself), sliding windows, decode
// over long contexts (key splits), both ISAs and several thread counts. Also the Gemm split over
// threads against a naive product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/paged_kv.h"
#include "tests/util/numeric.h"

namespace lychee::cpu {
namespace {

using ::lychee::testing::NanVector;
using ::lychee::testing::RandomVector;
using ::lychee::testing::RelativeL2;

// Output error relative to the reference: exp2 polynomial (~2e-7) and a different summation order.
constexpr double kTol = 1e-5;

struct Case {
  int64_t num_heads, num_kv_heads, head_dim, block_size, seq_len, num_queries, window;
};

std::string Describe(const Case& c) {
  return "heads=" + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
         " dim=" + std::to_string(c.head_dim) + " bs=" + std::to_string(c.block_size) +
         " len=" + std::to_string(c.seq_len) + " q=" + std::to_string(c.num_queries) +
         " window=" + std::to_string(c.window);
}

class FlashAttentionTest : public ::testing::Test {
 protected:
  FlashAttentionTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }
  void TearDown() override {
    SetIsaOverride(std::nullopt);
    SetNumThreads(0);
  }
  std::string SeedNote() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }
  int64_t Uniform(int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  // Fills a shuffled paged cache for `c`, runs the reference and FlashAttention (with `threads`
  // threads, a workspace for `workspace_threads`) on the last num_queries tokens, and returns the
  // relative L2 error. `score_range` scales the queries (large values stress the softmax).
  // kBf16: FlashAttention reads a bf16 cache and the reference an fp32 cache of the same rounded
  // values; then `maybe_vs_fp32` gets the error against the reference on the unrounded values
  // and `maybe_ref_bf16` that of the reference's own bf16 path against its fp32 path.
  double Run(const Case& c, int threads, int workspace_threads, float score_range = 2.0f,
             KvDtype dtype = KvDtype::kFp32, double* maybe_vs_fp32 = nullptr,
             double* maybe_ref_bf16 = nullptr) {
    const int64_t num_table_blocks = (c.seq_len + c.block_size - 1) / c.block_size;
    const int64_t num_blocks = num_table_blocks + 3;
    std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng_);
    const std::vector<int32_t> table(ids.begin(), ids.begin() + num_table_blocks);
    // Every slot random, unwritten ones included: the kernel must never read past a sequence.
    auto kv = RandomVector(rng_, num_blocks * 2 * c.num_kv_heads * c.block_size * c.head_dim);
    PagedKvView view;
    view.kv = kv.data();
    view.num_blocks = num_blocks;
    view.num_kv_heads = c.num_kv_heads;
    view.block_size = c.block_size;
    view.head_dim = c.head_dim;
    PagedKvView run_view = view;  // what FlashAttention reads
    std::vector<uint16_t> kv_bf16;
    std::vector<float> kv_exact;
    if (dtype == KvDtype::kBf16) {
      kv_exact = kv;
      kv_bf16.resize(kv.size());
      for (size_t i = 0; i < kv.size(); ++i) {
        kv_bf16[i] = FloatToBf16(kv[i]);
        kv[i] = Bf16ToFloat(kv_bf16[i]);
      }
      run_view.kv = nullptr;
      run_view.kv_bf16 = kv_bf16.data();
    }
    const auto q =
        RandomVector(rng_, c.num_queries * c.num_heads * c.head_dim, -score_range, score_range);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));

    PagedAttentionParams r;
    r.q = q.data();
    r.cache = view;
    r.block_table = table.data();
    auto want = NanVector(q.size());
    auto scratch = NanVector(static_cast<size_t>(c.seq_len));
    r.out = want.data();
    r.scratch = scratch.data();
    r.num_queries = c.num_queries;
    r.num_heads = c.num_heads;
    r.num_table_blocks = num_table_blocks;
    r.query_start = c.seq_len - c.num_queries;
    r.sliding_window = c.window;
    r.scale = scale;
    PagedAttention(r);
    if (dtype == KvDtype::kBf16) {
      auto other = NanVector(q.size());
      PagedAttentionParams r2 = r;
      r2.out = other.data();
      if (maybe_ref_bf16 != nullptr) {
        r2.cache = run_view;
        PagedAttention(r2);
        *maybe_ref_bf16 = RelativeL2(other, want);
      }
      if (maybe_vs_fp32 != nullptr) {
        r2.cache = view;
        r2.cache.kv = kv_exact.data();
        PagedAttention(r2);
        vs_fp32_reference_ = other;
      }
    }

    SetNumThreads(threads);
    auto workspace = NanVector(static_cast<size_t>(
        FlashAttentionWorkspaceFloats(c.num_heads, c.num_kv_heads, c.head_dim, workspace_threads)));
    auto got = NanVector(q.size());
    FlashAttentionParams f;
    f.q = q.data();
    f.cache = run_view;
    f.block_table = table.data();
    f.out = got.data();
    f.workspace = workspace.data();
    f.workspace_floats = static_cast<int64_t>(workspace.size());
    f.num_queries = c.num_queries;
    f.num_heads = c.num_heads;
    f.num_table_blocks = num_table_blocks;
    f.query_start = r.query_start;
    f.sliding_window = c.window;
    f.scale = scale;
    FlashAttention(f);
    if (maybe_vs_fp32 != nullptr && dtype == KvDtype::kBf16) {
      *maybe_vs_fp32 = RelativeL2(got, vs_fp32_reference_);
    }
    return RelativeL2(got, want);
  }

  std::vector<float> vs_fp32_reference_;  // Run's reference output on unrounded fp32 K/V
  uint64_t seed_;
  std::mt19937_64 rng_;
};

const std::vector<VectorIsa>& Isas() {
  static const std::vector<VectorIsa> isas = [] {
    // Every ISA this CPU runs, each forced in turn (the ISAs are ordered).
    std::vector<VectorIsa> v = {VectorIsa::kScalar};
    for (VectorIsa isa : {VectorIsa::kAvx2, VectorIsa::kAvx512}) {
      if (static_cast<int>(DetectedIsa()) >= static_cast<int>(isa)) v.push_back(isa);
    }
    return v;
  }();
  return isas;
}

TEST_F(FlashAttentionTest, FixedShapesMatchReference) {
  const Case cases[] = {
      {1, 1, 8, 1, 1, 1, 0},          // one token, one slot per block
      {8, 4, 8, 16, 37, 1, 0},        // decode, GQA 2, partial last block
      {8, 8, 64, 16, 200, 200, 0},    // MHA prefill over several query and key tiles
      {7, 1, 64, 16, 150, 150, 0},    // MQA, group 7 (rows 28 of 32)
      {14, 2, 128, 16, 97, 33, 0},    // group 7, head_dim 128, chunk after history
      {16, 2, 64, 3, 130, 130, 0},    // group 8, block size 3 (tiles span many pages)
      {4, 4, 64, 5, 129, 70, 40},     // sliding window, chunked
      {6, 2, 8, 7, 300, 300, 17},     // window, head_dim 8
      {6, 3, 12, 4, 90, 20, 0},       // head_dim 12: scalar tiles even on AVX2
      {2, 1, 64, 16, 3000, 1, 0},     // decode at depth: key splits
      {12, 4, 64, 16, 2500, 3, 700},  // short chunk at depth with a window: splits and masks
  };
  for (const VectorIsa isa : Isas()) {
    SetIsaOverride(isa);
    for (const int threads : {1, 2, 3}) {
      for (const Case& c : cases) {
        SCOPED_TRACE(SeedNote() + " isa=" + IsaName(isa) + " threads=" + std::to_string(threads) +
                     " " + Describe(c));
        EXPECT_LT(Run(c, threads, threads), kTol);
      }
    }
  }
}

TEST_F(FlashAttentionTest, RandomShapesMatchReference) {
  const int64_t dims[] = {8, 40, 64, 96, 128};  // 40: a half vector of columns on AVX-512
  for (int iter = 0; iter < 40; ++iter) {
    Case c;
    c.num_kv_heads = Uniform(1, 3);
    c.num_heads = c.num_kv_heads * Uniform(1, 8);
    c.head_dim = dims[Uniform(0, 4)];
    c.block_size = std::vector<int64_t>{1, 4, 7, 16, 32}[static_cast<size_t>(Uniform(0, 4))];
    c.seq_len = Uniform(1, 700);
    c.num_queries = Uniform(0, 3) == 0 ? 1 : Uniform(1, c.seq_len);
    c.window = Uniform(0, 2) == 0 ? Uniform(1, c.seq_len) : 0;
    const VectorIsa isa = Isas()[static_cast<size_t>(Uniform(0, Isas().size() - 1))];
    SetIsaOverride(isa);
    const int threads = static_cast<int>(Uniform(1, 4));
    SCOPED_TRACE(SeedNote() + " iter=" + std::to_string(iter) + " isa=" + IsaName(isa) +
                 " threads=" + std::to_string(threads) + " " + Describe(c));
    EXPECT_LT(Run(c, threads, threads), kTol);
  }
}

// A prefill cut into ragged chunks: each chunk attends to the pages its predecessors wrote plus
// itself; the chunk's output must equal the reference's rows for the same queries.
TEST_F(FlashAttentionTest, ChunkedPrefillMatchesReference) {
  for (const VectorIsa isa : Isas()) {
    SetIsaOverride(isa);
    const Case whole = {8, 2, 64, 16, 777, 777, 0};
    for (int64_t start = 0; start < whole.seq_len;) {
      const int64_t n = std::min<int64_t>(Uniform(1, 300), whole.seq_len - start);
      Case c = whole;
      c.seq_len = start + n;
      c.num_queries = n;
      SCOPED_TRACE(SeedNote() + " isa=" + IsaName(isa) + " " + Describe(c));
      EXPECT_LT(Run(c, 2, 2), kTol);
      start += n;
    }
  }
}

TEST_F(FlashAttentionTest, LargeScoresStayFinite) {
  for (const VectorIsa isa : Isas()) {
    SetIsaOverride(isa);
    const Case c = {4, 2, 64, 16, 400, 100, 0};
    SCOPED_TRACE(SeedNote() + " isa=" + IsaName(isa));
    // Scores of several hundred: exp without the running max would overflow.
    EXPECT_LT(Run(c, 2, 2, /*score_range=*/300.0f), 1e-4);
  }
}

// A bf16 cache: FlashAttention widens each key tile and must then equal the fp32 reference on the
// same rounded values (to fp32 summation-order error), and stay within bf16 rounding of the
// reference on the unrounded values; the reference's own bf16 path equals its fp32 path.
TEST_F(FlashAttentionTest, Bf16CacheMatchesReference) {
  const Case cases[] = {
      {8, 4, 8, 16, 37, 1, 0},        // decode, head_dim 8
      {8, 8, 64, 16, 200, 200, 0},    // prefill over several tiles
      {14, 2, 128, 16, 97, 33, 0},    // group 7, head_dim 128, chunk after history
      {16, 2, 64, 3, 130, 130, 0},    // block size 3: runs of 3 keys widened per page
      {4, 4, 64, 5, 129, 70, 40},     // sliding window
      {6, 3, 12, 4, 90, 20, 0},       // head_dim 12: scalar widening tail on AVX2
      {12, 3, 64, 16, 3000, 1, 0},    // decode at depth: key splits
      {12, 4, 64, 16, 2500, 3, 700},  // short chunk at depth with a window
  };
  for (const VectorIsa isa : Isas()) {
    SetIsaOverride(isa);
    for (const int threads : {1, 2}) {
      for (const Case& c : cases) {
        SCOPED_TRACE(SeedNote() + " isa=" + IsaName(isa) + " threads=" + std::to_string(threads) +
                     " " + Describe(c));
        double vs_fp32 = 1.0, ref_bf16 = 1.0;
        EXPECT_LT(Run(c, threads, threads, 2.0f, KvDtype::kBf16, &vs_fp32, &ref_bf16), kTol);
        EXPECT_LT(ref_bf16, 1e-6);
        // bf16 keeps 8 significant bits: ~2^-9 relative per value, averaged over the keys.
        EXPECT_LT(vs_fp32, 1e-2);
        EXPECT_GT(vs_fp32, 0.0) << "the bf16 cache should not be bit-identical to fp32";
      }
    }
  }
}

TEST_F(FlashAttentionTest, SmallWorkspaceUsesFewerThreads) {
  const Case c = {4, 1, 64, 16, 2000, 1, 0};
  SCOPED_TRACE(SeedNote());
  EXPECT_LT(Run(c, /*threads=*/4, /*workspace_threads=*/1), kTol);
  EXPECT_LT(Run(c, /*threads=*/4, /*workspace_threads=*/2), kTol);
}

TEST_F(FlashAttentionTest, ParallelGemmMatchesNaive) {
  struct Shape {
    int64_t m, n, k;
  };
  const Shape shapes[] = {{1, 3000, 200}, {300, 17, 400}, {257, 768, 256}, {2, 40, 5000}};
  for (const int threads : {1, 2, 3}) {
    SetNumThreads(threads);
    for (const Shape& s : shapes) {
      for (const bool bias : {false, true}) {
        SCOPED_TRACE(SeedNote() + " threads=" + std::to_string(threads) +
                     " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k) + " bias=" + std::to_string(bias));
        const auto x = RandomVector(rng_, s.m * s.k);
        const auto w = RandomVector(rng_, s.n * s.k);
        const auto b = RandomVector(rng_, s.n);
        std::vector<double> want(static_cast<size_t>(s.m * s.n));
        for (int64_t r = 0; r < s.m; ++r) {
          for (int64_t col = 0; col < s.n; ++col) {
            double acc = bias ? b[col] : 0.0;
            for (int64_t i = 0; i < s.k; ++i) {
              acc += static_cast<double>(x[r * s.k + i]) * w[col * s.k + i];
            }
            want[r * s.n + col] = acc;
          }
        }
        auto got = NanVector(want.size());
        Gemm(x.data(), w.data(), bias ? b.data() : nullptr, got.data(), s.m, s.n, s.k);
        EXPECT_LT(RelativeL2(got, want), 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace lychee::cpu
