// SPDX-License-Identifier: Apache-2.0
// Loading failures produce a clear absl::Status that names the file and the field, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace lychee {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test holding the given files.
class TokenizerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("lychee_tok_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& name, const std::string& contents) {
    std::ofstream(dir_ / name, std::ios::binary) << contents;
  }
  absl::Status LoadStatus() { return Tokenizer::FromDirectory(dir_.string()).status(); }

  fs::path dir_;
};

// A minimal valid byte-level BPE tokenizer.json with `model`, `pre` and `extra` spliced in.
std::string TokenizerJson(const std::string& model, const std::string& pre = "null",
                          const std::string& extra = "") {
  return R"({"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": )" + pre +
         R"(, "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": )" + model +
         extra + "}";
}

constexpr char kGoodModel[] =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 std::initializer_list<const char*> needles) {
  EXPECT_EQ(status.code(), code) << status;
  for (const char* needle : needles) {
    EXPECT_NE(std::string(status.message()).find(needle), std::string::npos)
        << "\"" << needle << "\" missing from: " << status;
  }
}

TEST_F(TokenizerErrorsTest, GoodMinimalTokenizerLoads) {
  Write("tokenizer.json", TokenizerJson(kGoodModel));
  auto tokenizer = Tokenizer::FromDirectory(dir_.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ((*tokenizer)->Decode({2, 1, 0, 7}, false), "abba");
}

TEST_F(TokenizerErrorsTest, MissingDirectory) {
  auto status = Tokenizer::FromDirectory((dir_ / "nope").string()).status();
  ExpectError(status, absl::StatusCode::kNotFound, {"nope", "does not exist"});
}

TEST_F(TokenizerErrorsTest, FileInsteadOfDirectory) {
  Write("tokenizer.json", TokenizerJson(kGoodModel));
  auto status = Tokenizer::FromDirectory((dir_ / "tokenizer.json").string()).status();
  ExpectError(status, absl::StatusCode::kInvalidArgument, {"tokenizer.json", "folder"});
}

TEST_F(TokenizerErrorsTest, NoTokenizerFiles) {
  ExpectError(LoadStatus(), absl::StatusCode::kNotFound, {"tokenizer.json", "tokenizer.model"});
}

TEST_F(TokenizerErrorsTest, MalformedJson) {
  Write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument,
              {"tokenizer.json", "malformed JSON"});
}

TEST_F(TokenizerErrorsTest, NotAnObject) {
  Write("tokenizer.json", "[1, 2, 3]");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "object"});
}

TEST_F(TokenizerErrorsTest, MissingModel) {
  Write("tokenizer.json", R"({"version": "1.0"})");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "\"model\""});
}

TEST_F(TokenizerErrorsTest, UnsupportedModelType) {
  Write("tokenizer.json", TokenizerJson(R"({"type": "Unigram", "vocab": []})"));
  ExpectError(LoadStatus(), absl::StatusCode::kUnimplemented,
              {"tokenizer.json", "\"model\"", "Unigram"});
}

TEST_F(TokenizerErrorsTest, MissingVocab) {
  Write("tokenizer.json", TokenizerJson(R"({"type": "BPE", "merges": []})"));
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "vocab"});
}

TEST_F(TokenizerErrorsTest, WrongFieldType) {
  Write("tokenizer.json",
        TokenizerJson(R"({"type": "BPE", "vocab": {"a": "zero"}, "merges": []})"));
  ExpectError(
      LoadStatus(), absl::StatusCode::kInvalidArgument,
      {"tokenizer.json", "\"model\"", "model.vocab[\"a\"] = \"zero\" is not an integer id"});
  // A float id is refused before any conversion (converting 5.5e97 to an integer was undefined
  // behaviour; found by the tokenizer_json fuzz target), and so is one past 2^24.
  Write("tokenizer.json",
        TokenizerJson(R"({"type": "BPE", "vocab": {"a": 5.5e97}, "merges": []})"));
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"is not an integer id"});
  Write("tokenizer.json",
        TokenizerJson(R"({"type": "BPE", "vocab": {"a": 18446744073709551615}, "merges": []})"));
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"is out of range"});
}

