// SPDX-License-Identifier: Apache-2.0
// kernels/cpu's runtime: thread count (and OpenBLAS kept single-threaded under it), ISA detection
// and override, ParallelFor (every task once, thread ids in range, nested and concurrent callers,
// thousands of back-to-back regions of changing width), and that nothing spins once the team goes
// idle (process CPU time over an idle interval, which load on the machine can only lower).
#include "kernels/cpu/cpu_runtime.h"

#include <cblas.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"

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
  SetIsaOverride(VectorIsa::kAvx2);  // kAvx2 only where the CPU has it
  EXPECT_EQ(ActiveIsa(), detected == VectorIsa::kScalar ? VectorIsa::kScalar : VectorIsa::kAvx2);
  SetIsaOverride(VectorIsa::kAvx512);  // never above the CPU
  EXPECT_EQ(ActiveIsa(), detected);
  SetIsaOverride(std::nullopt);
  EXPECT_EQ(ActiveIsa(), detected);
  EXPECT_STRNE(IsaName(detected), "?");
}

TEST_F(CpuRuntimeTest, ParallelForRunsEveryTaskOnce) {
  for (int round = 0; round < 2000; ++round) {
    const int threads = 1 + round % 4;
    const int64_t tasks = round % 7 == 0 ? 1 : 1 + (round * 37) % 50;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
    std::atomic<bool> bad_thread{false};
    ParallelFor(tasks, threads, [&](int64_t task, int thread) {
      if (thread < 0 || thread >= threads) bad_thread = true;
      hits[static_cast<size_t>(task)].fetch_add(1);
    });
    ASSERT_FALSE(bad_thread) << "round " << round;
    for (int64_t t = 0; t < tasks; ++t) ASSERT_EQ(hits[t].load(), 1) << "round " << round;
  }
}

TEST_F(CpuRuntimeTest, ParallelForNestedAndConcurrentCallers) {
  std::atomic<int64_t> sum{0};
  // Nested: the inner loops run serially on their task's thread.
  ParallelFor(8, 3, [&](int64_t i, int) {
    ParallelFor(10, 3, [&](int64_t j, int thread) {
      EXPECT_EQ(thread, 0);
      sum += i * 10 + j;
    });
  });
  EXPECT_EQ(sum.load(), 79 * 80 / 2);
  // Two callers at once: one gets the pool, the other runs serially; both complete.
  std::atomic<int64_t> a{0}, b{0};
  std::thread other([&] {
    for (int r = 0; r < 200; ++r) ParallelFor(16, 2, [&](int64_t, int) { a += 1; });
  });
  for (int r = 0; r < 200; ++r) ParallelFor(16, 2, [&](int64_t, int) { b += 1; });
  other.join();
  EXPECT_EQ(a.load(), 200 * 16);
  EXPECT_EQ(b.load(), 200 * 16);
}

TEST_F(CpuRuntimeTest, IdleThreadsDoNotSpin) {
  SetNumThreads(2);
  const int64_t m = 256, n = 512, k = 256;
  std::vector<float> x(m * k, 0.5f), w(n * k, 0.25f), y(m * n);
  for (int i = 0; i < 5; ++i) Gemm(x.data(), w.data(), nullptr, y.data(), m, n, k);
  // Let the team's short post-region spin (tens of microseconds) end.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const double idle_cpu = ProcessCpuSeconds() - before;
  // A thread spinning through the interval would use ~0.4 s of CPU.
  EXPECT_LT(idle_cpu, 0.1) << "CPU seconds used while idle";
}

}  // namespace
}  // namespace lychee::cpu
