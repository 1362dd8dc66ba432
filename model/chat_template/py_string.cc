// SPDX-License-Identifier: Apache-2.0
// Python str methods over UTF-8 strings (see py_string.h).
#include "model/chat_template/py_string.h"

#include <cctype>

#include "model/chat_template/utf8.h"

namespace lychee::jinja {

std::string PyStrip(const std::string& s, const std::optional<std::string>& chars, bool left,
                    bool right) {
  const std::u32string cps = ToCodePoints(s);
  const std::u32string set = chars ? ToCodePoints(*chars) : std::u32string();
  auto strip_it = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : IsPyWhitespace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return FromCodePoints(std::u32string_view(cps).substr(b, e - b));
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

std::string PyUpper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string PyLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_letter = false;
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(prev_letter ? std::tolower(u) : std::toupper(u));
      prev_letter = true;
    } else {
      // Non-ASCII bytes belong to letters more often than not; treat them as cased-neutral letters.
      prev_letter = u >= 0x80;
    }
  }
  return out;
}

std::string PyCapitalize(const std::string& s) {
  std::string out = PyLower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
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
