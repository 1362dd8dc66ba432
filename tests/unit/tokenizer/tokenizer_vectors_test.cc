// SPDX-License-Identifier: Apache-2.0
// Exact agreement with llama.cpp's tokenizer test vectors, plus the stories260K reference text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/test_paths.h"

namespace lychee {
namespace {

using ::lychee::testing::kInstallHint;

std::unique_ptr<Tokenizer> Load(const std::string& dir) {
  auto tokenizer = Tokenizer::FromDirectory(dir);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status() << kInstallHint;
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

// Splits `text` on `separator` (std::string to keep clear of absl::string_view differences).
std::vector<std::string> SplitOn(const std::string& text, const std::string& separator) {
  std::vector<std::string> parts;
  size_t begin = 0;
  for (size_t pos = text.find(separator); pos != std::string::npos;
       pos = text.find(separator, begin)) {
    parts.push_back(text.substr(begin, pos - begin));
    begin = pos + separator.size();
  }
  parts.push_back(text.substr(begin));
  return parts;
}

std::vector<int32_t> ParseIds(const std::string& line) {
  std::vector<int32_t> ids;
  for (const std::string& field : SplitOn(line, " ")) {
    if (field.empty()) continue;
    int32_t id = 0;
    EXPECT_TRUE(absl::SimpleAtoi(field, &id)) << field;
    ids.push_back(id);
  }
  return ids;
}

std::string IdsToString(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

// Runs one vocab's vectors; every case must match exactly.
void CheckVectors(const std::string& vocab, const std::string& tokenizer_dir) {
  std::unique_ptr<Tokenizer> tokenizer = Load(tokenizer_dir);
  ASSERT_NE(tokenizer, nullptr);
  const std::string base = ::lychee::testing::kVectorsDir + "/ggml-vocab-" + vocab + ".gguf";
  auto inp = ReadFile(base + ".inp");
  auto out = ReadFile(base + ".out");
  ASSERT_TRUE(inp.ok()) << inp.status();
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<std::string> texts = SplitOn(*inp, "\n__ggml_vocab_test__\n");
  const std::vector<std::string> expected = SplitOn(*out, "\n");
  ASSERT_EQ(texts.size(), expected.size());
  int matched = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> ids = tokenizer->Encode(texts[i], /*add_special_tokens=*/false);
    const std::vector<int32_t> want = ParseIds(expected[i]);
    EXPECT_EQ(IdsToString(ids), IdsToString(want))
        << vocab << " case " << i << ": " << nlohmann::json(texts[i]).dump();
    if (ids == want) ++matched;
  }
  std::cout << vocab << ": " << matched << "/" << texts.size() << " match\n";
  EXPECT_EQ(matched, static_cast<int>(texts.size()));
}

TEST(TokenizerVectorsTest, Qwen2) { CheckVectors("qwen2", ::lychee::testing::kQwen3Dir); }

TEST(TokenizerVectorsTest, LlamaBpe) { CheckVectors("llama-bpe", ::lychee::testing::kLlama3Dir); }

TEST(TokenizerVectorsTest, LlamaSpm) {
  CheckVectors("llama-spm", ::lychee::testing::kLlama2SpmDir);
}

TEST(TokenizerVectorsTest, MistralTokenizerJson) {
  std::unique_ptr<Tokenizer> tokenizer = Load(::lychee::testing::kMistralDir);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("Hello world!", true), (std::vector<int32_t>{1, 22557, 1526, 28808}));
  EXPECT_EQ(tokenizer->Encode("Hello world!", false), (std::vector<int32_t>{22557, 1526, 28808}));
  EXPECT_EQ(tokenizer->Decode({1, 22557, 1526, 28808}, true), "Hello world!");
  EXPECT_EQ(tokenizer->Decode({1, 22557, 1526, 28808}, false), "<s> Hello world!");
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_ids(), std::vector<int32_t>{2});
  EXPECT_TRUE(tokenizer->IsSpecial(1));
  EXPECT_FALSE(tokenizer->IsSpecial(22557));
}

TEST(TokenizerVectorsTest, SpecialTokensAndIds) {
  std::unique_ptr<Tokenizer> qwen = Load(::lychee::testing::kQwen3Dir);
  ASSERT_NE(qwen, nullptr);
  EXPECT_EQ(qwen->bos_id(), std::nullopt);
  EXPECT_EQ(qwen->eos_id(), qwen->TokenToId("<|im_end|>"));
  EXPECT_EQ(qwen->Encode("<|im_start|>user", true), qwen->Encode("<|im_start|>user", false));
  EXPECT_EQ(qwen->Encode("<|im_start|>", true), std::vector<int32_t>{151644});
  EXPECT_EQ(qwen->IdToToken(151644), "<|im_start|>");
  EXPECT_TRUE(qwen->IsSpecial(151644));
  EXPECT_EQ(qwen->vocab_size(), 151669);

  std::unique_ptr<Tokenizer> llama3 = Load(::lychee::testing::kLlama3Dir);
  ASSERT_NE(llama3, nullptr);
  EXPECT_EQ(llama3->TokenToId("<|begin_of_text|>"), 128000);
  EXPECT_EQ(llama3->Encode("<|begin_of_text|>Hi", false)[0], 128000);
  // Out-of-range ids are skipped, never a crash.
  EXPECT_EQ(llama3->Decode({-5, 9906, 1 << 30}, false), "Hello");
  EXPECT_EQ(llama3->IdToToken(-1), "");

  std::unique_ptr<Tokenizer> spm = Load(::lychee::testing::kLlama2SpmDir);
  ASSERT_NE(spm, nullptr);
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->Encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(spm->Decode({1, 15043, 3186, 2}, true), "Hello world");
  EXPECT_EQ(spm->Decode({15043, 99999, -1}, true), "Hello");
}

TEST(TokenizerVectorsTest, Stories260KGreedyReference) {
  std::unique_ptr<Tokenizer> tokenizer = Load(::lychee::testing::kStoriesDir);
  ASSERT_NE(tokenizer, nullptr);
  auto text = ReadFile(::lychee::testing::kStoriesDir + "/reference/greedy_bos.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json reference = nlohmann::json::parse(*text);
  const std::string story = reference.at("text").get<std::string>();
  const std::vector<int32_t> greedy = reference.at("greedy_ids").get<std::vector<int32_t>>();
  ASSERT_EQ(greedy.front(), 1);  // "greedy_ids" starts with the BOS the generation began from.
  EXPECT_EQ(tokenizer->vocab_size(), 512);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(IdsToString(tokenizer->Encode(story, true)), IdsToString(greedy));
  EXPECT_EQ(tokenizer->Decode(greedy, true), story);
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(story, true), true), story);
}

}  // namespace
}  // namespace lychee
