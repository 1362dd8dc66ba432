// SPDX-License-Identifier: Apache-2.0
// The CPU forward pass allocates nothing on the heap once warm: decode steps, and prefills no
// longer than one already seen, reuse the model's scratch. Counts every operator new in this
// binary (OpenBLAS's own buffers are outside C++ new and not counted).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "engine/cpu_model.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace lychee {
namespace {

TEST(CpuModelAllocationTest, WarmDecodeAndPrefillDoNotAllocate) {
  const int64_t before_load = g_allocations.load();
  auto model_or = CpuModel::Load("models/stories260K");
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  ASSERT_GT(g_allocations.load(), before_load) << "the counting operator new is not in use";
  CpuModel& model = **model_or;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383, 286};
  // Warm-up: one prefill of this length and one decode step.
  ASSERT_TRUE(model.Prefill(prompt, LogitsMode::kAll).ok());
  ASSERT_TRUE(model.Decode(261).ok());
  model.Reset();

  const int64_t before = g_allocations.load();
  bool ok = model.Prefill(prompt, LogitsMode::kAll).ok();
  for (int i = 0; i < 50 && ok; ++i) ok = model.Decode(300 + i).ok();
  ok = ok && model.Prefill(absl::MakeConstSpan(prompt).subspan(0, 5), LogitsMode::kLast).ok();
  const int64_t after = g_allocations.load();
  ASSERT_TRUE(ok);
  EXPECT_EQ(after - before, 0) << "heap allocations in the warm forward pass";
}

}  // namespace
}  // namespace lychee
