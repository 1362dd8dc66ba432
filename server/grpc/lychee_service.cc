// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/lychee_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "common/logging.h"
#include "model/tokenizer/tokenizer.h"
#include "server/grpc/convert.h"
#include "server/grpc/raw_message.h"

namespace lychee::grpc_server {
namespace {

constexpr char kUnauthenticatedMessage[] =
    "missing or invalid API key: send the metadata `authorization: Bearer <key>`";

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context, grpc::Status status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

LycheeService::LycheeService(EngineClient& engine, ServiceOptions options)
    : engine_(engine),
      options_(std::move(options)),
      owners_(options_.owners != nullptr ? options_.owners : &own_owners_) {}

std::optional<std::string> LycheeService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  if (options_.api_keys == nullptr || !options_.api_keys->enabled()) {
    return "grpc:" + context.peer();
  }
  const auto& metadata = context.client_metadata();
  for (auto [it, end] = metadata.equal_range("authorization"); it != end; ++it) {
    const std::string_view value(it->second.data(), it->second.size());
    if (std::optional<std::string> principal = options_.api_keys->CheckAuthorization(value)) {
      return principal;
    }
  }
  return std::nullopt;
}

grpc::Status LycheeService::Reject(std::string_view method, grpc::Status status) const {
  const std::string_view reason =
      security::RejectReasonFor(static_cast<absl::StatusCode>(status.error_code()));
  if (options_.on_reject) options_.on_reject(reason, method, status);
  return status;
}

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* LycheeService::Unary(std::string_view method,
                                               grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer& request,
                                               grpc::ByteBuffer* response, Handler handler) {
  const std::optional<std::string> principal = Authenticate(*context);
  if (!principal.has_value()) {
    return FinishUnary(context, Reject(method, grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                                            kUnauthenticatedMessage)));
  }
  Request typed_request;
  if (grpc::Status parsed = ParseMessage(request, &typed_request); !parsed.ok()) {
    return FinishUnary(context, Reject(method, std::move(parsed)));
  }
  Response typed_response;
  grpc::Status status = handler(*principal, typed_request, &typed_response);
  if (status.ok()) status = SerializeMessage(typed_response, response);
  return FinishUnary(context, std::move(status));
}

LycheeService::~LycheeService() { readers_.Wait(); }

grpc::ServerWriteReactor<grpc::ByteBuffer>* LycheeService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes) {
  const std::optional<std::string> principal = Authenticate(*context);
  if (!principal.has_value()) {
    return new ErrorWriteReactor(Reject(
        "Generate", grpc::Status(grpc::StatusCode::UNAUTHENTICATED, kUnauthenticatedMessage)));
  }
  if (draining()) {
    return new ErrorWriteReactor(
        Reject("Generate", grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down")));
  }
  v1::GenerateRequest request;
  if (grpc::Status parsed = ParseMessage(*request_bytes, &request); !parsed.ok()) {
    return new ErrorWriteReactor(Reject("Generate", std::move(parsed)));
  }
  const ModelInfo& info = engine_.model_info();
  absl::StatusOr<GenerationRequest> converted =
      ToGenerationRequest(request, engine_.tokenizer(), info.vocab_size, info.max_model_len,
                          options_.default_policy, options_.max_prompt_bytes);
  if (!converted.ok()) {
    return new ErrorWriteReactor(Reject("Generate", ToGrpcStatus(converted.status())));
  }
  converted->deadline = DeadlineOf(*context);
  converted->priority = std::max(converted->priority, options_.min_priority);
  // Server-assigned ids are random, so no one can abort another's request by guessing.
  if (converted->request_id.empty()) converted->request_id = security::RandomRequestId("req-");
  const std::string request_id = converted->request_id;
  absl::StatusOr<TokenStreamPtr> stream = engine_.Submit(*std::move(converted));
  if (!stream.ok()) return new ErrorWriteReactor(Reject("Generate", ToGrpcStatus(stream.status())));
  return GenerateReactor::Start(engine_, *std::move(stream), readers_,
                                owners_->Register(request_id, *principal));
}

grpc::ServerUnaryReactor* LycheeService::Abort(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response) {
  return Unary<v1::AbortRequest, v1::AbortResponse>(
      "Abort", context, *request, response,
      [this](const std::string& principal, const v1::AbortRequest& r, v1::AbortResponse* out) {
        return DoAbort(principal, r, out);
      });
}

grpc::ServerUnaryReactor* LycheeService::Tokenize(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  return Unary<v1::TokenizeRequest, v1::TokenizeResponse>(
      "Tokenize", context, *request, response,
      [this](const std::string&, const v1::TokenizeRequest& r, v1::TokenizeResponse* out) {
        return DoTokenize(r, out);
      });
}

grpc::ServerUnaryReactor* LycheeService::Detokenize(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Unary<v1::DetokenizeRequest, v1::DetokenizeResponse>(
      "Detokenize", context, *request, response,
      [this](const std::string&, const v1::DetokenizeRequest& r, v1::DetokenizeResponse* out) {
        return DoDetokenize(r, out);
      });
}

grpc::ServerUnaryReactor* LycheeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return Unary<v1::GetModelInfoRequest, v1::GetModelInfoResponse>(
      "GetModelInfo", context, *request, response,
      [this](const std::string&, const v1::GetModelInfoRequest&, v1::GetModelInfoResponse* out) {
        return DoGetModelInfo(out);
      });
}

grpc::ServerUnaryReactor* LycheeService::GetServerInfo(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return Unary<v1::GetServerInfoRequest, v1::GetServerInfoResponse>(
      "GetServerInfo", context, *request, response,
      [this](const std::string&, const v1::GetServerInfoRequest&, v1::GetServerInfoResponse* out) {
        return DoGetServerInfo(out);
      });
}

grpc::ServerUnaryReactor* LycheeService::GetLoads(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  return Unary<v1::GetLoadsRequest, v1::GetLoadsResponse>(
      "GetLoads", context, *request, response,
      [this](const std::string&, const v1::GetLoadsRequest&, v1::GetLoadsResponse* out) {
        return DoGetLoads(out);
      });
}

grpc::Status LycheeService::DoAbort(const std::string& principal, const v1::AbortRequest& request,
                                    v1::AbortResponse* /*response*/) {
  // Only the caller's own requests; others' ids are ignored as unknown ones are (no answer
  // tells them apart).
  for (const std::string& id : request.request_ids()) {
    if (id.empty() || id.size() > kMaxRequestIdLength) continue;
    if (owners_->IsOwner(id, principal)) engine_.Abort(id);
  }
  return grpc::Status::OK;
}

grpc::Status LycheeService::DoTokenize(const v1::TokenizeRequest& request,
                                       v1::TokenizeResponse* response) {
  if (options_.max_prompt_bytes > 0 &&
      static_cast<int64_t>(request.text().size()) > options_.max_prompt_bytes) {
    return Reject("Tokenize",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               fmt::format("text is {} bytes, more than this server's "
                                           "max_prompt_bytes={}",
                                           request.text().size(), options_.max_prompt_bytes)));
  }
  const Tokenizer& tokenizer = engine_.tokenizer();
  const bool add_special = request.has_add_special_tokens() ? request.add_special_tokens() : true;
  for (const int32_t id : tokenizer.Encode(request.text(), add_special)) {
    response->add_token_ids(id);
    response->add_tokens(tokenizer.IdToToken(id));
  }
  return grpc::Status::OK;
}

