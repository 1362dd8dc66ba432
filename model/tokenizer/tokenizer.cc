// SPDX-License-Identifier: Apache-2.0
// Tokenizer::FromDirectory: picks the back end and applies tokenizer_config.json and
// generation_config.json special-token settings.
#include "model/tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "common/status.h"
#include "model/tokenizer/hf_tokenizer.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"

namespace lychee {
namespace {

// A special token in tokenizer_config.json is a string or {"content": "..."} (AddedToken).
std::optional<std::string> TokenString(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value.at("content").is_string()) {
    return value.at("content").get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path) {
  LY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{}: not a valid JSON object", path));
  }
  return root;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  if (FileExists(dir)) {
    return absl::InvalidArgumentError(
        fmt::format("{} is a file; the tokenizer is loaded from the folder that holds it", dir));
  }
  if (!DirectoryExists(dir)) {
    return absl::NotFoundError(fmt::format("tokenizer directory {} does not exist", dir));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  const std::string json_path = JoinPath(dir, "tokenizer.json");
  const std::string model_path = JoinPath(dir, "tokenizer.model");
  if (FileExists(json_path)) {
    LY_ASSIGN_OR_RETURN(std::string text, ReadFile(json_path));
    LY_ASSIGN_OR_RETURN(tokenizer, tokenizer_internal::HfTokenizer::FromJsonText(text, json_path));
  } else if (FileExists(model_path)) {
    LY_ASSIGN_OR_RETURN(tokenizer, tokenizer_internal::SentencePieceTokenizer::Load(model_path));
  } else {
    return absl::NotFoundError(
        fmt::format("{} holds neither tokenizer.json nor tokenizer.model", dir));
  }

  SpecialTokenConfig& special = tokenizer->special_;
  const std::string config_path = JoinPath(dir, "tokenizer_config.json");
  if (FileExists(config_path)) {
    LY_ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonObject(config_path));
    auto lookup = [&](const char* field) -> absl::StatusOr<std::optional<int32_t>> {
      if (!config.contains(field) || config.at(field).is_null()) return std::optional<int32_t>();
      std::optional<std::string> token = TokenString(config.at(field));
      if (!token.has_value()) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: field \"{}\" must be a string or an object with \"content\"", config_path, field));
      }
      std::optional<int32_t> id = tokenizer->TokenToId(*token);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: field \"{}\": token \"{}\" is not in the vocabulary", config_path, field, *token));
      }
      return id;
    };
    LY_ASSIGN_OR_RETURN(std::optional<int32_t> bos, lookup("bos_token"));
    LY_ASSIGN_OR_RETURN(std::optional<int32_t> eos, lookup("eos_token"));
    LY_ASSIGN_OR_RETURN(std::optional<int32_t> unk, lookup("unk_token"));
    LY_ASSIGN_OR_RETURN(std::optional<int32_t> pad, lookup("pad_token"));
    if (bos.has_value()) special.bos_id = bos;
    if (eos.has_value()) special.eos_ids = {*eos};
    if (unk.has_value()) special.unk_id = unk;
    if (pad.has_value()) special.pad_id = pad;
    // Explicit flags win over the post-processor, as transformers' update_post_processor does.
    if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean()) {
      special.add_bos = config.at("add_bos_token").get<bool>();
    }
    if (config.contains("add_eos_token") && config.at("add_eos_token").is_boolean()) {
      special.add_eos = config.at("add_eos_token").get<bool>();
    }
  }

  // A model folder's generation_config.json may list further stop ids (Llama 3 Instruct:
  // <|end_of_text|> and <|eot_id|>); generation must stop on all of them.
  const std::string generation_path = JoinPath(dir, "generation_config.json");
  if (FileExists(generation_path)) {
    auto generation = ReadJsonObject(generation_path);
    if (generation.ok() && generation->contains("eos_token_id")) {
      const nlohmann::json& value = generation->at("eos_token_id");
      std::vector<int32_t> extra;
      if (value.is_number_integer()) extra.push_back(value.get<int32_t>());
      if (value.is_array()) {
        for (const auto& v : value) {
          if (v.is_number_integer()) extra.push_back(v.get<int32_t>());
        }
      }
      for (int32_t id : extra) {
        if (id >= 0 && id < tokenizer->vocab_size() &&
            std::find(special.eos_ids.begin(), special.eos_ids.end(), id) ==
                special.eos_ids.end()) {
          special.eos_ids.push_back(id);
        }
      }
    }
  }
  return tokenizer;
}

}  // namespace lychee
