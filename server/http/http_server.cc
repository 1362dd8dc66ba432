// SPDX-License-Identifier: Apache-2.0
// HttpServer: binding, the accept loop, the I/O threads and shutdown (see http_server.h).
#include "server/http/http_server.h"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <optional>

#include "common/logging.h"
#include "fmt/format.h"
#include "server/http/http_session.h"

namespace lychee::http {
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

void Accept(const std::shared_ptr<ServerCore>& core);

// After a failed accept (EMFILE/ENFILE when descriptors run out, ENOBUFS, ...): retrying at once
// would spin a core and flood the log while nothing can succeed. Wait accept_backoff instead,
// and log at most once a second, with the number of failures since the last line.
void AcceptAfterError(const std::shared_ptr<ServerCore>& core,
                      const boost::system::error_code& ec) {
  const auto now = std::chrono::steady_clock::now();
  ++core->accept_errors_unlogged;
  if (now - core->last_accept_log >= std::chrono::seconds(1)) {
    LY_LOG_WARN("http: accept failed ({} times since the last report): {}; retrying in {} ms",
                core->accept_errors_unlogged, ec.message(), core->options.accept_backoff.count());
    core->last_accept_log = now;
    core->accept_errors_unlogged = 0;
  }
  core->accept_timer.expires_after(core->options.accept_backoff);
  core->accept_timer.async_wait([core](boost::system::error_code wait_ec) {
    if (wait_ec == net::error::operation_aborted || !core->acceptor.is_open()) return;
    Accept(core);
  });
}

void Accept(const std::shared_ptr<ServerCore>& core) {
  // Each connection gets its own strand: handlers of one connection never run concurrently.
  core->acceptor.async_accept(
      net::make_strand(core->io), [core](boost::system::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !core->acceptor.is_open()) return;
        if (ec) return AcceptAfterError(core, ec);
        auto session = std::make_shared<Session>(core, std::move(socket));
        bool stopping;
        {
          std::lock_guard<std::mutex> lock(core->mu);
          stopping = core->stopping;
          if (!stopping) core->sessions.emplace(session.get(), session);
        }
        if (!stopping) {
          const int cap = core->options.max_connections;
          const bool admitted = cap <= 0 || core->num_admitted.fetch_add(1) < cap;
          if (cap > 0 && !admitted) core->num_admitted.fetch_sub(1);
          session->Start(admitted);
        }
        Accept(core);
      });
}

// The TLS context: our certificate and key, TLS 1.2 or newer, and with a client CA a required,
// verified client certificate.
absl::Status SetUpTls(const HttpServerOptions& options, std::optional<net::ssl::context>& tls) {
  if (options.tls_cert.empty() && options.tls_key.empty()) return absl::OkStatus();
  tls.emplace(net::ssl::context::tls_server);
  boost::system::error_code ec;
  tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                       net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                       net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use,
                   ec);
  auto fail = [&ec](const char* what, const std::string& path) {
    return absl::InvalidArgumentError(fmt::format("http: TLS {} {}: {}", what, path, ec.message()));
  };
  if (ec) return fail("options", "");
  tls->use_certificate_chain_file(options.tls_cert, ec);
  if (ec) return fail("certificate", options.tls_cert);
  tls->use_private_key_file(options.tls_key, net::ssl::context::pem, ec);
  if (ec) return fail("key", options.tls_key);
  if (!options.tls_client_ca.empty()) {
    tls->load_verify_file(options.tls_client_ca, ec);
    if (ec) return fail("client CA", options.tls_client_ca);
    tls->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert, ec);
    if (ec) return fail("verify mode", "");
  }
  return absl::OkStatus();
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Shutdown(); }

absl::Status HttpServer::Start() {
  if (core_ != nullptr) return absl::FailedPreconditionError("HttpServer already started");
  const int num_threads = std::max(1, options_.num_threads);
  auto core = std::make_shared<ServerCore>(options_, &router_, num_threads);
  if (absl::Status st = SetUpTls(options_, core->tls); !st.ok()) return st;
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
  LY_LOG_INFO("http: listening on {}:{}{}", options_.address, port_,
              core_->tls.has_value() ? " (TLS)" : "");
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
    core->accept_timer.cancel();
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
