// SPDX-License-Identifier: Apache-2.0
// tokenizer.json loading and the encode/decode pipelines.
#include "model/tokenizer/hf_tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "common/status.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

// Prefixes a stage's error with the tokenizer.json field it came from.
absl::Status InField(const absl::Status& status, const std::string& path, const char* field) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      fmt::format("{}: \"{}\": {}", path, field, std::string(status.message())));
}

// A token id written in the file: an integer in [0, 2^31). Checked before conversion, since
// nlohmann::json's get<int32_t>() of a float that does not fit is undefined behaviour (found by
// the tokenizer_json fuzz target).
absl::StatusOr<int32_t> TokenId(const nlohmann::json& value, std::string_view what) {
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() ? value.get<uint64_t>() > INT32_MAX
                                  : value.get<int64_t>() < 0 || value.get<int64_t>() > INT32_MAX)) {
    return absl::InvalidArgumentError(
        fmt::format("{} is {}, not a token id (an integer in [0, 2^31))", what, value.dump()));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJsonText(const std::string& json_text,
                                                                       const std::string& path) {
  nlohmann::json root = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(fmt::format("{}: malformed JSON", path));
  }
  if (!root.is_object()) return absl::InvalidArgumentError(path + ": not a JSON object");
  if (!root.contains("model")) {
    return absl::InvalidArgumentError(fmt::format("{}: missing field \"model\"", path));
  }
  auto tokenizer = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  // Each stage runs under its own guard so that errors, including nlohmann::json's type errors
  // (it reports them by throwing), name the tokenizer.json field they come from.
  auto stage = [&](const char* field, auto&& build) -> absl::Status {
    try {
      return InField(build(), path, field);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(
          fmt::format("{}: \"{}\": malformed: {}", path, field, e.what()));
    }
  };
  const nlohmann::json kNull;
  auto field = [&](const char* name) -> const nlohmann::json& {
    return root.contains(name) ? root.at(name) : kNull;
  };
  LY_RETURN_IF_ERROR(stage("model", [&]() -> absl::Status {
    LY_ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::FromJson(root.at("model")));
    return absl::OkStatus();
  }));
  LY_RETURN_IF_ERROR(stage("normalizer", [&]() -> absl::Status {
    LY_ASSIGN_OR_RETURN(tokenizer->normalizer_, MakeNormalizer(field("normalizer")));
    return absl::OkStatus();
  }));
  LY_RETURN_IF_ERROR(stage("pre_tokenizer", [&]() -> absl::Status {
    LY_ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_, MakePreTokenizer(field("pre_tokenizer")));
    return absl::OkStatus();
  }));
  LY_RETURN_IF_ERROR(stage("decoder", [&]() -> absl::Status {
    LY_ASSIGN_OR_RETURN(tokenizer->decoder_, MakeDecoder(field("decoder")));
    return absl::OkStatus();
  }));
  LY_RETURN_IF_ERROR(stage("added_tokens", [&] { return tokenizer->Load(root); }));
  LY_RETURN_IF_ERROR(stage("post_processor",
                           [&] { return tokenizer->LoadPostProcessor(field("post_processor")); }));
  return tokenizer;
}

