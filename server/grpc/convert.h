// SPDX-License-Identifier: Apache-2.0
// Translation between the lychee.v1 wire messages and the engine's plain types, and between
// absl and gRPC status codes. Pure functions (no I/O, no engine state): the gRPC service calls
// them on its callback threads, and unit tests call them directly.
#pragma once

#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/http_status.h"
#include "engine/engine_client.h"
#include "engine/request.h"
#include "lychee/v1/generate.pb.h"

namespace lychee::grpc_server {

// Validates `request` (INVALID_ARGUMENT naming the offending field, e.g.
// "sampling_params.temperature"), tokenizes text input with `tokenizer`, and fills a
// GenerationRequest. `vocab_size` and `max_model_len` bound token ids and the prompt length;
// the request's unset policy fields take `policy_defaults` (the server's default_policy). Text
// longer than `max_prompt_bytes` (> 0) is refused before tokenizing.
absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Tokenizer& tokenizer,
                                                      int64_t vocab_size, int64_t max_model_len,
                                                      const PolicySpec& policy_defaults = {},
                                                      int64_t max_prompt_bytes = 0);

// `spec` as a wire message with every field set (GetServerInfo.default_policy).
void ToPolicyMessage(const PolicySpec& spec, v1::SparsityPolicy* message);

// One engine event as wire messages: a chunk when it carries output (tokens, text or
// logprobs), and for the final event a complete message (or an error one for kError), with the
// policy report when the request ran a sparse policy.
void ToChunk(const GenerationOutput& event, v1::GenerateStreamChunk* chunk);
void ToComplete(const GenerationOutput& event, v1::GenerateComplete* complete);
void ToError(const absl::Status& status, v1::GenerateError* error);
// Whether a final event's report is a sparse policy's (dense requests get no policy_report).
bool UsedSparsePolicy(const PolicyReport& report);
void ToPolicyReport(const PolicyReport& report, v1::PolicyReport* message);
bool HasOutput(const GenerationOutput& event);

// absl → gRPC: same canonical code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Request ids come from clients: at most this long, printable ASCII.
inline constexpr size_t kMaxRequestIdLength = 256;
// Most top logprobs per token a client may ask for (as vLLM's default max_logprobs).
inline constexpr int kMaxTopLogprobs = 20;
// Stop strings per request and bytes per stop string at most (as the OpenAI gateway).
inline constexpr int kMaxStopStrings = 64;
inline constexpr size_t kMaxStopStringBytes = 1024;

}  // namespace lychee::grpc_server
