// SPDX-License-Identifier: Apache-2.0
#include "model/synthetic.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lychee {
namespace {

// Llama-3.1-8B's config.json fields (meta-llama/Llama-3.1-8B), weights random.
ModelConfig Llama3_8B() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = RopeScalingType::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.tie_word_embeddings = false;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001, 128008, 128009};
  c.torch_dtype = "bfloat16";
  return c;
}

}  // namespace

bool IsSyntheticModel(std::string_view model) {
  return model.substr(0, kSyntheticPrefix.size()) == kSyntheticPrefix;
}

std::vector<std::string> SyntheticModelNames() { return {"synthetic:llama-3-8b"}; }

absl::StatusOr<ModelConfig> SyntheticModelConfig(std::string_view model) {
  if (model == "synthetic:llama-3-8b") return Llama3_8B();
  return absl::NotFoundError(
      absl::StrCat("unknown synthetic model '", std::string(model),
                   "'; known: ", absl::StrJoin(SyntheticModelNames(), ", ")));
}

}  // namespace lychee
