// SPDX-License-Identifier: Apache-2.0
// Incremental detokenization (the prefix_offset/read_offset scheme of TGI and vLLM).
//
// Decoding a token alone loses context (SentencePiece's leading-space stripping, bytes split
// across tokens), so each step decodes the window ids[prefix_offset_:] and compares it with the
// already emitted window text ids[prefix_offset_:read_offset_]. The new suffix is emitted only
// when the text does not end in U+FFFD, i.e. no character is still waiting for bytes; then the
// window slides forward, so it stays a few tokens long. Text ending in U+FFFD for good (invalid
// bytes) slides it too (TextBeforeLast), so the window never grows with the output.
#include <string>
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

namespace {

// Push's case of a window whose text ends in U+FFFD: a character that the next ids may still
// complete, or bytes that are invalid for good (a model emitting stray byte tokens). Holding
// everything back until a clean end would let the window grow with every such id and make each
// Push decode all of them: quadratic (found by the tokenizer_text fuzzer; Push runs on the
// engine's step thread). So the text up to the id before the last is final, and the window may
// slide there, when the last id's text strictly extends it: its final unit is then closed (a
// U+FFFD followed by more text can no longer become a character, as decoding repairs UTF-8 left
// to right, Utf8Lossy), so later ids cannot change it. A last id that completes a character
// changes that text instead, and one that adds nothing leaves it open: both wait, as before.
// Returns the text to emit ("" for none); `held_text` is the window's text before the last id.
std::string TextBeforeLast(std::string_view prefix_text, std::string_view held_text,
                           std::string_view new_text) {
  if (held_text.size() <= prefix_text.size() || held_text.size() >= new_text.size() ||
      !held_text.starts_with(prefix_text) || !new_text.starts_with(held_text)) {
    return std::string();
  }
  return std::string(held_text.substr(prefix_text.size()));
}

}  // namespace

std::string StreamDecoder::Push(int32_t id) {
  ids_.push_back(id);
  const absl::Span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  if (new_text.size() <= prefix_text.size() ||
      new_text.compare(0, prefix_text.size(), prefix_text) != 0) {
    return std::string();
  }
  if (std::string_view(new_text).ends_with(tokenizer_internal::kReplacementChar)) {
    const size_t last = ids_.size() - 1;
    if (last <= read_offset_) return std::string();
    const std::string held_text =
        tokenizer_.Decode(all.subspan(prefix_offset_, last - prefix_offset_), skip_special_tokens_);
    std::string text = TextBeforeLast(prefix_text, held_text, new_text);
    if (!text.empty()) {
      prefix_offset_ = read_offset_;
      read_offset_ = last;
    }
    return text;
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
