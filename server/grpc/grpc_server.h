// SPDX-License-Identifier: Apache-2.0
// GrpcServer: owns the grpc::Server that serves lychee.v1.LycheeService, grpc.health.v1.Health
// (grpc's default health service: "" and "lychee.v1.LycheeService") and server reflection.
//
// Lifecycle (main thread): Start → port() → ... → BeginDrain (Generate answers UNAVAILABLE,
// health NOT_SERVING) → Shutdown(deadline) (stops listening, waits for live calls until the
// deadline, then cancels the rest, which aborts their requests) → destroy, then the engine.
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine_client.h"
#include "server/grpc/call_log.h"
#include "server/grpc/lychee_service.h"

namespace lychee::grpc_server {

struct GrpcServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: the kernel picks a free port (see port())
  std::string server_version;
  PolicySpec default_policy = {};                 // the request fields' defaults (ServiceOptions)
  std::vector<std::string> policies = {"dense"};  // GetServerInfo.policies
  // Authentication, ownership, limits and the rejection hook (ServiceOptions documents each).
  const security::ApiKeys* api_keys = nullptr;
  security::RequestOwners* owners = nullptr;
  int32_t min_priority = std::numeric_limits<int32_t>::min();
  int64_t max_prompt_bytes = 0;
  std::function<void(std::string_view reason, std::string_view method, const grpc::Status&)>
      on_reject = {};
  // Every finished call, any service (the access log; call_log.h). Unset: none.
  OnCallDone on_call_done = {};
  // TLS: PEM files of the certificate chain and key (both or neither); with tls_client_ca, a
  // client certificate signed by it is required (mutual TLS).
  std::string tls_cert = {};
  std::string tls_key = {};
  std::string tls_client_ca = {};
};

class GrpcServer {
 public:
  // Binds and starts serving. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(EngineClient& engine,
                                                           const GrpcServerOptions& options);
  ~GrpcServer();

  int port() const { return port_; }
  // "host:port" as bound (IPv6 hosts in brackets).
  std::string address() const;
  int64_t num_live_streams() const { return service_->num_live_streams(); }

  void BeginDrain();
  // Idempotent. Returns when every call has ended.
  void Shutdown(absl::Time deadline);

 private:
  GrpcServer(std::string host, std::unique_ptr<LycheeService> service);

  const std::string host_;
  int port_ = 0;
  std::unique_ptr<LycheeService> service_;
  std::unique_ptr<grpc::Server> server_;
  bool shut_down_ = false;
};

// "host:port", with IPv6 literals bracketed.
std::string JoinHostPort(const std::string& host, int port);

}  // namespace lychee::grpc_server
