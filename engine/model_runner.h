// SPDX-License-Identifier: Apache-2.0
// ModelRunner: the forward pass of one engine step on one backend (CpuModelRunner, or
// CudaModelRunner when built with CUDA). The engine, scheduler and KV cache manager only see this
// interface, so they stay device-agnostic: the scheduler plans chunks and block ids, the runner
// owns the KV pool's contents on its device and returns the logits the sampler needs.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/config.h"
#include "scheduler/scheduler_output.h"
#include "sparsity/policy.h"

namespace lychee {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Computes one step (see CpuModelRunner::Execute for the contract every backend keeps):
  // returns host logits [chunks with needs_logits, vocab] in chunk order, valid until the next
  // Execute. `policies` is empty or one entry per chunk (nullptr for dense).
  virtual absl::StatusOr<absl::Span<const float>> Execute(
      const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies = {}) = 0;

  // Per chunk of the last Execute: the largest certified dropped-mass bound, -1 for dense.
  virtual absl::Span<const float> dropped_mass() const = 0;

  // Whether sparse policies run on this backend (false: the engine refuses them per request).
  virtual bool supports_sparse_policies() const = 0;

  virtual const ModelConfig& config() const = 0;
};

}  // namespace lychee
