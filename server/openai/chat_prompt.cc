// SPDX-License-Identifier: Apache-2.0
// Chat template loading, rendering and prompt tokenization (see chat_prompt.h).
#include "server/openai/chat_prompt.h"

#include <utility>

#include "model/tokenizer/tokenizer.h"
#include "server/openai/api_error.h"

namespace lychee::openai {

std::string ChatPrompt::BuiltInTemplateFor(const Tokenizer& tokenizer) {
  if (tokenizer.TokenToId("<|start_header_id|>")) return "llama3";
  if (tokenizer.TokenToId("[INST]")) return "mistral";
  return "chatml";  // also the neutral choice for vocabularies without chat tokens
}

ChatPrompt::ChatPrompt(const Tokenizer& tokenizer, absl::Status load_error)
    : tokenizer_(&tokenizer), load_error_(std::move(load_error)) {}

ChatPrompt::ChatPrompt(ChatTemplate chat_template, const Tokenizer& tokenizer,
                       std::string description)
    : tokenizer_(&tokenizer),
      template_(std::move(chat_template)),
      description_(std::move(description)) {}

ChatPrompt ChatPrompt::Load(const std::string& model_dir, const Tokenizer& tokenizer) {
  absl::StatusOr<ChatTemplate> from_model = ChatTemplate::FromModelDirectory(model_dir);
  if (from_model.ok()) {
    return ChatPrompt(*std::move(from_model), tokenizer, "the model's chat template");
  }
  if (from_model.status().code() != absl::StatusCode::kNotFound) {
    ChatPrompt prompt(tokenizer, from_model.status());
    prompt.description_ = "none (the model's chat template does not load)";
    return prompt;
  }
  const std::string name = BuiltInTemplateFor(tokenizer);
  absl::StatusOr<ChatTemplate> built_in = ChatTemplate::BuiltIn(name);
  if (!built_in.ok()) return ChatPrompt(tokenizer, built_in.status());
  // Built-ins refer to bos_token/eos_token, which a model directory would otherwise supply.
  if (tokenizer.bos_id()) {
    built_in->set_default_variable("bos_token", tokenizer.IdToToken(*tokenizer.bos_id()));
  }
  if (tokenizer.eos_id()) {
    built_in->set_default_variable("eos_token", tokenizer.IdToToken(*tokenizer.eos_id()));
  }
  return ChatPrompt(*std::move(built_in), tokenizer, "built-in " + name);
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
