// SPDX-License-Identifier: Apache-2.0
// ChatTemplate: loading templates from model directories and rendering conversations.
#include "model/chat_template/chat_template.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "model/chat_template/builtin_templates.h"
#include "model/chat_template/parser.h"

namespace lychee {
namespace {

// Special tokens appear either as plain strings or as AddedToken objects {"content": ...}.
std::optional<std::string> TokenString(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return std::nullopt;
}

// "chat_template" may be a string or a list of {name, template}; HF uses the one named "default".
absl::StatusOr<std::optional<std::string>> TemplateFromConfig(const nlohmann::json& config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.contains("name") && entry["name"].is_string() &&
          entry["name"].get<std::string>() == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return std::optional<std::string>(entry["template"].get<std::string>());
      }
    }
    return absl::NotFoundError("tokenizer_config.json has named chat templates but no 'default'");
  }
  return absl::InvalidArgumentError(
      "tokenizer_config.json: chat_template must be a string or list");
}

// Nesting depth of a JSON value, computed without recursion: request bodies are untrusted.
int JsonDepth(const nlohmann::ordered_json& root) {
  int deepest = 0;
  std::vector<std::pair<const nlohmann::ordered_json*, int>> stack = {{&root, 0}};
  while (!stack.empty()) {
    auto [j, d] = stack.back();
    stack.pop_back();
    if (!j->is_array() && !j->is_object()) continue;
    deepest = std::max(deepest, d + 1);
    for (const auto& child : *j) stack.emplace_back(&child, d + 1);
  }
  return deepest;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string source) {
  absl::StatusOr<jinja::Program> program = jinja::ParseTemplate(source);
  if (!program.ok()) return program.status();
  ChatTemplate t;
  t.source_ = std::move(source);
  t.program_ = std::make_shared<const jinja::Program>(std::move(*program));
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDirectory(const std::string& dir) {
  nlohmann::json config = nlohmann::json::object();
  const std::string config_path = JoinPath(dir, "tokenizer_config.json");
  if (FileExists(config_path)) {
    absl::StatusOr<std::string> text = ReadFile(config_path);
    if (!text.ok()) return text.status();
    config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
    }
  }
  absl::StatusOr<std::optional<std::string>> source = TemplateFromConfig(config);
  if (!source.ok()) return source.status();
  if (!source->has_value()) {
    // Newer checkpoints ship the template as a separate file.
    const std::string jinja_path = JoinPath(dir, "chat_template.jinja");
    if (!FileExists(jinja_path)) {
      return absl::NotFoundError(absl::StrCat("model in ", dir, " has no chat template"));
    }
    absl::StatusOr<std::string> text = ReadFile(jinja_path);
    if (!text.ok()) return text.status();
    *source = std::move(*text);
  }
  absl::StatusOr<ChatTemplate> t = Parse(std::move(**source));
  if (!t.ok()) return t.status();
  for (const char* key : {"bos_token", "eos_token"}) {
    if (std::optional<std::string> token = TokenString(config, key)) {
      t->defaults_[key] = *token;
    }
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::BuiltIn(std::string_view name) {
  const char* source = jinja::BuiltInTemplateSource(name);
  if (source == nullptr) {
    return absl::NotFoundError(absl::StrCat("no built-in chat template named '", std::string(name),
                                            "' (have llama3, chatml, mistral)"));
  }
  absl::StatusOr<ChatTemplate> t = Parse(source);
  if (!t.ok()) return t.status();
  if (name == "llama3") {
    t->defaults_["bos_token"] = "<|begin_of_text|>";
    t->defaults_["eos_token"] = "<|eot_id|>";
  } else if (name == "mistral") {
    t->defaults_["bos_token"] = "<s>";
    t->defaults_["eos_token"] = "</s>";
  } else {
    t->defaults_["eos_token"] = "<|im_end|>";
  }
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::json& extra) const {
  return Render(nlohmann::ordered_json(messages), add_generation_prompt,
                nlohmann::ordered_json(extra));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::ordered_json& extra) const {
  if (program_ == nullptr) return absl::FailedPreconditionError("chat template not parsed");
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  if (!extra.is_object()) return absl::InvalidArgumentError("extra variables must be an object");
  if (JsonDepth(messages) > limits_.max_value_depth || JsonDepth(extra) > limits_.max_value_depth) {
    return absl::InvalidArgumentError(absl::StrCat("chat template input nested deeper than ",
                                                   limits_.max_value_depth, " levels"));
  }
  jinja::Value vars = jinja::Value::NewDict();
  jinja::ValueDict& d = vars.dict();
  // The variables transformers' apply_chat_template always passes.
  d.Set("tools", jinja::Value::None());
  d.Set("documents", jinja::Value::None());
  for (auto it = defaults_.begin(); it != defaults_.end(); ++it) {
    d.Set(it.key(), jinja::Value::FromJson(it.value()));
  }
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    d.Set(it.key(), jinja::Value::FromJson(it.value()));
  }
  d.Set("messages", jinja::Value::FromJson(messages));
  d.Set("add_generation_prompt", jinja::Value(add_generation_prompt));
  return jinja::RenderProgram(*program_, vars, limits_);
}

}  // namespace lychee
