// SPDX-License-Identifier: Apache-2.0
// The CPU forward pass allocates nothing on the heap once warm: decode steps, and prefills no
// longer than one already seen, reuse the model's scratch; CpuModelRunner steps of many chunks
// use scratch sized at Create. Counts every operator new in this
// binary (OpenBLAS's own buffers are outside C++ new and not counted).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/cpu_model_runner.h"
#include "model/safetensors.h"

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

TEST(CpuModelAllocationTest, RunnerStepsOfManyChunksDoNotAllocate) {
  auto config = LoadModelConfig("models/stories260K");
  ASSERT_TRUE(config.ok()) << config.status();
  auto archive = SafetensorsArchive::Open("models/stories260K");
  ASSERT_TRUE(archive.ok()) << archive.status();
  auto weights = LoadModelWeights(*archive, *config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  KvPool pool(KvCacheShapeFor(*config, 16), 8);
  auto runner_or = CpuModelRunner::Create(*config, *std::move(weights), &pool,
                                          {.max_num_batched_tokens = 32, .max_num_seqs = 4});
  ASSERT_TRUE(runner_or.ok()) << runner_or.status();
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383, 286, 300, 301};
  const std::vector<std::vector<int32_t>> tables = {{5, 1}, {0, 7}, {3, 2}};
  SchedulerOutput step;
  for (int s = 0; s < 3; ++s) {
    step.chunks.push_back({.seq_id = s,
                           .token_ids = absl::MakeConstSpan(prompt).subspan(0, 3 + 3 * s),
                           .start_position = 0,
                           .block_table = tables[s],
                           .needs_logits = s != 1});
  }
  ASSERT_TRUE((*runner_or)->Execute(step).ok());  // warm-up (OpenBLAS, first touch)

  const int64_t before = g_allocations.load();
  bool ok = (*runner_or)->Execute(step).ok();
  for (int i = 0; i < 10 && ok; ++i) {
    for (auto& chunk : step.chunks) {
      chunk.start_position += static_cast<int64_t>(chunk.token_ids.size());
      chunk.token_ids = chunk.token_ids.subspan(0, 1);
    }
    ok = (*runner_or)->Execute(step).ok();
  }
  const int64_t after = g_allocations.load();
  ASSERT_TRUE(ok);
  EXPECT_EQ(after - before, 0) << "heap allocations in warm runner steps";
}

}  // namespace
}  // namespace lychee
