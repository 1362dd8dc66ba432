// SPDX-License-Identifier: Apache-2.0
// ModelConfig parsing: each architecture's HF defaults, RoPE scaling variants, and every
// rejection naming its field and file.
#include "model/config.h"

#include <gtest/gtest.h>

#include <string>

#include "nlohmann/json.hpp"

namespace lychee {
namespace {

using Json = nlohmann::json;

Json Base(const std::string& model_type) {
  return Json{{"model_type", model_type},      {"hidden_size", 64},
              {"intermediate_size", 172},      {"num_hidden_layers", 2},
              {"num_attention_heads", 8},      {"vocab_size", 512},
              {"max_position_embeddings", 512}};
}

absl::StatusOr<ModelConfig> Parse(const Json& json) {
  return ParseModelConfig(json.dump(), "test/config.json");
}

// The error is InvalidArgument and its message names the file and every fragment given.
void ExpectError(const Json& json, std::initializer_list<std::string> fragments) {
  auto config = Parse(json);
  ASSERT_FALSE(config.ok()) << json.dump();
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(config.status().message());
  EXPECT_NE(message.find("test/config.json"), std::string::npos) << message;
  for (const std::string& fragment : fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos) << message << " lacks " << fragment;
  }
}

TEST(ConfigTest, LlamaDefaults) {
  auto c = Parse(Base("llama"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 8);  // defaults to num_attention_heads
  EXPECT_EQ(c->head_dim, 8);      // hidden / heads
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
}

TEST(ConfigTest, LlamaFieldsAndEosList) {
  Json j = Base("llama");
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 16;
  j["rope_theta"] = 500000.0;
  j["rms_norm_eps"] = 1e-5;
  j["tie_word_embeddings"] = true;
  j["attention_bias"] = true;
  j["bos_token_id"] = 128000;
  j["eos_token_id"] = {128001, 128008, 128009};
  j["torch_dtype"] = "bfloat16";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->o_proj_bias);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(ConfigTest, MistralSlidingWindow) {
  Json j = Base("mistral");
  j["sliding_window"] = 4096;
  j["eos_token_id"] = 2;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
  j["sliding_window"] = nullptr;  // Mistral v0.2+: no window.
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
  j.erase("sliding_window");  // MistralConfig's default.
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
}

TEST(ConfigTest, Qwen2HasQkvBiasAndIgnoresUnusedWindow) {
  Json j = Base("qwen2");
  j["num_key_value_heads"] = 2;
  j["sliding_window"] = 32768;
  j["use_sliding_window"] = false;
  j["tie_word_embeddings"] = true;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(ConfigTest, Qwen2PerLayerSlidingWindowIsRejected) {
  Json j = Base("qwen2");
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;
  ExpectError(j, {"use_sliding_window"});
  j["max_window_layers"] = 2;  // No layer reaches the window: fine.
  EXPECT_TRUE(Parse(j).ok());
}

TEST(ConfigTest, Qwen3HasQkNormAndHeadDim) {
  Json j = Base("qwen3");
  j["num_key_value_heads"] = 4;
  j["head_dim"] = 16;  // Not hidden / heads in Qwen3.
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 16);
  j.erase("head_dim");
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);  // Qwen3Config's default.
}

TEST(ConfigTest, RopeScalingLinearWithEitherKey) {
  for (const char* key : {"type", "rope_type"}) {
    Json j = Base("llama");
    j["rope_scaling"] = {{key, "linear"}, {"factor", 4.0}};
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLinear);
    EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  }
}

TEST(ConfigTest, RopeScalingLlama3) {
  Json j = Base("llama");
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  j["rope_scaling"].erase("low_freq_factor");
  ExpectError(j, {"rope_scaling.low_freq_factor"});
}

TEST(ConfigTest, RopeScalingNullOrDefaultIsNone) {
  Json j = Base("qwen2");
  j["rope_scaling"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  j["rope_scaling"] = {{"rope_type", "default"}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
}

TEST(ConfigTest, RopeParametersOfTransformersV5) {
  Json j = Base("llama");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 1e6}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLinear);
}

TEST(ConfigTest, UnsupportedRopeScalingNamesTypeAndValue) {
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    Json j = Base("qwen2");
    j["rope_scaling"] = {{"type", type}, {"factor", 4.0}};
    ExpectError(j, {"rope_scaling.rope_type", type});
  }
}

TEST(ConfigTest, MissingRequiredFieldsAreNamed) {
  for (const char* field : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size"}) {
    Json j = Base("llama");
    j.erase(field);
    ExpectError(j, {field});
  }
}

TEST(ConfigTest, RejectionsNameTheirField) {
  auto with = [](const char* key, Json value) {
    Json j = Base("llama");
    j[key] = std::move(value);
    return j;
  };
  ExpectError(with("hidden_act", "gelu"), {"hidden_act", "gelu"});
  ExpectError(with("mlp_bias", true), {"mlp_bias"});
  ExpectError(with("num_key_value_heads", 3), {"num_key_value_heads"});
  ExpectError(with("model_type", "gpt2"), {"model_type", "gpt2"});
  ExpectError(with("hidden_size", "64"), {"hidden_size"});
  ExpectError(with("hidden_size", -64), {"hidden_size"});
  ExpectError(with("num_attention_heads", 7), {"hidden_size"});  // 64 % 7 without head_dim
  ExpectError(with("tie_word_embeddings", 1), {"tie_word_embeddings"});
  ExpectError(with("rope_theta", "big"), {"rope_theta"});
  ExpectError(with("eos_token_id", "</s>"), {"eos_token_id"});
  ExpectError(with("rope_scaling", 3), {"rope_scaling"});
}

TEST(ConfigTest, BadJsonIsAnError) {
  auto c = ParseModelConfig("{\"model_type\": ", "x/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("x/config.json"), std::string::npos);
  EXPECT_FALSE(ParseModelConfig("[1, 2]", "x").ok());
}

TEST(ConfigTest, LoadsStories260K) {
  auto c = LoadModelConfig("models/stories260K");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(LoadModelConfig("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lychee
