// SPDX-License-Identifier: Apache-2.0
// Interpreter tests: each Jinja construct chat templates use, whitespace control, error messages
// and limits. Expected strings are what jinja2 3.1 renders with HF's environment settings.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/chat_template/chat_template.h"

namespace lychee {
namespace {

using nlohmann::ordered_json;
using ::testing::HasSubstr;

absl::StatusOr<std::string> RenderSource(const std::string& source,
                                         const ordered_json& vars = ordered_json::object(),
                                         const jinja::RenderLimits* limits = nullptr) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) return t.status();
  if (limits != nullptr) t->set_limits(*limits);
  ordered_json messages = vars.contains("messages") ? vars["messages"] : ordered_json::array();
  ordered_json extra = vars;
  extra.erase("messages");
  return t->Render(messages, vars.value("add_generation_prompt", false), extra);
}

// The rendered text, or "ERROR: <message>".
std::string R(const std::string& source, const ordered_json& vars = ordered_json::object()) {
  absl::StatusOr<std::string> r = RenderSource(source, vars);
  if (!r.ok()) return "ERROR: " + std::string(r.status().message());
  return *r;
}

TEST(InterpreterTest, TextExpressionsAndComments) {
  EXPECT_EQ(R("plain text"), "plain text");
  EXPECT_EQ(R("a{{ 1 + 2 }}b{# note #}c"), "a3bc");
  EXPECT_EQ(R("{{ 'a' ~ 1 ~ none ~ true }}"), "a1NoneTrue");
  EXPECT_EQ(R("{{ \"esc\\t\\\\\\x41\\u00e9\\n\" }}{{ 'adj' 'acent' }}"),
            "esc\t\\A\xC3\xA9\nadjacent");
  EXPECT_EQ(R("{{ '{{' }} {{ '}}' }} {{ '{%' }}"), "{{ }} {%");
  EXPECT_EQ(R("{{ {'a': {'b': 1}} }}"), "{'a': {'b': 1}}");
}

TEST(InterpreterTest, Literals) {
  EXPECT_EQ(R("{{ [1, 'a', none, true, 1.0, {'k': 'v'}] }} {{ \"it's\" }} {{ ['it\\'s'] }}"),
            "[1, 'a', None, True, 1.0, {'k': 'v'}] it's [\"it's\"]");
  EXPECT_EQ(R("{{ True }}{{ False }}{{ None }}{{ (1, 2) }}{{ (1,) }}{{ [1, 2, 3,] }}"),
            "TrueFalseNone(1, 2)(1,)[1, 2, 3]");
  EXPECT_EQ(R("{{ 3.0 }} {{ 1/3 }} {{ 1e-5 }} {{ 1e16 }} {{ 1e15 }} {{ 12345.678 }} {{ -0.0 }}"),
            "3.0 0.3333333333333333 1e-05 1e+16 1000000000000000.0 12345.678 -0.0");
}

TEST(InterpreterTest, Arithmetic) {
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 10 / 5 }}"),
            "3 -4 -2 3.5 1024 2.0");
  EXPECT_EQ(R("{{ -2 ** 2 }} {{ 2 * 3 + 4 }} {{ 2 * (3 + 4) }} {{ 10 - 2 - 3 }} {{ 0.1 + 0.2 }}"),
            "4 10 14 5 0.30000000000000004");
  EXPECT_EQ(R("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'a' + 'b' }}"),
            "ababab [1, 1] [1, 2] ab");
  EXPECT_EQ(R("{{ 10 // 0 }}"),
            "ERROR: chat template error at 1:7: integer division or modulo by zero");
}

