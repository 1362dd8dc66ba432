// SPDX-License-Identifier: Apache-2.0
// Tokenizer backed by a SentencePiece tokenizer.model (Llama 2 style), encoded by SpmProcessor.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/decoders.h"
#include "model/tokenizer/spm_processor.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::tokenizer_internal {

// Matches a Hugging Face "legacy" Llama tokenizer: control tokens and <unk> written in the text
// are split out first, each remaining piece is encoded by SentencePiece (which prepends its
// dummy-prefix space to each piece), and decoding mirrors the Llama 2 tokenizer.json decoder.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path);
  // A serialized tokenizer.model already in memory; `path` only names it in error messages.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromSerialized(
      std::string_view bytes, const std::string& path);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return processor_->size(); }
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::string IdToToken(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;

 private:
  SentencePieceTokenizer() = default;

  std::unique_ptr<SpmProcessor> processor_;
  AddedTokens specials_;  // Control pieces and <unk>, recognised in the input text.
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace lychee::tokenizer_internal
