// SPDX-License-Identifier: Apache-2.0
// The cuBLASLt GEMM wrapper (kernels/cuda/gemm.h) against cpu::Gemm on bf16-rounded inputs, so
// only accumulation order and the output rounding differ: prefill-sized and skinny decode shapes,
// odd m, bf16 and fp32 outputs, outputs poisoned before each run; the skinny decode kernel
// (m <= 16) beside cuBLASLt on the same shapes, its determinism and plan. CanImplementGemm runs
// without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/skinny_gemm.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;
using ::lychee::cuda::testing::RandomBf16Values;
using ::lychee::testing::RelativeL2;

GemmArgs ValidArgs() {
  GemmArgs a;
  a.x = reinterpret_cast<const bf16*>(uintptr_t{4096});
  a.w = reinterpret_cast<const bf16*>(uintptr_t{8192});
  a.y = reinterpret_cast<void*>(uintptr_t{16384});
  a.m = 3;
  a.n = 64;
  a.k = 128;
  return a;
}

TEST(CudaGemmValidationTest, CanImplementChecksSizesAlignmentAndAliasing) {
  EXPECT_TRUE(CanImplementGemm(ValidArgs()).ok());
  GemmArgs a = ValidArgs();
  a.k = 100;  // rows of x and w not 16-byte multiples
  EXPECT_EQ(CanImplementGemm(a).code(), absl::StatusCode::kInvalidArgument);
  a = ValidArgs();
  a.n = 60;
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.m = 0;
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.m = int64_t{1} << 31;
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.x = reinterpret_cast<const bf16*>(uintptr_t{4098});
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.y = const_cast<bf16*>(a.x);
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.w = nullptr;
  EXPECT_FALSE(CanImplementGemm(a).ok());
  a = ValidArgs();
  a.m = 1;  // skinny decode shapes are fine
  a.out_type = GemmOutType::kFp32;
  EXPECT_TRUE(CanImplementGemm(a).ok());
}

class CudaGemmTest : public CudaKernelTest {};

TEST_F(CudaGemmTest, MatchesCpuGemm) {
  LY_SKIP_WITHOUT_GPU();
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  DeviceBuffer<uint8_t> workspace;
  LY_ASSERT_OK(workspace.Allocate(kGemmWorkspaceBytes));
  struct Shape {
    int64_t m, n, k;
  };
  // Decode (m = 1..17), prefill, an lm_head-like wide n, odd m everywhere it is allowed; shapes
  // of m <= 16 also run on the skinny kernel, including k that is not a multiple of its
  // 32-element chunk and n not a multiple of its 16-row tile, split k (4096, 14336) and none (8).
  struct Run {
    Shape s;
    GemmBackend backend;
  };
  std::vector<Run> runs;
  for (const Shape s :
       {Shape{1, 8, 8}, Shape{1, 4096, 4096}, Shape{3, 24, 40}, Shape{17, 1000, 200},
        Shape{8, 14336, 512}, Shape{64, 512, 1024}, Shape{129, 4104, 256}, Shape{5, 32000, 256},
        Shape{517, 768, 2048}, Shape{9, 1032, 14336}, Shape{16, 6144, 4096}, Shape{2, 40, 72}}) {
    runs.push_back({s, GemmBackend::kAuto});
    if (s.m <= kSkinnyGemmMaxRows) runs.push_back({s, GemmBackend::kSkinny});
  }
  for (const auto& [s, backend] : runs) {
    for (const GemmOutType out : {GemmOutType::kBf16, GemmOutType::kFp32}) {
      const bool bf16_out = out == GemmOutType::kBf16;
      SCOPED_TRACE(SeedNote() + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                   " k=" + std::to_string(s.k) + (bf16_out ? " bf16" : " fp32") +
                   (backend == GemmBackend::kAuto ? " auto" : " skinny"));
      const auto x = RandomBf16Values(rng_, s.m * s.k);
      const auto w = RandomBf16Values(rng_, s.n * s.k);
      DeviceBuffer<bf16> d_x, d_w, d_y16;
      DeviceBuffer<float> d_y32;
      LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
      LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
      GemmArgs args;
      args.x = d_x.get();
      args.w = d_w.get();
      args.m = s.m;
      args.n = s.n;
      args.k = s.k;
      args.out_type = out;
      args.backend = backend;
      if (bf16_out) {
        LY_ASSERT_OK(d_y16.Allocate(s.m * s.n));
        LY_ASSERT_OK(d_y16.FillBytes(0xff));
        args.y = d_y16.get();
      } else {
        LY_ASSERT_OK(d_y32.Allocate(s.m * s.n));
        LY_ASSERT_OK(d_y32.FillBytes(0xff));
        args.y = d_y32.get();
      }
      LY_ASSERT_OK((*gemm)->Run(args, workspace.get(), workspace.bytes(), nullptr));
      std::vector<float> got;
      if (bf16_out) {
        std::vector<bf16> raw;
        LY_ASSERT_OK(d_y16.Download(raw));
        got = ToFloat(raw);
      } else {
        LY_ASSERT_OK(d_y32.Download(got));
      }
      std::vector<float> want(s.m * s.n);
      cpu::Gemm(x.data(), w.data(), nullptr, want.data(), s.m, s.n, s.k);
      // bf16 output: rounding (~2^-9 relative); fp32 output: only the summation order differs.
      EXPECT_LT(RelativeL2(got, want), bf16_out ? 1e-2 : 1e-4);
    }
  }
}

