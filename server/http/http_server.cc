// SPDX-License-Identifier: Apache-2.0
// HttpServer: binding, the accept loop, the I/O threads and shutdown (see http_server.h).
#include "server/http/http_server.h"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/strand.hpp>

#include "common/logging.h"
#include "fmt/format.h"
#include "server/http/http_session.h"

namespace lychee::http {
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

void Accept(const std::shared_ptr<ServerCore>& core) {
  // Each connection gets its own strand: handlers of one connection never run concurrently.
  core->acceptor.async_accept(
      net::make_strand(core->io), [core](boost::system::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !core->acceptor.is_open()) return;
        if (!ec) {
          auto session = std::make_shared<Session>(core, std::move(socket));
          bool stopping;
          {
            std::lock_guard<std::mutex> lock(core->mu);
            stopping = core->stopping;
            if (!stopping) core->sessions.emplace(session.get(), session);
          }
          if (!stopping) session->Start();
        } else {
          LY_LOG_WARN("http: accept failed: {}", ec.message());
        }
        Accept(core);
      });
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Shutdown(); }

absl::Status HttpServer::Start() {
  if (core_ != nullptr) return absl::FailedPreconditionError("HttpServer already started");
  const int num_threads = std::max(1, options_.num_threads);
  auto core = std::make_shared<ServerCore>(options_, &router_, num_threads);
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(options_.address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        fmt::format("http: bad listen address '{}': {}", options_.address, ec.message()));
  }
  const tcp::endpoint endpoint(address, options_.port);
  auto fail = [&](const char* what) {
    return absl::UnavailableError(
        fmt::format("http: {} {}:{}: {}", what, options_.address, options_.port, ec.message()));
  };
  core->acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  core->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("setsockopt");
  core->acceptor.bind(endpoint, ec);
  if (ec) return fail("bind");
  core->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  port_ = core->acceptor.local_endpoint(ec).port();
  if (ec) return fail("getsockname");

  core->work.emplace(net::make_work_guard(core->io));
  Accept(core);
  for (int i = 0; i < num_threads; ++i) {
    core->threads.emplace_back([io = &core->io] { io->run(); });
  }
  core_ = std::move(core);
  LY_LOG_INFO("http: listening on {}:{}", options_.address, port_);
  return absl::OkStatus();
}

void HttpServer::Shutdown() {
  if (core_ == nullptr) return;
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->stopping = true;
    for (auto& [ptr, weak] : core_->sessions) {
      if (auto session = weak.lock()) sessions.push_back(std::move(session));
    }
  }
  net::post(core_->io, [core = core_] {
    boost::system::error_code ignored;
    core->acceptor.close(ignored);
  });
  for (auto& session : sessions) session->Close();
  sessions.clear();
  // Without the guard, run() returns once the closes above have completed every operation.
  core_->work.reset();
  for (std::thread& thread : core_->threads) thread.join();
  core_->threads.clear();
  // Sessions still held by streaming writers keep the core (and its io_context) alive.
  core_.reset();
}

}  // namespace lychee::http
