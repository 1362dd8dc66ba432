// SPDX-License-Identifier: Apache-2.0
// SafetensorsArchive: files built by the test itself, sharded indexes, dtype conversion, every
// malformed case, and a quick fuzz (truncation at every length, header byte flips) that must only
// ever produce errors, never crashes.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "tests/unit/model/safetensors_builder.h"

namespace lychee {
namespace {

using testing_util::SafetensorsBuilder;
using testing_util::WriteBytes;

std::string TempPath(const std::string& name) { return testing::TempDir() + "/st_" + name; }

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  WriteBytes(path, bytes);
  return path;
}

void ExpectErrorMentions(const absl::Status& status, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(status.ok());
  const std::string message(status.message());
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << message << " lacks " << part;
  }
}

SafetensorsBuilder TwoTensors() {
  SafetensorsBuilder b;
  b.AddF32("a", {2, 3}, {0, 1, 2, 3, 4, 5});
  b.Add<int32_t>("ids", "I32", {3}, {7, -8, 9});
  b.Metadata({{"format", "pt"}});
  return b;
}

TEST(SafetensorsTest, ReadsF32AndIntegers) {
  const std::string path = WriteTemp("basic.safetensors", TwoTensors().Bytes());
  auto archive = SafetensorsArchive::Open(path);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->Names(), (std::vector<std::string>{"a", "ids"}));
  EXPECT_TRUE(archive->Contains("a"));
  EXPECT_FALSE(archive->Contains("__metadata__"));
  auto view = archive->Find("a");
  ASSERT_TRUE(view.ok());
  EXPECT_EQ((*view)->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*view)->NumElements(), 6);
  EXPECT_EQ((*view)->nbytes, 24u);
  EXPECT_EQ((*view)->file, path);
  auto a = archive->ReadF32("a", {2, 3});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  auto ids = archive->ReadI64("ids");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int64_t>{7, -8, 9}));
  // Wrong kind of read, wrong shape, missing tensor: errors naming file and tensor.
  ExpectErrorMentions(archive->ReadF32("ids").status(), {path, "ids", "I32"});
  ExpectErrorMentions(archive->ReadI64("a").status(), {path, "a", "F32"});
  ExpectErrorMentions(archive->ReadF32("a", {3, 2}).status(), {path, "`a`", "[2, 3]", "[3, 2]"});
  auto missing = archive->ReadF32("b");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  ExpectErrorMentions(missing.status(), {path, "`b`"});
}

TEST(SafetensorsTest, ReadsI64AndEmptyTensors) {
  SafetensorsBuilder b;
  b.Add<int64_t>("big", "I64", {2}, {int64_t{1} << 40, -1});
  b.AddF32("empty", {0, 4}, {});
  b.AddF32("scalar", {}, {3.5f});
  auto archive = SafetensorsArchive::Open(WriteTemp("i64.safetensors", b.Bytes()));
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(*archive->ReadI64("big"), (std::vector<int64_t>{int64_t{1} << 40, -1}));
  EXPECT_TRUE(archive->ReadF32("empty")->empty());
  EXPECT_EQ(*archive->ReadF32("scalar"), std::vector<float>{3.5f});
}

TEST(SafetensorsTest, HalfConversionIsExact) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7c01)));  // signalling payload stays NaN
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
}

TEST(SafetensorsTest, BFloat16ConversionIsExact) {
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc040), -3.0f);
  EXPECT_EQ(BFloat16ToFloat(0x0001), std::ldexp(1.0f, -133));  // subnormal
  EXPECT_EQ(BFloat16ToFloat(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BFloat16ToFloat(0xff80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7fc0)));
}

