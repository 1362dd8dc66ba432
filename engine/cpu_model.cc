// SPDX-License-Identifier: Apache-2.0
// CpuModel: weight packing, scratch management and the layer loop over kernels/cpu.
#include "engine/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/safetensors.h"

namespace lychee {
namespace {

// Moves `b` onto the end of `a` (the rows of one [out, in] matrix after another's).
void AppendRows(std::vector<float>& a, std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::vector<float>().swap(b);
}

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

template <typename T>
void GrowTo(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Load(const std::string& model_dir,
                                                         const CpuModelOptions& options) {
  LY_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  LY_ASSIGN_OR_RETURN(SafetensorsArchive archive, SafetensorsArchive::Open(model_dir));
  LY_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(archive, config));
  return Create(std::move(config), std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Create(ModelConfig config, ModelWeights weights,
                                                           const CpuModelOptions& options) {
  if (config.num_heads <= 0 || config.num_kv_heads <= 0 ||
      config.num_heads % config.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads (", config.num_heads,
                                                   ") must be a multiple of num_key_value_heads (",
                                                   config.num_kv_heads, ")"));
  }
  if (config.head_dim <= 0 || config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim must be positive and even for RoPE, got ", config.head_dim));
  }
  if (options.prefill_chunk <= 0 || options.max_context < 0) {
    return absl::InvalidArgumentError("prefill_chunk must be > 0 and max_context >= 0");
  }
  if (static_cast<int64_t>(weights.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError("weights and config disagree on the number of layers");
  }

  std::unique_ptr<CpuModel> m(new CpuModel());
  m->options_ = options;
  m->q_dim_ = config.num_heads * config.head_dim;
  m->kv_dim_ = config.num_kv_heads * config.head_dim;
  m->embed_tokens_ = std::move(weights.embed_tokens);
  m->lm_head_ = std::move(weights.lm_head);
  m->final_norm_ = std::move(weights.final_norm);
  m->layers_.reserve(weights.layers.size());
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
    pl.post_attention_norm = std::move(lw.post_attention_norm);
    pl.w_gate_up = std::move(lw.w_gate);
    AppendRows(pl.w_gate_up, lw.w_up);
    pl.w_down = std::move(lw.w_down);
    m->layers_.push_back(std::move(pl));
  }
  m->inv_freq_.resize(config.head_dim / 2);
  cpu::ComputeRopeInvFreq(RopeParamsFor(config), m->inv_freq_.data());

  int64_t capacity = options.max_context;
  if (capacity == 0) {
    capacity = config.max_position_embeddings > 0
                   ? std::min<int64_t>(config.max_position_embeddings, 8192)
                   : 8192;
  }
  m->cache_ = ContiguousKvCache(config.num_layers, config.num_kv_heads, config.head_dim, capacity);
  m->scores_.resize(capacity);
  m->config_ = std::move(config);
  // Warm up the decode-sized scratch so single-token steps never allocate.
  m->EnsureScratch(1);
  m->logits_.resize(m->config_.vocab_size);
  return m;
}

void CpuModel::EnsureScratch(int64_t rows) {
  if (rows <= scratch_rows_) return;
  const int64_t hidden = config_.hidden_size;
  const int64_t inter = config_.intermediate_size;
  GrowTo(x_, rows * hidden);
  GrowTo(h_, rows * std::max(hidden, q_dim_));
  GrowTo(qkv_, rows * (q_dim_ + 2 * kv_dim_));
  GrowTo(q_, rows * q_dim_);
  GrowTo(attn_, rows * q_dim_);
  GrowTo(gate_up_, rows * 2 * inter);
  GrowTo(act_, rows * inter);
  GrowTo(positions_, rows);
  scratch_rows_ = rows;
}

absl::StatusOr<absl::Span<const float>> CpuModel::Decode(int32_t token) {
  return Prefill(absl::MakeConstSpan(&token, 1), LogitsMode::kLast);
}

absl::StatusOr<absl::Span<const float>> CpuModel::Prefill(absl::Span<const int32_t> tokens,
                                                          LogitsMode mode) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("Prefill needs at least one token");
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside [0, ", config_.vocab_size, ")"));
    }
  }
  if (n > cache_.free_slots()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sequence of ", cache_.size() + n, " tokens exceeds the context of ", cache_.capacity()));
  }
  const int64_t vocab = config_.vocab_size;
  const int64_t out_rows = mode == LogitsMode::kAll ? n : 1;
  GrowTo(logits_, out_rows * vocab);
  const int64_t chunk = options_.prefill_chunk;
  EnsureScratch(std::min(n, chunk));
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    const bool last_chunk = start + len == n;
    if (mode == LogitsMode::kAll) {
      ForwardChunk(tokens.data() + start, len, 0, logits_.data() + start * vocab);
    } else {
      ForwardChunk(tokens.data() + start, len, last_chunk ? len - 1 : len, logits_.data());
    }
  }
  return absl::MakeConstSpan(logits_.data(), static_cast<size_t>(out_rows * vocab));
}

