// SPDX-License-Identifier: Apache-2.0
// Agreement with Hugging Face tokenizers / sentencepiece on the golden corpus.
//
// tests/golden/tokenizer/<name>.json are written by tools/make_tokenizer_golden.py on a machine
// with the Python reference libraries. A missing golden file skips its test (it is produced
// separately); LYCHEE_TOKENIZER_GOLDEN_DIR points the test at another folder for debugging.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/test_paths.h"

namespace lychee {
namespace {

struct GoldenCase {
  std::string name;  // <name>.json in the golden folder.
  std::string tokenizer_dir;
};

std::string GoldenDir() {
  const char* dir = std::getenv("LYCHEE_TOKENIZER_GOLDEN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : ::lychee::testing::kGoldenDir;
}

std::string Dump(const nlohmann::json& value) { return value.dump(); }

class TokenizerGoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(TokenizerGoldenTest, MatchesReference) {
  const GoldenCase& golden_case = GetParam();
  const std::string path = JoinPath(GoldenDir(), golden_case.name + ".json");
  if (!FileExists(path)) GTEST_SKIP() << path << " not generated yet (make_tokenizer_golden.py)";
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json golden = nlohmann::json::parse(*text, nullptr, false);
  ASSERT_FALSE(golden.is_discarded()) << path << " is not valid JSON";
  auto tokenizer = Tokenizer::FromDirectory(golden_case.tokenizer_dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status() << ::lychee::testing::kInstallHint;

  // The golden file must describe the current corpus, string for string.
  auto corpus_text = ReadFile(::lychee::testing::kGoldenDir + "/corpus.json");
  ASSERT_TRUE(corpus_text.ok()) << corpus_text.status();
  const auto corpus = nlohmann::json::parse(*corpus_text).get<std::vector<std::string>>();
  const nlohmann::json& entries = golden.at("entries");
  ASSERT_EQ(entries.size(), corpus.size()) << path << " is stale: regenerate it";

  int matched = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const nlohmann::json& entry = entries[i];
    const std::string input = entry.at("text").get<std::string>();
    ASSERT_EQ(input, corpus[i]) << path << " is stale at entry " << i;
    const std::string where = golden_case.name + " entry " + std::to_string(i) + " " + Dump(input);
    const auto ids_special = entry.at("ids_special").get<std::vector<int32_t>>();
    const auto ids_plain = entry.at("ids_plain").get<std::vector<int32_t>>();
    const std::vector<int32_t> got_special = (*tokenizer)->Encode(input, true);
    const std::vector<int32_t> got_plain = (*tokenizer)->Encode(input, false);
    EXPECT_EQ(Dump(got_special), Dump(ids_special)) << where << " (add_special_tokens=true)";
    EXPECT_EQ(Dump(got_plain), Dump(ids_plain)) << where << " (add_special_tokens=false)";
    bool ok = got_special == ids_special && got_plain == ids_plain;
    if (entry.contains("decoded") && entry.at("decoded").is_string()) {
      const std::string want = entry.at("decoded").get<std::string>();
      const std::string got = (*tokenizer)->Decode(ids_special, false);
      EXPECT_EQ(Dump(got), Dump(want)) << where << " (decode, skip_special_tokens=false)";
      ok = ok && got == want;
    }
    if (entry.contains("decoded_skip") && entry.at("decoded_skip").is_string()) {
      const std::string want = entry.at("decoded_skip").get<std::string>();
      const std::string got = (*tokenizer)->Decode(ids_special, true);
      EXPECT_EQ(Dump(got), Dump(want)) << where << " (decode, skip_special_tokens=true)";
      ok = ok && got == want;
    }
    if (ok) ++matched;
  }
  std::cout << golden_case.name << ": " << matched << "/" << entries.size() << " match\n";
}

INSTANTIATE_TEST_SUITE_P(
    Golden, TokenizerGoldenTest,
    ::testing::Values(GoldenCase{"llama3", ::lychee::testing::kLlama3Dir},
                      GoldenCase{"qwen3", ::lychee::testing::kQwen3Dir},
                      GoldenCase{"mistral", ::lychee::testing::kMistralDir},
                      GoldenCase{"stories260K", ::lychee::testing::kStoriesDir},
                      GoldenCase{"llama2-spm", ::lychee::testing::kLlama2SpmDir}),
    [](const ::testing::TestParamInfo<GoldenCase>& param) {
      std::string name;
      for (char c : param.param.name) {
        if (std::isalnum(static_cast<unsigned char>(c))) name.push_back(c);
      }
      return name;
    });

}  // namespace
}  // namespace lychee
