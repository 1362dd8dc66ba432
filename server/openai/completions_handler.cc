// SPDX-License-Identifier: Apache-2.0
// POST /v1/completions, on the request's worker thread (see openai_gateway.h): parse and
// validate, tokenize the prompt (BOS as the tokenizer adds it to plain text, as vLLM does), fit
// max_tokens to the context, then stream or answer.
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "server/openai/api_error.h"
#include "server/openai/openai_gateway.h"
#include "server/openai/openai_response.h"

namespace lychee::openai {

void OpenAiGateway::RunCompletion(const Call& call, http::ResponseWriterPtr writer) {
  absl::StatusOr<std::string> request_id = NewRequestId("cmpl-", call.request_id_header);
  if (!request_id.ok()) return writer->Send(ErrorResponse(request_id.status()));
  absl::StatusOr<CompletionParams> params = ParseCompletionRequest(call.body, limits_);
  if (!params.ok()) return writer->Send(ErrorResponse(params.status()));
  if (absl::Status st = CheckModel(params->common.model, limits_); !st.ok()) {
    return writer->Send(ErrorResponse(st));
  }
  const Tokenizer& tokenizer = engine_.tokenizer();
  std::vector<int32_t> prompt;
  std::string prompt_text;
  if (const auto* text = std::get_if<std::string>(&params->prompt)) {
    // Refused by size before the (linear but slow) tokenizer sees it.
    if (absl::Status st = CheckPromptBytes("prompt", text->size()); !st.ok()) {
      return writer->Send(ErrorResponse(st));
    }
    prompt = tokenizer.Encode(*text, /*add_special_tokens=*/true);
    if (prompt.empty()) {
      return writer->Send(ErrorResponse(InvalidParam("prompt", "prompt encodes to no tokens")));
    }
    prompt_text = *text;
  } else {
    prompt = std::get<std::vector<int32_t>>(std::move(params->prompt));
    if (params->echo) prompt_text = tokenizer.Decode(prompt, /*skip_special_tokens=*/false);
  }
  CommonParams& common = params->common;
  if (absl::Status st = FitToContext(static_cast<int64_t>(prompt.size()), "prompt",
                                     /*chat=*/false, limits_, common);
      !st.ok()) {
    return writer->Send(ErrorResponse(st));
  }

  GenerationRequest request = std::move(common.generation);
  request.request_id = *std::move(request_id);
  // logprobs=0 still reports the chosen token's logprob: the engine needs k >= 1 for that.
  request.top_logprobs = params->logprobs.has_value() ? std::max(*params->logprobs, 1) : 0;
  const std::optional<int32_t> context_token = prompt.back();
  request.prompt = std::move(prompt);

  CompletionsResponseBuilder builder(
      ResponseMeta{.id = request.request_id, .created = NowSeconds(), .model = limits_.served_name},
      tokenizer, params->logprobs, context_token, params->echo ? std::move(prompt_text) : "",
      common.include_usage, common.continuous_usage_stats);
  Serve(std::move(request), call, builder, common.stream, *writer);
}

}  // namespace lychee::openai
