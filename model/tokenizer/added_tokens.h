// SPDX-License-Identifier: Apache-2.0
// Added tokens ("<|im_start|>", "<s>", "<think>", ...): matched in the raw input before any
// normalization, so that they always become single ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace lychee::tokenizer_internal {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // Swallows whitespace on its left.
  bool rstrip = false;       // Swallows whitespace on its right.
  bool single_word = false;  // Matches only when not inside a word.
  bool normalized = false;   // Informational: we always match on the raw text.
};

// A piece of the input: either plain text for the model (`id` empty) or one added token.
struct Segment {
  std::string_view text;
  std::optional<int32_t> id;
};

class AddedTokens {
 public:
  void Add(AddedToken token);

  // Splits `text` on added tokens, leftmost match first and the longest at a position.
  std::vector<Segment> Split(std::string_view text) const;

  const AddedToken* Find(int32_t id) const;
  std::optional<int32_t> Find(std::string_view content) const;
  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  // Candidate tokens by first byte, longest first, so a scan tests few strings per position.
  std::vector<size_t> by_first_byte_[256];
};

}  // namespace lychee::tokenizer_internal
