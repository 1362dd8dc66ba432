// SPDX-License-Identifier: Apache-2.0
// Python str methods that chat templates call (strip, split, title, ...), with Python's semantics.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace lychee::jinja {

// str.strip/lstrip/rstrip; `chars` unset strips Unicode whitespace.
std::string PyStrip(const std::string& s, const std::optional<std::string>& chars, bool left,
                    bool right);
// str.split(sep, maxsplit); `sep` unset splits on runs of whitespace. `sep` must not be empty.
std::vector<std::string> PySplit(const std::string& s, const std::optional<std::string>& sep,
                                 int64_t maxsplit);
// str.upper/lower with simple case mapping for Latin, Greek and Cyrillic letters.
std::string PyUpper(std::string s);
std::string PyLower(std::string s);
// str.title(): upper-case the first cased character of every run, lower-case the rest.
std::string PyTitle(const std::string& s);
// str.capitalize(): first character upper, rest lower.
std::string PyCapitalize(const std::string& s);
// str.replace(old, new, count); count < 0 replaces all.
std::string PyReplace(const std::string& s, const std::string& from, const std::string& to,
                      int64_t count);
// Number of code points (Python len()).
size_t PyLength(const std::string& s);

}  // namespace lychee::jinja
