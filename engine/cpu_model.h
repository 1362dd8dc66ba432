// SPDX-License-Identifier: Apache-2.0
// The decoder forward pass on the CPU (fp32, OpenBLAS) for one sequence: Llama, Mistral
// (sliding window), Qwen2 (q/k/v bias), Qwen3 (q/k RMSNorm), o_proj bias, tied or separate LM
// head. For lychee-generate and tests; the engine batches many sequences with CpuModelRunner.
//
// A CpuModel is a thin single-sequence wrapper over CpuModelRunner: it owns the runner, a KvPool
// just large enough for max_context tokens with the trivial block table 0, 1, 2, ..., and feeds
// the runner one chunk (of at most prefill_chunk tokens) per step, so both share one forward
// pass. It is not thread-safe: one thread drives it. After the first call of a given size no call
// allocates; a longer kAll prefill than any before grows the logits buffer once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cpu_model_runner.h"
#include "kvcache/kv_pool.h"
#include "model/config.h"
#include "model/weights.h"
#include "scheduler/scheduler_output.h"

namespace lychee {

struct CpuModelOptions {
  // KV cache capacity in tokens; 0 = the model's max_position_embeddings, or as many tokens as
  // kv_cache_bytes holds when that is fewer.
  int64_t max_context = 0;
  // KV cache memory budget in bytes; 0 = DefaultCpuKvCacheBytes() (a fraction of RAM). An
  // explicit max_context that needs more than an explicit budget is an error.
  int64_t kv_cache_bytes = 0;
  // K/V page storage: fp32 (the reference) or bf16 (half the bytes read per attention step;
  // every policy runs on both).
  KvDtype kv_cache_dtype = KvDtype::kFp32;
  // Prefill runs in chunks of at most this many tokens (the runner's max_num_batched_tokens:
  // bounds scratch memory; the GEMMs of a chunk cover all its rows at once).
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

  const ModelConfig& config() const { return runner_->config(); }
  int64_t vocab_size() const { return config().vocab_size; }
  // Tokens in the sequence so far (the position the next token gets).
  int64_t num_tokens() const { return num_tokens_; }
  int64_t max_context() const { return max_context_; }

  // Appends `tokens` to the sequence and returns their logits (see LogitsMode). The span points
  // into a buffer owned by the model, valid until the next Prefill/Decode/Reset. Errors:
  // InvalidArgument for an id outside [0, vocab) (nothing is appended), ResourceExhausted when
  // the sequence would exceed max_context().
  absl::StatusOr<absl::Span<const float>> Prefill(absl::Span<const int32_t> tokens,
                                                  LogitsMode mode = LogitsMode::kAll);
  // One token: Prefill({token}, kLast). With `policy`, a decode step through that sparse policy
  // (lychee-calibrate records head roles this way; tests drive policies without an engine).
  absl::StatusOr<absl::Span<const float>> Decode(int32_t token, sparsity::Policy* policy = nullptr);
  // Starts a new sequence (keeps buffers).
  void Reset() { num_tokens_ = 0; }

 private:
  CpuModel() = default;
  // Runs `tokens` as one chunk at position num_tokens_. Logits of every row go into
  // `maybe_all_logits` when given ([tokens.size(), vocab]); otherwise the returned span holds the
  // last row's logits when `last_row_logits`, or nothing.
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               bool last_row_logits, float* maybe_all_logits,
                                               sparsity::Policy* policy = nullptr);

  int64_t max_context_ = 0;
  int64_t prefill_chunk_ = 0;
  int64_t num_tokens_ = 0;
  int32_t decode_token_ = 0;  // a policy decode step's token (the chunk's span points here)
  // The pool before the runner that borrows it, so the runner is destroyed first.
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<CpuModelRunner> runner_;
  std::vector<int32_t> block_table_;  // 0, 1, 2, ...: position p in block p / block_size
  SchedulerOutput step_;              // one chunk, reused so steps do not allocate
  std::vector<float> logits_;         // kAll output, [n, vocab]
};

}  // namespace lychee