grpc::Status LycheeService::DoDetokenize(const v1::DetokenizeRequest& request,
                                         v1::DetokenizeResponse* response) {
  const Tokenizer& tokenizer = engine_.tokenizer();
  for (int i = 0; i < request.token_ids_size(); ++i) {
    const int32_t id = request.token_ids(i);
    if (id < 0 || id >= tokenizer.vocab_size()) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          fmt::format("token_ids[{}] is {}, must be in [0, {})", i, id, tokenizer.vocab_size()));
    }
  }
  const bool skip = request.has_skip_special_tokens() ? request.skip_special_tokens() : true;
  response->set_text(tokenizer.Decode(
      absl::MakeConstSpan(request.token_ids().data(), request.token_ids_size()), skip));
  return grpc::Status::OK;
}

grpc::Status LycheeService::DoGetModelInfo(v1::GetModelInfoResponse* response) {
  const ModelInfo& info = engine_.model_info();
  response->set_model_id(info.model_id);
  // The folder name only: the server's filesystem layout is nobody's business (issue 15).
  response->set_model_path(security::PublicModelName(info.model_path));
  response->set_model_type(info.model_type);
  response->set_vocab_size(info.vocab_size);
  response->set_max_context_length(info.max_model_len);
  response->set_bos_token_id(info.bos_token_id);
  response->mutable_eos_token_ids()->Add(info.eos_token_ids.begin(), info.eos_token_ids.end());
  response->set_device(info.device);
  return grpc::Status::OK;
}

grpc::Status LycheeService::DoGetServerInfo(v1::GetServerInfoResponse* response) {
  const EngineStats stats = engine_.Stats();
  response->set_server_version(options_.server_version);
  response->set_active_requests(stats.num_running + stats.num_waiting);
  response->set_is_draining(draining());
  response->set_uptime_seconds(stats.uptime_seconds);
  response->set_prompt_tokens_total(stats.prompt_tokens_total);
  response->set_generation_tokens_total(stats.generation_tokens_total);
  response->set_num_preemptions(stats.num_preemptions);
  response->set_prefix_cache_queries(stats.prefix_cache_queries);
  response->set_prefix_cache_hits(stats.prefix_cache_hits);
  response->set_model_id(engine_.model_info().model_id);
  for (const std::string& policy : options_.policies) response->add_policies(policy);
  ToPolicyMessage(options_.default_policy, response->mutable_default_policy());
  return grpc::Status::OK;
}

grpc::Status LycheeService::DoGetLoads(v1::GetLoadsResponse* response) {
  const EngineStats stats = engine_.Stats();
  response->set_num_running_reqs(stats.num_running);
  response->set_num_waiting_reqs(stats.num_waiting);
  response->set_kv_usage(stats.kv_usage);
  response->set_num_kv_blocks_total(stats.num_kv_blocks_total);
  response->set_num_kv_blocks_used(stats.num_kv_blocks_used);
  response->set_block_size(stats.block_size);
  response->set_num_used_tokens(stats.num_kv_blocks_used * stats.block_size);
  response->set_max_total_num_tokens(stats.num_kv_blocks_total * stats.block_size);
  return grpc::Status::OK;
}

}  // namespace lychee::grpc_server
