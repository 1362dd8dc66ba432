// SPDX-License-Identifier: Apache-2.0
// Tokenizer backed by a Hugging Face tokenizer.json: added tokens, normalizer, pre-tokenizer,
// BPE model, post-processor (TemplateProcessing BOS/EOS) and decoder.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/decoders.h"
#include "model/tokenizer/normalizers.h"
#include "model/tokenizer/pre_tokenizers.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::tokenizer_internal {

class HfTokenizer final : public Tokenizer {
 public:
  // Parses the contents of a tokenizer.json; `path` only names the file in error messages.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJsonText(const std::string& json_text,
                                                                   const std::string& path);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::string IdToToken(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;

 private:
  HfTokenizer() = default;
  absl::Status Load(const nlohmann::json& root);
  absl::Status LoadPostProcessor(const nlohmann::json& spec);

  AddedTokens added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  int32_t vocab_size_ = 0;
};

}  // namespace lychee::tokenizer_internal