TEST_F(CudaGemmTest, CachesOnePlanPerShapeAndRunsWithoutWorkspace) {
  LY_SKIP_WITHOUT_GPU();
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  const int64_t m = 7, n = 96, k = 64;
  const auto x = RandomBf16Values(rng_, 9 * k);  // rows for the second shape (m = 9) too
  const auto w = RandomBf16Values(rng_, n * k);
  DeviceBuffer<bf16> d_x, d_w;
  DeviceBuffer<float> d_y;
  LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
  LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
  LY_ASSERT_OK(d_y.Allocate(m * n));
  GemmArgs args{d_x.get(), d_w.get(), d_y.get(),          m,
                n,         k,         GemmOutType::kFp32, GemmBackend::kCublasLt};
  for (int i = 0; i < 3; ++i) {
    LY_ASSERT_OK(d_y.FillBytes(0xff));
    LY_ASSERT_OK((*gemm)->Run(args, nullptr, 0, nullptr));
    EXPECT_EQ((*gemm)->cached_shapes(), 1u);
  }
  std::vector<float> got;
  LY_ASSERT_OK(d_y.Download(got));
  std::vector<float> want(m * n);
  cpu::Gemm(x.data(), w.data(), nullptr, want.data(), m, n, k);
  EXPECT_LT(RelativeL2(got, want), 1e-4);
  args.m = 9;
  LY_ASSERT_OK(d_y.Allocate(9 * n));
  args.y = d_y.get();
  LY_ASSERT_OK((*gemm)->Run(args, nullptr, 0, nullptr));
  EXPECT_EQ((*gemm)->cached_shapes(), 2u);
  EXPECT_EQ((*gemm)->Run(args, nullptr, 16, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaGemmValidationTest, SkinnyPlanCoversKAndFitsItsWorkspace) {
  for (const int64_t n : {8, 24, 4096, 6144, 28672, 128256}) {
    for (const int64_t k : {8, 40, 512, 4096, 14336}) {
      for (const size_t ws : {size_t{0}, size_t{4096}, kGemmWorkspaceBytes}) {
        SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) +
                     " workspace=" + std::to_string(ws));
        const SkinnyGemmPlan plan = PlanSkinnyGemm(3, n, k, 132, ws);
        const int64_t chunks = (k + kSkinnyGemmChunk - 1) / kSkinnyGemmChunk;
        const int64_t per_cta = int64_t{plan.chunks_per_warp} * kSkinnyGemmWarps;
        EXPECT_GE(plan.splits * per_cta, chunks);
        EXPECT_LT((plan.splits - 1) * per_cta, chunks) << "a split with nothing to do";
        EXPECT_LE(SkinnyGemmWorkspaceBytes(n, plan), ws);
        // The cut depends on (n, k) only, so a row's result does not depend on the batch.
        const SkinnyGemmPlan other = PlanSkinnyGemm(16, n, k, 132, ws);
        EXPECT_EQ(other.splits, plan.splits);
        EXPECT_EQ(other.chunks_per_warp, plan.chunks_per_warp);
      }
    }
  }
  // Decode shapes of Llama-3-8B split k on an H100 (few tiles), the lm_head does not.
  EXPECT_GT(PlanSkinnyGemm(1, 4096, 4096, 132, kGemmWorkspaceBytes).splits, 1);
  EXPECT_EQ(PlanSkinnyGemm(1, 128256, 4096, 132, kGemmWorkspaceBytes).splits, 1);
  GemmArgs a = ValidArgs();
  a.m = 17;
  EXPECT_FALSE(CanImplementSkinnyGemm(a).ok());
  a.m = 16;
  EXPECT_TRUE(CanImplementSkinnyGemm(a).ok());
}

