// SPDX-License-Identifier: Apache-2.0
// Small UTF-8 helpers shared by the tokenizer stages (no Unicode tables: see normalizers.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lychee::tokenizer_internal {

// Length of the UTF-8 sequence starting at s[pos] when it is complete and valid, else 0.
size_t ValidUtf8Length(std::string_view s, size_t pos);

// True when all of `s` is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);

// Splits `s` into characters; an invalid byte becomes a one-byte "character" so nothing is lost.
std::vector<std::string_view> SplitUtf8Chars(std::string_view s);

// Appends the UTF-8 encoding of code point `cp`.
void AppendUtf8(uint32_t cp, std::string& out);

// Replaces every maximal invalid subsequence with U+FFFD (as Rust's String::from_utf8_lossy does,
// which is what Hugging Face tokenizers uses), so the result is valid UTF-8. Lossy conversion of
// a concatenation equals the concatenation of lossy conversions whenever the cut lies after a
// complete character, which is what lets StreamDecoder emit exact prefixes.
std::string Utf8Lossy(std::string_view bytes);

// True when `s` ends inside a character that further bytes could still complete.
bool EndsWithIncompleteUtf8(std::string_view s);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace lychee::tokenizer_internal
