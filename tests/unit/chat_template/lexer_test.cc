// SPDX-License-Identifier: Apache-2.0
// Lexer tests: token stream and HF whitespace rules at the token level.
#include "model/chat_template/lexer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace lychee::jinja {
namespace {

using K = Token::Kind;

std::vector<Token> Lex(const std::string& src) {
  absl::StatusOr<std::vector<Token>> t = Tokenize(src);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::vector<Token>();
}

TEST(LexerTest, TagsAndOperators) {
  const std::vector<Token> t = Lex("a{{ x.y[0] // 2 ~ 'q' }}b");
  ASSERT_EQ(t.size(), 15u);
  EXPECT_EQ(t[0].kind, K::kText);
  EXPECT_EQ(t[0].text, "a");
  EXPECT_EQ(t[1].kind, K::kVarBegin);
  EXPECT_EQ(t[2].kind, K::kName);
  EXPECT_EQ(t[3].text, ".");
  EXPECT_EQ(t[6].kind, K::kInt);
  EXPECT_EQ(t[8].text, "//");
  EXPECT_EQ(t[9].int_value, 2);
  EXPECT_EQ(t[11].kind, K::kString);
  EXPECT_EQ(t[11].text, "q");
  EXPECT_EQ(t[12].kind, K::kVarEnd);
  EXPECT_EQ(t[13].kind, K::kText);
}

TEST(LexerTest, NumbersAndStrings) {
  const std::vector<Token> t = Lex("{{ 1.5 2e3 10 'a\\'b' \"c\\nd\" }}");
  EXPECT_EQ(t[1].kind, K::kFloat);
  EXPECT_DOUBLE_EQ(t[1].float_value, 1.5);
  EXPECT_EQ(t[2].kind, K::kFloat);
  EXPECT_DOUBLE_EQ(t[2].float_value, 2000);
  EXPECT_EQ(t[3].kind, K::kInt);
  EXPECT_EQ(t[4].text, "a'b");
  EXPECT_EQ(t[5].text, "c\nd");
}

TEST(LexerTest, NestedBracesInsideExpression) {
  // `}}` inside a dict literal closes braces, not the tag.
  const std::vector<Token> t = Lex("{{ {'a': {'b': 1}} }}");
  EXPECT_EQ(t[t.size() - 2].kind, K::kVarEnd);
}

TEST(LexerTest, PositionsAreOneBased) {
  const std::vector<Token> t = Lex("ab\n  {{ x }}");
  EXPECT_EQ(t[1].kind, K::kVarBegin);
  EXPECT_EQ(t[1].line, 2);
  EXPECT_EQ(t[1].column, 3);
  EXPECT_EQ(t[2].column, 6);
}

TEST(LexerTest, BlockWhitespaceRules) {
  // lstrip_blocks removes the indentation before {% and trim_blocks the newline after %}.
  std::vector<Token> t = Lex("x\n    {% if a %}\ny");
  EXPECT_EQ(t[0].text, "x\n");
  EXPECT_EQ(t.back().kind, K::kEnd);
  EXPECT_EQ(t[t.size() - 2].text, "y");
  // Not for {{ }}.
  t = Lex("x\n    {{ a }}\ny");
  EXPECT_EQ(t[0].text, "x\n    ");
  EXPECT_EQ(t[t.size() - 2].text, "\ny");
  // Text before the tag on the same line keeps its spaces.
  t = Lex("x  {% if a %}");
  EXPECT_EQ(t[0].text, "x  ");
  // `-` strips all whitespace, newlines included.
  t = Lex("x \n\n {%- if a -%} \n\n y");
  EXPECT_EQ(t[0].text, "x");
  EXPECT_EQ(t[t.size() - 2].text, "y");
}

TEST(LexerTest, Errors) {
  EXPECT_EQ(Tokenize("{{ a").status().message(),
            "chat template syntax error at 1:1: unterminated '{{' tag");
  EXPECT_EQ(Tokenize("\n{{ a $ }}").status().message(),
            "chat template syntax error at 2:6: unexpected character '$'");
}

}  // namespace
}  // namespace lychee::jinja
