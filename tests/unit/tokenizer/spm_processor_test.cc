// SPDX-License-Identifier: Apache-2.0
// SpmProcessor (our SentencePiece BPE encoder) against ids recorded from the sentencepiece
// library (tools/make_spm_golden.py) on Llama 2's model and on cut-down variants that switch on
// what Llama 2 leaves off; plus the model reader's errors on malformed and unsupported files.
#include "model/tokenizer/spm_processor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/file.h"
#include "tests/unit/tokenizer/test_paths.h"

namespace lychee::tokenizer_internal {
namespace {

TEST(SpmProcessorTest, MatchesSentencePieceLibrary) {
  auto golden = ReadFile(::lychee::testing::kGoldenDir + "/spm-differential.json");
  ASSERT_TRUE(golden.ok()) << golden.status();
  const nlohmann::json root = nlohmann::json::parse(*golden);
  ASSERT_GE(root["models"].size(), 4u);
  for (const nlohmann::json& model : root["models"]) {
    const std::string name = model["name"];
    auto sp = SpmProcessor::Load(model["model"].get<std::string>());
    ASSERT_TRUE(sp.ok()) << name << ": " << sp.status();
    EXPECT_EQ((*sp)->size(), model["size"].get<int>()) << name;
    EXPECT_EQ((*sp)->bos_id(), model["bos_id"].get<int>()) << name;
    EXPECT_EQ((*sp)->eos_id(), model["eos_id"].get<int>()) << name;
    EXPECT_EQ((*sp)->unk_id(), model["unk_id"].get<int>()) << name;
    EXPECT_EQ((*sp)->pad_id(), model["pad_id"].get<int>()) << name;
    int matched = 0;
    for (const nlohmann::json& c : model["cases"]) {
      const std::string text = c["text"];
      const std::vector<int> want = c["ids"];
      const std::vector<int> got = (*sp)->Encode(text);
      EXPECT_EQ(nlohmann::json(got).dump(), nlohmann::json(want).dump())
          << name << ": " << nlohmann::json(text).dump();
      if (got == want) ++matched;
    }
    std::cout << name << ": " << matched << "/" << model["cases"].size() << " match\n";
  }
}

TEST(SpmProcessorTest, Lookups) {
  auto sp = SpmProcessor::Load(::lychee::testing::kLlama2SpmDir + "/tokenizer.model");
  ASSERT_TRUE(sp.ok()) << sp.status();
  const SpmProcessor& p = **sp;
  EXPECT_EQ(p.size(), 32000);
  EXPECT_EQ(p.IdToPiece(1), "<s>");
  EXPECT_EQ(p.IdToPiece(3), "<0x00>");
  EXPECT_EQ(p.IdToPiece(32000), "");
  EXPECT_EQ(p.IdToPiece(-1), "");
  EXPECT_EQ(p.PieceToId("<unk>"), 0);
  EXPECT_EQ(p.PieceToId("\xe2\x96\x81the"), 278);
  EXPECT_EQ(p.PieceToId("no such piece"), -1);
  EXPECT_TRUE(p.IsUnknown(0));
  EXPECT_TRUE(p.IsControl(1) && p.IsControl(2) && !p.IsControl(0) && !p.IsControl(278));
  EXPECT_TRUE(p.IsByte(3) && p.IsByte(258) && !p.IsByte(259) && !p.IsByte(-5));
  // Invalid UTF-8: each bad byte becomes U+FFFD (a piece in Llama 2), as in the library.
  EXPECT_EQ(p.Encode("a\xff"), (std::vector<int>{263, 30140}));
}

// A protobuf writer for hand-made models.
std::string Varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Int(int field, int64_t v) {
  return Varint(static_cast<uint64_t>(field) << 3) + Varint(static_cast<uint64_t>(v));
}
std::string Bytes(int field, const std::string& s) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(s.size()) + s;
}
std::string Piece(const std::string& piece, float score, int type) {
  std::string bits(4, '\0');
  std::memcpy(bits.data(), &score, 4);  // Little-endian hosts only, like the test machines.
  return Bytes(1, Bytes(1, piece) + Varint(2 << 3 | 5) + bits + Int(3, type));
}
// unk, <s>, </s>, then "a", "b", "ab"; BPE; spaces kept as spaces, no dummy prefix.
std::string SmallModel(int model_type = 2, const std::string& extra_pieces = "",
                       const std::string& extra_trainer = "",
                       const std::string& extra_normalizer = "") {
  return Piece("<unk>", 0, 2) + Piece("<s>", 0, 3) + Piece("</s>", 0, 3) + Piece("a", -1, 1) +
         Piece("b", -2, 1) + Piece("ab", -3, 1) + extra_pieces +
         Bytes(2, Int(3, model_type) + Int(40, 0) + Int(43, -1) + extra_trainer) +
         Bytes(3, Bytes(1, "identity") + Int(3, 0) + extra_normalizer) +
         Bytes(99, "unknown field") + Int(100, 7);
}

TEST(SpmProcessorTest, HandMadeModel) {
  auto sp = SpmProcessor::FromSerialized(SmallModel());
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ((*sp)->Encode("abab"), (std::vector<int>{5, 5}));
  // No byte fallback: a run of unknown characters is one unk.
  EXPECT_EQ((*sp)->Encode("ba  cab"), (std::vector<int>{4, 3, 0, 5}));
  EXPECT_EQ((*sp)->bos_id(), 1);
  EXPECT_EQ((*sp)->pad_id(), -1);
}

void ExpectError(const std::string& bytes, absl::StatusCode code, const std::string& needle) {
  auto sp = SpmProcessor::FromSerialized(bytes);
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.status().code(), code) << sp.status();
  EXPECT_NE(std::string(sp.status().message()).find(needle), std::string::npos) << sp.status();
}

