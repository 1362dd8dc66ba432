// SPDX-License-Identifier: Apache-2.0
// ChatPrompt: how /v1/chat/completions turns messages into prompt tokens, exactly as
// `lychee-generate --chat` does so the two agree token for token:
//   - the model's chat template (tokenizer_config.json or chat_template.jinja), else the built-in
//     fallback picked from the vocabulary's special tokens (llama3, mistral, else chatml), with
//     bos_token/eos_token from the tokenizer;
//   - the rendered text is encoded without adding special tokens (the template writes its own),
//     and BOS is put in front only when the tokenizer adds BOS to plain text and the template
//     did not write it.
// Loaded once at startup. Render and Tokenize are const and thread-safe (the parsed template is
// immutable; the tokenizer is thread-safe), so request workers call them concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/chat_template/chat_template.h"
#include "server/openai/json_fields.h"

namespace lychee {
class Tokenizer;
}

namespace lychee::openai {

class ChatPrompt {
 public:
  // Never fails: a template that cannot be loaded (bad Jinja) is reported by every Render, so the
  // other endpoints still serve. `tokenizer` must outlive the ChatPrompt.
  static ChatPrompt Load(const std::string& model_dir, const Tokenizer& tokenizer);
  // A given template (tests).
  ChatPrompt(ChatTemplate chat_template, const Tokenizer& tokenizer, std::string description);

  // Template errors (raise_exception, limits) are InvalidArgument about "messages".
  absl::StatusOr<std::string> Render(const Json& messages, bool add_generation_prompt,
                                     const Json& variables) const;
  std::vector<int32_t> Tokenize(const std::string& text) const;

  // "the model's template" or "built-in chatml", for the startup log.
  const std::string& description() const { return description_; }
  const absl::Status& load_error() const { return load_error_; }

 private:
  ChatPrompt(const Tokenizer& tokenizer, absl::Status load_error);

  const Tokenizer* tokenizer_;
  std::optional<ChatTemplate> template_;
  absl::Status load_error_;
  std::string description_;
};

}  // namespace lychee::openai