TEST(InterpreterTest, ComparisonsAndLogic) {
  EXPECT_EQ(
      R("{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 2 >= 2 }} {{ 1 == 1.0 }} {{ 1 != '1' }} {{ [1] == [1] }}"),
      "True True True True True True");
  EXPECT_EQ(R("{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 1 in [1,2] }} {{ 'k' in {'k': 1} }}"),
            "True True True True");
  EXPECT_EQ(R("{{ not 1 }} {{ 1 and 'b' }} {{ 0 or 'c' }} {{ none or [] }}"), "False b c []");
  EXPECT_EQ(R("{{ 'yes' if 1 > 2 else 'no' }} [{{ 'yes' if false }}] {{ 'a' if 0 else 'b' if 0 "
              "else 'c' }}"),
            "no [] c");
}

TEST(InterpreterTest, AttributesItemsAndSlices) {
  const ordered_json vars = {{"x", {{"a", {{"b", "deep"}}}}}};
  EXPECT_EQ(R("{{ x.a.b }}{{ x['a']['b'] }}[{{ x.missing }}]", vars), "deepdeep[]");
  EXPECT_EQ(R("{{ 'abcdef'[1:3] }} {{ 'abcdef'[::-1] }} {{ [1,2,3,4][-2:] }} {{ [1,2,3,4][::2] }}"),
            "bc fedcba [3, 4] [1, 3]");
  EXPECT_EQ(
      R("{{ 'h\xC3\xA9llo'[1] }} {{ 'h\xC3\xA9llo'[::-1] }} {{ [1,2,3][5:] }} {{ 'abc'[-1] }}"),
      "\xC3\xA9 oll\xC3\xA9h [] c");
  EXPECT_EQ(R("[{{ [1][3] }}]"), "[]");
}

TEST(InterpreterTest, UndefinedBehavesLikeJinja) {
  EXPECT_EQ(
      R("[{{ nope }}] {{ nope is defined }} {{ nope | length }} {{ not nope }} {{ nope ~ 'x' }}"),
      "[] False 0 True x");
  EXPECT_EQ(R("{% for x in nope %}x{% endfor %}{{ 'a' in nope }} {{ nope == none }}"),
            "False False");
  // Like jinja2's default Undefined, using it further is an error.
  EXPECT_EQ(R("{{ nope.attr }}"), "ERROR: chat template error at 1:8: 'nope' is undefined");
  EXPECT_EQ(R("{{ nope + 1 }}"), "ERROR: chat template error at 1:9: 'nope' is undefined");
  EXPECT_EQ(R("{{ nope() }}"), "ERROR: chat template error at 1:8: 'nope' is undefined");
}

TEST(InterpreterTest, IfElifElse) {
  EXPECT_EQ(R("{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}"), "c");
  EXPECT_EQ(R("{% if [] %}a{% else %}b{% endif %}{% if {'a': 1} %}c{% endif %}"), "bc");
}

