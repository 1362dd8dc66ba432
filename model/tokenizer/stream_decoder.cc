// SPDX-License-Identifier: Apache-2.0
// Incremental detokenization (the prefix_offset/read_offset scheme of TGI and vLLM).
//
// Decoding a token alone loses context (SentencePiece's leading-space stripping, bytes split
// across tokens), so each step decodes the window ids[prefix_offset_:] and compares it with the
// already emitted window text ids[prefix_offset_:read_offset_]. The new suffix is emitted only
// when the text does not end in U+FFFD, i.e. no character is still waiting for bytes; then the
// window slides forward, so it stays a few tokens long.
#include <string_view>

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"

namespace lychee {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamDecoder::Push(int32_t id) {
  ids_.push_back(id);
  const absl::Span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  if (new_text.size() <= prefix_text.size() ||
      std::string_view(new_text).ends_with(tokenizer_internal::kReplacementChar) ||
      new_text.compare(0, prefix_text.size(), prefix_text) != 0) {
    return std::string();
  }
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return new_text.substr(prefix_text.size());
}

std::string StreamDecoder::Flush() {
  const absl::Span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  prefix_offset_ = read_offset_ = ids_.size();
  if (new_text.size() <= prefix_text.size() ||
      new_text.compare(0, prefix_text.size(), prefix_text) != 0) {
    return std::string();
  }
  return new_text.substr(prefix_text.size());
}

}  // namespace lychee
