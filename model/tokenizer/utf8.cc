// SPDX-License-Identifier: Apache-2.0
// UTF-8 validation, splitting and lossy repair.
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

// Number of bytes of a sequence announced by lead byte `b`, or 0 when `b` cannot start one.
size_t SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Valid range of the second byte after lead byte `b` (Unicode Table 3-7), which excludes
// overlong forms, surrogates and code points above U+10FFFF.
bool SecondByteOk(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

// Length of the valid prefix of the sequence at `pos` (how many bytes belong to it so far).
size_t ValidPrefix(std::string_view s, size_t pos, size_t* expected) {
  const uint8_t lead = static_cast<uint8_t>(s[pos]);
  *expected = SequenceLength(lead);
  if (*expected == 0) return 0;
  size_t n = 1;
  while (n < *expected && pos + n < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[pos + n]);
    const bool ok = n == 1 ? SecondByteOk(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++n;
  }
  return n;
}

}  // namespace

size_t ValidUtf8Length(std::string_view s, size_t pos) {
  size_t expected = 0;
  const size_t n = ValidPrefix(s, pos, &expected);
  return n == expected ? n : 0;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = ValidUtf8Length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::vector<std::string_view> SplitUtf8Chars(std::string_view s) {
  std::vector<std::string_view> chars;
  chars.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t n = ValidUtf8Length(s, pos);
    if (n == 0) n = 1;
    chars.push_back(s.substr(pos, n));
    pos += n;
  }
  return chars;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t expected = 0;
    const size_t n = ValidPrefix(bytes, pos, &expected);
    if (expected != 0 && n == expected) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      // A maximal subpart (the valid-so-far prefix, at least one byte) becomes one U+FFFD.
      out.append(kReplacementChar);
      pos += n == 0 ? 1 : n;
    }
  }
  return out;
}

bool EndsWithIncompleteUtf8(std::string_view s) {
  // A character is at most 4 bytes, so only the last 3 bytes can start an unfinished one.
  const size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t pos = start; pos < s.size(); ++pos) {
    size_t expected = 0;
    const size_t n = ValidPrefix(s, pos, &expected);
    if (expected > 1 && n == s.size() - pos && n < expected) return true;
  }
  return false;
}

}  // namespace lychee::tokenizer_internal
