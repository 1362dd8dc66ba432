// SPDX-License-Identifier: Apache-2.0
// Internals of HttpServer (not for handlers): the state shared by the server and its
// connections (ServerCore), and one connection (Session).
//
// Session life: read a request (header, then body, with limits) → dispatch to the router with a
// ResponseWriter → queue the response bytes → write them one async_write at a time → read the
// next request (keep-alive) or close. Everything runs on the session's strand; writers on other
// threads post to it. A session is owned by the pending Asio operations and by live writers
// (shared_ptr); it holds the ServerCore, so the io_context outlives every socket.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "server/http/http_server.h"
#include "server/http/http_types.h"

namespace lychee::http {

class Session;

struct ServerCore {
  ServerCore(HttpServerOptions opts, const Router* rtr, int num_threads)
      : options(std::move(opts)), router(rtr), io(num_threads), acceptor(io), accept_timer(io) {}

  const HttpServerOptions options;
  const Router* const router;
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor;
  boost::asio::steady_timer accept_timer;  // accept backoff (acceptor's implicit strand)
  std::chrono::steady_clock::time_point last_accept_log{};
  int64_t accept_errors_unlogged = 0;
  std::optional<boost::asio::ssl::context> tls;  // set: every connection is TLS
  std::atomic<int> num_admitted{0};              // open connections within max_connections
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  std::mutex mu;  // guards sessions and stopping
  std::map<Session*, std::weak_ptr<Session>> sessions;
  bool stopping = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<ServerCore> core, boost::asio::ip::tcp::socket socket);
  ~Session();

  // `admitted`: within max_connections (counted until destroyed); else only cap-exempt paths
  // are served and everything else gets 503.
  void Start(bool admitted);
  // From any thread: no more posts are accepted; on the strand, queued bytes are flushed (each
  // write bounded by the write timeout) and the socket is closed.
  void Close();

  // What happens once some queued bytes are written.
  enum class After { kMore, kNextRequest, kClose };
  // ResponseWriter side (any thread). False when the session is closed (nothing queued).
  bool PostBytes(std::string bytes, After after);
  bool closed() const { return closed_.load(); }
  size_t pending_bytes() const { return pending_bytes_.load(); }
  void AddGoneCallback(std::function<void()> fn);
  // The response hook (on_response), if any.
  void Record(const ResponseRecord& record) const;

 private:
  boost::beast::tcp_stream& lowest() { return tls_ ? tls_->next_layer() : *plain_; }
  // Runs `f(stream)` with the TLS stream or the plain one.
  template <typename F>
  void WithStream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(*plain_);
    }
  }
  void ReadHeader();
  void OnHeader(boost::beast::error_code ec);
  void OnBody(boost::beast::error_code ec);
  // Closes or answers (400/413/431) after a failed read (request_parser.h).
  void OnReadError(boost::beast::error_code ec);
  void Dispatch();
  // Answers a protocol error (400/413/431) and closes the connection.
  void Reject(int status, std::string_view message);
  void Refuse(int status, std::string_view message, std::string method, std::string path);
  void EnqueueOnStrand(std::string bytes, After after);
  void WriteNext();
  void OnWrite(boost::beast::error_code ec, size_t bytes);
  void CloseOnStrand();
  void LingerThenClose();
  void DrainSome();
  void MarkGone();

  std::shared_ptr<ServerCore> core_;  // first member: destroyed last (the socket needs the io)
  std::optional<boost::beast::tcp_stream> plain_;  // exactly one of plain_ and tls_ is set
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_;
  bool admitted_ = false;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;

  // Strand-only state.
  std::deque<std::pair<std::string, After>> out_;
  bool writing_ = false;
  bool socket_closed_ = false;
  bool close_when_flushed_ = false;  // Close() came while writing
  std::chrono::steady_clock::time_point linger_deadline_;
  std::array<char, 4096> drain_buffer_;

  std::atomic<size_t> pending_bytes_{0};
  std::mutex mu_;  // orders posts against Close (see Close)
  std::atomic<bool> closed_{false};
  std::vector<std::function<void()>> gone_callbacks_;  // guarded by mu_
  bool gone_fired_ = false;                            // guarded by mu_
};

}  // namespace lychee::http
