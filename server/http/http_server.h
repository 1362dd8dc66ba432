// SPDX-License-Identifier: Apache-2.0
// HttpServer: a small HTTP/1.1 server on Boost.Beast + Asio for /metrics, /health, /ready and
// (later) the OpenAI gateway. One io_context run by `num_threads` threads; each connection has
// its own strand; keep-alive; header and body size limits (431 / 413); malformed requests get
// 400 and the connection is closed; idle connections time out.
//
//   HttpServer server({.address = "127.0.0.1", .port = 0});
//   AddSideRoutes(server.router(), ...);          // routes before Start
//   LY_RETURN_IF_ERROR(server.Start());
//   int port = server.port();                     // the bound port (port 0 picks a free one)
//   ...
//   server.Shutdown();                            // stops accepting, closes connections, joins
//
// Hardening: with tls_cert/tls_key every connection is TLS (a plaintext request on that port is
// closed after the failed handshake); with tls_client_ca a client certificate is required.
// Beyond max_connections open connections, requests other than the cap-exempt paths (probes)
// get 503 with Retry-After and the connection closes. Accept errors (EMFILE/ENFILE when file
// descriptors run out) back off for accept_backoff and are logged at most once a second.
// on_response sees every answered request (access log, rejection metrics).
//
// Threading: Start and Shutdown from one controlling thread; handlers run on the I/O threads
// (see http_types.h). Shutdown is idempotent and also run by the destructor.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/http/router.h"

namespace lychee::http {

struct ServerCore;

// One answered request, as on_response sees it.
struct ResponseRecord {
  std::string method = "-";  // "-" for a request that did not parse
  std::string path = "-";    // "-" likewise
  int status = 0;
  double duration_seconds = 0;  // from the complete request to the complete response
  std::string request_id = {};  // the response's X-Request-Id, else the request's, else ""
  std::string remote_address = {};
  bool complete = true;           // false: a stream that ended without its last chunk
  size_t request_body_bytes = 0;  // the request's body as received
  // Token counts where the handler reported them (ResponseWriter::SetTokenCounts); -1: unknown.
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = -1;
};

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  uint16_t port = 0;  // 0: any free port; port() tells which
  int num_threads = 2;
  size_t max_header_bytes = 16 * 1024;             // request line + headers; larger gets 431
  size_t max_body_bytes = 32 << 20;                // larger gets 413 (long-context prompts are big)
  std::chrono::milliseconds idle_timeout{60'000};  // waiting for (the rest of) a request
  std::chrono::milliseconds write_timeout{60'000};  // one socket write to a slow client
  int max_connections = 0;                          // 0: no cap
  std::vector<std::string> cap_exempt_paths = {"/health", "/ready", "/metrics"};
  std::chrono::milliseconds accept_backoff{100};  // after a failed accept
  std::string tls_cert = {};                      // PEM files; empty: plaintext
  std::string tls_key = {};
  std::string tls_client_ca = {};  // PEM CA; set: clients must present a certificate it signed
  // Runs once per answered request on an I/O or worker thread; must be quick and thread-safe.
  std::function<void(const ResponseRecord&)> on_response = {};
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Add routes here before Start.
  Router& router() { return router_; }

  // Binds, listens and starts the I/O threads. Errors: the address does not parse or the TLS
  // files do not load (InvalidArgument), or the port cannot be bound (Unavailable).
  absl::Status Start();
  // The bound port (valid after a successful Start).
  int port() const { return port_; }
  // Stops accepting, closes every connection (streams in progress see client_gone), waits for
  // running handlers to return and joins the I/O threads.
  void Shutdown();

 private:
  const HttpServerOptions options_;
  Router router_;
  std::shared_ptr<ServerCore> core_;  // io_context, acceptor, sessions (http_session.h)
  int port_ = 0;
};

}  // namespace lychee::http
