// SPDX-License-Identifier: Apache-2.0
// The checks every model runner applies to a step before touching its KV pool, in one place so
// that the CPU and CUDA backends reject the same malformed steps with the same messages.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "scheduler/scheduler_output.h"

namespace lychee {

struct StepLimits {
  int64_t vocab_size = 0;
  int64_t block_size = 0;
  int64_t num_blocks = 0;              // blocks in the pool
  int64_t max_num_batched_tokens = 0;  // rows per step
  int64_t max_logit_rows = 0;          // chunks with needs_logits per step (ignored if all_rows)
};

struct StepSize {
  int64_t rows = 0;        // Σ chunk sizes
  int64_t logit_rows = 0;  // chunks with needs_logits (or every row when all_rows)
};

// InvalidArgument for: an empty chunk, a negative start_position, a token id outside [0, vocab),
// a block table that does not cover the chunk or names a block outside the pool, more rows than
// max_num_batched_tokens, or more logit rows than max_logit_rows.
absl::Status CheckStep(const SchedulerOutput& step, const StepLimits& limits, bool all_rows,
                       StepSize* size);

}  // namespace lychee
