// SPDX-License-Identifier: Apache-2.0
// The handler interface of the HTTP server: what a route sees (HttpRequest) and how it answers
// (ResponseWriter). Transport-neutral value types, so the OpenAI gateway is written against this
// file only, not against Beast.
//
// A handler runs on an I/O thread and must not block. It may answer at once (Send) or keep the
// ResponseWriterPtr and answer later from any thread, e.g. stream Server-Sent Events:
//
//   router.Add("POST", "/v1/completions", [](const HttpRequest& req, ResponseWriterPtr w) {
//     w->StartStream(200, "text/event-stream");       // headers; chunked on HTTP/1.1
//     ... from a pump thread: w->Write("data: {...}\n\n"); ...; w->End();
//   });
//
// Threading: every ResponseWriter method is thread-safe and non-blocking (bytes are queued and
// written by the connection's strand). Dropping the last reference without answering sends 500
// (or closes a started stream), so a buggy handler cannot hang a connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lychee::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // "/v1/models?limit=1"
  std::string path;    // "/v1/models"
  std::string query;   // "limit=1" (no '?'; not decoded)
  HeaderList headers;  // in arrival order, names as sent
  std::string body = {};
  std::string remote_address;  // "127.0.0.1:53122"

  // The first value of header `name` (case-insensitive), or "" when absent.
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  // Extra headers (not Content-Length / Transfer-Encoding: the server sets those).
  HeaderList headers = {};
  std::string body = {};
};

class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;

  // A complete response. Only the first Send or StartStream counts; later calls are ignored.
  virtual void Send(HttpResponse response) = 0;

  // Streaming: the status line and headers now, the body in pieces by Write, then End. On
  // HTTP/1.1 the body is chunked; an HTTP/1.0 client gets it raw and the connection closes.
  virtual void StartStream(int status, std::string content_type, HeaderList headers = {}) = 0;
  // Queues one piece (empty pieces are skipped). False once the client is gone: stop producing.
  virtual bool Write(std::string data) = 0;
  virtual void End() = 0;

  // True once writing to the client failed or the server is shutting down.
  virtual bool client_gone() const = 0;
  // Bytes queued but not yet written to the socket (for backpressure in streaming handlers).
  virtual size_t pending_bytes() const = 0;
  // `fn` runs once, on an I/O thread, when the client is found gone before the response was
  // complete (e.g. to abort the request in the engine). Runs at once if it is already gone.
  virtual void OnClientGone(std::function<void()> fn) = 0;
  // For the access log: the request's token counts so far. Counts set before the response is
  // complete (Send, End, or the writer's end for a cut stream) are the ones logged.
  virtual void SetTokenCounts(int64_t /*prompt_tokens*/, int64_t /*completion_tokens*/) {}
};

using ResponseWriterPtr = std::shared_ptr<ResponseWriter>;
using Handler = std::function<void(const HttpRequest& request, ResponseWriterPtr writer)>;

// {"error":{"message":...,"type":...,"param":null,"code":status}} (OpenAI's error shape).
HttpResponse JsonError(int status, std::string_view type, std::string_view message);

}  // namespace lychee::http
