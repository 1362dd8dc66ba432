// SPDX-License-Identifier: Apache-2.0
// Splitting input text on added tokens.
#include "model/tokenizer/added_tokens.h"

#include <algorithm>

namespace lychee::tokenizer_internal {
namespace {

bool IsSpaceByte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool IsWordByte(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (static_cast<uint8_t>(c) & 0x80) != 0;
}

}  // namespace

void AddedTokens::Add(AddedToken token) {
  if (token.content.empty()) return;
  const size_t index = tokens_.size();
  by_id_[token.id] = index;
  by_content_[token.content] = index;
  std::vector<size_t>& bucket = by_first_byte_[static_cast<uint8_t>(token.content[0])];
  bucket.push_back(index);
  tokens_.push_back(std::move(token));
  std::stable_sort(bucket.begin(), bucket.end(), [this](size_t a, size_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

const AddedToken* AddedTokens::Find(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedTokens::Find(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

std::vector<Segment> AddedTokens::Split(std::string_view text) const {
  std::vector<Segment> segments;
  size_t plain_begin = 0;  // Start of the pending plain-text segment.
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = tokens_[index];
      if (text.compare(pos, token.content.size(), token.content) != 0) continue;
      if (token.single_word) {
        const size_t end = pos + token.content.size();
        if ((pos > 0 && IsWordByte(text[pos - 1])) ||
            (end < text.size() && IsWordByte(text[end]))) {
          continue;
        }
      }
      match = &token;
      break;
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = pos + match->content.size();
    if (match->lstrip) {
      while (begin > plain_begin && IsSpaceByte(text[begin - 1])) --begin;
    }
    if (match->rstrip) {
      while (end < text.size() && IsSpaceByte(text[end])) ++end;
    }
    if (begin > plain_begin)
      segments.push_back({text.substr(plain_begin, begin - plain_begin), {}});
    segments.push_back({text.substr(begin, end - begin), match->id});
    plain_begin = end;
    pos = end;
  }
  if (plain_begin < text.size()) segments.push_back({text.substr(plain_begin), {}});
  return segments;
}

}  // namespace lychee::tokenizer_internal
