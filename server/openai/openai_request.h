// SPDX-License-Identifier: Apache-2.0
// Request side of the OpenAI-compatible API: the JSON bodies of POST /v1/completions and
// /v1/chat/completions parsed and validated into plain structs that hold a GenerationRequest
// (everything but the prompt tokens, which need the tokenizer and, for chat, the template).
//
// Flow (openai_gateway.cc): ParseCompletionRequest / ParseChatRequest → CheckModel → tokenize
// (chat_prompt.h for chat) → FitToContext (max_tokens against max_model_len) → Engine::Submit.
// Every error is an InvalidArgument (or NotFound for the model) naming the request field, with
// the gRPC service's wording where the field exists there ("temperature is 300, must be in
// [0, 100]"); api_error.h turns it into OpenAI's error JSON.
//
// Accepted (see README.md, "OpenAI-compatible HTTP API"): OpenAI's sampling fields, vLLM's
// extensions (top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos, min_tokens,
// include_stop_str_in_output, skip_special_tokens, chat_template_kwargs, add_generation_prompt,
// policy, priority). Refused with 400 rather than silently ignored: n/best_of other than 1, batch
// prompts, suffix, logit_bias, prompt_logprobs, echo with logprobs, non-text content parts,
// tool_choice "required" or a named function, response_format other than text,
// continue_final_message, a request-supplied chat_template. Unknown fields are ignored, as
// vLLM does. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/request.h"
#include "server/openai/json_fields.h"

namespace lychee::openai {

// Most top logprobs per token a client may ask for (the engine's and vLLM's limit).
inline constexpr int kMaxTopLogprobs = 20;
// Stop strings per request and bytes per stop string at most (both front ends).
inline constexpr size_t kMaxStopStrings = 64;
inline constexpr size_t kMaxStopStringBytes = 1024;
// max_tokens of a completion that gives none (OpenAI's default).
inline constexpr int64_t kDefaultCompletionMaxTokens = 16;

// Sampling defaults from the model's generation_config.json, as vLLM applies them by default
// (--generation-config auto): they replace OpenAI's defaults for fields a request leaves out.
// max_new_tokens only caps a max_tokens the request did not give. do_sample is ignored (as vLLM).
struct SamplingDefaults {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> max_new_tokens;
};

// Reads <model_dir>/generation_config.json; no file: no defaults. Values of the wrong type are
// InvalidArgument naming the key.
absl::StatusOr<SamplingDefaults> LoadSamplingDefaults(const std::string& model_dir);

// What validation needs to know about the served model.
struct ModelLimits {
  std::string served_name;    // the only accepted "model"
  int64_t vocab_size = 0;     // bounds token ids
  int64_t max_model_len = 0;  // prompt + generated tokens
  SamplingDefaults defaults = {};
  PolicySpec default_policy = {};  // the server's default_policy: unset `policy` fields
};

// Fields both endpoints share.
struct CommonParams {
  std::string model;                            // as sent ("" when absent: the served model)
  GenerationRequest generation;                 // prompt and max_tokens are filled later
  std::optional<int64_t> max_tokens;            // as sent (chat: max_completion_tokens wins)
  std::string max_tokens_param = "max_tokens";  // the field max_tokens came from (for errors)
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
  bool continuous_usage_stats = false;  // stream_options.continuous_usage_stats (vLLM)
};

struct CompletionParams {
  CommonParams common;
  // A text prompt, or token ids (already checked against vocab_size).
  std::variant<std::string, std::vector<int32_t>> prompt;
  bool echo = false;
  std::optional<int> logprobs;  // top logprobs per token; nullopt: no logprobs
};

struct ChatParams {
  CommonParams common;
  Json messages;  // normalized for the template: content is a string (or null)
  Json template_variables = Json::object();  // tools, documents, chat_template_kwargs
  bool add_generation_prompt = true;
  bool logprobs = false;
  int top_logprobs = 0;
};

absl::StatusOr<CompletionParams> ParseCompletionRequest(std::string_view body,
                                                        const ModelLimits& limits);
absl::StatusOr<ChatParams> ParseChatRequest(std::string_view body, const ModelLimits& limits);

// The body must be declared JSON: `Content-Type: application/json`, any case, parameters
// (charset) allowed. Anything else, or none, is InvalidArgument (the gateway answers 415). Why:
// a web page may send a cross-origin POST without asking first (a CORS "simple request") only as
// text/plain, form data, or with no type; any other type needs a preflight, which this server
// never grants. So another site cannot make a visitor's browser run generations here, even
// without API keys.
absl::Status CheckJsonContentType(std::string_view content_type);

// NotFound (404, code "model_not_found", param "model") unless `model` is empty or the served
// name.
absl::Status CheckModel(std::string_view model, const ModelLimits& limits);

// Settles generation.max_tokens once the prompt length is known, vLLM's way: a prompt that
// leaves no room is an error about `prompt_param`; an explicit max_tokens that does not fit is an
// error about max_tokens; an absent one becomes the room left (completions: at most 16), capped
// by generation_config.json's max_new_tokens.
// Also checks min_tokens <= max_tokens.
absl::Status FitToContext(int64_t prompt_len, std::string_view prompt_param, bool chat,
                          const ModelLimits& limits, CommonParams& params);

// Request ids from X-Request-Id: printable ASCII without spaces, at most this long.
inline constexpr size_t kMaxRequestIdLength = 200;
bool IsValidRequestId(std::string_view id);

}  // namespace lychee::openai
