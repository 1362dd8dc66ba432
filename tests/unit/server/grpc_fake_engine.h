// SPDX-License-Identifier: Apache-2.0
// FakeEngine: an EngineClient for the gRPC service tests, with the real stories260K tokenizer
// and a scripted generator instead of a model. Each submitted request gets a producer thread
// that pushes one token (id 100 + i, text "w<i> ") every `token_interval` until max_tokens,
// cancellation, Abort or the request's deadline. Request ids starting with "fail-<code>" make
// Submit fail with that absl code ("fail-8" → ResourceExhausted), so error mapping is testable.
//
// Thread-safety: every method may be called from any thread; the destructor joins producers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "engine/engine_client.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::testing {

class FakeEngine final : public EngineClient {
 public:
  explicit FakeEngine(absl::Duration token_interval = absl::Milliseconds(1))
      : token_interval_(token_interval) {
    tokenizer_ = *Tokenizer::FromDirectory("models/stories260K");
    info_.model_id = "fake-stories";
    info_.model_path = "models/stories260K";
    info_.model_type = "llama";
    info_.vocab_size = tokenizer_->vocab_size();
    info_.max_model_len = 256;
    info_.bos_token_id = 1;
    info_.eos_token_ids = {2};
    info_.device = "cpu";
  }

  ~FakeEngine() override {
    stopping_ = true;
    for (std::thread& t : producers_) t.join();
  }

  absl::StatusOr<TokenStreamPtr> Submit(GenerationRequest request) override {
    std::lock_guard<std::mutex> lock(mu_);
    int code = 0;
    if (request.request_id.rfind("fail-", 0) == 0 &&
        absl::SimpleAtoi(request.request_id.substr(5), &code)) {
      return absl::Status(static_cast<absl::StatusCode>(code), "fake engine refuses");
    }
    if (request.request_id.empty()) request.request_id = "fake-" + std::to_string(next_id_++);
    if (live_.count(request.request_id) > 0) {
      return absl::AlreadyExistsError("request_id " + request.request_id + " is live");
    }
    live_.insert(request.request_id);
    submitted_.push_back(request);
    auto stream = std::make_shared<TokenStream>(request.request_id, 8);
    producers_.emplace_back(&FakeEngine::Produce, this, std::move(request), stream);
    return stream;
  }

  void Abort(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_.insert(request_id);
  }

  EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats stats;
    stats.num_running = static_cast<int64_t>(live_.size());
    stats.num_kv_blocks_total = 100;
    stats.num_kv_blocks_used = 7;
    stats.block_size = 16;
    stats.kv_usage = 0.07;
    stats.uptime_seconds = 1.5;
    return stats;
  }
  const ModelInfo& model_info() const override { return info_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }

  // Test inspection.
  bool WasAborted(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_.count(id) > 0;
  }
  bool IsLive(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.count(id) > 0;
  }
  std::vector<GenerationRequest> submitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }

 private:
  void Produce(GenerationRequest request, TokenStreamPtr stream) {
    GenerationOutput out;
    out.prompt_tokens = static_cast<int64_t>(request.prompt.size());
    FinishReason reason = FinishReason::kLength;
    for (int64_t i = 0; i < request.max_tokens; ++i) {
      absl::SleepFor(token_interval_);
      if (stopping_ || stream->cancelled() || WasAborted(request.request_id) ||
          absl::Now() > request.deadline) {
        reason = FinishReason::kAbort;
        break;
      }
      GenerationOutput event;
      event.token_ids = {static_cast<int32_t>(100 + i % 300)};
      event.text = "w" + std::to_string(i) + " ";
      event.prompt_tokens = out.prompt_tokens;
      event.completion_tokens = i + 1;
      out.completion_tokens = i + 1;
      stream->Push(std::move(event));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_.erase(request.request_id);
    }
    out.finished = true;
    out.finish_reason = reason;
    out.timings.e2e_seconds = 0.01;
    stream->Push(std::move(out));
  }

  const absl::Duration token_interval_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelInfo info_;
  mutable std::mutex mu_;
  std::set<std::string> live_;
  std::set<std::string> aborted_;
  std::vector<GenerationRequest> submitted_;
  std::vector<std::thread> producers_;
  int64_t next_id_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace lychee::testing
