// SPDX-License-Identifier: Apache-2.0
// LoadModelWeights: the embedded stories260K checkpoint, and tiny synthetic Qwen2/Qwen3/Llama
// checkpoints covering biases, q/k norms, tied and untied heads, and shape errors.
#include "model/weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>

#include "common/status.h"
#include "tests/unit/model/safetensors_builder.h"

namespace lychee {
namespace {

using testing_util::SafetensorsBuilder;

TEST(WeightsTest, LoadsStories260K) {
  auto config = LoadModelConfig("models/stories260K");
  ASSERT_TRUE(config.ok()) << config.status();
  auto archive = SafetensorsArchive::Open("models/stories260K");
  ASSERT_TRUE(archive.ok()) << archive.status();
  auto weights = LoadModelWeights(*archive, *config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  constexpr size_t kDim = 64, kLayers = 5, kHeads = 8, kKvHeads = 4, kHeadDim = 8, kVocab = 512,
                   kHidden = 172;
  EXPECT_EQ(weights->embed_tokens.size(), kVocab * kDim);
  ASSERT_EQ(weights->layers.size(), kLayers);
  for (const LayerWeights& layer : weights->layers) {
    EXPECT_EQ(layer.input_norm.size(), kDim);
    EXPECT_EQ(layer.wq.size(), kHeads * kHeadDim * kDim);
    EXPECT_EQ(layer.wk.size(), kKvHeads * kHeadDim * kDim);
    EXPECT_EQ(layer.wv.size(), kKvHeads * kHeadDim * kDim);
    EXPECT_EQ(layer.wo.size(), kDim * kHeads * kHeadDim);
    EXPECT_TRUE(layer.bq.empty() && layer.bk.empty() && layer.bv.empty() && layer.bo.empty());
    EXPECT_TRUE(layer.q_norm.empty() && layer.k_norm.empty());
    EXPECT_EQ(layer.post_attention_norm.size(), kDim);
    EXPECT_EQ(layer.w_gate.size(), kHidden * kDim);
    EXPECT_EQ(layer.w_up.size(), kHidden * kDim);
    EXPECT_EQ(layer.w_down.size(), kDim * kHidden);
  }
  EXPECT_EQ(weights->final_norm.size(), kDim);
  EXPECT_TRUE(weights->lm_head.empty());  // tied
  EXPECT_EQ(&weights->LmHead(), &weights->embed_tokens);
  // Real numbers, not zeros: the norms of a trained model are far from 0.
  const double norm_sum =
      std::accumulate(weights->final_norm.begin(), weights->final_norm.end(), 0.0);
  EXPECT_GT(std::abs(norm_sum), 1.0);
}

// A tiny config: hidden 8, 2 heads of 4, 1 kv head, intermediate 12, vocab 10, 2 layers.
ModelConfig TinyConfig(const std::string& model_type) {
  ModelConfig c;
  c.model_type = model_type;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.vocab_size = 10;
  c.attention_bias = model_type == "qwen2";
  c.qk_norm = model_type == "qwen3";
  return c;
}

std::vector<float> Filled(int64_t n, float value) {
  return std::vector<float>(static_cast<size_t>(n), value);
}

// Every tensor `c` implies, filled with distinct constants; `skip` is left out.
SafetensorsBuilder TinyCheckpoint(const ModelConfig& c, bool with_lm_head,
                                  const std::string& skip = "") {
  SafetensorsBuilder b;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float value) {
    if (name == skip) return;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    b.AddF32(name, shape, Filled(n, value));
  };
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim,
                i = c.intermediate_size;
  add("model.embed_tokens.weight", {c.vocab_size, h}, 0.5f);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {h}, 1.0f + l);
    add(p + "self_attn.q_proj.weight", {q, h}, 0.1f);
    add(p + "self_attn.k_proj.weight", {kv, h}, 0.2f);
    add(p + "self_attn.v_proj.weight", {kv, h}, 0.3f);
    add(p + "self_attn.o_proj.weight", {h, q}, 0.4f);
    if (c.attention_bias) {
      add(p + "self_attn.q_proj.bias", {q}, 0.01f);
      add(p + "self_attn.k_proj.bias", {kv}, 0.02f);
      add(p + "self_attn.v_proj.bias", {kv}, 0.03f);
    }
    if (c.o_proj_bias) add(p + "self_attn.o_proj.bias", {h}, 0.04f);
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {c.head_dim}, 0.7f);
      add(p + "self_attn.k_norm.weight", {c.head_dim}, 0.8f);
    }
    add(p + "post_attention_layernorm.weight", {h}, 2.0f);
    add(p + "mlp.gate_proj.weight", {i, h}, 0.5f);
    add(p + "mlp.up_proj.weight", {i, h}, 0.6f);
    add(p + "mlp.down_proj.weight", {h, i}, 0.7f);
  }
  add("model.norm.weight", {h}, 3.0f);
  if (with_lm_head) add("lm_head.weight", {c.vocab_size, h}, 9.0f);
  return b;
}

