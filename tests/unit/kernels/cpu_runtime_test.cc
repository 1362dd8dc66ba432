// SPDX-License-Identifier: Apache-2.0
// kernels/cpu's runtime settings: thread count (and OpenBLAS kept single-threaded under it), ISA
// detection and override, and that nothing spins once the kernels' threads go idle (process CPU
// time over an idle interval, which load on the machine can only lower).
#include "kernels/cpu/cpu_runtime.h"

#include <cblas.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace lychee::cpu {
namespace {

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * t.tv_usec; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

class CpuRuntimeTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetIsaOverride(std::nullopt);
    SetNumThreads(0);
  }
};

TEST_F(CpuRuntimeTest, ThreadsAreSetAndOpenBlasStaysSingleThreaded) {
  SetNumThreads(3);
  EXPECT_EQ(NumThreads(), 3);
  EXPECT_EQ(openblas_get_num_threads(), 1);
  SetNumThreads(0);
  EXPECT_GE(NumThreads(), 1);
  // An older caller sizing OpenBLAS's pool: the count moves to the team, OpenBLAS back to one.
  openblas_set_num_threads(2);
  EXPECT_EQ(NumThreads(), 2);
  EXPECT_EQ(openblas_get_num_threads(), 1);
}

TEST_F(CpuRuntimeTest, IsaOverrideNeverExceedsTheCpu) {
  const VectorIsa detected = DetectedIsa();
  EXPECT_EQ(ActiveIsa(), detected);
  SetIsaOverride(VectorIsa::kScalar);
  EXPECT_EQ(ActiveIsa(), VectorIsa::kScalar);
  SetIsaOverride(VectorIsa::kAvx2);
  EXPECT_EQ(ActiveIsa(), detected);  // kAvx2 only where the CPU has it
  SetIsaOverride(std::nullopt);
  EXPECT_EQ(ActiveIsa(), detected);
  EXPECT_STRNE(IsaName(detected), "?");
}

TEST_F(CpuRuntimeTest, IdleThreadsDoNotSpin) {
  SetNumThreads(2);
  const int64_t m = 256, n = 512, k = 256;
  std::vector<float> x(m * k, 0.5f), w(n * k, 0.25f), y(m * n);
  for (int i = 0; i < 5; ++i) Gemm(x.data(), w.data(), nullptr, y.data(), m, n, k);
  // Let any short post-region spin (libgomp's bounded spin: well under a millisecond) end.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const double idle_cpu = ProcessCpuSeconds() - before;
  // A thread spinning through the interval would use ~0.4 s of CPU.
  EXPECT_LT(idle_cpu, 0.1) << "CPU seconds used while idle";
}

}  // namespace
}  // namespace lychee::cpu
