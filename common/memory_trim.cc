// SPDX-License-Identifier: Apache-2.0
// MemoryTrimmer (see memory_trim.h).
#include "common/memory_trim.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

#include "absl/time/clock.h"
#include "common/logging.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// The sanitizers bring their own allocator: glibc's arenas are then (almost) unused.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LY_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LY_SANITIZER_ALLOCATOR 1
#endif
#endif

namespace lychee {
namespace {

constexpr int64_t kNotableBytes = int64_t{16} << 20;

}  // namespace

bool MemoryTrimmer::Supported() {
#if defined(__GLIBC__) && !defined(LY_SANITIZER_ALLOCATOR)
  return true;
#else
  return false;
#endif
}

int64_t MemoryTrimmer::ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long total_pages = 0, resident_pages = 0;
  const int n = std::fscanf(f, "%ld %ld", &total_pages, &resident_pages);
  std::fclose(f);
  return n == 2 ? int64_t{resident_pages} * sysconf(_SC_PAGESIZE) : 0;
}

MemoryTrimmer::MemoryTrimmer(MemoryTrimmerOptions options)
    : options_(std::move(options)), thread_([this] { Loop(); }) {}

MemoryTrimmer::~MemoryTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void MemoryTrimmer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, absl::ToChronoNanoseconds(options_.check_interval),
                         [this] { return stop_; })) {
    lock.unlock();
    // A large request trims under load too, but not more often than min_busy_interval; any
    // work trims once the server is idle (once: NoteWork is cleared until the next request).
    const bool due_large = large_.load(std::memory_order_relaxed) &&
                           absl::Now() - last_trim_ >= options_.min_busy_interval;
    if (due_large || (work_.load(std::memory_order_relaxed) && options_.is_idle())) Trim();
    lock.lock();
  }
}

void MemoryTrimmer::Trim() {
  // Cleared first: work finishing during the trim asks for the next one.
  large_.store(false, std::memory_order_relaxed);
  work_.store(false, std::memory_order_relaxed);
  last_trim_ = absl::Now();
  const int64_t before = ResidentBytes();
#if defined(__GLIBC__) && !defined(LY_SANITIZER_ALLOCATOR)
  malloc_trim(0);
#endif
  num_trims_.fetch_add(1);
  const int64_t after = ResidentBytes();
  // Worth a line when it mattered (a spike's worth); otherwise debug.
  if (before - after >= kNotableBytes) {
    LY_LOG_INFO("memory: gave {:.0f} MiB back to the system (RSS {:.0f} -> {:.0f} MiB)",
                (before - after) / 1048576.0, before / 1048576.0, after / 1048576.0);
  } else {
    LY_LOG_DEBUG("memory: trimmed the heap, RSS {:.1f} -> {:.1f} MiB", before / 1048576.0,
                 after / 1048576.0);
  }
}

}  // namespace lychee
