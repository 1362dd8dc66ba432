// SPDX-License-Identifier: Apache-2.0
// Jinja lexer (see lexer.h). Whitespace rules follow jinja2's lexer:
//  * `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` all after it.
//  * lstrip_blocks: spaces/tabs between a line start and `{%`/`{#` are dropped (not for `{{`,
//    not with `{%+`). "Line start" includes text right after a tag that consumed a newline.
//  * trim_blocks: the first newline after `%}`/`#}` is dropped (not after `}}`, not with `+%}`).
#include "model/chat_template/lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/chat_template/utf8.h"

namespace lychee::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    bool line_starting = true;
    size_t pos = 0;
    while (pos < src_.size()) {
      const size_t open = FindOpener(pos);
      std::string text = src_.substr(pos, open - pos);
      if (open == src_.size()) {
        EmitText(std::move(text), pos);
        break;
      }
      const char kind = src_[open + 1];
      char modifier = 0;
      if (open + 2 < src_.size() && (src_[open + 2] == '-' || src_[open + 2] == '+')) {
        modifier = src_[open + 2];
      }
      StripBeforeTag(&text, modifier, kind != '{', line_starting);
      EmitText(std::move(text), pos);
      size_t after = 0;
      const size_t inner = open + 2 + (modifier ? 1 : 0);
      if (kind == '%' && IsRaw(inner)) {
        absl::StatusOr<size_t> end = LexRaw(open, inner);
        if (!end.ok()) return end.status();
        after = *end;
      } else if (kind == '#') {
        const size_t close = src_.find("#}", inner);
        if (close == std::string::npos) return Error(open, "unterminated comment");
        const char end_mod = close > inner ? src_[close - 1] : 0;
        after = FinishTag(close + 2, end_mod, /*is_block=*/true);
      } else {
        absl::StatusOr<size_t> end = LexTag(open, inner, kind == '%');
        if (!end.ok()) return end.status();
        after = *end;
      }
      line_starting = after > 0 && src_[after - 1] == '\n';
      pos = after;
    }
    tokens_.push_back(MakeToken(Token::Kind::kEnd, "", src_.size()));
    return std::move(tokens_);
  }

 private:
  // Whitespace control on the text before a tag opened with `modifier` ('-', '+' or 0).
  static void StripBeforeTag(std::string* text, char modifier, bool lstrip, bool line_starting) {
    if (modifier == '-') {
      size_t e = text->size();
      while (e > 0 && IsSpace((*text)[e - 1])) --e;
      text->resize(e);
    } else if (modifier != '+' && lstrip) {
      const size_t nl = text->rfind('\n');
      const size_t line_begin = nl == std::string::npos ? 0 : nl + 1;
      if (line_begin > 0 || line_starting) {
        bool blank = line_begin < text->size();
        for (size_t i = line_begin; i < text->size() && blank; ++i) blank = IsSpace((*text)[i]);
        if (blank) text->resize(line_begin);
      }
    }
  }

  // Matches `\s*<word>\s*[-+]?%}` at i; returns the position of the closing `%` (after any
  // modifier) or npos.
  size_t MatchWordTag(size_t i, const char* word, char* modifier) const {
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    const size_t n = std::strlen(word);
    if (src_.compare(i, n, word) != 0) return std::string::npos;
    i += n;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    *modifier = 0;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) *modifier = src_[i++];
    if (src_.compare(i, 2, "%}") != 0) return std::string::npos;
    return i;
  }

  bool IsRaw(size_t inner) const {
    char mod;
    return MatchWordTag(inner, "raw", &mod) != std::string::npos;
  }

  // {% raw %}...{% endraw %}: the body is text, verbatim apart from whitespace control.
  absl::StatusOr<size_t> LexRaw(size_t open, size_t inner) {
    char begin_mod = 0;
    size_t body = MatchWordTag(inner, "raw", &begin_mod) + 2;
    if (begin_mod == '-') {
      while (body < src_.size() && IsSpace(src_[body])) ++body;
    }
    for (size_t p = src_.find("{%", body); p != std::string::npos; p = src_.find("{%", p + 2)) {
      char open_mod = 0;
      size_t q = p + 2;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) open_mod = src_[q++];
      char end_mod = 0;
      const size_t close = MatchWordTag(q, "endraw", &end_mod);
      if (close == std::string::npos) continue;
      std::string text = src_.substr(body, p - body);
      StripBeforeTag(&text, open_mod, true, body > 0 && src_[body - 1] == '\n');
      EmitText(std::move(text), body);
      return FinishTag(close + 2, end_mod, /*is_block=*/true);
    }
    return Error(open, "missing '{% endraw %}'");
  }

  size_t FindOpener(size_t pos) const {
    while (true) {
      const size_t p = src_.find('{', pos);
      if (p == std::string::npos || p + 1 >= src_.size()) return src_.size();
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  // Position just past a tag's closer at `after`, applying `-` / `+` / trim_blocks.
  size_t FinishTag(size_t after, char end_modifier, bool is_block) const {
    if (end_modifier == '-') {
      while (after < src_.size() && IsSpace(src_[after])) ++after;
    } else if (is_block && end_modifier != '+' && after < src_.size() && src_[after] == '\n') {
      ++after;
    }
    return after;
  }

  void EmitText(std::string text, size_t pos) {
    if (text.empty()) return;
    Token t = MakeToken(Token::Kind::kText, "", pos);
    t.text = std::move(text);
    tokens_.push_back(std::move(t));
  }

  Token MakeToken(Token::Kind kind, std::string text, size_t pos) const {
    Token t{kind, std::move(text)};
    LineColumn(pos, &t.line, &t.column);
    return t;
  }

  void LineColumn(size_t pos, int* line, int* column) const {
    const size_t l =
        std::upper_bound(line_starts_.begin(), line_starts_.end(), pos) - line_starts_.begin();
    int c = 1;
    for (size_t i = line_starts_[l - 1]; i < pos && i < src_.size(); ++i) {
      c += (static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80;
    }
    *line = static_cast<int>(l);
    *column = c;
  }

  absl::Status Error(size_t pos, const std::string& msg) const {
    int line, column;
    LineColumn(pos, &line, &column);
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error at ", line, ":", column, ": ", msg));
  }

  // Lexes the inside of `{{ ... }}` or `{% ... %}`; returns the position after the closer.
  absl::StatusOr<size_t> LexTag(size_t open, size_t i, bool is_block) {
    tokens_.push_back(
        MakeToken(is_block ? Token::Kind::kBlockBegin : Token::Kind::kVarBegin, "", open));
    int brace_depth = 0;
    while (true) {
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (i >= src_.size()) {
        return Error(open, is_block ? "unterminated '{%' tag" : "unterminated '{{' tag");
      }
      const char closer = is_block ? '%' : '}';
      if (brace_depth == 0 || is_block) {
        char mod = 0;
        size_t c = i;
        if ((src_[c] == '-' || src_[c] == '+') && c + 2 < src_.size() && src_[c + 1] == closer &&
            src_[c + 2] == '}') {
          mod = src_[c];
          ++c;
        }
        if (c + 1 < src_.size() && src_[c] == closer && src_[c + 1] == '}' &&
            (mod != '+' || is_block)) {
          tokens_.push_back(
              MakeToken(is_block ? Token::Kind::kBlockEnd : Token::Kind::kVarEnd, "", i));
          return FinishTag(c + 2, mod, is_block);
        }
      }
      absl::StatusOr<size_t> next = LexOne(i, &brace_depth);
      if (!next.ok()) return next.status();
      i = *next;
    }
  }

  absl::StatusOr<size_t> LexOne(size_t i, int* brace_depth) {
    const char c = src_[i];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) {
        ++j;
      }
      tokens_.push_back(MakeToken(Token::Kind::kName, src_.substr(i, j - i), i));
      return j;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return LexNumber(i);
    if (c == '\'' || c == '"') return LexString(i);
    static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                       "/",  "%",  "~",  "<",  ">",  "=",  ".", ",", ":",
                                       "|",  "(",  ")",  "[",  "]",  "{",  "}"};
    for (const char* op : kOps) {
      const size_t n = std::strlen(op);
      if (src_.compare(i, n, op) == 0) {
        if (op[0] == '{' && n == 1) ++*brace_depth;
        if (op[0] == '}' && n == 1) --*brace_depth;
        tokens_.push_back(MakeToken(Token::Kind::kOperator, op, i));
        return i + n;
      }
    }
    return Error(i, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::StatusOr<size_t> LexNumber(size_t i) {
    size_t j = i;
    std::string digits;
    auto take_digits = [&] {
      while (j < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[j])) ||
                                 (src_[j] == '_' && !digits.empty()))) {
        if (src_[j] != '_') digits.push_back(src_[j]);
        ++j;
      }
    };
    take_digits();
    bool is_float = false;
    if (j + 1 < src_.size() && src_[j] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
      is_float = true;
      digits.push_back('.');
      ++j;
      take_digits();
    }
    if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
      size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        digits.append(src_, j, k - j);
        j = k;
        take_digits();
      }
    }
    Token t = MakeToken(is_float ? Token::Kind::kFloat : Token::Kind::kInt, digits, i);
    if (is_float) {
      t.float_value = std::strtod(digits.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) return Error(i, "integer literal out of range");
    }
    tokens_.push_back(std::move(t));
    return j;
  }

  absl::StatusOr<size_t> LexString(size_t i) {
    const char quote = src_[i];
    std::string value;
    size_t j = i + 1;
    while (j < src_.size() && src_[j] != quote) {
      if (src_[j] != '\\' || j + 1 >= src_.size()) {
        value.push_back(src_[j++]);
        continue;
      }
      const char e = src_[j + 1];
      j += 2;
      switch (e) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case 'a':
          value.push_back('\a');
          break;
        case '0':
          value.push_back('\0');
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case '\n':
          break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          if (j + n > src_.size()) return Error(j - 2, "truncated escape in string literal");
          const std::string hex = src_.substr(j, n);
          char* end = nullptr;
          const unsigned long cp = std::strtoul(hex.c_str(), &end, 16);
          if (end != hex.c_str() + n) return Error(j - 2, "bad escape in string literal");
          AppendUtf8(static_cast<char32_t>(cp), &value);
          j += n;
          break;
        }
        default:  // Python keeps unknown escapes verbatim.
          value.push_back('\\');
          value.push_back(e);
      }
    }
    if (j >= src_.size()) return Error(i, "unterminated string literal");
    Token t = MakeToken(Token::Kind::kString, "", i);
    t.text = std::move(value);
    tokens_.push_back(std::move(t));
    return j + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;  // offsets where each line begins
  std::vector<Token> tokens_;
};

// jinja2 reads the source with str.splitlines(): newlines normalize to "\n", and with
// keep_trailing_newline=False one trailing newline is dropped.
std::string NormalizeNewlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(const std::string& source) {
  return Lexer(NormalizeNewlines(source)).Run();
}

}  // namespace lychee::jinja