TEST(InterpreterTest, ForLoopVariables) {
  EXPECT_EQ(R("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
              "{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}"
              "{{ loop.previtem }}{{ loop.nextitem }}|{% endfor %}"),
            "10TrueFalse3322|21FalseFalse32113|32FalseTrue3102|");
  EXPECT_EQ(R("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in [1,2,3,4,5] if x is odd %}{{ x }}{{ loop.length }}{% endfor %}"),
            "133353");
  EXPECT_EQ(R("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "a=1;b=2;");
  EXPECT_EQ(R("{% for c in 'h\xC3\xA9y' %}{{ c }},{% endfor %}"), "h,\xC3\xA9,y,");
  EXPECT_EQ(R("{% for a in [[1, 2], [3, 4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}"
              "/{{ loop.index }}{% endfor %}"),
            "1122/11324/2");
  EXPECT_EQ(R("{% for i in range(10) %}{% if i == 3 %}{% continue %}{% endif %}"
              "{% if i == 6 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "01245");
  EXPECT_EQ(R("{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
}

TEST(InterpreterTest, SetScopingAndNamespace) {
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  // A plain set inside a loop does not leak out; namespace attributes do.
  EXPECT_EQ(
      R("{% set x = 1 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}"),
      "2221");
  EXPECT_EQ(R("{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}"
              "{% endfor %}{{ ns.a }}"),
            "4");
  EXPECT_EQ(R("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
  EXPECT_EQ(R("{% set body %}x{{ 1 + 1 }}y{% endset %}[{{ body }}]"), "[x2y]");
  EXPECT_EQ(R("{% set n = 1 %}{% set n.a = 2 %}"),
            "ERROR: chat template error at 1:19: cannot assign attribute on non-namespace object");
}

TEST(InterpreterTest, MacrosAndCall) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
              "{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Z') }}"),
            "Hi Bob! Hi Al? Hi Z!");
  EXPECT_EQ(R("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inner{% endcall %}"),
            "[inner]");
  EXPECT_EQ(R("{% macro row(x) %}<{{ caller(x * 2) }}>{% endmacro %}"
              "{% call(v) row(21) %}v={{ v }}{% endcall %}"),
            "<v=42>");
  EXPECT_EQ(R("{% filter upper %}abc{{ 'd' }}{% endfilter %}"), "ABCD");
  EXPECT_EQ(R("{% generation %}kept{% endgeneration %}"), "kept");
}

TEST(InterpreterTest, StringMethods) {
  EXPECT_EQ(R("{{ '  a  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|"
              "{{ '\\n\\nab\\n'.strip('\\n') }}"),
            "a|axx|xxa|ab");
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }} {{ ' a  b c '.split() }} {{ 'a b c'.split(' ', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b', 'c'] ['a', 'b c']");
  EXPECT_EQ(R("{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} "
              "{{ 'hello world'.title() }} {{ 'abc'.upper() }} {{ 'ABC'.lower() }}"),
            "True True Hello World ABC abc");
  EXPECT_EQ(R("{{ 'a-b-c'.replace('-', '+') }} {{ 'hello'.find('l') }} {{ 'hello'.find('z') }} "
              "{{ ', '.join(['a','b']) }}"),
            "a+b+c 2 -1 a, b");
  const std::string think = "{% set c = 'x<think>\\nr\\n</think>\\n\\nanswer' %}";
  EXPECT_EQ(
      R(think + "{{ c.split('</think>')[-1].lstrip('\\n') }}|"
                "{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}"),
      "answer|r");
}

TEST(InterpreterTest, DictMethodsAndGlobals) {
  EXPECT_EQ(
      R("{{ {'a':1}.get('a') }} {{ {'a':1}.get('b', 'z') }} {{ {'a':1}.get('b') }} "
        "{{ {'a':1}.keys() | list }} {{ {'a':1}.values() | list }} {{ {'a':1}.items() | list }}"),
      "1 z None ['a'] [1] [('a', 1)]");
  EXPECT_EQ(R("{{ range(5) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }}"),
            "[0, 1, 2, 3, 4] [1, 4, 7] [5, 3, 1]");
  EXPECT_EQ(R("{{ dict(a=1, b=2) }} {{ namespace(x=1).x }}"), "{'a': 1, 'b': 2} 1");
  EXPECT_EQ(R("{{ strftime_now('%Y') | length }}"), "4");
  EXPECT_EQ(R("{% set l = [1] %}{{ l.append(2) }}"),
            "ERROR: chat template error at 1:22: access to attribute 'append' of 'list' object is "
            "unsafe.");
}

TEST(InterpreterTest, Filters) {
  EXPECT_EQ(R("{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'hello WORLD' | title }}|"
              "{{ 'hELLO' | capitalize }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}"),
            "a b|a|Hello World|Hello|AB|ab");
  EXPECT_EQ(R("{{ nope | default('d') }} {{ '' | default('e', true) }} {{ none | default('n') }} "
              "{{ 'x' | d('q') }}"),
            "d e None x");
  EXPECT_EQ(
      R("{{ [3,1,2] | sort }} {{ [3,1,2] | sort(reverse=true) }} {{ ['b','A','c'] | sort }} "
        "{{ [1,2,2,3,1] | unique | list }} {{ [1,2,3] | reverse | list }} {{ 'abc' | reverse }}"),
      "[1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] [1, 2, 3] [3, 2, 1] cba");
  EXPECT_EQ(R("{{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} "
              "{{ 2.1 | round(0, 'ceil') }}"),
            "3 2.57 2.0 4.0 3.0");
  EXPECT_EQ(
      R("{{ [1,2,3] | first }} {{ [1,2,3] | last }} {{ 'abc' | first }} {{ [1,2,3] | length }} "
        "{{ 'h\xC3\xA9llo' | length }} {{ {'a':1} | count }} {{ [1,2] | join(', ') }}"),
      "1 3 a 3 5 1 1, 2");
  EXPECT_EQ(R("{{ '3' | int + 1 }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} "
              "{{ '2.5' | float }} {{ 3 | float }} {{ 5 | string ~ 'x' }} {{ none | string }}"),
            "4 3 0 5 2.5 3.0 5x None");
  EXPECT_EQ(R("{{ 'a-b' | replace('-', '+') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ '<&>' | e }} "
              "{{ '<b>' | safe }}"),
            "a+b bba &lt;&amp;&gt; <b>");
  EXPECT_EQ(R("{% for k, v in d | dictsort %}{{ k }}={{ v }};{% endfor %}{{ d | items | list }}",
              {{"d", {{"b", 1}, {"A", 2}}}}),
            "A=2;b=1;[('b', 1), ('A', 2)]");
  EXPECT_EQ(R("{{ [1,2,3] | select('odd') | list }} {{ [1,2,3] | reject('odd') | list }} "
              "{{ [1,2,3] | map('string') | join('-') }}"),
            "[1, 3] [2] 1-2-3");
  EXPECT_EQ(R("{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"), "a\n  b|  a\n  b");
}

TEST(InterpreterTest, SelectAttrAndMap) {
  const ordered_json vars = {{"msgs",
                              {{{"role", "system"}, {"content", "s"}},
                               {{"role", "user"}, {"content", "u"}},
                               {{"role", "assistant"}, {"content", "a"}, {"tool_calls", {1}}}}}};
  EXPECT_EQ(
      R("{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} "
        "{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='role') | join(',') }} "
        "{{ msgs | selectattr('tool_calls') | list | length }}",
        vars),
      "['u'] system,assistant 1");
}

TEST(InterpreterTest, ToJsonMatchesPythonJsonDumps) {
  const ordered_json vars = {{"x",
                              {{"b", 1},
                               {"a", {1, 2.5, nullptr, true, "\xC3\xA9\n\"\x01/<>&"}},
                               {"c", ordered_json::object()}}}};
  EXPECT_EQ(R("{{ x | tojson }}", vars),
            "{\"b\": 1, \"a\": [1, 2.5, null, true, \"\xC3\xA9\\n\\\"\\u0001/<>&\"], \"c\": {}}");
  EXPECT_EQ(R("{{ x | tojson(indent=2) }}", vars),
            "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true,\n"
            "    \"\xC3\xA9\\n\\\"\\u0001/<>&\"\n  ],\n  \"c\": {}\n}");
  EXPECT_EQ(R("{{ x | tojson(sort_keys=true) }}", {{"x", {{"b", 1}, {"a", 2}}}}),
            "{\"a\": 2, \"b\": 1}");
  EXPECT_EQ(R("{{ x | tojson(separators=(',', ':')) }}", {{"x", {{"a", {1, 2}}}}}),
            "{\"a\":[1,2]}");
  EXPECT_EQ(R("{{ 1.0 | tojson }} {{ 1e-7 | tojson }} {{ 'x' | tojson }}"), "1.0 1e-07 \"x\"");
}

TEST(InterpreterTest, Tests) {
  EXPECT_EQ(R("{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} "
              "{{ x is not none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} "
              "{{ 1.0 is integer }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} "
              "{{ [] is sequence }}",
              {{"x", 1}}),
            "True False True True True True True True False True True True True");
  EXPECT_EQ(R("{{ true is true }} {{ 1 is true }} {{ false is false }} {{ true is boolean }} "
              "{{ 1 is boolean }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} "
              "{{ 9 is divisibleby(2) }} {{ 'a' is in 'abc' }} {{ 2 is in [1,2] }} {{ 1 is eq 1 }} "
              "{{ 'x' is equalto 'y' }}"),
            "True False True True False True True True False True True True False");
}

TEST(InterpreterTest, WhitespaceControlLikeHuggingFace) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it.
  EXPECT_EQ(R("a\n  {% if true %}\n  yes\n  {% endif %}\nb\n    {# comment #}\nc"),
            "a\n  yes\nb\nc");
  // {{ }} is not affected by either.
  EXPECT_EQ(R("c {{ 1 }}  \n  {{ 2 }}\n"), "c 1  \n  2");
  EXPECT_EQ(R("x\n{%- if true -%}\n  tight  \n{%- endif -%}\n  end"), "xtightend");
  EXPECT_EQ(R("{#- c -#}  a  {#- c2 #}\n b {{- ' c ' -}} d\n\n"), "a b c d\n");
  // `+` disables lstrip_blocks / trim_blocks for that tag.
  EXPECT_EQ(R("  {%+ if true %}x{% endif +%}\n y"), "  x\n y");
  // Windows newlines normalize; one trailing newline is dropped (keep_trailing_newline=False).
  EXPECT_EQ(R("{% if true %}\r\nwin\r\n{% endif %}\r\n"), "win\n");
  EXPECT_EQ(R("<{{ 'x' }}>\n{%- for m in ms %}\n  {{- m }}\n{% endfor %}", {{"ms", {"a", "b"}}}),
            "<x>a\nb\n");
}

TEST(InterpreterTest, RawBlocks) {
  EXPECT_EQ(R("a{% raw %}{{ x }}{% if %}{% endraw %}b"), "a{{ x }}{% if %}b");
  EXPECT_EQ(R("a {%- raw -%}  {{ x }}  {%- endraw -%}  b"), "a{{ x }}b");
  EXPECT_EQ(R("a\n  {% raw %}\n {{ x }}\n  {% endraw %}\nb"), "a\n\n {{ x }}\nb");
  EXPECT_EQ(ChatTemplate::Parse("{% raw %}{% endraw").status().message(),
            "chat template syntax error at 1:1: missing '{% endraw %}'");
}

TEST(InterpreterTest, RaiseException) {
  absl::StatusOr<std::string> r =
      RenderSource("{{ raise_exception('Roles must alternate: ' ~ 1) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "Roles must alternate: 1");
  // From inside a macro and a loop the message still comes through unchanged.
  r = RenderSource(
      "{% macro m() %}{% for i in [1] %}{{ raise_exception('deep') }}{% endfor %}{% endmacro %}"
      "{{ m() }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "deep");
}

TEST(InterpreterTest, SyntaxErrorsCarryLineAndColumn) {
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::Parse("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(),
            "chat template syntax error at 3:10: expected an expression, got '}}'");
  EXPECT_EQ(
      ChatTemplate::Parse("{% if x %}unterminated").status().message(),
      "chat template syntax error at 1:23: unexpected end of template, expected '{% endif %}'");
  EXPECT_EQ(ChatTemplate::Parse("{{ 'a' }").status().message(),
            "chat template syntax error at 1:1: unterminated '{{' tag");
  EXPECT_EQ(ChatTemplate::Parse("{% frobnicate %}").status().message(),
            "chat template syntax error at 1:4: unknown tag 'frobnicate'");
  EXPECT_EQ(ChatTemplate::Parse("{% endfor %}").status().message(),
            "chat template syntax error at 1:4: unexpected 'endfor'");
  EXPECT_EQ(ChatTemplate::Parse("{{ 'open }}").status().message(),
            "chat template syntax error at 1:4: unterminated string literal");
  EXPECT_EQ(ChatTemplate::Parse("{# never closed").status().message(),
            "chat template syntax error at 1:1: unterminated comment");
}

TEST(InterpreterTest, RuntimeErrorsAreStatuses) {
  EXPECT_EQ(R("{{ x | nosuchfilter }}", {{"x", 1}}),
            "ERROR: chat template error at 1:8: unknown filter 'nosuchfilter'");
  EXPECT_EQ(R("{{ x is nosuchtest }}", {{"x", 1}}),
            "ERROR: chat template error at 1:6: unknown test 'nosuchtest'");
  EXPECT_EQ(
      R("{{ 1 + 'a' }}"),
      "ERROR: chat template error at 1:6: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(
      R("{{ 1 < 'a' }}"),
      "ERROR: chat template error at 1:6: '<' not supported between instances of 'int' and 'str'");
  EXPECT_EQ(R("{{ 5() }}"), "ERROR: chat template error at 1:5: 'int' object is not callable");
  EXPECT_EQ(R("{% for a, b in [1] %}{% endfor %}"),
            "ERROR: chat template error at 1:4: 'int' object is not iterable");
  EXPECT_THAT(R("{{ x | tojson }}"), HasSubstr("not JSON serializable"));
  EXPECT_THAT(R("{{ 'a'.split('') }}"), HasSubstr("empty separator"));
}

TEST(InterpreterTest, LimitsStopRunawayTemplates) {
  absl::StatusOr<std::string> r =
      RenderSource("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);

  jinja::RenderLimits small;
  small.max_output_bytes = 1000;
  r = RenderSource("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", ordered_json::object(),
                   &small);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("1000 bytes"));

  small = jinja::RenderLimits();
  small.max_loop_iterations = 50;
  r = RenderSource("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}",
                   ordered_json::object(), &small);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);

  r = RenderSource("{{ range(100000000) | length }}");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);

  // Deeply nested source is a syntax error, not a stack overflow.
  EXPECT_FALSE(
      ChatTemplate::Parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
          .ok());
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += "{% if true %}";
  for (int i = 0; i < 1000; ++i) nested += "{% endif %}";
  EXPECT_FALSE(ChatTemplate::Parse(nested).ok());
}

TEST(InterpreterTest, DeepAndCyclicValuesAreBounded) {
  // Nesting built up through a namespace stops at max_value_depth instead of overflowing the stack.
  absl::StatusOr<std::string> r = RenderSource(
      "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}"
      "{% endfor %}{{ ns.x | length }}");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  // A namespace holding itself prints without recursing forever.
  EXPECT_THAT(R("{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns }}"),
              HasSubstr("<Namespace {'a': 1, 'self': <Namespace {'a': 1, 'self': "));
  // Untrusted input nested too deeply is rejected before it is converted.
  ordered_json deep = ordered_json::array();
  for (int i = 0; i < 500; ++i) deep = ordered_json::array({std::move(deep)});
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ x }}");
  ASSERT_TRUE(t.ok());
  r = t->Render(ordered_json::array(), false, {{"x", deep}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(InterpreterTest, RenderPassesHuggingFaceVariables) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{{ tools is none }} {{ documents is none }} {{ add_generation_prompt }} "
      "{{ messages | length }} {{ bos_token }}");
  ASSERT_TRUE(t.ok());
  t->set_default_variable("bos_token", "<s>");
  absl::StatusOr<std::string> r =
      t->Render(nlohmann::json::array({{{"role", "user"}, {"content", "x"}}}), true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "True True True 1 <s>");
  r = t->Render(nlohmann::json::array(), false, {{"tools", {1}}, {"bos_token", "<B>"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "False True False 0 <B>");
  EXPECT_FALSE(t->Render(nlohmann::json::object(), false).ok());
}

TEST(InterpreterTest, OrderedJsonKeepsKeyOrderInToJson) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ tools | tojson }}");
  ASSERT_TRUE(t.ok());
  ordered_json tools = ordered_json::array({{{"z", 1}, {"a", 2}}});
  absl::StatusOr<std::string> r = t->Render(ordered_json::array(), false, {{"tools", tools}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "[{\"z\": 1, \"a\": 2}]");
}

}  // namespace
}  // namespace lychee
