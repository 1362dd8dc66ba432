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
// Threading: Start and Shutdown from one controlling thread; handlers run on the I/O threads
// (see http_types.h). Shutdown is idempotent and also run by the destructor.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "server/http/router.h"

namespace lychee::http {

struct ServerCore;

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  uint16_t port = 0;  // 0: any free port; port() tells which
  int num_threads = 2;
  size_t max_header_bytes = 16 * 1024;             // request line + headers; larger gets 431
  size_t max_body_bytes = 32 << 20;                // larger gets 413 (long-context prompts are big)
  std::chrono::milliseconds idle_timeout{60'000};  // waiting for (the rest of) a request
  std::chrono::milliseconds write_timeout{60'000};  // one socket write to a slow client
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Add routes here before Start.
  Router& router() { return router_; }

  // Binds, listens and starts the I/O threads. Errors: the address does not parse, or the port
  // cannot be bound (Unavailable).
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
