// SPDX-License-Identifier: Apache-2.0
// LycheeService: the lychee.v1.LycheeService callback service over an EngineClient.
//
// Its methods are registered raw (requests and responses are bytes) and parse requests
// themselves, so a message that does not parse is INVALID_ARGUMENT with a message rather than
// gRPC's own UNIMPLEMENTED with empty details (raw_message.h says why). Clients see the same
// service, methods and messages; reflection and health are unchanged.
//
// Every handler runs on a gRPC callback thread and returns quickly: unary calls answer from the
// tokenizer or Engine::Stats(); Generate validates, tokenizes, submits and hands the stream to a
// GenerateReactor (see generate_reactor.h for the threading). It holds no engine state.
// Thread-safety: all methods may run concurrently; BeginDrain may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "engine/engine_client.h"
#include "engine/request.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "server/grpc/generate_reactor.h"
#include "server/security/api_keys.h"
#include "server/security/request_owners.h"

namespace lychee::grpc_server {

struct ServiceOptions {
  std::string server_version;
  // What a request's unset SparsityPolicy fields become (the server's default_policy).
  PolicySpec default_policy = {};
  // Policy names requests may use (GetServerInfo.policies).
  std::vector<std::string> policies = {"dense"};
  // Null or without keys: no authentication. Else every lychee.v1 call needs the metadata
  // `authorization: Bearer <key>` (UNAUTHENTICATED otherwise). Must outlive the service.
  const security::ApiKeys* api_keys = nullptr;
  // Where Generate registers each request under its principal and Abort checks ownership
  // (shared with the HTTP gateway). Null: the service keeps its own.
  security::RequestOwners* owners = nullptr;
  // Client priorities below this are clamped to it (lower runs sooner).
  int32_t min_priority = std::numeric_limits<int32_t>::min();
  // `text` longer than this is refused before tokenizing; 0: no limit.
  int64_t max_prompt_bytes = 0;
  // Called for every refused call (authentication, validation, admission) with the rejection
  // reason (security::RejectReasonFor) and the method name, on a gRPC thread.
  std::function<void(std::string_view reason, std::string_view method, const grpc::Status&)>
      on_reject = {};
};

// Every lychee.v1.LycheeService method as a raw callback method.
using RawLycheeService = v1::LycheeService::WithRawCallbackMethod_Generate<
    v1::LycheeService::WithRawCallbackMethod_Abort<
        v1::LycheeService::WithRawCallbackMethod_Tokenize<
            v1::LycheeService::WithRawCallbackMethod_Detokenize<
                v1::LycheeService::WithRawCallbackMethod_GetModelInfo<
                    v1::LycheeService::WithRawCallbackMethod_GetServerInfo<
                        v1::LycheeService::WithRawCallbackMethod_GetLoads<
                            v1::LycheeService::Service>>>>>>>;

class LycheeService final : public RawLycheeService {
 public:
  LycheeService(EngineClient& engine, ServiceOptions options);
  // Waits for the reader threads of finished calls (each exits within a poll interval).
  ~LycheeService() override;

  // From now on Generate answers UNAVAILABLE; live streams go on.
  void BeginDrain() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  int64_t num_live_streams() const { return readers_.count(); }

  // The raw methods: authenticate, parse the request, run the typed handler below, serialize.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetLoads(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

 private:
  // The caller's principal: its API key's ("key#N"), or without keys its connection
  // ("grpc:<peer>"); nullopt when keys are configured and the call presents none of them.
  std::optional<std::string> Authenticate(const grpc::CallbackServerContext& context) const;
  // `status` as the call's answer, counted and logged as a rejection.
  grpc::Status Reject(std::string_view method, grpc::Status status) const;
  // A unary call: authenticates, parses `request` as a `Request`, runs
  // `handler(principal, request, &response)` and serializes its response when it succeeds.
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Unary(std::string_view method, grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer& request, grpc::ByteBuffer* response,
                                  Handler handler);

  // The typed handlers (one per unary method).
  grpc::Status DoAbort(const std::string& principal, const v1::AbortRequest& request,
                       v1::AbortResponse* response);
  grpc::Status DoTokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse* response);
  grpc::Status DoDetokenize(const v1::DetokenizeRequest& request, v1::DetokenizeResponse* response);
  grpc::Status DoGetModelInfo(v1::GetModelInfoResponse* response);
  grpc::Status DoGetServerInfo(v1::GetServerInfoResponse* response);
  grpc::Status DoGetLoads(v1::GetLoadsResponse* response);

  EngineClient& engine_;
  const ServiceOptions options_;
  security::RequestOwners own_owners_;  // used when options_.owners is null
  security::RequestOwners* const owners_;
  std::atomic<bool> draining_{false};
  ReaderCounter readers_;
};

}  // namespace lychee::grpc_server
