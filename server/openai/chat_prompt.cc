// SPDX-License-Identifier: Apache-2.0
// Chat template loading, rendering and prompt tokenization (see chat_prompt.h).
#include "server/openai/chat_prompt.h"

#include <utility>

#include "model/chat_template/model_chat_template.h"
#include "model/tokenizer/tokenizer.h"
#include "server/openai/api_error.h"

namespace lychee::openai {

ChatPrompt::ChatPrompt(const Tokenizer& tokenizer, absl::Status load_error)
    : tokenizer_(&tokenizer), load_error_(std::move(load_error)) {}

ChatPrompt::ChatPrompt(ChatTemplate chat_template, const Tokenizer& tokenizer,
                       std::string description)
    : tokenizer_(&tokenizer),
      template_(std::move(chat_template)),
      description_(std::move(description)) {}

ChatPrompt ChatPrompt::Load(const std::string& model_dir, const Tokenizer& tokenizer) {
  absl::StatusOr<ModelChatTemplate> loaded = LoadModelChatTemplate(model_dir, tokenizer);
  if (!loaded.ok()) {
    ChatPrompt prompt(tokenizer, loaded.status());
    prompt.description_ = "none (the model's chat template does not load)";
    return prompt;
  }
  return ChatPrompt(std::move(loaded->chat_template), tokenizer, std::move(loaded->description));
}

absl::StatusOr<std::string> ChatPrompt::Render(const Json& messages, bool add_generation_prompt,
                                               const Json& variables) const {
  if (!template_.has_value()) {
    return absl::InternalError("the model's chat template cannot be used: " +
                               std::string(load_error_.message()));
  }
  absl::StatusOr<std::string> text = template_->Render(messages, add_generation_prompt, variables);
  if (text.ok()) return text;
  // The template judged the conversation (raise_exception) or it grew past the render limits:
  // either way the request is what has to change.
  const absl::StatusCode code = text.status().code();
  if (code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kResourceExhausted) {
    return InvalidParam("messages", "chat template: " + std::string(text.status().message()));
  }
  return text.status();
}

std::vector<int32_t> ChatPrompt::Tokenize(const std::string& text) const {
  std::vector<int32_t> ids = tokenizer_->Encode(text, /*add_special_tokens=*/false);
  const std::optional<int32_t> bos = tokenizer_->bos_id();
  if (tokenizer_->add_bos() && bos && (ids.empty() || ids[0] != *bos)) {
    ids.insert(ids.begin(), *bos);
  }
  return ids;
}

}  // namespace lychee::openai
