// SPDX-License-Identifier: Apache-2.0
// SentencePiece tokenizer.model support.
#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <fmt/format.h>

#include <utility>

#include "common/file.h"
#include "common/status.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

// The decoder of Llama 2's tokenizer.json: "▁" → " ", <0xXX> → bytes, strip one leading space.
constexpr char kLlamaDecoder[] = R"({"type": "Sequence", "decoders": [
  {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
  {"type": "ByteFallback"}, {"type": "Fuse"},
  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";

// Unsupported model kinds stay Unimplemented; anything else is a bad file.
absl::Status CannotLoad(const std::string& path, const absl::Status& status) {
  const absl::StatusCode code = status.code() == absl::StatusCode::kUnimplemented
                                    ? absl::StatusCode::kUnimplemented
                                    : absl::StatusCode::kInvalidArgument;
  return absl::Status(code, fmt::format("{}: cannot load SentencePiece model: {}", path,
                                        std::string(status.message())));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return CannotLoad(path, bytes.status());
  return FromSerialized(*bytes, path);
}

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromSerialized(
    std::string_view bytes, const std::string& path) {
  auto tokenizer = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  auto processor = SpmProcessor::FromSerialized(bytes);
  if (!processor.ok()) return CannotLoad(path, processor.status());
  tokenizer->processor_ = *std::move(processor);
  const SpmProcessor& sp = *tokenizer->processor_;
  for (int id = 0; id < sp.size(); ++id) {
    if (sp.IsControl(id) || sp.IsUnknown(id)) {
      AddedToken token;
      token.id = id;
      token.content = sp.IdToPiece(id);
      token.special = true;
      tokenizer->specials_.Add(std::move(token));
    }
  }
  LY_ASSIGN_OR_RETURN(tokenizer->decoder_, MakeDecoder(nlohmann::json::parse(kLlamaDecoder)));
  SpecialTokenConfig& special = tokenizer->special_;
  if (sp.bos_id() >= 0) special.bos_id = sp.bos_id();
  if (sp.eos_id() >= 0) special.eos_ids = {sp.eos_id()};
  if (sp.unk_id() >= 0) special.unk_id = sp.unk_id();
  if (sp.pad_id() >= 0) special.pad_id = sp.pad_id();
  special.add_bos = special.bos_id.has_value();  // Llama's default; tokenizer_config may override.
  return tokenizer;
}

std::vector<int32_t> SentencePieceTokenizer::Encode(std::string_view text,
                                                    bool add_special_tokens) const {
  // Repair invalid UTF-8 first, as the tokenizer.json path does (SpmProcessor would turn each
  // bad byte into its own U+FFFD).
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  if (add_special_tokens && special_.add_bos && special_.bos_id.has_value()) {
    ids.push_back(*special_.bos_id);
  }
  for (const Segment& segment : specials_.Split(text)) {
    if (segment.id.has_value()) {
      ids.push_back(*segment.id);
      continue;
    }
    for (int id : processor_->Encode(segment.text)) ids.push_back(id);
  }
  if (add_special_tokens && special_.add_eos && !special_.eos_ids.empty()) {
    ids.push_back(special_.eos_ids[0]);
  }
  return ids;
}

std::string SentencePieceTokenizer::Decode(absl::Span<const int32_t> ids,
                                           bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && IsSpecial(id)) continue;
    tokens.push_back(processor_->IdToPiece(id));
  }
  decoder_->DecodeChain(tokens);
  std::string text;
  for (const std::string& token : tokens) text.append(token);
  return Utf8Lossy(text);
}

std::optional<int32_t> SentencePieceTokenizer::TokenToId(std::string_view token) const {
  const int id = processor_->PieceToId(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  return processor_->IdToPiece(id);
}

bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && (processor_->IsControl(id) || processor_->IsUnknown(id));
}

}  // namespace lychee::tokenizer_internal
