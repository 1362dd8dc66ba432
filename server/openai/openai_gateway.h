// SPDX-License-Identifier: Apache-2.0
// OpenAiGateway: the OpenAI-compatible HTTP API over an EngineClient, served by lychee-server on
// its HTTP port next to /metrics, /health and /ready:
//   GET  /v1/models, /v1/models/{id}   the served model (OpenAI list shape + vLLM's max_model_len)
//   POST /v1/completions               openai_request.h lists the fields
//   POST /v1/chat/completions          rendered with the model's chat template (chat_prompt.h)
// A thin adapter (STYLE.md habit 11): it parses, tokenizes, submits and streams; the engine does
// the rest and owns every piece of request state.
//
// Threads and ownership:
//   - Route handlers run on the HTTP server's I/O threads and only hand the request to a worker
//     thread (one per in-flight request, detached and counted), so an I/O thread never waits
//     for JSON parsing of a large body, template rendering, tokenization or TokenStream::Next.
//     Beyond max_concurrent_requests workers a request gets 429 at once.
//   - A worker parses and validates, tokenizes, calls EngineClient::Submit, then either streams
//     SSE (sse_stream.h) or gathers the events and sends one JSON response.
//   - When the client goes away, the writer's OnClientGone callback (on an I/O thread) cancels
//     the TokenStream and calls EngineClient::Abort; the worker sees client_gone() within a poll
//     interval and exits. Non-streaming requests notice a departed client only when the response
//     is written (the HTTP server does not read the socket while a handler works).
//   - The engine must outlive the gateway, and the gateway the HTTP server's dispatching: create
//     the gateway after the engine and before the HttpServer. The destructor makes the workers
//     abort their requests and waits for them.
//   - While `is_draining()` is true, completions answer 503; /v1/models still answers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>

#include "absl/time/time.h"
#include "common/memory_trim.h"
#include "engine/engine_client.h"
#include "server/http/router.h"
#include "server/openai/chat_prompt.h"
#include "server/openai/openai_request.h"
#include "server/openai/sse_stream.h"
#include "server/security/request_owners.h"

namespace lychee::openai {

struct GatewayOptions {
  int64_t max_concurrent_requests = 1024;  // in-flight requests (worker threads); more get 429
  absl::Duration poll_interval = absl::Milliseconds(100);
  absl::Duration ping_interval = absl::Seconds(5);  // SSE comment pings while nothing is sent
  size_t max_pending_bytes = size_t{1} << 20;       // per-stream backpressure threshold
  std::function<bool()> is_draining = {};           // unset: never draining
  PolicySpec default_policy = {};                   // what a request's unset `policy` fields become
  // Who started a request (security/request_owners.h): e.g. the API key's principal, or
  // "http:<peer>" without keys. Unset: "http:<peer>".
  std::function<std::string(const http::HttpRequest&)> principal_of = {};
  // Where requests are registered under their principal (for gRPC Abort). Null: nowhere.
  security::RequestOwners* owners = nullptr;
  // Client priorities below this are clamped to it (lower runs sooner).
  int32_t min_priority = std::numeric_limits<int32_t>::min();
  // Prompt text (completions prompt, rendered chat) above this many bytes is refused before
  // tokenizing. 0: no limit.
  int64_t max_prompt_bytes = 0;
  // Told when each worker has finished and freed its request (NoteLargeRequest for a body of at
  // least large_body_bytes), to give memory back after spikes. Null: none.
  MemoryTrimmer* trimmer = nullptr;
  size_t large_body_bytes = size_t{1} << 20;
};

class OpenAiGateway {
 public:
  OpenAiGateway(EngineClient& engine, ChatPrompt chat_prompt, GatewayOptions options);
  ~OpenAiGateway();
  OpenAiGateway(const OpenAiGateway&) = delete;
  OpenAiGateway& operator=(const OpenAiGateway&) = delete;

  // Adds the /v1 routes. The router's server must stop dispatching before the gateway dies.
  void AddRoutes(http::Router& router);

  // Requests in flight (workers running).
  int64_t num_live_requests() const;
  // Waits until no request is in flight or `deadline`; returns the number still in flight.
  int64_t WaitIdle(absl::Time deadline) const;

 private:
  void HandleModels(const http::HttpRequest& request, http::ResponseWriterPtr writer) const;
  void HandleModel(const http::HttpRequest& request, http::ResponseWriterPtr writer) const;
  // Runs `work` (for a request of `body_bytes`) on a new worker thread, or answers 429/503 itself.
  void Dispatch(http::ResponseWriterPtr writer, std::function<void()> work, size_t body_bytes);

  // What a worker needs of the HTTP request (which dies with the handler).
  struct Call {
    std::string body;
    std::string request_id_header;  // X-Request-Id as sent ("" when absent)
    std::string principal;          // who started it (GatewayOptions::principal_of)
  };
  Call MakeCall(const http::HttpRequest& request) const;

  // Worker bodies (completions_handler.cc, chat_handler.cc).
  void RunCompletion(const Call& call, http::ResponseWriterPtr writer);
  void RunChat(const Call& call, http::ResponseWriterPtr writer);

  // Shared by both: checks draining, clamps the priority, submits, registers the request under
  // its principal, then streams or answers.
  void Serve(GenerationRequest request, const Call& call, ResponseBuilder& builder, bool stream,
             http::ResponseWriter& writer);
  // "cmpl-<X-Request-Id>" when the header is set (InvalidArgument when it is not a valid id:
  // printable ASCII without blanks, at most 256 bytes), else "cmpl-" and 32 random hex digits.
  absl::StatusOr<std::string> NewRequestId(std::string_view prefix,
                                           const std::string& header) const;
  // InvalidArgument naming `param` and max_prompt_bytes when `text` is longer than that.
  absl::Status CheckPromptBytes(std::string_view param, size_t text_bytes) const;
  int64_t NowSeconds() const;
  absl::Status CheckNotDraining() const;

  EngineClient& engine_;
  const ChatPrompt chat_prompt_;
  const GatewayOptions options_;
  const ModelLimits limits_;
  const int64_t created_;  // /v1/models "created": the gateway's start
  PumpOptions pump_options_;

  mutable std::mutex mu_;
  mutable std::condition_variable idle_;
  int64_t num_workers_ = 0;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_; set by the destructor
};

}  // namespace lychee::openai
