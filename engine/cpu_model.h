// SPDX-License-Identifier: Apache-2.0
// The decoder forward pass on the CPU (fp32, OpenBLAS) for one sequence: Llama, Mistral
// (sliding window), Qwen2 (q/k/v bias) and Qwen3 (q/k RMSNorm), tied or separate LM head.
//
// A CpuModel owns its weights (repacked for fused QKV and gate/up GEMMs), one sequence's KV cache
// and every scratch buffer. It is not thread-safe: one thread drives it (the engine thread, or
// lychee-generate's main). After the first call of a given size no call allocates; a longer
// prefill than any before grows the scratch once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/kv_cache_contiguous.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/config.h"
#include "model/weights.h"

namespace lychee {

struct CpuModelOptions {
  // KV cache capacity in tokens; 0 = min(max_position_embeddings, 8192).
  int64_t max_context = 0;
  // Prefill runs in chunks of at most this many tokens (bounds scratch memory; the GEMMs of a
  // chunk cover all its rows at once).
  int64_t prefill_chunk = 512;
};

enum class LogitsMode {
  kAll,   // logits for every new position: [n, vocab]
  kLast,  // logits for the last new position only: [vocab]
};

class CpuModel {
 public:
  // Loads `<dir>/config.json` and the safetensors weights beside it.
  static absl::StatusOr<std::unique_ptr<CpuModel>> Load(const std::string& model_dir,
                                                        const CpuModelOptions& options = {});
  // Takes ownership of already-loaded weights (which LoadModelWeights checked against `config`).
  static absl::StatusOr<std::unique_ptr<CpuModel>> Create(ModelConfig config, ModelWeights weights,
                                                          const CpuModelOptions& options = {});

  const ModelConfig& config() const { return config_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  // Tokens in the sequence so far (the position the next token gets).
  int64_t num_tokens() const { return cache_.size(); }
  int64_t max_context() const { return cache_.capacity(); }

  // Appends `tokens` to the sequence and returns their logits (see LogitsMode). The span points
  // into a buffer owned by the model, valid until the next Prefill/Decode/Reset. Errors:
  // InvalidArgument for an id outside [0, vocab) (nothing is appended), ResourceExhausted when
  // the sequence would exceed max_context().
  absl::StatusOr<absl::Span<const float>> Prefill(absl::Span<const int32_t> tokens,
                                                  LogitsMode mode = LogitsMode::kAll);
  // One token: Prefill({token}, kLast).
  absl::StatusOr<absl::Span<const float>> Decode(int32_t token);
  // Starts a new sequence (keeps buffers).
  void Reset() { cache_.Clear(); }

 private:
  // Weights in the layout the forward pass wants: q/k/v and gate/up concatenated along the
  // output dimension so each is one GEMM.
  struct PackedLayer {
    std::vector<float> input_norm;
    std::vector<float> w_qkv;  // [q_dim + 2 * kv_dim, hidden]
    std::vector<float> b_qkv;  // [q_dim + 2 * kv_dim] or empty
    std::vector<float> q_norm, k_norm;
    std::vector<float> wo;  // [hidden, q_dim]
    std::vector<float> post_attention_norm;
    std::vector<float> w_gate_up;  // [2 * intermediate, hidden]
    std::vector<float> w_down;     // [hidden, intermediate]
  };

  CpuModel() = default;
  void EnsureScratch(int64_t rows);
  // Runs `n` tokens at positions [cache size, +n) through every layer, appends their K/V, and
  // writes logits of rows [first_logit_row, n) to `logits` ([n - first_logit_row, vocab]).
  void ForwardChunk(const int32_t* tokens, int64_t n, int64_t first_logit_row, float* logits);

  ModelConfig config_;
  CpuModelOptions options_;
  int64_t q_dim_ = 0, kv_dim_ = 0;
  std::vector<float> embed_tokens_;
  std::vector<float> lm_head_;  // empty when tied to embed_tokens_
  std::vector<float> final_norm_;
  std::vector<PackedLayer> layers_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  ContiguousKvCache cache_;

  // Scratch, sized for `scratch_rows_` tokens.
  int64_t scratch_rows_ = 0;
  std::vector<float> x_, h_, qkv_, q_, attn_, gate_up_, act_;
  std::vector<int64_t> positions_;
  std::vector<float> scores_;  // [max_context]
  std::vector<float> logits_;  // output buffer
};

}  // namespace lychee
