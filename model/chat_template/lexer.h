// SPDX-License-Identifier: Apache-2.0
// Jinja lexer: splits template source into text and tag tokens, applying whitespace control the
// way Hugging Face's environment does (trim_blocks=True, lstrip_blocks=True, `-`/`+` modifiers,
// keep_trailing_newline=False).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::jinja {

struct Token {
  enum class Kind {
    kText,        // literal template text (already whitespace-trimmed)
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,
    kString,  // text holds the unescaped value
    kInt,
    kFloat,
    kOperator,  // text holds the operator or punctuation
    kEnd,
  };
  Kind kind;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

// Syntax errors are InvalidArgument with "line:column".
absl::StatusOr<std::vector<Token>> Tokenize(const std::string& source);

}  // namespace lychee::jinja