TEST_F(TokenizerErrorsTest, MergeWithUnknownToken) {
  Write("tokenizer.json",
        TokenizerJson(R"({"type": "BPE", "vocab": {"a": 0, "ab": 1}, "merges": ["a b"]})"));
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument,
              {"tokenizer.json", "merges[0]", "missing from the vocab"});
}

TEST_F(TokenizerErrorsTest, UnsupportedPreTokenizer) {
  Write("tokenizer.json", TokenizerJson(kGoodModel, R"({"type": "BertPreTokenizer"})"));
  ExpectError(LoadStatus(), absl::StatusCode::kUnimplemented,
              {"tokenizer.json", "pre_tokenizer", "BertPreTokenizer"});
}

TEST_F(TokenizerErrorsTest, BadRegex) {
  Write("tokenizer.json",
        TokenizerJson(kGoodModel, R"({"type": "Split", "pattern": {"Regex": "(unclosed"},
                                      "behavior": "Isolated", "invert": false})"));
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument,
              {"tokenizer.json", "pre_tokenizer", "(unclosed"});
}

TEST_F(TokenizerErrorsTest, UnsupportedPostProcessor) {
  std::string json = TokenizerJson(kGoodModel);
  const std::string from = "\"post_processor\": null";
  json.replace(json.find(from), from.size(), R"("post_processor": {"type": "BertProcessing"})");
  Write("tokenizer.json", json);
  ExpectError(LoadStatus(), absl::StatusCode::kUnimplemented,
              {"tokenizer.json", "post_processor", "BertProcessing"});
}

// Found by the tokenizer_json fuzz target (issue 15): a TemplateProcessing id past the
// vocabulary was accepted, and Encode then returned it as BOS.
TEST_F(TokenizerErrorsTest, PostProcessorIdOutsideTheVocabulary) {
  std::string json = TokenizerJson(kGoodModel);
  const std::string from = "\"post_processor\": null";
  const std::string processor = R"("post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A"}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [ID], "tokens": ["<s>"]}}})";
  for (const char* id : {"3", "2"}) {  // the vocabulary is a, b, ab: ids 0 to 2
    std::string with = json;
    std::string spec = processor;
    spec.replace(spec.find("ID"), 2, id);
    with.replace(with.find(from), from.size(), spec);
    Write("tokenizer.json", with);
    if (std::string(id) == "3") {
      ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument,
                  {"tokenizer.json", "post_processor", "<s>", "has id 3, outside the vocabulary"});
    } else {
      auto tokenizer = Tokenizer::FromDirectory(dir_.string());
      ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
      EXPECT_EQ((*tokenizer)->Encode("ab", true), (std::vector<int32_t>{2, 2}));
    }
  }
}

TEST_F(TokenizerErrorsTest, MalformedTokenizerConfig) {
  Write("tokenizer.json", TokenizerJson(kGoodModel));
  Write("tokenizer_config.json", "{oops");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer_config.json"});
}

TEST_F(TokenizerErrorsTest, ConfigTokenNotInVocab) {
  Write("tokenizer.json", TokenizerJson(kGoodModel));
  Write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument,
              {"tokenizer_config.json", "bos_token", "<s>"});
}

TEST_F(TokenizerErrorsTest, CorruptSentencePieceModel) {
  Write("tokenizer.model", "definitely not a protobuf");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer.model"});
}

TEST_F(TokenizerErrorsTest, EmptyTokenizerJson) {
  Write("tokenizer.json", "");
  ExpectError(LoadStatus(), absl::StatusCode::kInvalidArgument, {"tokenizer.json"});
}

}  // namespace
}  // namespace lychee
