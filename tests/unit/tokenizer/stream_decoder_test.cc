// SPDX-License-Identifier: Apache-2.0
// StreamDecoder: Push/Flush output concatenates to Decode(all), and no chunk ends inside a UTF-8
// character, for the golden corpus and for random id sequences, on every tokenizer family.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/file.h"
#include "model/tokenizer/pre_tokenizers.h"
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

TEST_P(StreamDecoderTest, PromptContext) {
  const std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a", true);
  const std::vector<int32_t> generated = tokenizer_->Encode("time, 你好😀 there", false);
  // What the generated ids add to the prompt's text, in context.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string full = tokenizer_->Decode(all, true);
  const std::string prompt_text = tokenizer_->Decode(prompt, true);
  ASSERT_EQ(full.substr(0, prompt_text.size()), prompt_text);

  StreamDecoder stream(*tokenizer_, true, prompt);
  std::string streamed;
  for (int32_t id : generated) {
    const std::string chunk = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk));
    streamed += chunk;
  }
  streamed += stream.Flush();
  EXPECT_EQ(streamed, full.substr(prompt_text.size()));
  // SentencePiece-style tokenizers encode "time" as "▁time": in context it keeps its space.
  const bool dummy_prefix = tokenizer_->IdToToken(generated[0]).starts_with("▁");
  EXPECT_EQ(streamed.substr(0, 5), dummy_prefix ? " time" : "time,");
}

TEST_P(StreamDecoderTest, ContextEndingInsideACharacterIsNotUsed) {
  // The first byte of "你" alone: as a byte-fallback token or as a byte-level character.
  std::optional<int32_t> lead = tokenizer_->TokenToId("<0xE4>");
  if (!lead.has_value()) lead = tokenizer_->TokenToId(tokenizer_internal::ByteToUnicode()[0xE4]);
  ASSERT_TRUE(lead.has_value());
  const std::vector<int32_t> generated = tokenizer_->Encode("hello 你好", false);
  StreamDecoder stream(*tokenizer_, true, std::vector<int32_t>{*lead});
  std::string text;
  for (int32_t id : generated) text += stream.Push(id);
  text += stream.Flush();
  EXPECT_EQ(text, tokenizer_->Decode(generated, true));
}

TEST_P(StreamDecoderTest, RandomIdsWithRandomContext) {
  std::mt19937 rng(99);
  const uint32_t vocab = static_cast<uint32_t>(tokenizer_->vocab_size());
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> context, ids;
    for (int i = 0, n = static_cast<int>(rng() % 9); i < n; ++i) {
      context.push_back(static_cast<int32_t>(rng() % vocab));
    }
    for (int i = 0, n = 1 + static_cast<int>(rng() % 20); i < n; ++i) {
      ids.push_back(static_cast<int32_t>(rng() % vocab));
    }
    StreamDecoder stream(*tokenizer_, true, context);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string chunk = stream.Push(id);
      EXPECT_TRUE(IsValidUtf8(chunk));
      streamed += chunk;
    }
    streamed += stream.Flush();
    // The decoder keeps the last 5 context ids unless their text ends inside a character.
    std::vector<int32_t> tail(context.size() > 5 ? context.end() - 5 : context.begin(),
                              context.end());
    const std::string tail_text = tokenizer_->Decode(tail, true);
    if (std::string_view(tail_text).ends_with(tokenizer_internal::kReplacementChar)) tail.clear();
    std::vector<int32_t> all = tail;
    all.insert(all.end(), ids.begin(), ids.end());
    const std::string prefix = tokenizer_->Decode(tail, true);
    const std::string full = tokenizer_->Decode(all, true);
    ASSERT_EQ(full.substr(0, prefix.size()), prefix);
    EXPECT_EQ(streamed, full.substr(prefix.size()))
        << "context " << nlohmann::json(context).dump() << " ids " << nlohmann::json(ids).dump();
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

// Delegates to a real tokenizer and counts the ids it is asked to decode.
class CountingTokenizer final : public Tokenizer {
 public:
  explicit CountingTokenizer(const Tokenizer& inner) : inner_(inner) {
    special_ = inner.special_tokens();
  }
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override {
    return inner_.Encode(text, add_special_tokens);
  }
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const override {
    num_decoded_ += static_cast<int64_t>(ids.size());
    return inner_.Decode(ids, skip_special_tokens);
  }
  int32_t vocab_size() const override { return inner_.vocab_size(); }
  std::optional<int32_t> TokenToId(std::string_view token) const override {
    return inner_.TokenToId(token);
  }
  std::string IdToToken(int32_t id) const override { return inner_.IdToToken(id); }
  bool IsSpecial(int32_t id) const override { return inner_.IsSpecial(id); }
  int64_t num_decoded() const { return num_decoded_; }

 private:
  const Tokenizer& inner_;
  mutable int64_t num_decoded_ = 0;
};

// Issue 15 (the tokenizer_text fuzzer's slowness): output that is invalid UTF-8 for good (stray
// byte tokens, as a small or adversarially prompted model emits) used to hold the whole window
// back, so every Push decoded all ids since the last clean character: quadratic, on the engine's
// step thread. Each Push now decodes a few ids, and the stream still equals Decode.
TEST_P(StreamDecoderTest, InvalidBytesStreamInLinearWork) {
  std::vector<int32_t> byte_ids;  // the tokenizer's ids for single bytes 0x80..0xFF
  for (int b = 0x80; b < 0x100; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    std::optional<int32_t> id = tokenizer_->TokenToId(name);
    if (!id.has_value()) id = tokenizer_->TokenToId(tokenizer_internal::ByteToUnicode()[b]);
    ASSERT_TRUE(id.has_value()) << b;
    byte_ids.push_back(*id);
  }
  const int32_t ff = byte_ids[0x7F];  // 0xFF: never part of a character
  const int32_t e4 = byte_ids[0x64], bd = byte_ids[0x3D], a0 = byte_ids[0x20];  // 你 = E4 BD A0
  std::mt19937 rng(99);
  for (int trial = 0; trial < 3; ++trial) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 1000; ++i) {
      switch (trial) {
        case 0:  // all invalid
          ids.push_back(ff);
          break;
        case 1:  // characters cut short by invalid bytes, and whole ones
          for (int32_t id : {e4, ff, e4, bd, ff, e4, bd, a0}) ids.push_back(id);
          break;
        default:  // any high bytes
          ids.push_back(byte_ids[rng() % byte_ids.size()]);
      }
    }
    for (bool skip : {true, false}) {
      CountingTokenizer counting(*tokenizer_);
      CheckStream(counting, ids, skip);
      // Push decodes the window two or three times, Flush and Decode once: a few ids per id.
      EXPECT_LE(counting.num_decoded(), 20 * static_cast<int64_t>(ids.size()))
          << "trial " << trial << ": " << ids.size() << " ids";
    }
  }
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