void CpuModel::ForwardChunk(const int32_t* tokens, int64_t n, int64_t first_logit_row,
                            float* logits) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t qkv_dim = q_dim_ + 2 * kv_dim_;
  const int64_t start = cache_.size();
  const float eps = static_cast<float>(c.rms_norm_eps);
  for (int64_t t = 0; t < n; ++t) positions_[t] = start + t;

  float* x = x_.data();
  float* h = h_.data();
  cpu::EmbeddingGather(embed_tokens_.data(), tokens, x, n, hidden);

  cpu::AttentionParams attn;
  attn.q = q_.data();
  attn.out = attn_.data();
  attn.scratch = scores_.data();
  attn.num_queries = n;
  attn.num_heads = c.num_heads;
  attn.num_kv_heads = c.num_kv_heads;
  attn.head_dim = c.head_dim;
  attn.query_start = start;
  attn.sliding_window = c.sliding_window;
  attn.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const PackedLayer& w = layers_[l];
    float* k_cache = cache_.keys(l);
    float* v_cache = cache_.values(l);
    float* k_new = k_cache + start * kv_dim_;
    float* v_new = v_cache + start * kv_dim_;

    // Attention block.
    cpu::RmsNorm(x, w.input_norm.data(), h, n, hidden, eps);
    cpu::Gemm(h, w.w_qkv.data(), w.b_qkv.empty() ? nullptr : w.b_qkv.data(), qkv_.data(), n,
              qkv_dim, hidden);
    for (int64_t t = 0; t < n; ++t) {
      const float* row = qkv_.data() + t * qkv_dim;
      std::copy(row, row + q_dim_, q_.data() + t * q_dim_);
      std::copy(row + q_dim_, row + q_dim_ + kv_dim_, k_new + t * kv_dim_);
      std::copy(row + q_dim_ + kv_dim_, row + qkv_dim, v_new + t * kv_dim_);
    }
    if (c.qk_norm) {
      cpu::RmsNormPerHead(q_.data(), w.q_norm.data(), n, c.num_heads, c.head_dim, eps);
      cpu::RmsNormPerHead(k_new, w.k_norm.data(), n, c.num_kv_heads, c.head_dim, eps);
    }
    cpu::ApplyRope(q_.data(), n, c.num_heads, c.head_dim, q_dim_, positions_.data(),
                   inv_freq_.data());
    cpu::ApplyRope(k_new, n, c.num_kv_heads, c.head_dim, kv_dim_, positions_.data(),
                   inv_freq_.data());
    attn.k_cache = k_cache;
    attn.v_cache = v_cache;
    cpu::Attention(attn);
    cpu::Gemm(attn_.data(), w.wo.data(), nullptr, h, n, hidden, q_dim_);
    cpu::AddInPlace(x, h, n * hidden);

    // MLP block (SwiGLU).
    cpu::RmsNorm(x, w.post_attention_norm.data(), h, n, hidden, eps);
    cpu::Gemm(h, w.w_gate_up.data(), nullptr, gate_up_.data(), n, 2 * inter, hidden);
    for (int64_t t = 0; t < n; ++t) {
      const float* gu = gate_up_.data() + t * 2 * inter;
      cpu::SiluMul(gu, gu + inter, act_.data() + t * inter, inter);
    }
    cpu::Gemm(act_.data(), w.w_down.data(), nullptr, h, n, hidden, inter);
    cpu::AddInPlace(x, h, n * hidden);
  }
  cache_.Commit(n);

  // Only the rows whose logits are wanted go through the final norm and the LM head.
  const int64_t rows = n - first_logit_row;
  if (rows <= 0) return;
  float* xr = x + first_logit_row * hidden;
  cpu::RmsNorm(xr, final_norm_.data(), h, rows, hidden, eps);
  const std::vector<float>& head = lm_head_.empty() ? embed_tokens_ : lm_head_;
  cpu::Gemm(h, head.data(), nullptr, logits, rows, c.vocab_size, hidden);
}

}  // namespace lychee
