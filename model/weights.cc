// SPDX-License-Identifier: Apache-2.0
// HF tensor names → ModelWeights. Each tensor is read with the shape the config implies, so a
// checkpoint that disagrees with its config.json fails here, naming the tensor, instead of
// producing garbage in the forward pass.
#include "model/weights.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace lychee {
namespace {

absl::Status LoadLayer(const SafetensorsArchive& archive, const ModelConfig& c, int64_t layer,
                       LayerWeights* w) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  auto read = [&](const std::string& name, std::vector<int64_t> shape,
                  std::vector<float>* out) -> absl::Status {
    LY_ASSIGN_OR_RETURN(*out, archive.ReadF32(p + name, shape));
    return absl::OkStatus();
  };
  LY_RETURN_IF_ERROR(read("input_layernorm.weight", {hidden}, &w->input_norm));
  LY_RETURN_IF_ERROR(read("self_attn.q_proj.weight", {q_dim, hidden}, &w->wq));
  LY_RETURN_IF_ERROR(read("self_attn.k_proj.weight", {kv_dim, hidden}, &w->wk));
  LY_RETURN_IF_ERROR(read("self_attn.v_proj.weight", {kv_dim, hidden}, &w->wv));
  if (c.attention_bias) {
    LY_RETURN_IF_ERROR(read("self_attn.q_proj.bias", {q_dim}, &w->bq));
    LY_RETURN_IF_ERROR(read("self_attn.k_proj.bias", {kv_dim}, &w->bk));
    LY_RETURN_IF_ERROR(read("self_attn.v_proj.bias", {kv_dim}, &w->bv));
  }
  if (c.qk_norm) {
    LY_RETURN_IF_ERROR(read("self_attn.q_norm.weight", {c.head_dim}, &w->q_norm));
    LY_RETURN_IF_ERROR(read("self_attn.k_norm.weight", {c.head_dim}, &w->k_norm));
  }
  LY_RETURN_IF_ERROR(read("self_attn.o_proj.weight", {hidden, q_dim}, &w->wo));
  if (c.o_proj_bias) LY_RETURN_IF_ERROR(read("self_attn.o_proj.bias", {hidden}, &w->bo));
  LY_RETURN_IF_ERROR(read("post_attention_layernorm.weight", {hidden}, &w->post_attention_norm));
  LY_RETURN_IF_ERROR(read("mlp.gate_proj.weight", {inter, hidden}, &w->w_gate));
  LY_RETURN_IF_ERROR(read("mlp.up_proj.weight", {inter, hidden}, &w->w_up));
  LY_RETURN_IF_ERROR(read("mlp.down_proj.weight", {hidden, inter}, &w->w_down));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelWeights> LoadModelWeights(const SafetensorsArchive& archive,
                                              const ModelConfig& config) {
  ModelWeights weights;
  const int64_t vocab = config.vocab_size;
  const int64_t hidden = config.hidden_size;
  LY_ASSIGN_OR_RETURN(weights.embed_tokens,
                      archive.ReadF32("model.embed_tokens.weight", {vocab, hidden}));
  weights.layers.resize(static_cast<size_t>(config.num_layers));
  for (int64_t i = 0; i < config.num_layers; ++i) {
    LY_RETURN_IF_ERROR(LoadLayer(archive, config, i, &weights.layers[static_cast<size_t>(i)]));
  }
  LY_ASSIGN_OR_RETURN(weights.final_norm, archive.ReadF32("model.norm.weight", {hidden}));
  // Tied: transformers' tie_weights() points lm_head at embed_tokens after loading, so a stored
  // lm_head.weight is ignored there; we ignore it too and leave lm_head empty.
  if (!config.tie_word_embeddings) {
    LY_ASSIGN_OR_RETURN(weights.lm_head, archive.ReadF32("lm_head.weight", {vocab, hidden}));
  } else if (archive.Contains("lm_head.weight")) {
    LY_LOG_INFO(
        "tie_word_embeddings is true: ignoring the stored lm_head.weight, as "
        "transformers does");
  }
  return weights;
}

}  // namespace lychee