TEST(SafetensorsTest, ReadF32ConvertsHalfAndBFloat16Tensors) {
  SafetensorsBuilder b;
  b.Add<uint16_t>("h", "F16", {4}, {0x3c00, 0x0001, 0xfc00, 0x7e00});
  b.Add<uint16_t>("bf", "BF16", {2, 2}, {0x3f80, 0xc040, 0x7f80, 0x0000});
  auto archive = SafetensorsArchive::Open(WriteTemp("half.safetensors", b.Bytes()));
  ASSERT_TRUE(archive.ok()) << archive.status();
  auto h = archive->ReadF32("h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ((*h)[0], 1.0f);
  EXPECT_EQ((*h)[1], std::ldexp(1.0f, -24));
  EXPECT_EQ((*h)[2], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan((*h)[3]));
  auto bf = archive->ReadF32("bf", {2, 2});
  ASSERT_TRUE(bf.ok()) << bf.status();
  EXPECT_EQ(*bf, (std::vector<float>{1.0f, -3.0f, std::numeric_limits<float>::infinity(), 0.0f}));
}

TEST(SafetensorsTest, UnsupportedDTypeNamesDTypeAndTensor) {
  SafetensorsBuilder b;
  b.AddRaw("q", "F8_E4M3", {2}, {1, 2});
  const std::string path = WriteTemp("f8.safetensors", b.Bytes());
  ExpectErrorMentions(SafetensorsArchive::Open(path).status(), {path, "`q`", "F8_E4M3"});
}

TEST(SafetensorsTest, MalformedHeadersAreErrorsNamingFileAndTensor) {
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> corrupt;
    std::vector<std::string> mentions;
  };
  const std::vector<Case> cases = {
      {"offsets past end",
       [](auto& h) {
         h["a"]["data_offsets"] = {0, 1000};
       },
       {"`a`", "1000"}},
      {"offsets reversed",
       [](auto& h) {
         h["a"]["data_offsets"] = {8, 4};
       },
       {"`a`"}},
      {"size mismatch",
       [](auto& h) {
         h["a"]["shape"] = {2, 2};
       },
       {"`a`", "needs 16"}},
      {"negative dim",
       [](auto& h) {
         h["a"]["shape"] = {-2, 3};
       },
       {"`a`", "shape"}},
      {"huge dims",
       [](auto& h) {
         h["a"]["shape"] = {1ull << 62, 1ull << 62};
       },
       {"overflow"}},
      {"no dtype", [](auto& h) { h["a"].erase("dtype"); }, {"`a`", "dtype"}},
      {"shape not array", [](auto& h) { h["a"]["shape"] = 6; }, {"`a`", "shape"}},
      {"offsets float",
       [](auto& h) {
         h["a"]["data_offsets"] = {0.0, 24.0};
       },
       {"data_offsets"}},
      {"entry not object", [](auto& h) { h["a"] = 5; }, {"`a`"}},
      {"metadata not object", [](auto& h) { h["__metadata__"] = 1; }, {"__metadata__"}},
  };
  for (const Case& c : cases) {
    SafetensorsBuilder b = TwoTensors();
    c.corrupt(b.header());
    const std::string path = WriteTemp("bad.safetensors", b.Bytes());
    auto archive = SafetensorsArchive::Open(path);
    EXPECT_EQ(archive.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    std::vector<std::string> parts = c.mentions;
    parts.push_back(path);
    for (const std::string& part : parts) {
      EXPECT_NE(archive.status().message().find(part), std::string::npos)
          << c.name << ": " << archive.status().message() << " lacks " << part;
    }
  }
}

TEST(SafetensorsTest, BadFramingIsAnError) {
  const SafetensorsBuilder b = TwoTensors();
  std::string too_long = b.Bytes();
  const uint64_t n = uint64_t{1} << 40;
  std::memcpy(too_long.data(), &n, 8);
  ExpectErrorMentions(SafetensorsArchive::Open(WriteTemp("long.safetensors", too_long)).status(),
                      {"header length"});
  std::string past_end = b.Bytes();
  const uint64_t m = past_end.size();
  std::memcpy(past_end.data(), &m, 8);
  ExpectErrorMentions(SafetensorsArchive::Open(WriteTemp("past.safetensors", past_end)).status(),
                      {"truncated"});
  ExpectErrorMentions(SafetensorsArchive::Open(WriteTemp("short.safetensors", "abc")).status(),
                      {"too short"});
  ExpectErrorMentions(
      SafetensorsArchive::Open(WriteTemp("json.safetensors", b.Assemble("{\"a\": ["))).status(),
      {"not valid JSON"});
  ExpectErrorMentions(
      SafetensorsArchive::Open(WriteTemp("arr.safetensors", b.Assemble("[1]"))).status(),
      {"object"});
  ExpectErrorMentions(
      SafetensorsArchive::Open(WriteTemp("deep.safetensors", b.Assemble(std::string(100000, '['))))
          .status(),
      {"nested"});
  EXPECT_EQ(SafetensorsArchive::Open(TempPath("absent.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
}

// Sharded checkpoint: model.safetensors.index.json → two shards in one directory.
std::string MakeShardedDir(const std::string& name, const nlohmann::json& weight_map) {
  const std::string dir = TempPath(name);
  ::mkdir(dir.c_str(), 0755);
  SafetensorsBuilder s1, s2;
  s1.AddF32("x", {2}, {1, 2});
  s2.AddF32("y", {1}, {3});
  WriteBytes(dir + "/model-00001-of-00002.safetensors", s1.Bytes());
  WriteBytes(dir + "/model-00002-of-00002.safetensors", s2.Bytes());
  const nlohmann::json index = {{"metadata", {{"total_size", 12}}}, {"weight_map", weight_map}};
  WriteBytes(dir + "/model.safetensors.index.json", index.dump());
  return dir;
}

TEST(SafetensorsTest, OpensShardedIndexAndDirectory) {
  const std::string dir = MakeShardedDir("sharded", {{"x", "model-00001-of-00002.safetensors"},
                                                     {"y", "model-00002-of-00002.safetensors"}});
  for (const std::string& path : {dir, dir + "/model.safetensors.index.json"}) {
    auto archive = SafetensorsArchive::Open(path);
    ASSERT_TRUE(archive.ok()) << archive.status();
    EXPECT_EQ(archive->Names(), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(*archive->ReadF32("y"), std::vector<float>{3});
    EXPECT_NE((*archive->Find("y"))->file.find("model-00002-of-00002"), std::string::npos);
  }
}

TEST(SafetensorsTest, ShardedIndexErrors) {
  const std::string wrong = MakeShardedDir("wrong", {{"x", "model-00002-of-00002.safetensors"},
                                                     {"y", "model-00002-of-00002.safetensors"}});
  ExpectErrorMentions(SafetensorsArchive::Open(wrong).status(), {"`x`", "model-00002-of-00002"});
  const std::string absent = MakeShardedDir(
      "absent", {{"x", "model-00001-of-00002.safetensors"}, {"z", "missing.safetensors"}});
  EXPECT_EQ(SafetensorsArchive::Open(absent).status().code(), absl::StatusCode::kNotFound);
  const std::string listed = MakeShardedDir("listed", {{"x", "model-00001-of-00002.safetensors"},
                                                       {"q", "model-00001-of-00002.safetensors"}});
  ExpectErrorMentions(SafetensorsArchive::Open(listed).status(), {"`q`", "absent"});
  const std::string bad_map = MakeShardedDir("badmap", {{"x", 3}});
  ExpectErrorMentions(SafetensorsArchive::Open(bad_map).status(), {"weight_map.x"});
  // The same tensor in two shards.
  const std::string dup = TempPath("dup");
  ::mkdir(dup.c_str(), 0755);
  SafetensorsBuilder s;
  s.AddF32("x", {1}, {1});
  WriteBytes(dup + "/a.safetensors", s.Bytes());
  WriteBytes(dup + "/b.safetensors", s.Bytes());
  WriteBytes(
      dup + "/model.safetensors.index.json",
      nlohmann::json{{"weight_map", {{"x", "a.safetensors"}, {"y", "b.safetensors"}}}}.dump());
  ExpectErrorMentions(SafetensorsArchive::Open(dup).status(), {"`x`", "also defined"});
  const std::string empty = TempPath("emptydir");
  ::mkdir(empty.c_str(), 0755);
  EXPECT_EQ(SafetensorsArchive::Open(empty).status().code(), absl::StatusCode::kNotFound);
}

// Opens and reads everything; any outcome but a crash is acceptable.
void OpenAndReadAll(const std::string& path) {
  auto archive = SafetensorsArchive::Open(path);
  if (!archive.ok()) {
    EXPECT_FALSE(archive.status().message().empty());
    return;
  }
  for (const std::string& name : archive->Names()) {
    auto floats = archive->ReadF32(name);
    auto ints = archive->ReadI64(name);
    EXPECT_TRUE(floats.ok() || ints.ok()) << name;
  }
}

TEST(SafetensorsTest, FuzzTruncationAndByteFlipsNeverCrash) {
  SafetensorsBuilder b = TwoTensors();
  b.Add<uint16_t>("h", "F16", {2}, {0x3c00, 0x7e00});
  b.Add<uint16_t>("bf", "BF16", {1}, {0x3f80});
  const std::string valid = b.Bytes();
  const std::string path = TempPath("fuzz.safetensors");
  for (size_t len = 0; len < valid.size(); ++len) {
    WriteBytes(path, valid.substr(0, len));
    auto archive = SafetensorsArchive::Open(path);
    EXPECT_FALSE(archive.ok()) << "truncated to " << len;  // Every prefix is missing data.
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, valid.data(), 8);
  int opened = 0;
  for (size_t i = 0; i < 8 + header_len; ++i) {
    for (uint8_t mask : {0x01, 0x20, 0x80, 0xff}) {
      std::string bytes = valid;
      bytes[i] = static_cast<char>(bytes[i] ^ mask);
      WriteBytes(path, bytes);
      OpenAndReadAll(path);
      opened += SafetensorsArchive::Open(path).ok();
    }
  }
  EXPECT_GT(opened, 0);  // Some flips (e.g. inside a name) leave a valid file.
  std::remove(path.c_str());
}

}  // namespace
}  // namespace lychee
