// SPDX-License-Identifier: Apache-2.0
// Built-in fallback templates and loading templates from model directories.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "model/chat_template/chat_template.h"

namespace lychee {
namespace {

namespace fs = std::filesystem;

const nlohmann::json kConversation = nlohmann::json::array({
    {{"role", "system"}, {"content", "Be brief."}},
    {{"role", "user"}, {"content", "Hi"}},
    {{"role", "assistant"}, {"content", "Hello!"}},
    {{"role", "user"}, {"content", "Again"}},
});

std::string Render(const std::string& name, const nlohmann::json& messages, bool gen) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::BuiltIn(name);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return "";
  absl::StatusOr<std::string> r = t->Render(messages, gen);
  if (!r.ok()) return "ERROR: " + std::string(r.status().message());
  return *r;
}

TEST(BuiltInTemplatesTest, Llama3) {
  EXPECT_EQ(Render("llama3", kConversation, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(BuiltInTemplatesTest, ChatMl) {
  EXPECT_EQ(Render("chatml", kConversation, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n");
  EXPECT_EQ(Render("chatml", nlohmann::json::array({{{"role", "user"}, {"content", "x"}}}), true),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
}

TEST(BuiltInTemplatesTest, Mistral) {
  EXPECT_EQ(Render("mistral", kConversation, true),
            "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Again [/INST]");
  EXPECT_EQ(Render("mistral",
                   nlohmann::json::array({{{"role", "user"}, {"content", "a"}},
                                          {{"role", "user"}, {"content", "b"}}}),
                   true),
            "ERROR: Conversation roles must alternate user/assistant/user/assistant/...");
}

TEST(BuiltInTemplatesTest, UnknownNameIsNotFound) {
  EXPECT_EQ(ChatTemplate::BuiltIn("vicuna").status().code(), absl::StatusCode::kNotFound);
}

// The built-ins are the same text the golden generator renders through transformers.
TEST(BuiltInTemplatesTest, SourcesMatchGoldenTemplateFiles) {
  for (const char* name : {"llama3", "chatml", "mistral"}) {
    std::ifstream in(std::string("tests/golden/chat_template/templates/") + name + ".jinja");
    ASSERT_TRUE(in) << name;
    std::stringstream ss;
    ss << in.rdbuf();
    absl::StatusOr<ChatTemplate> t = ChatTemplate::BuiltIn(name);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->source(), ss.str()) << name;
  }
}

class ModelDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lychee_chat_template_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

TEST_F(ModelDirectoryTest, StringTemplateAndTokenObjects) {
  Write("tokenizer_config.json",
        R"({"chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
            "bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>"})");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDirectory(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> r =
      t->Render(nlohmann::json::array({{{"role", "user"}, {"content", "x"}}}), false);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "<B>x<E>");
}

TEST_F(ModelDirectoryTest, NamedTemplatesUseDefault) {
  Write("tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "D"}]})");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDirectory(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->source(), "D");
}

TEST_F(ModelDirectoryTest, JinjaFile) {
  Write("tokenizer_config.json", R"({"eos_token": "<E>"})");
  Write("chat_template.jinja", "{{ eos_token }}\n");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDirectory(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> r = t->Render(nlohmann::json::array(), false);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "<E>");
}

TEST_F(ModelDirectoryTest, MissingTemplateIsNotFound) {
  Write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  EXPECT_EQ(ChatTemplate::FromModelDirectory(dir_.string()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ChatTemplate::FromModelDirectory((dir_ / "nope").string()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelDirectoryTest, BrokenConfigIsAnError) {
  Write("tokenizer_config.json", "{not json");
  EXPECT_EQ(ChatTemplate::FromModelDirectory(dir_.string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write("tokenizer_config.json", R"({"chat_template": "{% if %}"})");
  EXPECT_EQ(ChatTemplate::FromModelDirectory(dir_.string()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lychee
