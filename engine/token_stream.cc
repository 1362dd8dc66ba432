// SPDX-License-Identifier: Apache-2.0
#include "engine/token_stream.h"

#include <utility>

namespace lychee {
namespace {

// Folds `next` into `into`: appends what is incremental, keeps the newest of what is cumulative.
void Merge(GenerationOutput& into, GenerationOutput&& next) {
  into.token_ids.insert(into.token_ids.end(), next.token_ids.begin(), next.token_ids.end());
  into.text += next.text;
  into.logprobs.insert(into.logprobs.end(), std::make_move_iterator(next.logprobs.begin()),
                       std::make_move_iterator(next.logprobs.end()));
  into.prompt_tokens = next.prompt_tokens;
  into.completion_tokens = next.completion_tokens;
  into.cached_tokens = next.cached_tokens;
  into.finished = next.finished;
  into.finish_reason = next.finish_reason;
  into.matched_stop = std::move(next.matched_stop);
  into.error = std::move(next.error);
  into.timings = next.timings;
}

}  // namespace

TokenStream::TokenStream(std::string request_id, size_t capacity)
    : request_id_(std::move(request_id)), capacity_(capacity < 1 ? 1 : capacity) {}

void TokenStream::Push(GenerationOutput output) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_pushed_) return;
    finished_pushed_ = output.finished;
    if (queue_.size() >= capacity_) {
      Merge(queue_.back(), std::move(output));
    } else {
      queue_.push_back(std::move(output));
    }
  }
  ready_.notify_all();
}

std::optional<GenerationOutput> TokenStream::Next(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (finished_read_) return std::nullopt;
  const auto has_event = [this] { return !queue_.empty(); };
  if (deadline == absl::InfiniteFuture()) {
    ready_.wait(lock, has_event);
  } else if (!ready_.wait_until(lock, absl::ToChronoTime(deadline), has_event)) {
    return std::nullopt;
  }
  GenerationOutput event = std::move(queue_.front());
  queue_.pop_front();
  if (event.finished) finished_read_ = true;
  return event;
}

bool TokenStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_pushed_;
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

}  // namespace lychee
