// SPDX-License-Identifier: Apache-2.0
// Thin PCRE2 wrapper for the Split pre-tokenizer and Replace normalizer patterns.
//
// Hugging Face tokenizers uses Oniguruma; the Llama 3 / Qwen / GPT-2 patterns only need Unicode
// properties (\p{L}, \p{N}), \s and look-ahead, which PCRE2 with PCRE2_UTF|PCRE2_UCP handles
// the same way.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

class Regex {
 public:
  // Compiles `pattern` (UTF-8); InvalidArgument with PCRE2's message and offset on error.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches as [begin, end) byte offsets, left to right. `text` must be valid
  // UTF-8. Thread-safe (match data is per call).
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*, kept opaque so that pcre2.h stays out of this header.
};

}  // namespace lychee::tokenizer_internal
