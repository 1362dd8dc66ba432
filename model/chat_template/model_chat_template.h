// SPDX-License-Identifier: Apache-2.0
// Which chat template serves a model: its own (tokenizer_config.json / chat_template.jinja), or,
// when it ships none, the built-in that fits its special tokens (Llama 3 header tokens →
// "llama3", [INST] → "mistral", otherwise ChatML), with bos_token/eos_token taken from the
// tokenizer. One rule for lychee-generate --chat and the OpenAI chat endpoint.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/chat_template/chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {

struct ModelChatTemplate {
  ChatTemplate chat_template;
  std::string description;  // "the model's chat template" or "built-in <name>"
};

// The built-in template name for a model without a template of its own.
std::string BuiltInTemplateFor(const Tokenizer& tokenizer);

// The model's template; a built-in (see above) when it has none. Errors: the model's template
// exists but does not load (its status, naming the file).
absl::StatusOr<ModelChatTemplate> LoadModelChatTemplate(const std::string& model_dir,
                                                        const Tokenizer& tokenizer);

}  // namespace lychee
