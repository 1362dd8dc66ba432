// SPDX-License-Identifier: Apache-2.0
// CudaModelRunner: the batched bf16 forward pass on one GPU over a paged KV pool that lives on the
// device, one engine step at a time; the ModelRunner the engine uses with `--device cuda`.
//
// Data flow of Execute(step): the host packs the step's small inputs (token ids, positions, KV
// slots, block tables, decode lengths, prefill tiles, logit rows) into one pinned buffer and
// uploads it with one copy; then, on one stream, embedding gather, per layer RMSNorm (fused with
// the residual add) → fused QKV GEMM (cuBLASLt) → [bias, q/k norm] → RoPE + paged K/V write →
// attention (leading one-token chunks through the split-K decode kernel, every other row through
// the tensor-core prefill kernel, causal over the chunk's cached pages plus itself; a generic
// kernel for head dims or sliding windows those do not cover) → O GEMM → fused add + norm →
// gate/up GEMM → SiLU·mul → down GEMM; the final norm, the rows whose logits are wanted, the LM
// head in fp32, and one copy of the logits back to the host, which is the step's only sync.
// ExecuteAndSample (the engine's path unless device_sampling is off) instead samples the logit
// rows on the GPU (kernels/cuda/sampling.h; the rows' parameters and penalty lists go up in one
// or two small copies) and copies back only the tokens and logprobs.
//
// Memory: weights (CudaWeights) and every scratch buffer are allocated at Create for
// max_num_batched_tokens rows; the KV pool then takes what gpu_memory_utilization leaves of the
// device (or kv_cache_bytes when set), capped at what max_num_seqs full-length sequences can
// use twice over. Nothing is allocated per step. Not thread-safe: the engine thread drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model_runner.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "scheduler/scheduler_output.h"

namespace lychee {

// How attention kernels are chosen: kAuto uses the tensor-core decode/prefill kernels where they
// support the shape; kGeneric forces the generic kernel (a reference for tests).
enum class CudaAttentionKernels { kAuto, kGeneric };

// The kernel of GEMMs of at most 16 rows (decode steps). kCublasLt: the fastest on the H100.
// kSkinny (kernels/cuda/skinny_gemm.h): deterministic, and a sequence's logits do not depend on
// the rest of a decode batch of up to 16; 0.75x cuBLASLt's speed on the H100 (docs/PERFORMANCE.md).
enum class CudaDecodeGemm { kCublasLt, kSkinny };

struct CudaModelRunnerOptions {
  int device = 0;
  int64_t block_size = 16;
  int64_t max_num_batched_tokens = 2048;  // rows per step
  int64_t max_num_seqs = 256;             // chunks per step (and logit rows)
  int64_t max_model_len = 0;              // tokens per sequence; 0 = max_position_embeddings
  int64_t kv_cache_bytes = 0;             // 0: from gpu_memory_utilization
  int64_t num_kv_blocks_override = 0;     // > 0: exactly this many blocks (if they fit)
  double gpu_memory_utilization = 0.9;    // fraction of the device's memory this process may use
  uint64_t synthetic_seed = 0;            // synthetic weights' seed
  CudaAttentionKernels attention = CudaAttentionKernels::kAuto;
  CudaDecodeGemm decode_gemm = CudaDecodeGemm::kCublasLt;
  // Replay captured graphs for pure-decode steps (cuda_graph_cache.h); verified against eager
  // steps on the H100 by cuda_model_runner_test.
  bool cuda_graphs = true;
  // samples_on_device(): the engine samples through ExecuteAndSample (only tokens and logprobs
  // come back) instead of copying the logits to the host Sampler.
  bool device_sampling = true;
  // Key summaries (per block and kv head, the keys' element-wise min and max) in the KV pool, for
  // the sparse policies (engine/cuda_sparse_decode.h); they cost 1/block_size of the pool. Off:
  // dense only.
  bool sparse_policies = true;
  // Our kernels that follow another of ours in a step (decode attention after RopeKvWrite, a
  // sparse step's scoring, selection, attention and dropped-mass kernels) are launched with
  // programmatic dependent launch (kernels/cuda/launch.cuh): each is placed during its
  // predecessor's last wave and waits for it on the GPU, hiding the launch gap. Off: on the H200
  // it made a quest step 7% slower (the selection CTAs crowd beside ScoreKernel's last wave;
  // docs/PERFORMANCE.md, seventh session of 2026-12-07).
  bool programmatic_launch = false;
  // With cuda_graphs: pure-decode steps with sparse requests replay captured graphs too, keyed
  // also by what the step's sparse launches take from the host (rows per attention part and
  // layer, the part-1 plan's length cap rounded up to a power of two, widening rounds, audits,
  // PrHS arenas: CudaSparseDecode::GraphKey). Checked against eager steps on the H100
  // (cuda_model_runner_test) and measured there (cuda_e2e_bench --sparse-graphs, ca95b1f): 4-7%
  // faster per step at batch 1-3 (1 x 32K quest 7.33 vs 7.82 ms, 3 x 128K quest 9.03 vs 9.33),
  // 1-4% slower at 13 x 32K (the bucket pads 13 rows to 16 and the part-1 cap is a power of two).
  bool sparse_cuda_graphs = true;
  // Steps whose sparse rows are all LycheeDecode's attend in ONE launch a layer (the retrieval
  // heads over every token, the sparse heads over the sets earlier layers chose: ALGORITHMS.md
  // 3.2's hybrid kernel), then select; off: two launches around the selection (the rows that read
  // everything, then the budget-bound ones). CudaSparseDecode::hybrid() says when it applies.
  // Off until it has run on a GPU: written in a session without a device (its tests,
  // cuda_decode_attention_test's HybridLaunchReadsEachRowsOwnTable and cuda_model_runner_test's
  // hybrid-vs-two-launches comparison, and cuda_e2e_bench --lychee-hybrid-too are owed).
  bool lychee_hybrid_launch = false;
};

class CudaModelRunner final : public ModelRunner {
 public:
  // Loads the weights from `maybe_archive` (or random ones when it is null: synthetic models) and
  // sizes the KV pool. InvalidArgument for an unsupported config or options; ResourceExhausted
  // when the device lacks memory for weights, scratch or a single KV block; Unavailable without a
  // usable GPU.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const ModelConfig& config, const SafetensorsArchive* maybe_archive,
      const CudaModelRunnerOptions& options);

