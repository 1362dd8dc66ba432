// SPDX-License-Identifier: Apache-2.0
// End-to-end checks of the lychee-generate binary on the embedded stories260K model (popen;
// LYCHEE_BIN_DIR comes from the test helper). The greedy texts are what the forward pass produces
// once cpu_model_stories_test has shown it matches the reference logits and ids.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/file.h"
#include "nlohmann/json.hpp"

namespace lychee {
namespace {

struct Outcome {
  int exit_code = -1;
  std::string out;  // stdout (and stderr when asked)
};

std::string Binary() {
  const char* dir = std::getenv("LYCHEE_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/lychee-generate";
}

// Runs lychee-generate with `args` (already shell-quoted).
Outcome Generate(const std::string& args, bool merge_stderr = false) {
  const std::string cmd = Binary() + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  Outcome o;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return o;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) o.out.append(buf, n);
  const int status = pclose(pipe);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

constexpr char kModel[] = "--model models/stories260K";

TEST(GenerateMainTest, GreedyContinuesTheStory) {
  const Outcome o = Generate(std::string(kModel) + " --prompt 'Once upon a time' --max-tokens 40");
  ASSERT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out,
            ", there was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball.");
}

TEST(GenerateMainTest, EmptyPromptStartsFromBosAndMatchesTheReferenceText) {
  auto ref = ReadFile("models/stories260K/reference/greedy_bos.json");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::string want = nlohmann::json::parse(*ref)["text"].get<std::string>();
  const Outcome o = Generate(std::string(kModel) + " --prompt '' --max-tokens 200");
  ASSERT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out, want);
}

TEST(GenerateMainTest, PrintsTimingToStderr) {
  const Outcome o =
      Generate(std::string(kModel) + " --prompt 'Once upon a time' --max-tokens 8", true);
  ASSERT_EQ(o.exit_code, 0);
  EXPECT_NE(o.out.find("[lychee-generate] 8 tokens in "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("prompt 5 tokens"), std::string::npos) << o.out;
}

TEST(GenerateMainTest, SeededSamplingIsReproducible) {
  const std::string args = std::string(kModel) +
                           " --prompt 'Once upon a time' --max-tokens 40 --temperature 0.9"
                           " --top-k 40 --top-p 0.95 --seed ";
  const Outcome a = Generate(args + "1234");
  const Outcome b = Generate(args + "1234");
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  // Some seed must leave the greedy path.
  const Outcome greedy =
      Generate(std::string(kModel) + " --prompt 'Once upon a time' --max-tokens 40");
  bool differs = false;
  for (int seed = 1; seed <= 4 && !differs; ++seed) {
    differs = Generate(args + std::to_string(seed)).out != greedy.out;
  }
  EXPECT_TRUE(differs);
}

TEST(GenerateMainTest, StopStringEndsGenerationAndIsNotPrinted) {
  const Outcome o = Generate(
      std::string(kModel) + " --prompt 'Once upon a time' --max-tokens 100 --stop Lily --stop XYZ");
  ASSERT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out, ", there was a little girl named ");
}

TEST(GenerateMainTest, BadModelDirectoryFails) {
  const Outcome o = Generate("--model /nonexistent/model --prompt hi", true);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_NE(o.out.find("/nonexistent/model"), std::string::npos) << o.out;
}

TEST(GenerateMainTest, DirectoryWithoutModelFails) {
  const Outcome o = Generate("--model tests --prompt hi", true);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_NE(o.out.find("cannot load model"), std::string::npos) << o.out;
}

TEST(GenerateMainTest, BadFlagsFail) {
  EXPECT_EQ(Generate("--prompt hi", true).exit_code, 1);  // no --model
  EXPECT_EQ(Generate(std::string(kModel) + " --no-such-flag", true).exit_code, 1);
  EXPECT_EQ(Generate(std::string(kModel) + " --max-tokens -3", true).exit_code, 1);
  EXPECT_EQ(Generate(std::string(kModel) + " --temperature abc", true).exit_code, 1);
  EXPECT_EQ(Generate(std::string(kModel) + " --top-p 0", true).exit_code, 1);
}

TEST(GenerateMainTest, ChatFallsBackToABuiltInTemplate) {
  // stories260K ships no chat template: the prompt is rendered with built-in ChatML.
  const Outcome o = Generate(std::string(kModel) +
                                 " --chat --system 'You tell stories.' --prompt 'Tell me a story'"
                                 " --max-tokens 10",
                             true);
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_NE(o.out.find("using built-in chatml"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("[lychee-generate] 10 tokens in "), std::string::npos) << o.out;
  const Outcome named = Generate(
      std::string(kModel) + " --chat --chat-template mistral --prompt hi --max-tokens 4", true);
  EXPECT_EQ(named.exit_code, 0) << named.out;
  EXPECT_EQ(named.out.find("using built-in chatml"), std::string::npos) << named.out;
  EXPECT_EQ(
      Generate(std::string(kModel) + " --chat --chat-template nope --prompt hi", true).exit_code,
      1);
  EXPECT_EQ(Generate(std::string(kModel) + " --system hi --prompt hi", true).exit_code, 1);
}

TEST(GenerateMainTest, MaxTokensZeroPrintsNothing) {
  const Outcome o = Generate(std::string(kModel) + " --prompt 'Once' --max-tokens 0");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out, "");
}

}  // namespace
}  // namespace lychee
