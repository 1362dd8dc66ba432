// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/lychee_service.h"

#include <fmt/format.h>

#include <chrono>
#include <string>
#include <utility>

#include "common/logging.h"
#include "model/tokenizer/tokenizer.h"
#include "server/grpc/convert.h"

namespace lychee::grpc_server {
namespace {

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
    : engine_(engine), options_(std::move(options)) {}

LycheeService::~LycheeService() { readers_.Wait(); }

grpc::ServerWriteReactor<v1::GenerateResponse>* LycheeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  if (draining()) {
    return new ErrorWriteReactor(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  }
  const ModelInfo& info = engine_.model_info();
  absl::StatusOr<GenerationRequest> converted = ToGenerationRequest(
      *request, engine_.tokenizer(), info.vocab_size, info.max_model_len, options_.default_policy);
  if (!converted.ok()) return new ErrorWriteReactor(ToGrpcStatus(converted.status()));
  converted->deadline = DeadlineOf(*context);
  absl::StatusOr<TokenStreamPtr> stream = engine_.Submit(*std::move(converted));
  if (!stream.ok()) {
    LY_LOG_DEBUG("grpc: Generate rejected: {}", stream.status().ToString());
    return new ErrorWriteReactor(ToGrpcStatus(stream.status()));
  }
  return GenerateReactor::Start(engine_, *std::move(stream), readers_);
}

grpc::ServerUnaryReactor* LycheeService::Abort(grpc::CallbackServerContext* context,
                                               const v1::AbortRequest* request,
                                               v1::AbortResponse* /*response*/) {
  for (const std::string& id : request->request_ids()) {
    if (id.empty() || id.size() > kMaxRequestIdLength) continue;
    engine_.Abort(id);
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LycheeService::Tokenize(grpc::CallbackServerContext* context,
                                                  const v1::TokenizeRequest* request,
                                                  v1::TokenizeResponse* response) {
  const Tokenizer& tokenizer = engine_.tokenizer();
  const bool add_special = request->has_add_special_tokens() ? request->add_special_tokens() : true;
  for (const int32_t id : tokenizer.Encode(request->text(), add_special)) {
    response->add_token_ids(id);
    response->add_tokens(tokenizer.IdToToken(id));
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LycheeService::Detokenize(grpc::CallbackServerContext* context,
                                                    const v1::DetokenizeRequest* request,
                                                    v1::DetokenizeResponse* response) {
  const Tokenizer& tokenizer = engine_.tokenizer();
  for (int i = 0; i < request->token_ids_size(); ++i) {
    const int32_t id = request->token_ids(i);
    if (id < 0 || id >= tokenizer.vocab_size()) {
      return FinishUnary(context,
                         grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      fmt::format("token_ids[{}] is {}, must be in [0, {})", i, id,
                                                  tokenizer.vocab_size())));
    }
  }
  const bool skip = request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
  response->set_text(tokenizer.Decode(
      absl::MakeConstSpan(request->token_ids().data(), request->token_ids_size()), skip));
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LycheeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const v1::GetModelInfoRequest* /*request*/,
                                                      v1::GetModelInfoResponse* response) {
  const ModelInfo& info = engine_.model_info();
  response->set_model_id(info.model_id);
  response->set_model_path(info.model_path);
  response->set_model_type(info.model_type);
  response->set_vocab_size(info.vocab_size);
  response->set_max_context_length(info.max_model_len);
  response->set_bos_token_id(info.bos_token_id);
  response->mutable_eos_token_ids()->Add(info.eos_token_ids.begin(), info.eos_token_ids.end());
  response->set_device(info.device);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LycheeService::GetServerInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetServerInfoRequest* /*request*/,
                                                       v1::GetServerInfoResponse* response) {
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
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LycheeService::GetLoads(grpc::CallbackServerContext* context,
                                                  const v1::GetLoadsRequest* /*request*/,
                                                  v1::GetLoadsResponse* response) {
  const EngineStats stats = engine_.Stats();
  response->set_num_running_reqs(stats.num_running);
  response->set_num_waiting_reqs(stats.num_waiting);
  response->set_kv_usage(stats.kv_usage);
  response->set_num_kv_blocks_total(stats.num_kv_blocks_total);
  response->set_num_kv_blocks_used(stats.num_kv_blocks_used);
  response->set_block_size(stats.block_size);
  response->set_num_used_tokens(stats.num_kv_blocks_used * stats.block_size);
  response->set_max_total_num_tokens(stats.num_kv_blocks_total * stats.block_size);
  return FinishUnary(context, grpc::Status::OK);
}

}  // namespace lychee::grpc_server
