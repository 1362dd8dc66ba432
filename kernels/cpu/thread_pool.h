// SPDX-License-Identifier: Apache-2.0
// ParallelFor: kernels/cpu's one team of threads (cpu_runtime.h sets its size).
//
// The calling thread works as thread 0 beside up to NumThreads() - 1 pool threads; tasks are
// taken dynamically (an atomic counter), so unequal tasks balance. Idle pool threads spin for a
// few tens of microseconds (back-to-back regions of one model step find them awake) and then
// block on a condition variable: nothing burns a core between steps, and on a loaded machine a
// thread waiting at the end of a region does not steal the core its partner needs (a spinning
// OpenMP barrier cost half the CPU time of a prefill on a busy 2-core machine).
//
// Nested calls (from inside a task) and calls while another thread holds the pool run serially
// on the calling thread. Pool threads live until the process exits.
#pragma once

#include <cstdint>
#include <type_traits>

namespace lychee::cpu {

// The type-erased form: fn(ctx, task, thread). No allocation per call.
using ParallelTaskFn = void (*)(void* ctx, int64_t task, int thread);
void ParallelForRaw(int64_t num_tasks, int num_threads, ParallelTaskFn fn, void* ctx);

// Runs fn(task, thread) for every task in [0, num_tasks) on min(num_threads, num_tasks) threads;
// `thread` in [0, that count) identifies the thread (thread 0 is the caller), for per-thread
// scratch. Returns when every task has finished. `fn` is borrowed, never copied (no allocation).
template <typename Fn>
void ParallelFor(int64_t num_tasks, int num_threads, Fn&& fn) {
  using F = std::remove_reference_t<Fn>;
  ParallelForRaw(
      num_tasks, num_threads,
      [](void* ctx, int64_t task, int thread) { (*static_cast<F*>(ctx))(task, thread); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

}  // namespace lychee::cpu
