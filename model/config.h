// SPDX-License-Identifier: Apache-2.0
// Model configuration parsed from a Hugging Face `config.json`.
//
// Supported `model_type`s: llama, mistral, qwen2, qwen3. Everything the forward pass needs is
// normalised here (head_dim derived when absent, Qwen2's implicit q/k/v bias, Qwen3's per-head q/k
// RMSNorm, RoPE scaling), so later code never looks at the raw JSON. Unsupported settings fail
// with InvalidArgument naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2", "qwen3"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;    // num_hidden_layers
  int64_t num_heads = 0;     // num_attention_heads
  int64_t num_kv_heads = 0;  // num_key_value_heads (defaults to num_heads)
  int64_t head_dim = 0;      // given, or hidden_size / num_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2; llama attention_bias)
  bool o_proj_bias = false;     // o_proj carries a bias too (llama/qwen3 attention_bias, not Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k before RoPE (Qwen3)
  int64_t sliding_window = 0;   // 0 = none (Mistral v0.1 sets 4096)
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;
  std::string torch_dtype;  // informational: "float32", "bfloat16", ...
};

// Parses config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);

// Reads and parses `<model_dir>/config.json`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace lychee
