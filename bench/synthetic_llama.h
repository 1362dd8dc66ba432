// SPDX-License-Identifier: Apache-2.0
// A Llama-shaped fp32 model with small random weights for the CPU benchmarks: head_dim 64,
// GQA 4:1, SwiGLU 2.75×, 32k vocab, seeded (the same weights every run).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace lychee::bench {

inline std::pair<ModelConfig, ModelWeights> SyntheticLlama(int64_t hidden, int64_t layers,
                                                           int64_t max_position_embeddings) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.head_dim = 64;
  c.num_heads = hidden / 64;
  c.num_kv_heads = std::max<int64_t>(1, c.num_heads / 4);
  c.intermediate_size = hidden * 11 / 4;
  c.vocab_size = 32000;
  c.max_position_embeddings = max_position_embeddings;
  c.rms_norm_eps = 1e-5;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  auto rnd = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng);
    return v;
  };
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t in = c.intermediate_size;
  ModelWeights w;
  w.embed_tokens = rnd(c.vocab_size * hidden);
  w.lm_head = rnd(c.vocab_size * hidden);
  w.final_norm.assign(static_cast<size_t>(hidden), 1.0f);
  for (int64_t l = 0; l < layers; ++l) {
    LayerWeights lw;
    lw.input_norm.assign(static_cast<size_t>(hidden), 1.0f);
    lw.post_attention_norm.assign(static_cast<size_t>(hidden), 1.0f);
    lw.wq = rnd(q * hidden);
    lw.wk = rnd(kv * hidden);
    lw.wv = rnd(kv * hidden);
    lw.wo = rnd(hidden * q);
    lw.w_gate = rnd(in * hidden);
    lw.w_up = rnd(in * hidden);
    lw.w_down = rnd(hidden * in);
    w.layers.push_back(std::move(lw));
  }
  return {std::move(c), std::move(w)};
}

}  // namespace lychee::bench