absl::Status HfTokenizer::Load(const nlohmann::json& root) {
  vocab_size_ = model_->size();
  special_.unk_id = model_->unk_id();
  for (const auto& entry : root.value("added_tokens", nlohmann::json::array())) {
    AddedToken token;
    LY_ASSIGN_OR_RETURN(token.id, TokenId(entry.at("id"), "added_tokens[].id"));
    token.content = entry.at("content").get<std::string>();
    token.special = entry.value("special", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.single_word = entry.value("single_word", false);
    token.normalized = entry.value("normalized", false);
    if (token.id < 0) {
      return absl::InvalidArgumentError(
          fmt::format("added token \"{}\" has negative id {}", token.content, token.id));
    }
    vocab_size_ = std::max(vocab_size_, token.id + 1);
    added_.Add(std::move(token));
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::LoadPostProcessor(const nlohmann::json& spec) {
  if (spec.is_null()) return absl::OkStatus();
  const std::string type = spec.at("type").get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // Only adjusts offsets.
  if (type == "Sequence") {
    for (const auto& child : spec.at("processors")) LY_RETURN_IF_ERROR(LoadPostProcessor(child));
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return absl::UnimplementedError(fmt::format("unsupported post_processor type \"{}\"", type));
  }
  // "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, ...]. We support
  // special tokens before and after the sequence: BOS and EOS.
  const nlohmann::json& single = spec.at("single");
  const nlohmann::json& specials = spec.value("special_tokens", nlohmann::json::object());
  bool seen_sequence = false;
  for (const auto& item : single) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const std::string name = item.at("SpecialToken").at("id").get<std::string>();
    std::optional<int32_t> id;
    if (specials.contains(name) && !specials.at(name).at("ids").empty()) {
      LY_ASSIGN_OR_RETURN(
          id, TokenId(specials.at(name).at("ids").at(0), "post_processor.special_tokens[].ids[0]"));
    } else {
      id = TokenToId(name);
    }
    if (!id.has_value()) {
      return absl::InvalidArgumentError(
          fmt::format("TemplateProcessing special token \"{}\" is not in the vocabulary", name));
    }
    // Encode would hand this id to the model, which indexes its embedding with it (found by the
    // tokenizer_json fuzz target: an id past the vocabulary was accepted).
    if (*id >= vocab_size_) {
      return absl::InvalidArgumentError(
          fmt::format("TemplateProcessing special token \"{}\" has id {}, outside the vocabulary "
                      "(ids 0 to {})",
                      name, *id, vocab_size_ - 1));
    }
    if (!seen_sequence) {
      special_.bos_id = id;
      special_.add_bos = true;
    } else {
      special_.eos_ids = {*id};
      special_.add_eos = true;
    }
  }
  return absl::OkStatus();
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  // tokenizers only ever sees valid UTF-8 (a Rust String); repair anything else the same way.
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  if (add_special_tokens && special_.add_bos && special_.bos_id.has_value()) {
    ids.push_back(*special_.bos_id);
  }
  std::vector<std::string> pieces;
  for (const Segment& segment : added_.Split(text)) {
    if (segment.id.has_value()) {
      ids.push_back(*segment.id);
      continue;
    }
    pieces.clear();
    pieces.push_back(normalizer_ ? normalizer_->Normalize(segment.text)
                                 : std::string(segment.text));
    const bool first_segment = segment.text.data() == text.data();
    if (pre_tokenizer_) pre_tokenizer_->PreTokenize(pieces, first_segment);
    for (const std::string& piece : pieces) model_->Tokenize(piece, ids);
  }
  if (add_special_tokens && special_.add_eos && !special_.eos_ids.empty()) {
    ids.push_back(special_.eos_ids[0]);
  }
  return ids;
}

std::string HfTokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.Find(id); added != nullptr) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
      continue;
    }
    if (const std::string* token = model_->IdToToken(id); token != nullptr) {
      tokens.push_back(*token);
    }
  }
  std::string text;
  if (decoder_ != nullptr) {
    decoder_->DecodeChain(tokens);
    for (const std::string& token : tokens) text.append(token);
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text.push_back(' ');
      text.append(tokens[i]);
    }
  }
  return Utf8Lossy(text);
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (auto id = added_.Find(token)) return id;
  return model_->TokenToId(token);
}

std::string HfTokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_.Find(id); added != nullptr) return added->content;
  const std::string* token = model_->IdToToken(id);
  return token != nullptr ? *token : std::string();
}

bool HfTokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = added_.Find(id);
  return added != nullptr && added->special;
}

}  // namespace lychee::tokenizer_internal
