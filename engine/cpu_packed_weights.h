// SPDX-License-Identifier: Apache-2.0
// PackedWeights: a model's fp32 weights in the layout the CPU forward pass wants (q/k/v and
// gate/up concatenated along the output dimension, so each is one GEMM), checked against the
// config once, plus the RoPE inverse frequencies.
//
// Built once by CpuModelRunner::Create from ModelWeights (whose buffers it takes over) and read
// only afterwards; no threading concerns of its own.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/config.h"
#include "model/weights.h"

namespace lychee {

struct PackedLayer {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> w_qkv;                // [q_dim + 2 * kv_dim, hidden]
  std::vector<float> b_qkv;                // [q_dim + 2 * kv_dim] or empty
  std::vector<float> q_norm;               // [head_dim] or empty (Qwen3)
  std::vector<float> k_norm;               // [head_dim] or empty (Qwen3)
  std::vector<float> wo;                   // [hidden, q_dim]
  std::vector<float> bo;                   // [hidden] or empty (o_proj bias)
  std::vector<float> post_attention_norm;  // [hidden]
  std::vector<float> w_gate_up;            // [2 * intermediate, hidden]
  std::vector<float> w_down;               // [hidden, intermediate]
};

struct PackedWeights {
  int64_t q_dim = 0;                // num_heads * head_dim
  int64_t kv_dim = 0;               // num_kv_heads * head_dim
  std::vector<float> embed_tokens;  // [vocab, hidden]
  std::vector<float> lm_head;       // [vocab, hidden]; empty when tied to embed_tokens
  std::vector<float> final_norm;    // [hidden]
  std::vector<PackedLayer> layers;
  std::vector<float> inv_freq;  // [head_dim / 2]

  const float* LmHead() const { return lm_head.empty() ? embed_tokens.data() : lm_head.data(); }
};

// Checks `config` (heads, head_dim) and every tensor's size against it, then repacks. Optional
// tensors are used when present (q/k/v biases all three or none; o_proj bias; q/k norms, which
// config.qk_norm requires), so a checkpoint's extra bias is never silently dropped.
// InvalidArgument naming the first offending field or tensor.
absl::StatusOr<PackedWeights> PackWeights(const ModelConfig& config, ModelWeights weights);

// The RoPE frequencies' parameters (theta, head_dim, scaling) of `config`, shared by every
// backend so that all of them rotate with the same inv_freq.
cpu::RopeParams RopeParamsFor(const ModelConfig& config);

}  // namespace lychee
