// SPDX-License-Identifier: Apache-2.0
// StreamDecoder: Push/Flush output concatenates to Decode(all), and no chunk ends inside a UTF-8
// character, for the golden corpus and for random id sequences, on every tokenizer family.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/file.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "tests/unit/tokenizer/test_paths.h"

namespace lychee {
namespace {

bool IsValidUtf8(const std::string& s) {
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = tokenizer_internal::ValidUtf8Length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

// Streams `ids` and checks both properties; returns the number of non-empty chunks.
int CheckStream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tokenizer, skip_special);
  std::string streamed;
  int chunks = 0;
  for (int32_t id : ids) {
    const std::string chunk = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk)) << "chunk after id " << id << " is not valid UTF-8";
    if (!chunk.empty()) ++chunks;
    streamed += chunk;
  }
  const std::string rest = stream.Flush();
  EXPECT_TRUE(IsValidUtf8(rest));
  streamed += rest;
  EXPECT_EQ(streamed, tokenizer.Decode(ids, skip_special)) << "ids " << nlohmann::json(ids).dump();
  return chunks;
}

class StreamDecoderTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::FromDirectory(GetParam());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status() << ::lychee::testing::kInstallHint;
    tokenizer_ = std::move(tokenizer).value();
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(StreamDecoderTest, CorpusRoundTrips) {
  auto text = ReadFile(::lychee::testing::kGoldenDir + "/corpus.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const auto corpus = nlohmann::json::parse(*text).get<std::vector<std::string>>();
  for (const std::string& s : corpus) {
    for (bool skip : {true, false}) {
      const std::vector<int32_t> ids = tokenizer_->Encode(s, /*add_special_tokens=*/true);
      CheckStream(*tokenizer_, ids, skip);
    }
  }
}

TEST_P(StreamDecoderTest, MultiByteCharactersAreHeldBack) {
  // "你好😀": byte-level and byte-fallback tokenizers split these into byte tokens.
  const std::vector<int32_t> ids = tokenizer_->Encode("你好😀 ok", false);
  StreamDecoder stream(*tokenizer_);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string chunk = stream.Push(id);
    EXPECT_FALSE(tokenizer_internal::EndsWithIncompleteUtf8(chunk));
    EXPECT_EQ(chunk.find(tokenizer_internal::kReplacementChar), std::string::npos);
    streamed += chunk;
  }
  streamed += stream.Flush();
  EXPECT_EQ(streamed, "你好😀 ok");
}

TEST_P(StreamDecoderTest, RandomIds) {
  std::mt19937 rng(1234);
  const int32_t vocab = tokenizer_->vocab_size();
  // Byte tokens are where streaming is delicate: draw them often.
  std::vector<int32_t> byte_ids;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto id = tokenizer_->TokenToId(name)) byte_ids.push_back(*id);
  }
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids;
    const int length = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < length; ++i) {
      if (!byte_ids.empty() && rng() % 3 == 0) {
        ids.push_back(byte_ids[rng() % byte_ids.size()]);
      } else {
        ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
      }
    }
    CheckStream(*tokenizer_, ids, trial % 2 == 0);
  }
}

TEST_P(StreamDecoderTest, OutOfRangeIdsAreIgnored) {
  const std::vector<int32_t> ids = {-1, tokenizer_->vocab_size(), 1 << 30};
  EXPECT_EQ(CheckStream(*tokenizer_, ids, true), 0);
}

std::string TokenizerName(const ::testing::TestParamInfo<std::string>& param) {
  const std::string& dir = param.param;
  if (dir.find("llama3") != std::string::npos) return "Llama3";
  if (dir.find("qwen3") != std::string::npos) return "Qwen3";
  if (dir.find("tokenizer-llama2") != std::string::npos) return "Mistral";
  if (dir.find("llama2-tokenizer") != std::string::npos) return "Llama2Spm";
  return "Stories260K";
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, StreamDecoderTest,
                         ::testing::Values(::lychee::testing::kLlama3Dir,
                                           ::lychee::testing::kQwen3Dir,
                                           ::lychee::testing::kMistralDir,
                                           ::lychee::testing::kLlama2SpmDir,
                                           ::lychee::testing::kStoriesDir),
                         TokenizerName);

}  // namespace
}  // namespace lychee
