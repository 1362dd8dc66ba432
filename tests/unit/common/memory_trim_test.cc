// SPDX-License-Identifier: Apache-2.0
// MemoryTrimmer (common/memory_trim.h): when it trims (after work once idle; after a large
// request even under load, rate-limited; never without work) and that a trim gives freed heap
// memory back (RSS; skipped where trimming cannot, under the sanitizers).
#include "common/memory_trim.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "absl/time/clock.h"

namespace lychee {
namespace {

bool WaitFor(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!condition() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  return condition();
}

TEST(MemoryTrimmerTest, TrimsOnceIdleAfterWorkOnly) {
  std::atomic<bool> idle{false};
  MemoryTrimmer trimmer(
      {.is_idle = [&] { return idle.load(); }, .check_interval = absl::Milliseconds(5)});
  absl::SleepFor(absl::Milliseconds(50));
  idle = true;
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(trimmer.num_trims(), 0);  // idle, but nothing happened
  idle = false;
  trimmer.NoteWork();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(trimmer.num_trims(), 0);  // work, but still busy
  idle = true;
  EXPECT_TRUE(WaitFor([&] { return trimmer.num_trims() == 1; }));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(trimmer.num_trims(), 1);  // once per idle period
  trimmer.NoteWork();
  EXPECT_TRUE(WaitFor([&] { return trimmer.num_trims() == 2; }));
}

TEST(MemoryTrimmerTest, LargeRequestsTrimUnderLoadAtMostOncePerInterval) {
  MemoryTrimmer trimmer({.is_idle = [] { return false; },
                         .check_interval = absl::Milliseconds(5),
                         .min_busy_interval = absl::Hours(1)});
  trimmer.NoteWork();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(trimmer.num_trims(), 0);
  trimmer.NoteLargeRequest();
  EXPECT_TRUE(WaitFor([&] { return trimmer.num_trims() == 1; }));
  trimmer.NoteLargeRequest();  // within min_busy_interval: waits
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(trimmer.num_trims(), 1);
}

// Freed memory among live allocations (what a spike leaves behind) is released by a trim.
TEST(MemoryTrimmerTest, TrimReturnsFreedHeapMemory) {
  if (!MemoryTrimmer::Supported()) GTEST_SKIP() << "no glibc allocator to trim in this build";
  constexpr size_t kBlock = 1024;
  constexpr size_t kNumBlocks = 256 * 1024;  // 256 MiB
  std::vector<std::unique_ptr<char[]>> blocks(kNumBlocks);
  for (auto& block : blocks) {
    block.reset(new char[kBlock]);
    std::fill_n(block.get(), kBlock, 'x');
  }
  // Keep one block in 64: the freed runs between them are not at the heap's top, so free() alone
  // gives none of it back.
  for (size_t i = 0; i < kNumBlocks; ++i) {
    if (i % 64 != 0) blocks[i].reset();
  }
  const int64_t before = MemoryTrimmer::ResidentBytes();
  ASSERT_GT(before, int64_t{200} << 20);
  MemoryTrimmer trimmer({.is_idle = [] { return true; }, .check_interval = absl::Milliseconds(5)});
  trimmer.NoteWork();
  ASSERT_TRUE(WaitFor([&] { return trimmer.num_trims() == 1; }));
  const int64_t after = MemoryTrimmer::ResidentBytes();
  EXPECT_LT(after, before - (int64_t{150} << 20)) << before << " -> " << after;
}

}  // namespace
}  // namespace lychee
