// SPDX-License-Identifier: Apache-2.0
// Unit tests of the tokenizer.json stages on small hand-made inputs, for behaviour that the real
// tokenizers in the other tests do not exercise (split behaviours, Metaspace, lstrip/rstrip,
// unk fusing, invalid UTF-8). Expected values follow the Hugging Face tokenizers test suite.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/decoders.h"
#include "model/tokenizer/hf_tokenizer.h"
#include "model/tokenizer/normalizers.h"
#include "model/tokenizer/pre_tokenizers.h"
#include "model/tokenizer/utf8.h"
#include "tests/unit/tokenizer/test_paths.h"

namespace lychee::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> PreTokenize(const std::string& spec, const std::string& text,
                                     bool first_segment = true) {
  auto pre = MakePreTokenizer(nlohmann::json::parse(spec));
  EXPECT_TRUE(pre.ok()) << pre.status();
  std::vector<std::string> pieces = {text};
  if (pre.ok()) (*pre)->PreTokenize(pieces, first_segment);
  return pieces;
}

std::string SplitSpec(const std::string& behavior) {
  return R"({"type": "Split", "pattern": {"String": "-"}, "invert": false, "behavior": ")" +
         behavior + "\"}";
}

TEST(PreTokenizersTest, SplitBehaviours) {
  const std::string text = "the-final--countdown";
  EXPECT_THAT(PreTokenize(SplitSpec("Removed"), text), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(PreTokenize(SplitSpec("Isolated"), text),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(PreTokenize(SplitSpec("MergedWithPrevious"), text),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(PreTokenize(SplitSpec("MergedWithNext"), text),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(PreTokenize(SplitSpec("Contiguous"), text),
              ElementsAre("the", "-", "final", "--", "countdown"));
}

TEST(PreTokenizersTest, SplitInvertedRegex) {
  const std::string spec =
      R"({"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Removed", "invert": true})";
  EXPECT_THAT(PreTokenize(spec, "Hello, world!"), ElementsAre("Hello", "world"));
}

TEST(PreTokenizersTest, Metaspace) {
  const std::string always = R"({"type": "Metaspace", "replacement": "▁",
                                 "prepend_scheme": "always", "split": true})";
  EXPECT_THAT(PreTokenize(always, "Hey  friend"), ElementsAre("▁Hey", "▁", "▁friend"));
  EXPECT_THAT(PreTokenize(always, "Hey", /*first_segment=*/false), ElementsAre("▁Hey"));
  const std::string first = R"({"type": "Metaspace", "replacement": "▁",
                                "prepend_scheme": "first", "split": false})";
  EXPECT_THAT(PreTokenize(first, "Hey friend"), ElementsAre("▁Hey▁friend"));
  EXPECT_THAT(PreTokenize(first, "Hey friend", /*first_segment=*/false), ElementsAre("Hey▁friend"));
  const std::string never = R"({"type": "Metaspace", "prepend_scheme": "never", "split": false})";
  EXPECT_THAT(PreTokenize(never, " a"), ElementsAre("▁a"));
}

TEST(PreTokenizersTest, ByteLevelAndDigits) {
  EXPECT_THAT(PreTokenize(R"({"type": "ByteLevel", "add_prefix_space": true,
                              "use_regex": true})",
                          "Hello my\nfriend"),
              ElementsAre("ĠHello", "Ġmy", "Ċ", "friend"));
  EXPECT_THAT(PreTokenize(R"({"type": "ByteLevel", "add_prefix_space": false,
                              "use_regex": false})",
                          "é "),
              ElementsAre("Ã©Ġ"));
  EXPECT_THAT(PreTokenize(R"({"type": "Digits", "individual_digits": true})", "a123"),
              ElementsAre("a", "1", "2", "3"));
  EXPECT_THAT(PreTokenize(R"({"type": "Digits", "individual_digits": false})", "a123b"),
              ElementsAre("a", "123", "b"));
}

std::string Normalize(const std::string& spec, const std::string& text) {
  auto normalizer = MakeNormalizer(nlohmann::json::parse(spec));
  EXPECT_TRUE(normalizer.ok()) << normalizer.status();
  return normalizer.ok() ? (*normalizer)->Normalize(text) : "";
}

TEST(NormalizersTest, Basic) {
  EXPECT_EQ(Normalize(R"({"type": "NFC"})", "e\u0301"), "\u00e9");
  EXPECT_EQ(Normalize(R"({"type": "NFD"})", "\u00e9"), "e\u0301");
  EXPECT_EQ(Normalize(R"({"type": "NFKC"})", "ﬁ½"), "fi1⁄2");
  EXPECT_EQ(Normalize(R"({"type": "Lowercase"})", "ÀB"), "àb");
  EXPECT_EQ(Normalize(R"({"type": "Prepend", "prepend": "▁"})", ""), "");
  EXPECT_EQ(Normalize(R"({"type": "Prepend", "prepend": "▁"})", "a"), "▁a");
  EXPECT_EQ(
      Normalize(R"({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})", "a b  c"),
      "a▁b▁▁c");
  EXPECT_EQ(
      Normalize(R"({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})", "a b   c"),
      "a b c");
  EXPECT_EQ(Normalize(R"({"type": "Strip", "strip_left": true, "strip_right": false})", "  a  "),
            "a  ");
}

