// SPDX-License-Identifier: Apache-2.0
// Integration test of the lychee-tokenize binary (build/bin, found through LYCHEE_BIN_DIR).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/unit/tokenizer/test_paths.h"

namespace lychee {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs lychee-tokenize with `args`, feeding `input` on stdin.
Result RunTool(const std::string& args, const std::string& input) {
  const char* bin_dir = std::getenv("LYCHEE_BIN_DIR");
  const std::string bin =
      std::string(bin_dir != nullptr ? bin_dir : "build/bin") + "/lychee-tokenize";
  const std::filesystem::path tmp = std::filesystem::path(::testing::TempDir());
  const std::string in_path = (tmp / "lychee_tokenize_in").string();
  const std::string err_path = (tmp / "lychee_tokenize_err").string();
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string command =
      "'" + bin + "' " + args + " < '" + in_path + "' 2> '" + err_path + "'";
  Result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = ReadAll(err_path);
  return result;
}

const std::string kMistral = "--model " + ::lychee::testing::kMistralDir;

TEST(TokenizeCliTest, EncodeAddsBos) {
  const Result r = RunTool(kMistral, "Hello world!");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[1,22557,1526,28808]\n");
}

TEST(TokenizeCliTest, EncodeNoSpecial) {
  const Result r = RunTool(kMistral + " --no-special", "Hello world!");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[22557,1526,28808]\n");
}

TEST(TokenizeCliTest, EncodeQwenChatMarkup) {
  const Result r =
      RunTool("--model " + ::lychee::testing::kQwen3Dir + " --no-special", "<|im_start|>user");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[151644,872]\n");
}

TEST(TokenizeCliTest, Decode) {
  Result r = RunTool(kMistral + " --decode", "[1, 22557, 1526, 28808]");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<s> Hello world!");
  r = RunTool(kMistral + " --decode --no-special", "[1, 22557, 1526, 28808]");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world!");
}

TEST(TokenizeCliTest, StoriesModelFolderRoundTrip) {
  const std::string model = "--model " + ::lychee::testing::kStoriesDir;
  const Result encoded = RunTool(model, "Once upon a time");
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  const Result decoded = RunTool(model + " --decode --no-special", encoded.out);
  EXPECT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(decoded.out, "Once upon a time");
}

TEST(TokenizeCliTest, BadDecodeInput) {
  for (const char* input : {"not json", "{\"a\": 1}", "[1, \"x\"]", "[1, -3]", "[99999999]"}) {
    const Result r = RunTool(kMistral + " --decode", input);
    EXPECT_EQ(r.exit_code, 1) << input;
    EXPECT_NE(r.err.find("lychee-tokenize:"), std::string::npos) << input << ": " << r.err;
    EXPECT_EQ(r.out, "") << input;
  }
}

TEST(TokenizeCliTest, InvalidUtf8Input) {
  const Result r = RunTool(kMistral, "ok \xFF\xFE");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not valid UTF-8"), std::string::npos) << r.err;
}

TEST(TokenizeCliTest, MissingModel) {
  const Result r = RunTool("--model /nonexistent/model", "hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
}

TEST(TokenizeCliTest, MissingModelFlag) {
  const Result r = RunTool("", "hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lychee
