// SPDX-License-Identifier: Apache-2.0
// A Driver sends one planned request to the server and measures it as it streams back; the
// runner (runner.h) decides when and on which thread. Drivers are called from many threads at
// once and must be thread-safe; each call blocks until the request ends, fails, or reaches the
// per-request deadline, so a stuck server can not hang the run.
//
// Implementations: grpc_driver.h (lychee.v1 Generate) and http_driver.h (OpenAI /v1/completions
// with SSE). TokenClock turns chunk arrivals into the TTFT/ITL/e2e of stats.h, so both transports
// measure the same way.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace lychee::loadtest {

using Clock = std::chrono::steady_clock;

// What every request carries besides its prompt.
struct RequestOptions {
  std::string policy;         // "": the server's default
  int64_t budget_tokens = 0;  // 0: the policy's default
  std::string model;          // HTTP only; "": the served model
  double timeout_seconds = 300.0;
  uint64_t seed = 0;  // sampling seed (greedy anyway; kept for reproducibility)
};

class Driver {
 public:
  virtual ~Driver() = default;
  // A cheap round trip proving the server answers (run once before the load starts).
  virtual absl::Status Probe(double timeout_seconds) = 0;
  // Sends `request` now; `run_start` anchors start_seconds.
  virtual RequestRecord Send(const PlannedRequest& request, const RequestOptions& options,
                             Clock::time_point run_start) = 0;
};

// Accumulates one request's timings from chunk arrivals (see stats.h for the definitions).
class TokenClock {
 public:
  TokenClock(int64_t index, int64_t input_len, Clock::time_point run_start);
  // A chunk carrying `num_tokens` new tokens arrived now (0-token chunks are ignored).
  void OnTokens(int64_t num_tokens);
  // The stream ended now; fills e2e. `ok` false records the error.
  RequestRecord Finish(bool ok, std::string error_code = "", std::string error_message = "");
  RequestRecord& record() { return record_; }

 private:
  Clock::time_point send_;
  Clock::time_point last_token_;
  RequestRecord record_;
};

// Runs `cancel` on a thread of its own `after_seconds` from now, unless destroyed first (the
// request ended); nothing when after_seconds < 0. Drivers use it for --cancel-fraction.
class CancelTimer {
 public:
  CancelTimer(double after_seconds, std::function<void()> cancel);
  ~CancelTimer();
  CancelTimer(const CancelTimer&) = delete;
  CancelTimer& operator=(const CancelTimer&) = delete;
  // Whether `cancel` ran.
  bool fired() const { return fired_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

}  // namespace lychee::loadtest