std::string DecodeTokens(const std::string& spec, std::vector<std::string> tokens) {
  auto decoder = MakeDecoder(nlohmann::json::parse(spec));
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  if (!decoder.ok()) return "";
  (*decoder)->DecodeChain(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return Utf8Lossy(out);
}

TEST(DecodersTest, Basic) {
  const std::string llama = R"({"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";
  EXPECT_EQ(DecodeTokens(llama, {"▁Hello", "<0xE4>", "<0xBD>", "<0xA0>", "▁!"}), "Hello你 !");
  EXPECT_EQ(DecodeTokens(llama, {"▁▁a"}), " a");
  EXPECT_EQ(DecodeTokens(llama, {"<0xE4>", "<0xBD>"}), "\uFFFD");
  EXPECT_EQ(
      DecodeTokens(R"({"type": "Metaspace", "prepend_scheme": "always"})", {"▁Hey", "▁friend"}),
      "Hey friend");
  EXPECT_EQ(DecodeTokens(R"({"type": "ByteLevel"})", {"ĠHello", "Ċ", "<think>"}),
            " Hello\n<think>");
}

TEST(AddedTokensTest, LstripRstripSingleWord) {
  AddedTokens added;
  added.Add({.id = 10, .content = "<mask>", .special = true, .lstrip = true});
  added.Add({.id = 11, .content = "<r>", .special = false, .rstrip = true});
  added.Add({.id = 12, .content = "ab", .single_word = true});
  auto texts = [](const std::vector<Segment>& segments) {
    std::vector<std::string> out;
    for (const Segment& s : segments) {
      out.push_back((s.id ? "#" + std::to_string(*s.id) + ":" : "") + std::string(s.text));
    }
    return out;
  };
  EXPECT_THAT(texts(added.Split("a  <mask> b")), ElementsAre("a", "#10:  <mask>", " b"));
  EXPECT_THAT(texts(added.Split("x<r>  y")), ElementsAre("x", "#11:<r>  ", "y"));
  EXPECT_THAT(texts(added.Split("ab cab ab")), ElementsAre("#12:ab", " cab ", "#12:ab"));
}

std::unique_ptr<BpeModel> Bpe(const std::string& spec) {
  auto model = BpeModel::FromJson(nlohmann::json::parse(spec));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::vector<int32_t> Tokenize(const BpeModel& model, const std::string& piece) {
  std::vector<int32_t> ids;
  model.Tokenize(piece, ids);
  return ids;
}

TEST(BpeModelTest, MergesIgnoreMergesUnkAndByteFallback) {
  const std::string vocab = R"("vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "abb": 4, "bb": 5,
                                         "<0x63>": 6})";
  // "bb" ranks first, so "abb" becomes a + bb and never reaches the "abb" token.
  auto model = Bpe(R"({"type": "BPE", )" + vocab + R"(, "merges": [["b", "b"], ["a", "b"]],
                       "unk_token": "<unk>", "fuse_unk": true})");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(Tokenize(*model, "abb"), (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(Tokenize(*model, "abab"), (std::vector<int32_t>{3, 3}));
  EXPECT_EQ(Tokenize(*model, "xya"), (std::vector<int32_t>{0, 1}));  // Fused unk.
  // ignore_merges: a word that is in the vocabulary is taken whole.
  auto ignore = Bpe(R"({"type": "BPE", )" + vocab + R"(, "merges": ["b b", "a b"],
                        "ignore_merges": true})");
  ASSERT_NE(ignore, nullptr);
  EXPECT_EQ(Tokenize(*ignore, "abb"), (std::vector<int32_t>{4}));
  // byte_fallback: "c" has no token but its byte does; "x" has neither and no unk → dropped.
  auto fallback = Bpe(R"({"type": "BPE", )" + vocab + R"(, "merges": [], "byte_fallback": true})");
  ASSERT_NE(fallback, nullptr);
  EXPECT_EQ(Tokenize(*fallback, "cax"), (std::vector<int32_t>{6, 1}));
}

TEST(Utf8Test, LossyAndIncomplete) {
  EXPECT_EQ(Utf8Lossy("a\xE4\xBD"
                      "b"),
            "a\uFFFDb");
  EXPECT_EQ(Utf8Lossy("\xFF\xFE"), "\uFFFD\uFFFD");
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // Surrogates are invalid.
  EXPECT_EQ(Utf8Lossy("你好"), "你好");
  EXPECT_TRUE(EndsWithIncompleteUtf8("a\xE4\xBD"));
  EXPECT_FALSE(EndsWithIncompleteUtf8("a\xE4\xBD\xA0"));
  EXPECT_FALSE(EndsWithIncompleteUtf8("a\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));  // Overlong.
  EXPECT_TRUE(IsValidUtf8("👩‍💻"));
}

TEST(InvalidInputTest, EncodeRepairsInvalidUtf8) {
  for (const std::string& dir :
       {::lychee::testing::kLlama3Dir, ::lychee::testing::kQwen3Dir, ::lychee::testing::kMistralDir,
        ::lychee::testing::kLlama2SpmDir, ::lychee::testing::kStoriesDir}) {
    auto tokenizer = Tokenizer::FromDirectory(dir);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    const std::string bad = std::string("ok \xFF\xFE x \xE4\xBD") + '\0' + "end";
    const std::vector<int32_t> ids = (*tokenizer)->Encode(bad, false);
    EXPECT_FALSE(ids.empty()) << dir;
    const std::string text = (*tokenizer)->Decode(ids, true);
    EXPECT_TRUE(IsValidUtf8(text)) << dir;
    EXPECT_NE(text.find("end"), std::string::npos) << dir << ": " << text;
  }
}

}  // namespace
}  // namespace lychee::tokenizer_internal