absl::StatusOr<ModelWeights> LoadTiny(const ModelConfig& c, const SafetensorsBuilder& b,
                                      const std::string& name) {
  const std::string path = testing::TempDir() + "/weights_" + name + ".safetensors";
  testing_util::WriteBytes(path, b.Bytes());
  LY_ASSIGN_OR_RETURN(SafetensorsArchive archive, SafetensorsArchive::Open(path));
  return LoadModelWeights(archive, c);
}

TEST(WeightsTest, Qwen2LoadsQkvBiasesAndUntiedHead) {
  const ModelConfig c = TinyConfig("qwen2");
  auto w = LoadTiny(c, TinyCheckpoint(c, /*with_lm_head=*/true), "qwen2");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->layers[1].bq, Filled(8, 0.01f));
  EXPECT_EQ(w->layers[1].bk, Filled(4, 0.02f));
  EXPECT_EQ(w->layers[1].bv, Filled(4, 0.03f));
  EXPECT_TRUE(w->layers[1].bo.empty());
  EXPECT_EQ(w->layers[1].input_norm, Filled(8, 2.0f));
  EXPECT_EQ(w->lm_head, Filled(80, 9.0f));
  EXPECT_EQ(&w->LmHead(), &w->lm_head);
}

TEST(WeightsTest, Qwen3LoadsQkNorms) {
  const ModelConfig c = TinyConfig("qwen3");
  auto w = LoadTiny(c, TinyCheckpoint(c, true), "qwen3");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->layers[0].q_norm, Filled(4, 0.7f));
  EXPECT_EQ(w->layers[0].k_norm, Filled(4, 0.8f));
  EXPECT_TRUE(w->layers[0].bq.empty());
}

TEST(WeightsTest, LlamaAttentionBiasIncludesOProj) {
  ModelConfig c = TinyConfig("llama");
  c.attention_bias = c.o_proj_bias = true;
  auto w = LoadTiny(c, TinyCheckpoint(c, true), "llama_bias");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->layers[0].bo, Filled(8, 0.04f));
}

TEST(WeightsTest, TiedIgnoresStoredLmHeadLikeTransformers) {
  ModelConfig c = TinyConfig("llama");
  c.tie_word_embeddings = true;
  auto w = LoadTiny(c, TinyCheckpoint(c, /*with_lm_head=*/true), "tied");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->lm_head.empty());
  EXPECT_EQ(w->LmHead(), Filled(80, 0.5f));
}

TEST(WeightsTest, MissingTensorsAreNamed) {
  const ModelConfig c = TinyConfig("qwen3");
  for (const std::string skip : {"lm_head.weight", "model.layers.1.self_attn.k_norm.weight",
                                  "model.norm.weight", "model.layers.0.mlp.down_proj.weight"}) {
    auto w = LoadTiny(c, TinyCheckpoint(c, true, skip), "missing");
    ASSERT_FALSE(w.ok()) << skip;
    EXPECT_NE(w.status().message().find(skip), std::string::npos) << w.status();
  }
}

TEST(WeightsTest, MisShapedTensorIsNamedWithBothShapes) {
  ModelConfig c = TinyConfig("llama");
  SafetensorsBuilder b = TinyCheckpoint(c, true, "model.layers.1.self_attn.k_proj.weight");
  b.AddF32("model.layers.1.self_attn.k_proj.weight", {8, 8}, Filled(64, 0.0f));
  auto w = LoadTiny(c, b, "misshaped");
  ASSERT_FALSE(w.ok());
  const std::string message(w.status().message());
  EXPECT_NE(message.find("model.layers.1.self_attn.k_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[8, 8]"), std::string::npos) << message;
  EXPECT_NE(message.find("[4, 8]"), std::string::npos) << message;
  EXPECT_NE(message.find("weights_misshaped.safetensors"), std::string::npos) << message;
}

}  // namespace
}  // namespace lychee
