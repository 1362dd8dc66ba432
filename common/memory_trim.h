// SPDX-License-Identifier: Apache-2.0
// MemoryTrimmer: gives heap memory freed after a load spike back to the operating system
// (issue 15).
//
// glibc keeps freed memory in its arenas (one per thread that allocated, up to 8 per core) for
// reuse, and returns only a free tail of an arena by itself. A huge prompt's body, parsed JSON,
// pre-tokenized words and tokens, freed among allocations that live on, stay in the process's
// RSS: after a few 30 MB prompts, gigabytes. malloc_trim(0) releases the free pages inside every
// arena (madvise), but walks each arena under its lock, so it is not for every request. The
// trimmer runs it on a thread of its own, at most once per check:
//   - when the server is idle (`is_idle`) after work (NoteWork since the last trim): the spike is
//     over and nothing competes for the arenas;
//   - under load, after a large request (NoteLargeRequest), at most once per min_busy_interval.
//
//   MemoryTrimmer trimmer({.is_idle = [&] { return engine.Stats().num_running == 0 && ...; }});
//   ... on every finished request: trimmer.NoteWork(); for a large one NoteLargeRequest().
//
// A trim that returns 16 MiB or more is logged at info ("memory: gave 72 MiB back to the system
// (RSS 291 -> 219 MiB)"), others at debug.
//
// Threading: Note* from any thread (atomics); is_idle runs on the trimmer's thread. Destroy the
// trimmer before what is_idle reads. Without glibc (or under a sanitizer, whose allocator is
// not glibc's) trimming does nothing and Supported() is false.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace lychee {

struct MemoryTrimmerOptions {
  std::function<bool()> is_idle;                         // required
  absl::Duration check_interval = absl::Seconds(1);      // how often the thread looks
  absl::Duration min_busy_interval = absl::Seconds(10);  // between trims under load
};

class MemoryTrimmer {
 public:
  explicit MemoryTrimmer(MemoryTrimmerOptions options);
  ~MemoryTrimmer();  // stops and joins the thread
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

  // A request finished: trim once the server is idle.
  void NoteWork() { work_.store(true, std::memory_order_relaxed); }
  // A request that held a lot of memory (a large body) finished: trim soon, even under load.
  void NoteLargeRequest() {
    large_.store(true, std::memory_order_relaxed);
    NoteWork();
  }

  int64_t num_trims() const { return num_trims_.load(); }
  // Whether trimming can return memory in this build (glibc, no sanitizer allocator).
  static bool Supported();
  // The process's resident set size in bytes (/proc/self/statm), 0 when unknown.
  static int64_t ResidentBytes();

 private:
  void Loop();
  void Trim();

  const MemoryTrimmerOptions options_;
  std::atomic<bool> work_{false};
  std::atomic<bool> large_{false};
  std::atomic<int64_t> num_trims_{0};
  absl::Time last_trim_ = absl::InfinitePast();  // the thread's own
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace lychee
