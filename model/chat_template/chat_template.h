// SPDX-License-Identifier: Apache-2.0
// ChatTemplate: turns an OpenAI-style message list into the prompt text a model was trained on, by
// running the model's Jinja chat template the way Hugging Face's apply_chat_template does
// (trim_blocks, lstrip_blocks, HF's tojson/raise_exception/strftime_now, immutable sandbox).
//
//   LY_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::FromModelDirectory(dir));
//   LY_ASSIGN_OR_RETURN(std::string prompt, t.Render(messages, /*add_generation_prompt=*/true));
//
// Key order of tool schemas and arguments reaches the prompt through tojson; parse requests with
// nlohmann::ordered_json and use that overload to keep the client's order (nlohmann::json sorts).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/chat_template/evaluator.h"
#include "nlohmann/json.hpp"

namespace lychee {

class ChatTemplate {
 public:
  // Parses Jinja source; syntax errors are InvalidArgument with line:column.
  static absl::StatusOr<ChatTemplate> Parse(std::string source);
  // Reads "chat_template" from <dir>/tokenizer_config.json (a string, or a list of {name, template}
  // where "default" wins) or <dir>/chat_template.jinja; NotFound when the model has none. Also
  // picks up bos_token/eos_token from tokenizer_config.json as default variables.
  static absl::StatusOr<ChatTemplate> FromModelDirectory(const std::string& dir);
  // Built-in fallbacks for models without a template: "llama3", "chatml", "mistral".
  static absl::StatusOr<ChatTemplate> BuiltIn(std::string_view name);

  // messages: JSON array of {"role", "content", optional "tool_calls", "reasoning_content", ...};
  // extra: additional variables (tools, enable_thinking, bos_token, ...), overriding the defaults.
  // Like HF, `tools` and `documents` are none unless given. Template errors are InvalidArgument
  // (raise_exception(msg) gives exactly msg); exceeded limits are ResourceExhausted.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages, bool add_generation_prompt,
                                     const nlohmann::json& extra = nlohmann::json::object()) const;
  absl::StatusOr<std::string> Render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  const std::string& source() const { return source_; }
  // Variables every Render passes (bos_token/eos_token from the model directory).
  const nlohmann::ordered_json& default_variables() const { return defaults_; }
  void set_default_variable(const std::string& name, nlohmann::ordered_json value) {
    defaults_[name] = std::move(value);
  }
  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }

 private:
  std::string source_;
  std::shared_ptr<const jinja::Program> program_;
  nlohmann::ordered_json defaults_ = nlohmann::ordered_json::object();
  jinja::RenderLimits limits_;
};

}  // namespace lychee
