// SPDX-License-Identifier: Apache-2.0
// PackWeights: size checks (a wrong size would read out of bounds in a GEMM, so it is an error
// here rather than garbage later) and the fused-matrix repacking.
#include "engine/cpu_packed_weights.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_kernels.h"

namespace lychee {
namespace {

// Moves `b` onto the end of `a` (the rows of one [out, in] matrix after another's).
void AppendRows(std::vector<float>& a, std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::vector<float>().swap(b);
}

// InvalidArgument unless `v` holds `want` floats (or is empty and `optional`).
absl::Status CheckSize(const std::vector<float>& v, int64_t want, const std::string& name,
                       bool optional = false) {
  const int64_t got = static_cast<int64_t>(v.size());
  if (got == want || (optional && got == 0)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("weight ", name, " has ", got, " floats, expected ", want));
}

absl::Status CheckLayer(const ModelConfig& c, const LayerWeights& w, int64_t layer) {
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  const std::string p = absl::StrCat("layers.", layer, ".");
  auto check = [&](const std::vector<float>& v, int64_t want, const char* name, bool optional) {
    return CheckSize(v, want, p + name, optional);
  };
  absl::Status s;
  s.Update(check(w.input_norm, hidden, "input_norm", false));
  s.Update(check(w.wq, q_dim * hidden, "wq", false));
  s.Update(check(w.wk, kv_dim * hidden, "wk", false));
  s.Update(check(w.wv, kv_dim * hidden, "wv", false));
  const bool qkv_bias = c.attention_bias || !w.bq.empty() || !w.bk.empty() || !w.bv.empty();
  s.Update(check(w.bq, q_dim, "bq", !qkv_bias));
  s.Update(check(w.bk, kv_dim, "bk", !qkv_bias));
  s.Update(check(w.bv, kv_dim, "bv", !qkv_bias));
  s.Update(check(w.q_norm, c.head_dim, "q_norm", !c.qk_norm));
  s.Update(check(w.k_norm, c.head_dim, "k_norm", !c.qk_norm));
  if (w.q_norm.empty() != w.k_norm.empty()) {
    s.Update(absl::InvalidArgumentError(p + "q_norm and k_norm must both be present or absent"));
  }
  s.Update(check(w.wo, hidden * q_dim, "wo", false));
  s.Update(check(w.bo, hidden, "bo", !c.o_proj_bias));
  s.Update(check(w.post_attention_norm, hidden, "post_attention_norm", false));
  s.Update(check(w.w_gate, inter * hidden, "w_gate", false));
  s.Update(check(w.w_up, inter * hidden, "w_up", false));
  s.Update(check(w.w_down, hidden * inter, "w_down", false));
  return s;
}

absl::Status CheckConfig(const ModelConfig& c) {
  if (c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads (", c.num_heads,
                                                   ") must be a multiple of num_key_value_heads (",
                                                   c.num_kv_heads, ")"));
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim must be positive and even for RoPE, got ", c.head_dim));
  }
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.vocab_size <= 0 || c.num_layers <= 0) {
    return absl::InvalidArgumentError(
        "hidden_size, intermediate_size, vocab_size and num_hidden_layers must be positive");
  }
  if (c.sliding_window < 0) return absl::InvalidArgumentError("sliding_window must be >= 0");
  return absl::OkStatus();
}

}  // namespace

cpu::RopeParams RopeParamsFor(const ModelConfig& c) {
  cpu::RopeParams p;
  p.head_dim = c.head_dim;
  p.theta = c.rope_theta;
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone:
      p.scaling = cpu::RopeScalingKind::kNone;
      break;
    case RopeScalingType::kLinear:
      p.scaling = cpu::RopeScalingKind::kLinear;
      break;
    case RopeScalingType::kLlama3:
      p.scaling = cpu::RopeScalingKind::kLlama3;
      break;
  }
  p.factor = c.rope_scaling.factor;
  p.low_freq_factor = c.rope_scaling.low_freq_factor;
  p.high_freq_factor = c.rope_scaling.high_freq_factor;
  p.original_max_position_embeddings =
      static_cast<double>(c.rope_scaling.original_max_position_embeddings);
  return p;
}

absl::StatusOr<PackedWeights> PackWeights(const ModelConfig& config, ModelWeights weights) {
  if (absl::Status s = CheckConfig(config); !s.ok()) return s;
  if (static_cast<int64_t>(weights.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError("weights and config disagree on the number of layers");
  }
  const int64_t hidden = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  absl::Status s;
  s.Update(CheckSize(weights.embed_tokens, vocab * hidden, "embed_tokens"));
  s.Update(CheckSize(weights.lm_head, vocab * hidden, "lm_head", /*optional=*/true));
  s.Update(CheckSize(weights.final_norm, hidden, "final_norm"));
  for (int64_t l = 0; l < config.num_layers && s.ok(); ++l) {
    s.Update(CheckLayer(config, weights.layers[static_cast<size_t>(l)], l));
  }
  if (!s.ok()) return s;

  PackedWeights pw;
  pw.q_dim = config.num_heads * config.head_dim;
  pw.kv_dim = config.num_kv_heads * config.head_dim;
  pw.embed_tokens = std::move(weights.embed_tokens);
  pw.lm_head = std::move(weights.lm_head);
  pw.final_norm = std::move(weights.final_norm);
  pw.layers.reserve(weights.layers.size());
  for (LayerWeights& lw : weights.layers) {
    PackedLayer pl;
    pl.input_norm = std::move(lw.input_norm);
    pl.w_qkv = std::move(lw.wq);
    AppendRows(pl.w_qkv, lw.wk);
    AppendRows(pl.w_qkv, lw.wv);
    if (!lw.bq.empty()) {
      pl.b_qkv = std::move(lw.bq);
      AppendRows(pl.b_qkv, lw.bk);
      AppendRows(pl.b_qkv, lw.bv);
    }
    pl.q_norm = std::move(lw.q_norm);
    pl.k_norm = std::move(lw.k_norm);
    pl.wo = std::move(lw.wo);
    pl.bo = std::move(lw.bo);
    pl.post_attention_norm = std::move(lw.post_attention_norm);
    pl.w_gate_up = std::move(lw.w_gate);
    AppendRows(pl.w_gate_up, lw.w_up);
    pl.w_down = std::move(lw.w_down);
    pw.layers.push_back(std::move(pl));
  }
  pw.inv_freq.resize(static_cast<size_t>(config.head_dim / 2));
  cpu::ComputeRopeInvFreq(RopeParamsFor(config), pw.inv_freq.data());
  return pw;
}

}  // namespace lychee
