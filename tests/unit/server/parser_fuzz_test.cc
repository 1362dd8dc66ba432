// SPDX-License-Identifier: Apache-2.0
// Randomized-input tests (issue 15) for the parsers that see client bytes: the OpenAI request
// parser (completions and chat bodies) and the chat-template engine (Jinja source, and rendering
// of hostile message lists). Each mutates seed inputs (byte flips, insertions of JSON and Jinja
// punctuation, truncation, splicing, deep nesting) with a fixed seed for a bounded number of
// iterations (LYCHEE_FUZZ_ITERATIONS, default 3000 per target, about a second), and checks that
// every input gets an answer: a value or an error status, never an exception, crash or hang.
// Run under ASan/UBSan (see docs/RELIABILITY.md) to also catch memory errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "model/chat_template/chat_template.h"
#include "server/openai/openai_request.h"

namespace lychee::openai {
namespace {

int Iterations() {
  const char* env = std::getenv("LYCHEE_FUZZ_ITERATIONS");
  const int n = env != nullptr ? std::atoi(env) : 0;
  return n > 0 ? n : 3000;
}

// One random edit of `input`.
std::string Mutate(std::string input, const std::vector<std::string>& seeds,
                   const std::vector<std::string>& tokens, std::mt19937_64& rng) {
  auto pick = [&rng](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 7) {
      case 0:  // flip a byte
        if (!input.empty()) input[pick(input.size())] = static_cast<char>(rng() & 0xff);
        break;
      case 1:  // insert a meaningful token
        input.insert(pick(input.size() + 1), tokens[pick(tokens.size())]);
        break;
      case 2:  // delete a run
        if (!input.empty()) {
          const size_t at = pick(input.size());
          input.erase(at, 1 + pick(8));
        }
        break;
      case 3:  // truncate
        input.resize(pick(input.size() + 1));
        break;
      case 4: {  // splice another seed's tail
        const std::string& other = seeds[pick(seeds.size())];
        input = input.substr(0, pick(input.size() + 1)) + other.substr(pick(other.size() + 1));
        break;
      }
      case 5:  // duplicate a run
        if (!input.empty()) {
          const size_t at = pick(input.size());
          input.insert(at, input.substr(at, 1 + pick(16)));
        }
        break;
      default: {  // nest
        const size_t depth = 1 + pick(200);
        input.insert(pick(input.size() + 1), std::string(depth, rng() % 2 ? '[' : '{'));
        break;
      }
    }
  }
  return input;
}

const ModelLimits kLimits{.served_name = "stories260K", .vocab_size = 512, .max_model_len = 512};

TEST(ParserFuzzTest, OpenAiRequestParserAnswersEveryInput) {
  const std::vector<std::string> seeds = {
      R"({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 16,
          "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n", "The end"],
          "seed": 7, "stream": true, "stream_options": {"include_usage": true},
          "logprobs": 2, "echo": false, "n": 1, "priority": -3,
          "policy": {"name": "prhs", "budget_tokens": 256, "prhs": {"tau": 0.9}}})",
      R"({"prompt": [1, 2, 3, 511], "max_tokens": 4, "logit_bias": {"5": -100}})",
      R"({"prompt": [[1, 2]], "min_tokens": 1, "ignore_eos": true, "repetition_penalty": 1.1})",
      R"({"messages": [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                       {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                        "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
                       {"role": "tool", "tool_call_id": "c1", "content": "42"}],
          "max_completion_tokens": 8, "logprobs": true, "top_logprobs": 3,
          "chat_template_kwargs": {"enable_thinking": false}, "tools": [{"type": "function",
          "function": {"name": "f", "parameters": {"type": "object"}}}]})",
  };
  const std::vector<std::string> tokens = {
      "{",
      "}",
      "[",
      "]",
      ",",
      ":",
      "\"",
      "\\",
      "\\u00",
      "null",
      "true",
      "-1e999",
      "1e308",
      "-0",
      "NaN",
      "\"\\ud800\"",
      "\xff",
      "\x00",
      "\"prompt\"",
      "\"messages\"",
      "\"stop\"",
      "\"policy\"",
      "9999999999999999999",
      "[[[",
      "}}}",
      "\"role\"",
      "\"content\"",
  };
  std::mt19937_64 rng(15);
  const int n = Iterations();
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    const std::string input = Mutate(seeds[rng() % seeds.size()], seeds, tokens, rng);
    try {
      absl::StatusOr<CompletionParams> completion = ParseCompletionRequest(input, kLimits);
      absl::StatusOr<ChatParams> chat = ParseChatRequest(input, kLimits);
      ok += completion.ok() + chat.ok();
      // Errors are in our words: never a JSON library exception's text.
      for (const absl::Status& st : {completion.status(), chat.status()}) {
        ASSERT_EQ(st.message().find("json.exception"), absl::string_view::npos)
            << st << "\ninput: " << input;
      }
    } catch (const std::exception& e) {
      FAIL() << "exception " << e.what() << "\ninput: " << input;
    }
  }
  // The mutations are mild enough that some inputs still parse (the test is not vacuous).
  EXPECT_GT(ok, 0);
}

TEST(ParserFuzzTest, ChatTemplateParsesAndRendersEveryInput) {
  std::vector<std::string> seeds;
  for (const char* name : {"chatml", "llama3", "mistral"}) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::BuiltIn(name);
    ASSERT_TRUE(t.ok()) << t.status();
    seeds.push_back(t->source());
  }
  seeds.push_back(
      "{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}{% if loop.last %}"
      "{{ '\\n' }}{% endif %}{% endfor %}{% set ns = namespace(n=0) %}{{ (messages | length) * 2 }}"
      "{{ messages[0]['content'][1:3] }}{% macro f(x) %}{{ x ~ x }}{% endmacro %}{{ f('ab') }}"
      "{{ raise_exception('no') if false else tojson(messages) }}");
  const std::vector<std::string> tokens = {
      "{{",         "}}",         "{%",
      "%}",         "{#",         "#}",
      "(",          ")",          "[",
      "]",          "|",          ".",
      "'",          "\"",         "~",
      "for",        "in",         "endfor",
      "if",         "endif",      "set",
      "macro",      "call",       "recursive",
      "loop",       "messages",   "range(99999999)",
      "* 99999999", "namespace(", "raise_exception(",
      "\\",         "\n",         "-",
      "+",
  };
  const nlohmann::json messages = nlohmann::json::parse(R"([
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "hello {{ '}}' }} \u00e9"},
      {"role": "assistant", "content": "hi"},
      {"role": "user", "content": ""}])");
  std::mt19937_64 rng(1515);
  const int n = Iterations();
  int parsed = 0;
  for (int i = 0; i < n; ++i) {
    const std::string source = Mutate(seeds[rng() % seeds.size()], seeds, tokens, rng);
    try {
      absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
      if (!t.ok()) continue;
      ++parsed;
      // Rendering is bounded (RenderLimits): an error or text, quickly.
      absl::StatusOr<std::string> text = t->Render(messages, /*add_generation_prompt=*/true);
      (void)text;
    } catch (const std::exception& e) {
      FAIL() << "exception " << e.what() << "\nsource: " << source;
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace lychee::openai
