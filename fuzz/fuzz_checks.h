// SPDX-License-Identifier: Apache-2.0
// The properties the fuzz targets check, one function per parser that sees outside bytes (issue
// 15). Each takes one input and returns what went wrong, if anything: the libFuzzer targets
// (fuzz_target.cc, built with -DLYCHEE_FUZZ=ON) abort on a problem, and the randomized unit test
// (tests/unit/server/parser_fuzz_test.cc) fails with it. Both start from the seed corpora and
// dictionaries in fuzz/<target>/, read by LoadCorpus and LoadDictionary.
//
// Every target checks that the input gets an answer (a value or an error status; never an
// exception, crash, hang or sanitizer report) plus what the parser promises about its output:
// errors in our words (no JSON library text), token ids in range, decoded text valid UTF-8,
// streaming decode equal to whole decode, tensor views inside the buffer, and so on.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lychee::fuzz {

struct CheckResult {
  bool accepted = false;  // the input parsed (a fuzzing run that accepts nothing is vacuous)
  std::string problem;    // empty: every property held
};

// The targets, by the name of their folder under fuzz/.
inline constexpr const char* kTargets[] = {
    "openai_request", "chat_template",  "http_request",  "model_config",
    "safetensors",    "tokenizer_json", "tokenizer_spm", "tokenizer_text",
};

// A body for POST /v1/completions and /v1/chat/completions (both parsers), then the chat
// messages rendered by a built-in template.
CheckResult CheckOpenAiRequest(std::string_view input);
// Jinja source: parsed, then rendered over a fixed conversation (bounded by RenderLimits).
CheckResult CheckChatTemplate(std::string_view input);
// The bytes a client sends on a connection, parsed as the HTTP server does (one request).
CheckResult CheckHttpRequest(std::string_view input);
// A model's config.json.
CheckResult CheckModelConfig(std::string_view input);
// A whole .safetensors file (8-byte header length, JSON header, data); every tensor read.
CheckResult CheckSafetensors(std::string_view input);
// A tokenizer.json file; when it loads, fixed texts are encoded and decoded with it (no
// streaming-decode check: see CheckTokenizerOn).
CheckResult CheckTokenizerJson(std::string_view input);
// A SentencePiece tokenizer.model file; the same.
CheckResult CheckTokenizerSpm(std::string_view input);
// Client text (first byte: mode) through both kinds of tokenizer (stories260K's tokenizer.json
// and Llama 2's tokenizer.model): encode, decode, stream-decode; or the bytes as token ids.
CheckResult CheckTokenizerText(std::string_view input);

// Runs the check named `target` (one of kTargets); an unknown name is a problem.
CheckResult Check(std::string_view target, std::string_view input);

// The repository's root (compiled in; $LYCHEE_SOURCE_DIR overrides).
std::string SourceDir();
// Every file of fuzz/<target>/corpus, sorted by name.
std::vector<std::string> LoadCorpus(std::string_view target);
// The entries of fuzz/<target>/dict (libFuzzer's format: one "quoted" token a line, with \\, \"
// and \xNN escapes; # comments); empty when the target has none.
std::vector<std::string> LoadDictionary(std::string_view target);

}  // namespace lychee::fuzz
