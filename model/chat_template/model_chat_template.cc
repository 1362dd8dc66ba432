// SPDX-License-Identifier: Apache-2.0
#include "model/chat_template/model_chat_template.h"

#include <utility>

namespace lychee {

std::string BuiltInTemplateFor(const Tokenizer& tokenizer) {
  if (tokenizer.TokenToId("<|start_header_id|>")) return "llama3";
  if (tokenizer.TokenToId("[INST]")) return "mistral";
  return "chatml";  // also the neutral choice for vocabularies without chat tokens
}

absl::StatusOr<ModelChatTemplate> LoadModelChatTemplate(const std::string& model_dir,
                                                        const Tokenizer& tokenizer) {
  absl::StatusOr<ChatTemplate> own = ChatTemplate::FromModelDirectory(model_dir);
  if (own.ok()) return ModelChatTemplate{*std::move(own), "the model's chat template"};
  if (own.status().code() != absl::StatusCode::kNotFound) return own.status();

  const std::string name = BuiltInTemplateFor(tokenizer);
  absl::StatusOr<ChatTemplate> built_in = ChatTemplate::BuiltIn(name);
  if (!built_in.ok()) return built_in.status();
  // Built-ins refer to bos_token/eos_token, which a model directory would otherwise supply.
  if (tokenizer.bos_id()) {
    built_in->set_default_variable("bos_token", tokenizer.IdToToken(*tokenizer.bos_id()));
  }
  if (tokenizer.eos_id()) {
    built_in->set_default_variable("eos_token", tokenizer.IdToToken(*tokenizer.eos_id()));
  }
  return ModelChatTemplate{*std::move(built_in), "built-in " + name};
}

}  // namespace lychee
