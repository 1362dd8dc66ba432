// SPDX-License-Identifier: Apache-2.0
#include "loadtest/driver.h"

#include <utility>

namespace lychee::loadtest {
namespace {
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

TokenClock::TokenClock(int64_t index, int64_t input_len, Clock::time_point run_start)
    : send_(Clock::now()) {
  record_.index = index;
  record_.input_len = input_len;
  record_.start_seconds = Seconds(send_ - run_start);
}

void TokenClock::OnTokens(int64_t num_tokens) {
  if (num_tokens <= 0) return;
  const Clock::time_point now = Clock::now();
  if (record_.output_tokens == 0) {
    record_.ttft_seconds = Seconds(now - send_);
    // Tokens that came with the first one arrived together: gaps of zero.
    record_.itl_seconds.insert(record_.itl_seconds.end(), static_cast<size_t>(num_tokens - 1), 0.0);
  } else {
    const double share = Seconds(now - last_token_) / static_cast<double>(num_tokens);
    record_.itl_seconds.insert(record_.itl_seconds.end(), static_cast<size_t>(num_tokens), share);
  }
  record_.output_tokens += num_tokens;
  last_token_ = now;
}

RequestRecord TokenClock::Finish(bool ok, std::string error_code, std::string error_message) {
  record_.e2e_seconds = Seconds(Clock::now() - send_);
  record_.ok = ok;
  record_.error_code = std::move(error_code);
  record_.error_message = std::move(error_message);
  return record_;
}

CancelTimer::CancelTimer(double after_seconds, std::function<void()> cancel) {
  if (after_seconds < 0) return;
  const Clock::time_point at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(after_seconds));
  thread_ = std::thread([this, at, cancel = std::move(cancel)] {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_cv_.wait_until(lock, at, [this] { return done_; })) return;
    fired_.store(true);
    cancel();
  });
}

CancelTimer::~CancelTimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  done_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace lychee::loadtest
