// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/grpc_server.h"

#include <fmt/format.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <utility>

#include "common/file.h"
#include "common/status.h"

namespace lychee::grpc_server {
namespace {

// Insecure without TLS files; else SSL credentials from the PEM files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const GrpcServerOptions& options) {
  if (options.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  LY_ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(options.tls_cert));
  LY_ASSIGN_OR_RETURN(pair.private_key, ReadFile(options.tls_key));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.tls_client_ca.empty()) {
    LY_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls_client_ca));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

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

  LY_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(options));
  std::unique_ptr<GrpcServer> server(new GrpcServer(
      options.host, std::make_unique<LycheeService>(
                        engine, ServiceOptions{.server_version = options.server_version,
                                               .default_policy = options.default_policy,
                                               .policies = options.policies,
                                               .api_keys = options.api_keys,
                                               .owners = options.owners,
                                               .min_priority = options.min_priority,
                                               .max_prompt_bytes = options.max_prompt_bytes,
                                               .on_reject = options.on_reject})));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(JoinHostPort(options.host, options.port), credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  if (options.on_call_done) {
    builder.experimental().SetInterceptorCreators(CallLogInterceptors(options.on_call_done));
  }
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
