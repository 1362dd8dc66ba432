// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/grpc_server.h"

#include <fmt/format.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <utility>

namespace lychee::grpc_server {

std::string JoinHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return fmt::format("[{}]:{}", host, port);
  }
  return fmt::format("{}:{}", host, port);
}

GrpcServer::GrpcServer(std::string host, std::unique_ptr<LycheeService> service)
    : host_(std::move(host)), service_(std::move(service)) {}

GrpcServer::~GrpcServer() { Shutdown(absl::Now()); }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(EngineClient& engine,
                                                              const GrpcServerOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(fmt::format("grpc_port {} out of range", options.port));
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcServer> server(new GrpcServer(
      options.host, std::make_unique<LycheeService>(
                        engine, ServiceOptions{.server_version = options.server_version,
                                               .default_policy = options.default_policy,
                                               .policies = options.policies})));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(JoinHostPort(options.host, options.port),
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  // As vLLM's gRPC worker: a stream may send no data for a long time (long prefills), so let
  // clients ping every 10 s without being told off.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        fmt::format("cannot listen on {}", JoinHostPort(options.host, options.port)));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(v1::LycheeService::service_full_name(), true);
  }
  return server;
}

std::string GrpcServer::address() const { return JoinHostPort(host_, port_); }

void GrpcServer::BeginDrain() {
  service_->BeginDrain();
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
}

void GrpcServer::Shutdown(absl::Time deadline) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  BeginDrain();
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();
  }
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

}  // namespace lychee::grpc_server
