// SPDX-License-Identifier: Apache-2.0
// CpuModelRunner: the batched fp32 CPU forward pass over the paged KV cache, one engine step at a
// time (Llama, Mistral sliding window, Qwen2 q/k/v bias, Qwen3 q/k norm, o_proj bias, tied or
// separate LM head).
//
// Data flow of Execute(step): the tokens of every chunk are concatenated into one batch of rows;
// each layer runs its norms and GEMMs (fused QKV, O, fused gate/up, down) over all rows at once,
// and only attention is per chunk: a chunk's K/V rows are scattered into its blocks
// (cpu::WritePagedKv) and its queries attend causally over its sequence's paged K/V
// (cpu::FlashAttention; cpu::PagedAttention, its reference, on request). The final norm and LM head
// run over the rows whose logits are wanted. A decode chunk (ScheduledChunk::is_decode) given a
// sparsity::Policy reads only the blocks (or tokens) the policy selects per layer and kv head
// (cpu::SparseDecodeAttention) and reports SparseChunkStats; prefill chunks (one-token ones
// included), chunks without a policy, and models with a sliding window always run dense.
//
// Ownership and threading: the runner owns its repacked weights and every scratch buffer, sized
// at Create from the options, so a step allocates nothing. It borrows the KvPool (the engine
// owns it next to the KvCacheManager) and reads block tables through the step's spans only
// during Execute. Not thread-safe: one thread (the engine's step thread) drives it; GEMMs and
// attention run on kernels/cpu's thread team (cpu::NumThreads(), read at Create for the
// attention workspace), OpenBLAS single-threaded inside it.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model_runner.h"
#include "kvcache/kv_pool.h"
#include "model/config.h"
#include "model/weights.h"
#include "scheduler/scheduler_output.h"
#include "sparsity/policy.h"

namespace lychee {

// The KV pool shape a model needs: its layers, kv heads and head_dim in blocks of `block_size`.
KvCacheShape KvCacheShapeFor(const ModelConfig& config, int64_t block_size);

struct CpuModelRunnerOptions {
  // Rows per step at most (Σ chunk sizes); scratch buffers are sized by it.
  int64_t max_num_batched_tokens = 1024;
  // Chunks with needs_logits per step at most; the logits buffer holds
  // min(max_num_seqs, max_num_batched_tokens) rows of vocab floats.
  int64_t max_num_seqs = 256;
  // Dense attention through cpu::PagedAttention, the single-threaded reference kernel, instead
  // of cpu::FlashAttention (tiled, vectorised, on cpu::NumThreads() threads). For benchmarks and
  // tests that compare the two.
  bool reference_attention = false;
};

class CpuModelRunner final : public ModelRunner {
 public:
  // Weights are repacked (fused QKV and gate/up) and owned by the runner. `pool` (owned by the
  // caller, shape KvCacheShapeFor(config, block_size) for any block_size) must outlive the
  // runner. InvalidArgument for an inconsistent config, weights, pool shape or options.
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Create(
      const ModelConfig& config, ModelWeights weights, KvPool* pool,
      const CpuModelRunnerOptions& options = {});

  ~CpuModelRunner() override;
  CpuModelRunner(const CpuModelRunner&) = delete;
  CpuModelRunner& operator=(const CpuModelRunner&) = delete;

  // Computes one step: every chunk's K/V is written into its blocks and its queries attend over
  // its sequence's paged K/V (causal; sliding window when the model has one). Returns logits
  // [number of chunks with needs_logits, vocab] (the last token of each such chunk), in chunk
  // order, valid until the next Execute*. An empty step returns an empty span.
  // InvalidArgument, with nothing written to the pool, for: a token id outside [0, vocab), an
  // empty chunk, a negative start_position, a block table that does not cover the chunk or names
  // a block outside the pool, more than max_num_batched_tokens tokens or more than max_num_seqs
  // chunks with needs_logits.
  //
  // `policies`: empty (every chunk dense), or one entry per chunk, nullptr for dense. A decode
  // chunk (is_decode) with a policy runs, per layer, the policy's Select and the sparse kernel
  // (block or token selections). Every kv head starts at the request's budget (every token when
  // max_dropped_mass <= 0); while some kv head's certified bound (the worst of its query heads)
  // exceeds max_dropped_mass and it does not read everything yet, that head's budget doubles,
  // the policy selects again and the kernel redoes only the widened heads (max_dropped_mass 0
  // therefore reads every block: dense results). A chunk with `audit` also gets the exact
  // dropped mass of the final selections (its output stays the sparse one). Policies are
  // borrowed for the call. Debug builds check every selection (ascending, unique, in range).
  absl::StatusOr<absl::Span<const float>> Execute(
      const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies = {}) override;

  // Per chunk of the last Execute, in chunk order: bounds, KV read, widenings, audits and
  // selection time of its sparse decode (defaults, max_bound -1, for chunks that ran dense).
  // Valid until the next Execute*.
  absl::Span<const SparseChunkStats> sparse_stats() const override;
  // Every policy, over an fp32 or a bf16 pool (the sparse kernels widen bf16 rows as they read).
  absl::Status SupportsPolicy(const PolicySpec& spec) const override;

  // As Execute, but writes the logits of every token of every chunk, [Σ chunk sizes, vocab] in
  // row order, into the caller's `logits` (needs_logits is ignored). For scoring a whole prompt
  // (CpuModel's LogitsMode::kAll) without the runner holding max_num_batched_tokens × vocab.
  absl::Status ExecuteAllLogits(const SchedulerOutput& step, absl::Span<float> logits);

  const ModelConfig& config() const override;
  const CpuModelRunnerOptions& options() const;

 private:
  struct Impl;
  explicit CpuModelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lychee