TEST(SpmProcessorTest, UnsupportedModels) {
  ExpectError(SmallModel(1), absl::StatusCode::kUnimplemented, "model_type UNIGRAM");
  ExpectError(SmallModel(4), absl::StatusCode::kUnimplemented, "model_type CHAR");
  ExpectError(SmallModel(2, "", "", Bytes(2, "\x01\x02")), absl::StatusCode::kUnimplemented,
              "precompiled_charsmap");
  ExpectError(SmallModel(2, "", Int(24, 1)), absl::StatusCode::kUnimplemented,
              "treat_whitespace_as_suffix");
}

TEST(SpmProcessorTest, InvalidModels) {
  using absl::StatusCode::kInvalidArgument;
  ExpectError(SmallModel(2, Piece("a", 0, 1)), kInvalidArgument, "defined twice");
  ExpectError(SmallModel(2, Piece("<0x41>", 0, 6)), kInvalidArgument, "byte_fallback");
  ExpectError(SmallModel(2, Piece("<0x4g>", 0, 6), Int(35, 1)), kInvalidArgument, "<0xXX>");
  ExpectError(SmallModel(2, Piece("x", 0, 9)), kInvalidArgument, "type 9");
  ExpectError(SmallModel(2, Piece("", 0, 1)), kInvalidArgument, "empty");
  ExpectError(SmallModel(2, Piece("<unk2>", 0, 2)), kInvalidArgument, "more than one unknown");
  ExpectError(Bytes(2, Int(3, 2)), kInvalidArgument, "no pieces");
  ExpectError(Piece("a", 0, 1) + Bytes(2, Int(3, 2)), kInvalidArgument, "no unknown piece");
  // Wire-format damage.
  ExpectError("definitely not a protobuf", kInvalidArgument, "malformed protobuf");
  ExpectError(Varint(1 << 3 | 2) + Varint(100) + "short", kInvalidArgument, "runs past the end");
  ExpectError(std::string(11, '\xff'), kInvalidArgument, "varint");
  ExpectError(Varint(0), kInvalidArgument, "field number");
  ExpectError(Int(1, 5), kInvalidArgument, "field 1 has wire type 0");  // Must be a message.
  ExpectError(Bytes(1, Bytes(2, "x")), kInvalidArgument, "pieces[0]");  // score must be fixed32.
  ExpectError(Varint(7 << 3 | 6), kInvalidArgument, "wire type");
  ExpectError(Varint(7 << 3 | 3), kInvalidArgument, "groups");
}

// Truncated and corrupted copies of a real model either load or fail; none may crash, and what
// loads must still encode.
TEST(SpmProcessorTest, DamagedFilesNeverCrash) {
  auto file = ReadFile(::lychee::testing::kLlama2SpmDir + "/tokenizer.model");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string& model = *file;
  std::mt19937 rng(7);
  int loaded = 0;
  for (int i = 0; i < 300; ++i) {
    std::string damaged = model;
    if (i % 2 == 0) {
      damaged.resize(std::uniform_int_distribution<size_t>(0, model.size() - 1)(rng));
    } else {
      for (int k = 0; k < 1 + i % 5; ++k) {
        const size_t pos = std::uniform_int_distribution<size_t>(0, model.size() - 1)(rng);
        damaged[pos] = static_cast<char>(rng());
      }
    }
    auto sp = SpmProcessor::FromSerialized(damaged);
    if (!sp.ok()) continue;
    ++loaded;
    (*sp)->Encode("Hello world, 日本語 🦙");
  }
  std::cout << loaded << "/300 damaged models still loaded\n";
}

}  // namespace
}  // namespace lychee::tokenizer_internal
