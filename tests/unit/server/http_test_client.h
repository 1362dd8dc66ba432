// SPDX-License-Identifier: Apache-2.0
// Blocking HTTP/1.1 test clients over real sockets (Boost.Beast): one request per connection
// (Fetch), keep-alive sequences (Connection), and raw bytes for malformed input (RawExchange).
// For tests only; every call has a timeout so a broken server fails a test instead of hanging.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace lychee::testing {

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
  bool keep_alive = false;
  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

// One request on a fresh connection. A non-empty body is sent as `application/json`.
absl::StatusOr<ClientResponse> Fetch(const std::string& host, uint16_t port,
                                     const std::string& method, const std::string& target,
                                     const std::string& body = "",
                                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A kept-alive connection for several requests in a row.
class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& host, uint16_t port);
  ~Connection();
  absl::StatusOr<ClientResponse> Request(
      const std::string& method, const std::string& target, const std::string& body = "",
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  struct Impl;  // the socket and its io_context (shared with Fetch and RawExchange)

 private:
  explicit Connection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sends `bytes`, then reads until the server closes or `timeout`; returns what was read (may be
// empty). Errors only when the connection cannot be made.
absl::StatusOr<std::string> RawExchange(
    uint16_t port, const std::string& bytes,
    std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace lychee::testing
