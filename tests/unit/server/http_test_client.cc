// SPDX-License-Identifier: Apache-2.0
// Blocking test clients (see http_test_client.h).
#include "tests/unit/server/http_test_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/version.hpp>

#include "fmt/format.h"

namespace lychee::testing {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

struct Connection::Impl {
  net::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  std::string host;
};

namespace {

absl::Status Connect(Connection::Impl& impl, const std::string& host, uint16_t port) {
  impl.host = host;
  beast::error_code ec;
  tcp::resolver resolver(impl.io);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return absl::UnavailableError(fmt::format("resolve: {}", ec.message()));
  impl.stream.expires_after(std::chrono::seconds(5));
  impl.stream.connect(results, ec);
  if (ec) return absl::UnavailableError(fmt::format("connect: {}", ec.message()));
  return absl::OkStatus();
}

// Runs one async op to completion with the stream's timeout (sync Beast ops ignore it).
template <typename Op>
beast::error_code RunWithTimeout(Connection::Impl& impl, std::chrono::milliseconds timeout, Op op) {
  beast::error_code result = net::error::would_block;
  impl.stream.expires_after(timeout);
  op([&result](beast::error_code ec, size_t) { result = ec; });
  impl.io.restart();
  impl.io.run();
  return result;
}

absl::StatusOr<ClientResponse> DoRequest(Connection::Impl& impl, const std::string& method,
                                         const std::string& target, const std::string& body,
                                         std::chrono::milliseconds timeout) {
  bhttp::request<bhttp::string_body> request(bhttp::string_to_verb(method), target, 11);
  if (request.method() == bhttp::verb::unknown) request.method_string(method);
  request.set(bhttp::field::host, impl.host);
  // As OpenAI clients do (the gateway refuses bodies of any other type with 415).
  if (!body.empty()) request.set(bhttp::field::content_type, "application/json");
  request.body() = body;
  request.prepare_payload();
  beast::error_code ec = RunWithTimeout(
      impl, timeout, [&](auto handler) { bhttp::async_write(impl.stream, request, handler); });
  if (ec) return absl::UnavailableError(fmt::format("write: {}", ec.message()));
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 << 20);
  if (method == "HEAD") parser.skip(true);
  ec = RunWithTimeout(impl, timeout, [&](auto handler) {
    bhttp::async_read(impl.stream, impl.buffer, parser, handler);
  });
  if (ec) return absl::UnavailableError(fmt::format("read: {}", ec.message()));
  const auto& message = parser.get();
  ClientResponse response;
  response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    response.headers[name] = std::string(field.value());
  }
  response.body = message.body();
  response.keep_alive = message.keep_alive();
  return response;
}

}  // namespace

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Connection::~Connection() {
  beast::error_code ignored;
  impl_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& host,
                                                             uint16_t port) {
  auto impl = std::make_unique<Impl>();
  if (absl::Status status = Connect(*impl, host, port); !status.ok()) return status;
  return std::unique_ptr<Connection>(new Connection(std::move(impl)));
}

absl::StatusOr<ClientResponse> Connection::Request(const std::string& method,
                                                   const std::string& target,
                                                   const std::string& body,
                                                   std::chrono::milliseconds timeout) {
  return DoRequest(*impl_, method, target, body, timeout);
}

absl::StatusOr<ClientResponse> Fetch(const std::string& host, uint16_t port,
                                     const std::string& method, const std::string& target,
                                     const std::string& body, std::chrono::milliseconds timeout) {
  Connection::Impl impl;
  if (absl::Status status = Connect(impl, host, port); !status.ok()) return status;
  return DoRequest(impl, method, target, body, timeout);
}

absl::StatusOr<std::string> RawExchange(uint16_t port, const std::string& bytes,
                                        std::chrono::milliseconds timeout) {
  Connection::Impl impl;
  if (absl::Status status = Connect(impl, "127.0.0.1", port); !status.ok()) return status;
  // The server may answer (and stop reading) before all bytes are sent: a write error is fine.
  RunWithTimeout(impl, timeout,
                 [&](auto handler) { net::async_write(impl.stream, net::buffer(bytes), handler); });
  std::string out;
  char chunk[4096];
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    size_t n = 0;
    beast::error_code ec = RunWithTimeout(
        impl,
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                              std::chrono::steady_clock::now()),
        [&](auto handler) {
          impl.stream.async_read_some(net::buffer(chunk),
                                      [&n, handler](beast::error_code e, size_t got) mutable {
                                        n = got;
                                        handler(e, got);
                                      });
        });
    out.append(chunk, n);
    if (ec) break;
  }
  return out;
}

}  // namespace lychee::testing
