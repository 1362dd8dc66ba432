// SPDX-License-Identifier: Apache-2.0
// POST /v1/chat/completions, on the request's worker thread (see openai_gateway.h): parse and
// validate, render the messages with the chat template (chat_prompt.h), tokenize, fit max_tokens
// (absent: the rest of the context, as vLLM), then stream or answer.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "server/openai/api_error.h"
#include "server/openai/openai_gateway.h"
#include "server/openai/openai_response.h"

namespace lychee::openai {

void OpenAiGateway::RunChat(const Call& call, http::ResponseWriterPtr writer) {
  absl::StatusOr<std::string> request_id = NewRequestId("chatcmpl-", call.request_id_header);
  if (!request_id.ok()) return writer->Send(ErrorResponse(request_id.status()));
  absl::StatusOr<ChatParams> params = ParseChatRequest(call.body, limits_);
  if (!params.ok()) return writer->Send(ErrorResponse(params.status()));
  if (absl::Status st = CheckModel(params->common.model, limits_); !st.ok()) {
    return writer->Send(ErrorResponse(st));
  }
  absl::StatusOr<std::string> text = chat_prompt_.Render(
      params->messages, params->add_generation_prompt, params->template_variables);
  if (!text.ok()) return writer->Send(ErrorResponse(text.status()));
  if (absl::Status st = CheckPromptBytes("messages", text->size()); !st.ok()) {
    return writer->Send(ErrorResponse(st));
  }
  std::vector<int32_t> prompt = chat_prompt_.Tokenize(*text);
  if (prompt.empty()) {
    return writer->Send(
        ErrorResponse(InvalidParam("messages", "the rendered conversation encodes to no tokens")));
  }
  CommonParams& common = params->common;
  if (absl::Status st = FitToContext(static_cast<int64_t>(prompt.size()), "messages",
                                     /*chat=*/true, limits_, common);
      !st.ok()) {
    return writer->Send(ErrorResponse(st));
  }

  GenerationRequest request = std::move(common.generation);
  request.request_id = *std::move(request_id);
  std::optional<int> top_logprobs;
  if (params->logprobs) top_logprobs = params->top_logprobs;
  request.top_logprobs = params->logprobs ? std::max(params->top_logprobs, 1) : 0;
  const std::optional<int32_t> context_token = prompt.back();
  request.prompt = std::move(prompt);

  ChatResponseBuilder builder(
      ResponseMeta{.id = request.request_id, .created = NowSeconds(), .model = limits_.served_name},
      engine_.tokenizer(), top_logprobs, context_token, common.include_usage,
      common.continuous_usage_stats);
  Serve(std::move(request), call, builder, common.stream, *writer);
}

}  // namespace lychee::openai
