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

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                             absl::Span<const int32_t> context)
    : StreamDecoder(tokenizer, skip_special_tokens) {
  const absl::Span<const int32_t> tail =
      context.subspan(context.size() > kContextIds ? context.size() - kContextIds : 0);
  // A context that ends inside a character would make its text change under the first new
  // ids; it could then never be a stable prefix, so such a context is not used.
  const std::string text = tokenizer_.Decode(tail, skip_special_tokens_);
  if (std::string_view(text).ends_with(tokenizer_internal::kReplacementChar)) return;
  ids_.assign(tail.begin(), tail.end());
  read_offset_ = ids_.size();
}

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
  // Normally prefix_text is a prefix of new_text; should a decoder ever rewrite earlier text,
  // return everything after the common prefix rather than drop it.
  size_t common = 0;
  while (common < prefix_text.size() && common < new_text.size() &&
         prefix_text[common] == new_text[common]) {
    ++common;
  }
  while (common > 0 && (static_cast<uint8_t>(new_text[common]) & 0xC0) == 0x80) --common;
  return new_text.substr(common);
}

}  // namespace lychee
