// SPDX-License-Identifier: Apache-2.0
// TokenStream: the one-request channel from the engine thread to a front end.
//
// The engine thread is the only producer and never blocks on it: when the reader falls behind,
// Push merges the new event into the last queued one (token ids, text and logprobs append;
// counters and the finished state take the newest), so the queue holds at most `capacity`
// events whatever the reader does. Readers (gRPC reactor, HTTP handler, lychee-generate) call
// Next from their own thread. Cancel marks the stream; the engine frees the request's blocks at
// its next step and pushes a final kAbort event.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "engine/request.h"

namespace lychee {

class TokenStream {
 public:
  explicit TokenStream(std::string request_id, size_t capacity = 64);

  const std::string& request_id() const { return request_id_; }

  // Engine side. Never blocks (see above). Events after a finished one are dropped.
  void Push(GenerationOutput output);

  // Reader side: the next event, waiting until `deadline`; nullopt on timeout. After the
  // finished event has been read, returns nullopt at once.
  std::optional<GenerationOutput> Next(absl::Time deadline = absl::InfiniteFuture());

  // Either side: asks the engine to stop the request (client gone, deadline, explicit abort).
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

  // True once the finished event has been pushed (it may still be unread).
  bool finished() const;

 private:
  const std::string request_id_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  std::deque<GenerationOutput> queue_;
  bool finished_pushed_ = false;
  bool finished_read_ = false;
  std::atomic<bool> cancelled_{false};
};

using TokenStreamPtr = std::shared_ptr<TokenStream>;

}  // namespace lychee
