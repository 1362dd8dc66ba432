// SPDX-License-Identifier: Apache-2.0
// The cuBLASLt GEMM wrapper (kernels/cuda/gemm.h) against cpu::Gemm on bf16-rounded inputs, so
// only accumulation order and the output rounding differ: prefill-sized and skinny decode shapes,
// odd m, bf16 and fp32 outputs, outputs poisoned before each run. CanImplementGemm runs without a
// GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
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
  // Decode (m = 1..17), prefill, an lm_head-like wide n, odd m everywhere it is allowed.
  for (const Shape s : {Shape{1, 8, 8}, Shape{1, 4096, 4096}, Shape{3, 24, 40},
                        Shape{17, 1000, 200}, Shape{8, 14336, 512}, Shape{64, 512, 1024},
                        Shape{129, 4104, 256}, Shape{5, 32000, 256}, Shape{517, 768, 2048}}) {
    for (const GemmOutType out : {GemmOutType::kBf16, GemmOutType::kFp32}) {
      const bool bf16_out = out == GemmOutType::kBf16;
      SCOPED_TRACE(SeedNote() + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                   " k=" + std::to_string(s.k) + (bf16_out ? " bf16" : " fp32"));
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
  GemmArgs args{d_x.get(), d_w.get(), d_y.get(), m, n, k, GemmOutType::kFp32};
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

}  // namespace
}  // namespace lychee::cuda
