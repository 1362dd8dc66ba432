// SPDX-License-Identifier: Apache-2.0
// LycheeService: the lychee.v1.LycheeService callback service over an EngineClient.
//
// Every handler runs on a gRPC callback thread and returns quickly: unary calls answer from the
// tokenizer or Engine::Stats(); Generate validates, tokenizes, submits and hands the stream to a
// GenerateReactor (see generate_reactor.h for the threading). It holds no engine state.
// Thread-safety: all methods may run concurrently; BeginDrain may be called from any thread.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/engine_client.h"
#include "engine/request.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "server/grpc/generate_reactor.h"

namespace lychee::grpc_server {

struct ServiceOptions {
  std::string server_version;
  // What a request's unset SparsityPolicy fields become (the server's default_policy).
  PolicySpec default_policy = {};
  // Policy names requests may use (GetServerInfo.policies).
  std::vector<std::string> policies = {"dense"};
};

class LycheeService final : public v1::LycheeService::CallbackService {
 public:
  LycheeService(EngineClient& engine, ServiceOptions options);
  // Waits for the reader threads of finished calls (each exits within a poll interval).
  ~LycheeService() override;

  // From now on Generate answers UNAVAILABLE; live streams go on.
  void BeginDrain() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  int64_t num_live_streams() const { return readers_.count(); }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::GetServerInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetLoads(grpc::CallbackServerContext* context,
                                     const v1::GetLoadsRequest* request,
                                     v1::GetLoadsResponse* response) override;

 private:
  EngineClient& engine_;
  const ServiceOptions options_;
  std::atomic<bool> draining_{false};
  ReaderCounter readers_;
};

}  // namespace lychee::grpc_server
