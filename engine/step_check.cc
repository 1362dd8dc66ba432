// SPDX-License-Identifier: Apache-2.0
#include "engine/step_check.h"

#include "absl/strings/str_cat.h"

namespace lychee {

absl::Status CheckStep(const SchedulerOutput& step, const StepLimits& limits, bool all_rows,
                       StepSize* size) {
  const int64_t bs = limits.block_size;
  const int64_t vocab = limits.vocab_size;
  int64_t rows = 0, logit_rows = 0;
  for (size_t c = 0; c < step.chunks.size(); ++c) {
    const ScheduledChunk& ch = step.chunks[c];
    const int64_t n = static_cast<int64_t>(ch.token_ids.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " has no tokens"));
    if (ch.is_decode && n != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", c, " (seq ", ch.seq_id, ") is a decode step with ", n, " tokens"));
    }
    if (ch.start_position < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", c, " has start_position ", ch.start_position));
    }
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = ch.token_ids[static_cast<size_t>(i)];
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " (seq ", ch.seq_id,
                                                       "): token id ", id, " at index ", i,
                                                       " is outside [0, ", vocab, ")"));
      }
    }
    // The blocks this chunk touches: positions [0, start + n). More than the pool holds would
    // mean a repeated block (and overflow per-position scratch), so that is rejected too.
    const int64_t needed = (ch.start_position + n + bs - 1) / bs;
    if (needed > static_cast<int64_t>(ch.block_table.size()) || needed > limits.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", c, " (seq ", ch.seq_id, ") needs ", needed, " blocks for positions up to ",
          ch.start_position + n, " but its block table has ", ch.block_table.size(),
          " (pool: ", limits.num_blocks, ")"));
    }
    for (int64_t b = 0; b < needed; ++b) {
      const int32_t block = ch.block_table[static_cast<size_t>(b)];
      if (block < 0 || block >= limits.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " (seq ", ch.seq_id,
                                                       "): block table entry ", b, " is ", block,
                                                       ", outside the pool's ", limits.num_blocks));
      }
    }
    rows += n;
    if (ch.needs_logits) ++logit_rows;
  }
  if (rows > limits.max_num_batched_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("step has ", rows,
                                                   " tokens, more than max_num_batched_tokens ",
                                                   limits.max_num_batched_tokens));
  }
  if (!all_rows && logit_rows > limits.max_logit_rows) {
    return absl::InvalidArgumentError(absl::StrCat("step wants logits for ", logit_rows,
                                                   " chunks, more than ", limits.max_logit_rows));
  }
  size->rows = rows;
  size->logit_rows = all_rows ? rows : logit_rows;
  return absl::OkStatus();
}

}  // namespace lychee
