// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/generate_reactor.h"

#include <deque>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "server/grpc/convert.h"
#include "server/grpc/raw_message.h"

namespace lychee::grpc_server {

void ReaderCounter::Add() {
  std::lock_guard<std::mutex> lock(mu_);
  ++count_;
}

void ReaderCounter::Done() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--count_ == 0) zero_.notify_all();
}

void ReaderCounter::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  zero_.wait(lock, [this] { return count_ == 0; });
}

int64_t ReaderCounter::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

// Shared by the reactor (gRPC threads) and the reader thread; every field under `mu`.
struct GenerateReactor::State {
  std::mutex mu;
  std::condition_variable drained;     // the outbox emptied, or the call ended
  GenerateReactor* reactor = nullptr;  // valid while !finished
  TokenStreamPtr stream;
  std::deque<grpc::ByteBuffer> outbox;  // translated and serialized, not yet written
  grpc::ByteBuffer in_flight;           // the message being written (while writing)
  bool writing = false;
  bool last_queued = false;  // the final message is in the outbox or written
  grpc::Status final_status;
  bool cancelled = false;
  bool finished = false;  // Finish has been (or is about to be) called
};

namespace {

enum class Action { kNone, kWrite, kFinish };

// Caller holds state.mu. Picks the reactor's next operation and marks it taken.
template <typename State>
Action Decide(State& s) {
  if (s.finished || s.writing) return Action::kNone;
  if (s.cancelled) {
    s.finished = true;
    s.final_status = grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    return Action::kFinish;
  }
  if (!s.outbox.empty()) {
    s.in_flight = std::move(s.outbox.front());
    s.outbox.pop_front();
    s.writing = true;
    return Action::kWrite;
  }
  if (s.last_queued) {
    s.finished = true;
    return Action::kFinish;
  }
  return Action::kNone;
}

// Translates one engine event into the messages to send.
std::vector<v1::GenerateResponse> Translate(const std::string& request_id,
                                            const GenerationOutput& event) {
  std::vector<v1::GenerateResponse> out;
  if (HasOutput(event)) {
    v1::GenerateResponse& r = out.emplace_back();
    r.set_request_id(request_id);
    ToChunk(event, r.mutable_chunk());
  }
  if (event.finished) {
    v1::GenerateResponse& r = out.emplace_back();
    r.set_request_id(request_id);
    if (event.finish_reason == FinishReason::kError) {
      ToError(event.error.ok() ? absl::InternalError("engine error") : event.error,
              r.mutable_error());
    } else {
      ToComplete(event, r.mutable_complete());
    }
  }
  return out;
}

// Appends each message's bytes to `out`; stops at the first that cannot be serialized.
grpc::Status Serialize(const std::vector<v1::GenerateResponse>& messages,
                       std::vector<grpc::ByteBuffer>* out) {
  for (const v1::GenerateResponse& message : messages) {
    grpc::ByteBuffer bytes;
    grpc::Status status = SerializeMessage(message, &bytes);
    if (!status.ok()) return status;
    out->push_back(std::move(bytes));
  }
  return grpc::Status::OK;
}

}  // namespace

GenerateReactor::GenerateReactor(EngineClient& engine, TokenStreamPtr stream)
    : engine_(engine), stream_(std::move(stream)), state_(std::make_shared<State>()) {
  state_->reactor = this;
  state_->stream = stream_;
}

GenerateReactor* GenerateReactor::Start(EngineClient& engine, TokenStreamPtr stream,
                                        ReaderCounter& readers,
                                        security::RequestOwners::Claim owner) {
  auto* reactor = new GenerateReactor(engine, std::move(stream));
  reactor->owner_ = std::move(owner);
  readers.Add();
  try {
    std::thread(&GenerateReactor::ReadLoop, reactor->state_, &readers).detach();
  } catch (const std::system_error& e) {
    readers.Done();
    reactor->AbortInEngine();
    {
      std::lock_guard<std::mutex> lock(reactor->state_->mu);
      reactor->state_->finished = true;
    }
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 std::string("cannot start a stream reader: ") + e.what()));
  }
  return reactor;
}

void GenerateReactor::ReadLoop(std::shared_ptr<State> state, ReaderCounter* readers) {
  State& s = *state;
  const std::string& request_id = s.stream->request_id();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(s.mu);
      s.drained.wait(lock, [&s] { return s.cancelled || s.finished || s.outbox.empty(); });
      if (s.cancelled || s.finished) break;
    }
    std::optional<GenerationOutput> event = s.stream->Next(absl::Now() + kPollInterval);
    if (!event.has_value()) continue;
    std::vector<grpc::ByteBuffer> messages;
    const grpc::Status serialized = Serialize(Translate(request_id, *event), &messages);
    // A message protobuf cannot encode (over 2 GiB) ends the call rather than skip output.
    const bool last = event->finished || !serialized.ok();
    if (!serialized.ok()) s.stream->Cancel();
    Action action;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.cancelled || s.finished) break;
      for (auto& m : messages) s.outbox.push_back(std::move(m));
      if (last) {
        s.last_queued = true;
        if (!serialized.ok()) {
          s.final_status = serialized;
        } else if (event->finish_reason == FinishReason::kError) {
          s.final_status = event->error.ok()
                               ? grpc::Status(grpc::StatusCode::INTERNAL, "engine error")
                               : ToGrpcStatus(event->error);
        }
      }
      action = Decide(s);
    }
    // The reactor is alive: Finish has not been called before this action.
    if (action == Action::kWrite) s.reactor->StartWrite(&s.in_flight);
    if (action == Action::kFinish) s.reactor->Finish(s.final_status);
    if (last) break;
  }
  readers->Done();
}

void GenerateReactor::OnWriteDone(bool ok) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->writing = false;
    if (!ok) state_->cancelled = true;
    action = Decide(*state_);
  }
  state_->drained.notify_all();
  if (!ok) AbortInEngine();
  if (action == Action::kWrite) StartWrite(&state_->in_flight);
  if (action == Action::kFinish) Finish(state_->final_status);
}

void GenerateReactor::OnCancel() {
  Action action;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->cancelled = true;
    action = Decide(*state_);
  }
  state_->drained.notify_all();
  AbortInEngine();
  if (action == Action::kWrite) StartWrite(&state_->in_flight);
  if (action == Action::kFinish) Finish(state_->final_status);
}

void GenerateReactor::OnDone() { delete this; }

void GenerateReactor::AbortInEngine() {
  if (stream_->finished()) return;
  stream_->Cancel();
  engine_.Abort(stream_->request_id());
}

}  // namespace lychee::grpc_server
