// SPDX-License-Identifier: Apache-2.0
// ModelRunner: the forward pass of one engine step on one backend (CpuModelRunner, or
// CudaModelRunner when built with CUDA). The engine, scheduler and KV cache manager only see this
// interface, so they stay device-agnostic: the scheduler plans chunks and block ids, the runner
// owns the KV pool's contents on its device and returns the logits the sampler needs (or, on a
// backend that samples on its device, the sampled tokens).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "model/config.h"
#include "scheduler/scheduler_output.h"
#include "sparsity/policy.h"

namespace lychee {

// Per chunk of the last Execute, what its sparse policy did (dense chunks: max_bound -1 and
// zeros). Filled by the runner; the engine turns it into metrics and the per-request report.
struct SparseChunkStats {
  float max_bound = -1.0f;       // largest certified dropped-mass bound over layers and kv heads
  double sum_bound = 0.0;        // sum of the per-(layer, kv head) bounds; mean = sum / heads
  int64_t heads = 0;             // (layer, kv head) selections
  int64_t kv_tokens_read = 0;    // KV tokens read, summed over layers and kv heads
  int64_t kv_tokens_dense = 0;   // what dense attention reads for the same chunk
  int64_t widenings = 0;         // kv-head budgets widened to meet max_dropped_mass
  float exact_max = -1.0f;       // audited chunks: the exact dropped mass (max over layers and
                                 // kv heads); -1: not audited
  double selection_seconds = 0;  // time in Policy::Select
  // A runner that selects on its device (the CPU's counts are the policies' counters()):
  // (layer, kv head) selections made and those that reused an earlier set without scoring.
  int64_t device_selections = 0;
  int64_t device_reused = 0;
  int64_t device_dense_fallbacks = 0;  // selections that read everything (PrHS's control)
};

// What a runner that samples on its device returns per logit row (chunks with needs_logits, in
// chunk order), valid until the next Execute / ExecuteAndSample.
struct DeviceSampledTokens {
  absl::Span<const int32_t> tokens;  // [rows]
  // [rows]: log-softmax of the chosen token under the raw logits (rows that asked for
  // logprobs; 0 for the others).
  absl::Span<const float> logprobs;
  // [rows * kMaxTopLogprobs]: each row's top_logprobs best under the raw logits, best first
  // (TopLogprobs' order); entries past what the row asked for, or past its usable logits, have
  // token -1.
  absl::Span<const TokenLogprob> top;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Computes one step (see CpuModelRunner::Execute for the contract every backend keeps):
  // returns host logits [chunks with needs_logits, vocab] in chunk order, valid until the next
  // Execute. `policies` is empty or one entry per chunk (nullptr for dense); a policy applies to
  // the chunk only when chunk.is_decode, and its chunk.audit asks for the exact dropped mass.
  virtual absl::StatusOr<absl::Span<const float>> Execute(
      const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies = {}) = 0;

  // Per chunk of the last Execute, in chunk order: what its sparse policy did (defaults for
  // chunks that ran dense). Valid until the next Execute.
  virtual absl::Span<const SparseChunkStats> sparse_stats() const = 0;

  // Device sampling (optional): a runner that returns true here also implements
  // ExecuteAndSample, and the engine then samples through it instead of copying logits to the
  // host Sampler.
  virtual bool samples_on_device() const { return false; }

  // Execute, then sampling on the device with the host Sampler's semantics (engine/sampler.h:
  // penalties, temperature, top-k, top-p, min-p; greedy rows are the exact argmax) and a
  // counter-based RNG keyed by each row's seed and step, so a row's token does not depend on the
  // rest of the batch. `rows` has one entry per chunk with needs_logits, in chunk order. Only
  // the tokens and logprobs come back to the host.
  virtual absl::StatusOr<DeviceSampledTokens> ExecuteAndSample(
      const SchedulerOutput& step, absl::Span<const DeviceSamplingInput> rows,
      absl::Span<sparsity::Policy* const> policies = {}) {
    return absl::UnimplementedError("this backend does not sample on its device");
  }

  // Whether `spec` runs on this backend: OK, or InvalidArgument saying why not (the engine
  // refuses the request with it).
  virtual absl::Status SupportsPolicy(const PolicySpec& spec) const = 0;

  virtual const ModelConfig& config() const = 0;
};

}  // namespace lychee
