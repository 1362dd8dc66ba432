// SPDX-License-Identifier: Apache-2.0
// GenerateReactor: the server-write reactor of one Generate call. It only translates and
// streams (STYLE.md habit 11); the engine does the work.
//
// Threads and ownership:
//   - gRPC callback threads run OnWriteDone / OnCancel / OnDone. They never block: each takes
//     a short mutex, decides, and calls StartWrite / Finish with the mutex released.
//   - One reader thread per call (detached) drains the request's TokenStream. It waits for the
//     outbox to be empty before it reads the next event, so a slow client makes the engine
//     coalesce events in the stream (bounded) instead of queuing messages here; at most one
//     write is in flight and one more message waits behind it. It wakes at least every
//     kPollInterval to notice cancellation, and never calls into the engine.
//   - Calls into the engine (Abort) happen on gRPC threads only, which gRPC joins before
//     Server::Shutdown returns; the engine must outlive the gRPC server.
//   - Messages are serialized by the reader thread (the service's methods are raw: see
//     raw_message.h), so gRPC threads only hand ready bytes to StartWrite.
//   - The reactor deletes itself in OnDone; the reader thread shares only `State` (shared_ptr)
//     and touches the reactor only while Finish has not been called.
//   - ReaderCounter lets the service wait for every reader thread before it is destroyed.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/time/time.h"
#include "engine/engine_client.h"
#include "lychee/v1/generate.pb.h"
#include "server/security/request_owners.h"

namespace lychee::grpc_server {

// Counts live reader threads; Wait() blocks until there are none.
class ReaderCounter {
 public:
  void Add();
  void Done();
  void Wait();
  int64_t count() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable zero_;
  int64_t count_ = 0;
};

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  static constexpr absl::Duration kPollInterval = absl::Milliseconds(100);

  // Starts streaming `stream` (already submitted to `engine`) and returns the reactor for the
  // handler to return to gRPC. `owner` (the request's ownership record) is released when the
  // call is done.
  static GenerateReactor* Start(EngineClient& engine, TokenStreamPtr stream, ReaderCounter& readers,
                                security::RequestOwners::Claim owner = {});

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct State;
  GenerateReactor(EngineClient& engine, TokenStreamPtr stream);
  static void ReadLoop(std::shared_ptr<State> state, ReaderCounter* readers);
  void AbortInEngine();

  EngineClient& engine_;
  TokenStreamPtr stream_;
  std::shared_ptr<State> state_;
  security::RequestOwners::Claim owner_;
};

// A reactor that finishes at once with `status` (validation and admission errors).
class ErrorWriteReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit ErrorWriteReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace lychee::grpc_server
