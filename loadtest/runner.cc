// SPDX-License-Identifier: Apache-2.0
#include "loadtest/runner.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace lychee::loadtest {
namespace {

// Bounds the requests in flight for open-loop runs with a cap (a plain counter, so that the cap
// can be any size; std::counting_semaphore needs it at compile time).
class Gate {
 public:
  explicit Gate(int64_t limit) : limit_(limit) {}
  void Enter() {
    if (limit_ <= 0) return;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < limit_; });
    ++in_flight_;
  }
  void Leave() {
    if (limit_ <= 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_one();
  }

 private:
  const int64_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t in_flight_ = 0;
};

}  // namespace

RunResult RunWorkload(Driver& driver, const std::vector<PlannedRequest>& workload,
                      const RequestOptions& request_options, const RunOptions& run) {
  const Clock::time_point start = Clock::now();
  const std::optional<Clock::time_point> stop_issuing =
      run.duration_seconds > 0
          ? std::optional(start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(run.duration_seconds)))
          : std::nullopt;
  auto expired = [&] { return stop_issuing && Clock::now() >= *stop_issuing; };

  // One slot per planned request, written by the thread that ran it; `issued` marks which ran.
  std::vector<RequestRecord> slots(workload.size());
  std::vector<char> issued(workload.size(), 0);
  std::vector<std::thread> threads;

  if (run.concurrency > 0) {
    std::atomic<size_t> next{0};
    const size_t workers = std::min(static_cast<size_t>(run.concurrency), workload.size());
    for (size_t w = 0; w < workers; ++w) {
      threads.emplace_back([&] {
        for (;;) {
          const size_t i = next.fetch_add(1);
          if (i >= workload.size() || expired()) return;
          issued[i] = 1;
          slots[i] = driver.Send(workload[i], request_options, start);
        }
      });
    }
    // Joined here: the workers use `next`, which ends with this block (ASan found them still
    // running after it: stack-use-after-scope).
    for (std::thread& t : threads) t.join();
  } else {
    Gate gate(run.max_concurrency);
    for (size_t i = 0; i < workload.size(); ++i) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(workload[i].arrival_seconds)));
      if (expired()) break;
      gate.Enter();
      issued[i] = 1;
      threads.emplace_back([&, i] {
        slots[i] = driver.Send(workload[i], request_options, start);
        gate.Leave();
      });
    }
    for (std::thread& t : threads) t.join();
  }

  RunResult result;
  result.duration_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (size_t i = 0; i < workload.size(); ++i) {
    if (issued[i]) result.records.push_back(std::move(slots[i]));
  }
  return result;
}

}  // namespace lychee::loadtest