// The skinny kernel's sums have a fixed order: a row's output is bit-identical across repeated
// launches (the split-k arrival order varies) and whatever other rows share the batch.
TEST_F(CudaGemmTest, SkinnyIsDeterministicAndBatchInvariant) {
  LY_SKIP_WITHOUT_GPU();
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  DeviceBuffer<uint8_t> workspace;
  LY_ASSERT_OK(workspace.Allocate(kGemmWorkspaceBytes));
  const int64_t n = 4096, k = 4096;
  SCOPED_TRACE(SeedNote());
  const auto x = RandomBf16Values(rng_, 16 * k);
  const auto w = RandomBf16Values(rng_, n * k);
  DeviceBuffer<bf16> d_x, d_w;
  DeviceBuffer<float> d_y;
  LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
  LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
  LY_ASSERT_OK(d_y.Allocate(16 * n));
  std::vector<float> first;
  for (const int64_t m : {16, 16, 3, 1, 9}) {
    LY_ASSERT_OK(d_y.FillBytes(0xff));
    GemmArgs args{d_x.get(), d_w.get(), d_y.get(),          m,
                  n,         k,         GemmOutType::kFp32, GemmBackend::kSkinny};
    LY_ASSERT_OK((*gemm)->Run(args, workspace.get(), workspace.bytes(), nullptr));
    std::vector<float> got;
    LY_ASSERT_OK(d_y.Download(got));
    if (first.empty()) {
      first = got;
      std::vector<float> want(16 * n);
      cpu::Gemm(x.data(), w.data(), nullptr, want.data(), 16, n, k);
      EXPECT_LT(RelativeL2(got, want), 1e-4);
      continue;
    }
    EXPECT_TRUE(std::equal(got.begin(), got.begin() + m * n, first.begin())) << "m=" << m;
    // Rows past m are not written.
    const size_t poisoned = static_cast<size_t>(
        std::count_if(got.begin() + m * n, got.end(), [](float v) { return std::isnan(v); }));
    EXPECT_EQ(poisoned, static_cast<size_t>((16 - m) * n)) << "m=" << m;
  }
  // Without a workspace the kernel runs unsplit: same values up to the summation order.
  LY_ASSERT_OK(d_y.FillBytes(0xff));
  GemmArgs args{d_x.get(), d_w.get(), d_y.get(),          16,
                n,         k,         GemmOutType::kFp32, GemmBackend::kSkinny};
  LY_ASSERT_OK((*gemm)->Run(args, nullptr, 0, nullptr));
  std::vector<float> got;
  LY_ASSERT_OK(d_y.Download(got));
  EXPECT_LT(RelativeL2(got, first), 1e-5);
  args.m = 17;
  EXPECT_EQ((*gemm)->Run(args, nullptr, 0, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// The skinny kernel's open experiments (SkinnyGemmPlan::unroll, ::interleave) compute the same
// products: every combination against the CPU, split k and not, tails in k and n.
TEST_F(CudaGemmTest, SkinnyPlanVariantsMatchCpuGemm) {
  LY_SKIP_WITHOUT_GPU();
  DeviceBuffer<uint8_t> workspace;
  DeviceBuffer<int32_t> counters;
  LY_ASSERT_OK(workspace.Allocate(kGemmWorkspaceBytes));
  LY_ASSERT_OK(counters.Allocate(kSkinnyGemmMaxTiles));
  LY_ASSERT_OK(counters.FillBytes(0));
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s :
       {Shape{1, 4096, 4096}, Shape{9, 1032, 14336}, Shape{3, 24, 40}, Shape{16, 6144, 4096}}) {
    const auto x = RandomBf16Values(rng_, s.m * s.k);
    const auto w = RandomBf16Values(rng_, s.n * s.k);
    std::vector<float> want(s.m * s.n);
    cpu::Gemm(x.data(), w.data(), nullptr, want.data(), s.m, s.n, s.k);
    DeviceBuffer<bf16> d_x, d_w;
    DeviceBuffer<float> d_y;
    LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
    LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
    LY_ASSERT_OK(d_y.Allocate(s.m * s.n));
    for (const int unroll : {4, 8}) {
      for (const bool interleave : {false, true}) {
        SCOPED_TRACE(SeedNote() + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k) + " unroll=" + std::to_string(unroll) +
                     (interleave ? " interleaved" : ""));
        SkinnyGemmPlan plan = PlanSkinnyGemm(s.m, s.n, s.k, 132, workspace.bytes());
        plan.unroll = unroll;
        plan.interleave = interleave;
        LY_ASSERT_OK(d_y.FillBytes(0xff));
        const GemmArgs args{d_x.get(), d_w.get(), d_y.get(),          s.m,
                            s.n,       s.k,       GemmOutType::kFp32, GemmBackend::kSkinny};
        LY_ASSERT_OK(
            SkinnyGemm(args, plan, workspace.get(), workspace.bytes(), counters.get(), nullptr));
        std::vector<float> got;
        LY_ASSERT_OK(d_y.Download(got));
        EXPECT_LT(RelativeL2(got, want), 1e-4);
      }
    }
  }
  // The counters are left zero for the next launch.
  std::vector<int32_t> left;
  LY_ASSERT_OK(counters.Download(left));
  EXPECT_EQ(std::count(left.begin(), left.end(), 0), static_cast<std::ptrdiff_t>(left.size()));
  SkinnyGemmPlan bad;
  bad.unroll = 5;
  const GemmArgs args{reinterpret_cast<const bf16*>(uintptr_t{4096}),
                      reinterpret_cast<const bf16*>(uintptr_t{8192}),
                      reinterpret_cast<void*>(uintptr_t{16384}),
                      1,
                      64,
                      128,
                      GemmOutType::kFp32,
                      GemmBackend::kSkinny};
  EXPECT_EQ(SkinnyGemm(args, bad, nullptr, 0, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Operands that are views into larger buffers, aligned to 16 bytes but not to 256 (what the
// heuristic assumes by default): x and w start 8 bf16 in, y 4 floats in.
TEST_F(CudaGemmTest, RunsOnViewsAlignedToOnly16Bytes) {
  LY_SKIP_WITHOUT_GPU();
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  DeviceBuffer<uint8_t> workspace;
  LY_ASSERT_OK(workspace.Allocate(kGemmWorkspaceBytes));
  const int64_t m = 33, n = 256, k = 1024;
  SCOPED_TRACE(SeedNote());
  const auto x = RandomBf16Values(rng_, m * k + 8);
  const auto w = RandomBf16Values(rng_, n * k + 8);
  DeviceBuffer<bf16> d_x, d_w;
  DeviceBuffer<float> d_y;
  LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
  LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
  LY_ASSERT_OK(d_y.Allocate(m * n + 4));
  LY_ASSERT_OK(d_y.FillBytes(0xff));
  GemmArgs args{d_x.get() + 8, d_w.get() + 8, d_y.get() + 4, m, n, k, GemmOutType::kFp32};
  LY_ASSERT_OK((*gemm)->Run(args, workspace.get(), workspace.bytes(), nullptr));
  std::vector<float> got;
  LY_ASSERT_OK(d_y.Download(got));
  std::vector<float> want(m * n);
  cpu::Gemm(x.data() + 8, w.data() + 8, nullptr, want.data(), m, n, k);
  EXPECT_LT(RelativeL2(got.data() + 4, want.data(), want.size()), 1e-4);
}

// The last step of a decode: final RMSNorm -> lm_head GEMM (fp32 logits) -> greedy argmax, chained
// on the GPU as the runner will, against the same chain on the CPU.
TEST_F(CudaGemmTest, FinalNormLmHeadGreedyMatchesCpu) {
  LY_SKIP_WITHOUT_GPU();
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  const int64_t rows = 5, hidden = 512, vocab = 32768 + 8;
  SCOPED_TRACE(SeedNote());
  const auto x = RandomBf16Values(rng_, rows * hidden, -3.0f, 3.0f);
  const auto norm_w = RandomBf16Values(rng_, hidden, 0.5f, 1.5f);
  const auto lm_head = RandomBf16Values(rng_, vocab * hidden);
  DeviceBuffer<bf16> d_x, d_norm_w, d_normed, d_lm_head;
  DeviceBuffer<float> d_logits;
  DeviceBuffer<int32_t> d_ids;
  LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
  LY_ASSERT_OK(d_norm_w.Upload(ToBf16(norm_w)));
  LY_ASSERT_OK(d_lm_head.Upload(ToBf16(lm_head)));
  LY_ASSERT_OK(d_normed.Allocate(rows * hidden));
  LY_ASSERT_OK(d_logits.Allocate(rows * vocab));
  LY_ASSERT_OK(d_logits.FillBytes(0xff));
  LY_ASSERT_OK(d_ids.Allocate(rows));
  LY_ASSERT_OK(d_ids.FillBytes(0xff));
  DeviceBuffer<uint8_t> workspace;
  LY_ASSERT_OK(workspace.Allocate(kGemmWorkspaceBytes));

  RmsNormParams norm;
  norm.x = d_x.get();
  norm.weight = d_norm_w.get();
  norm.out = d_normed.get();
  norm.rows = rows;
  norm.dim = hidden;
  norm.eps = 1e-5f;
  LY_ASSERT_OK(RmsNorm(norm, nullptr));
  GemmArgs head{d_normed.get(), d_lm_head.get(), d_logits.get(),    rows,
                vocab,          hidden,          GemmOutType::kFp32};
  LY_ASSERT_OK((*gemm)->Run(head, workspace.get(), workspace.bytes(), nullptr));
  ArgmaxParams pick{d_logits.get(), d_ids.get(), rows, vocab, 0};
  LY_ASSERT_OK(Argmax(pick, nullptr));
  std::vector<float> logits;
  std::vector<int32_t> ids;
  LY_ASSERT_OK(d_logits.Download(logits));
  LY_ASSERT_OK(d_ids.Download(ids));

  std::vector<float> normed(rows * hidden), want(rows * vocab);
  cpu::RmsNorm(x.data(), norm_w.data(), normed.data(), rows, hidden, 1e-5f);
  RoundToBf16InPlace(normed);  // the GPU keeps the normed hidden state in bf16
  cpu::Gemm(normed.data(), lm_head.data(), nullptr, want.data(), rows, vocab, hidden);
  EXPECT_LT(RelativeL2(logits, want), 1e-2);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = want.data() + r * vocab;
    const auto best = std::max_element(row, row + vocab);
    float max_abs = 0.0f;
    for (int64_t i = 0; i < vocab; ++i) max_abs = std::max(max_abs, std::fabs(row[i]));
    // A near-tie may flip under bf16 rounding of the normed state; anything else must match.
    const float tol = 1e-2f * max_abs;
    ASSERT_GE(ids[r], 0);
    ASSERT_LT(ids[r], vocab);
    EXPECT_GE(row[ids[r]], *best - tol) << "row " << r;
    float second = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      if (i != best - row) second = std::max(second, row[i]);
    }
    if (*best - second > tol) {
      EXPECT_EQ(ids[r], best - row) << "row " << r;
    }
    // The GPU argmax is exact over the GPU's own logits.
    const float* got_row = logits.data() + r * vocab;
    EXPECT_EQ(ids[r], std::max_element(got_row, got_row + vocab) - got_row) << "row " << r;
  }
}

}  // namespace
}  // namespace lychee::cuda
