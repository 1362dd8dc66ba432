// SPDX-License-Identifier: Apache-2.0
// Python str methods over UTF-8 strings (see py_string.h).
#include "model/chat_template/py_string.h"

#include "model/chat_template/utf8.h"

namespace lychee::jinja {

std::string PyStrip(const std::string& s, const std::optional<std::string>& chars, bool left,
                    bool right) {
  // Only the ends are decoded: message contents can be large and strip() is called often.
  const std::u32string set = chars ? ToCodePoints(*chars) : std::u32string();
  auto strip_it = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : IsPyWhitespace(c);
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t next = b;
      if (!strip_it(DecodeUtf8(s, &next))) break;
      b = next;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t next = start;
      char32_t c = DecodeUtf8(s, &next);
      if (next != e) {  // not a valid sequence ending at e: the last byte stands alone
        start = e - 1;
        c = static_cast<unsigned char>(s[start]);
      }
      if (!strip_it(c)) break;
      e = start;
    }
  }
  return s.substr(b, e - b);
}

std::vector<std::string> PySplit(const std::string& s, const std::optional<std::string>& sep,
                                 int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t next = s.find(*sep, pos);
      if (next == std::string::npos) break;
      out.push_back(s.substr(pos, next - pos));
      pos = next + sep->size();
    }
    out.push_back(s.substr(pos));
    return out;
  }
  const std::u32string cps = ToCodePoints(s);
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && IsPyWhitespace(cps[i])) ++i;
    if (i == cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      // Python keeps the remainder as is, trailing whitespace included.
      out.push_back(FromCodePoints(std::u32string_view(cps).substr(i)));
      return out;
    }
    size_t j = i;
    while (j < cps.size() && !IsPyWhitespace(cps[j])) ++j;
    out.push_back(FromCodePoints(std::u32string_view(cps).substr(i, j - i)));
    i = j;
  }
  return out;
}

namespace {

// Simple case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic: the scripts whose
// text chat templates are likely to case-convert. Other code points are left unchanged.
char32_t ToUpperCp(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 &&
      c != 0x17F) {
    const bool odd_is_lower = (c < 0x139) || (c > 0x148 && c < 0x179);
    if (odd_is_lower ? (c & 1) : !(c & 1)) return c - 1;
    return c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

char32_t ToLowerCp(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 &&
      c != 0x17F) {
    const bool odd_is_lower = (c < 0x139) || (c > 0x148 && c < 0x179);
    if (odd_is_lower ? !(c & 1) : (c & 1)) return c + 1;
    return c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

bool IsCased(char32_t c) { return ToUpperCp(c) != c || ToLowerCp(c) != c; }

template <typename F>
std::string MapCodePoints(const std::string& s, F f) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) AppendUtf8(f(DecodeUtf8(s, &i)), &out);
  return out;
}

}  // namespace

std::string PyUpper(std::string s) { return MapCodePoints(s, ToUpperCp); }

std::string PyLower(std::string s) { return MapCodePoints(s, ToLowerCp); }

std::string PyTitle(const std::string& s) {
  bool prev_cased = false;
  return MapCodePoints(s, [&](char32_t c) {
    const char32_t r = prev_cased ? ToLowerCp(c) : ToUpperCp(c);
    prev_cased = IsCased(c);
    return r;
  });
}

std::string PyCapitalize(const std::string& s) {
  bool first = true;
  return MapCodePoints(s, [&](char32_t c) {
    const char32_t r = first ? ToUpperCp(c) : ToLowerCp(c);
    first = false;
    return r;
  });
}

std::string PyReplace(const std::string& s, const std::string& from, const std::string& to,
                      int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` around every code point.
    const std::u32string cps = ToCodePoints(s);
    int64_t n = 0;
    for (char32_t c : cps) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      AppendUtf8(c, &out);
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t next = s.find(from, pos);
    if (next == std::string::npos) break;
    out.append(s, pos, next - pos);
    out += to;
    pos = next + from.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

size_t PyLength(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace lychee::jinja