  ~CudaModelRunner() override;
  CudaModelRunner(const CudaModelRunner&) = delete;
  CudaModelRunner& operator=(const CudaModelRunner&) = delete;

  // ModelRunner. Errors as CpuModelRunner::Execute (checked before anything is written). The
  // policies of the leading one-token chunks (decode rows) run on the GPU
  // (engine/cuda_sparse_decode.h); a policy SupportsPolicy refuses is InvalidArgument.
  absl::StatusOr<absl::Span<const float>> Execute(
      const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies = {}) override;
  // Execute, then kernels/cuda/sampling.h on the logit rows. InvalidArgument when `rows` does not
  // have one entry per chunk with needs_logits or an entry is out of range (top_logprobs,
  // penalty lists of different lengths); sampling parameters are the engine's (validated there).
  absl::StatusOr<DeviceSampledTokens> ExecuteAndSample(
      const SchedulerOutput& step, absl::Span<const DeviceSamplingInput> rows,
      absl::Span<sparsity::Policy* const> policies = {}) override;
  bool samples_on_device() const override;
  absl::Span<const SparseChunkStats> sparse_stats() const override;
  absl::Status SupportsPolicy(const PolicySpec& spec) const override;
  const ModelConfig& config() const override;

  const CudaModelRunnerOptions& options() const;
  int64_t num_kv_blocks() const;
  int64_t kv_cache_bytes() const;
  int64_t weight_bytes() const;
  std::string device_name() const;
  // Decode-step graphs captured so far and steps that replayed one.
  size_t num_cuda_graphs() const;
  int64_t num_graph_replays() const;
  // Turn graph replay (of all decode steps / of sparse ones) on or off from the next step
  // (benchmarks compare both in one process).
  void set_cuda_graphs(bool enabled);
  void set_sparse_cuda_graphs(bool enabled);
  void set_lychee_hybrid_launch(bool enabled);  // from the next step

 private:
  struct Impl;
  explicit CudaModelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lychee
