// SPDX-License-Identifier: Apache-2.0
// ParallelFor's pool (thread_pool.h): workers spin briefly on a generation counter, then sleep on
// a condition variable; the caller takes part and waits for the last worker the same way.
#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace lychee::cpu {
namespace {

// How long an idle thread polls before it blocks: longer than the serial gaps between the
// regions of one layer, far shorter than a scheduler time slice.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `done` for up to kSpin; true when it became true.
template <typename Done>
bool SpinUntil(const Done& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    CpuRelax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

thread_local bool t_in_task = false;

class Pool {
 public:
  void Run(int64_t num_tasks, int threads, ParallelTaskFn fn, void* ctx) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) {
      for (int64_t i = 0; i < num_tasks; ++i) fn(ctx, i, 0);
      return;
    }
    Grow(threads - 1);
    fn_ = fn;
    ctx_ = ctx;
    num_tasks_ = num_tasks;
    next_.store(0, std::memory_order_relaxed);
    active_ = threads - 1;
    // Every pool thread acknowledges every region, working or not: none can lag into the next
    // region's parameters.
    pending_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    Work(0);
    if (!SpinUntil([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    fn_ = nullptr;
    ctx_ = nullptr;
  }

 private:
  // Takes tasks until none is left; `thread` 0 is the caller.
  void Work(int thread) {
    t_in_task = true;
    for (;;) {
      const int64_t task = next_.fetch_add(1, std::memory_order_relaxed);
      if (task >= num_tasks_) break;
      fn_(ctx_, task, thread);
    }
    t_in_task = false;
  }

  void Grow(int workers) {
    while (static_cast<int>(threads_.size()) < workers) {
      const int index = static_cast<int>(threads_.size());
      // The generation before this region's: a new thread must not miss the region that made it.
      const uint64_t seen = generation_.load(std::memory_order_acquire);
      threads_.emplace_back([this, index, seen] { Loop(index, seen); });
      threads_.back().detach();
    }
  }

  void Loop(int index, uint64_t seen) {
    for (;;) {
      auto changed = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!SpinUntil(changed)) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, changed);
      }
      seen = generation_.load(std::memory_order_acquire);
      if (index < active_) Work(index + 1);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_one();
      }
    }
  }

  std::mutex run_mu_;  // one region at a time
  std::mutex mu_;      // guards sleeping on wake_ / done_
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  // Written by the caller before the generation changes (release), read by workers after.
  ParallelTaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t num_tasks_ = 0;
  int active_ = 0;
  std::vector<std::thread> threads_;  // detached; only the count matters
};

Pool& ThePool() {
  static Pool* pool = new Pool();  // never destroyed: its threads outlive static destruction
  return *pool;
}

}  // namespace

void ParallelForRaw(int64_t num_tasks, int num_threads, ParallelTaskFn fn, void* ctx) {
  const int threads = static_cast<int>(std::min<int64_t>(num_threads, num_tasks));
  if (threads <= 1 || t_in_task) {
    for (int64_t i = 0; i < num_tasks; ++i) fn(ctx, i, 0);
    return;
  }
  ThePool().Run(num_tasks, threads, fn, ctx);
}

}  // namespace lychee::cpu
