// SPDX-License-Identifier: Apache-2.0
// fp32 host copies of a decoder-only transformer's weights (Llama / Mistral / Qwen2 / Qwen3),
// loaded from a SafetensorsArchive under HF tensor names and checked against the ModelConfig.
//
// Layout follows HF: every projection is [out_features, in_features] row-major, so y = x · Wᵀ.
// Optional tensors (biases, q/k norms) are empty when the architecture has none.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace lychee {

struct LayerWeights {
  std::vector<float> input_norm;      // [hidden]
  std::vector<float> wq, wk, wv;      // [heads*head_dim, hidden], [kv_heads*head_dim, hidden] x2
  std::vector<float> bq, bk, bv;      // [heads*head_dim], [kv_heads*head_dim] (attention_bias)
  std::vector<float> q_norm, k_norm;  // [head_dim] (qk_norm)
  std::vector<float> wo;              // [hidden, heads*head_dim]
  std::vector<float> bo;              // [hidden] (o_proj_bias: llama/qwen3 attention_bias)
  std::vector<float> post_attention_norm;  // [hidden]
  std::vector<float> w_gate, w_up;         // [intermediate, hidden]
  std::vector<float> w_down;               // [hidden, intermediate]
};

struct ModelWeights {
  std::vector<float> embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied: use embed_tokens
  const std::vector<float>& LmHead() const { return lm_head.empty() ? embed_tokens : lm_head; }
};

// Loads every tensor the config implies (names `model.layers.{i}.self_attn.q_proj.weight`, ...),
// checking shapes. A missing or mis-shaped tensor is an error naming file and tensor.
absl::StatusOr<ModelWeights> LoadModelWeights(const SafetensorsArchive& archive,
                                              const ModelConfig& config);

}  // namespace lychee
