// SPDX-License-Identifier: Apache-2.0
// The contract between the scheduler and the model runner: what one engine step computes.
//
// Engine step: out = scheduler.Schedule(); result = runner.Execute(out); scheduler.Update(out,
// result sampled tokens). The scheduler owns requests and block tables; the runner owns the KV
// pool's contents and only reads the block tables through the spans below, which stay valid
// until the next Schedule call.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace lychee {

using SeqId = int64_t;  // the engine's internal id of a live request

struct ScheduledChunk {
  SeqId seq_id = 0;
  // Tokens whose K/V this step computes and writes: a prefill chunk (prompt tokens, or prompt +
  // generated tokens when recomputing after preemption) or the one token of a decode step.
  absl::Span<const int32_t> token_ids;
  int64_t start_position = 0;             // position of token_ids[0] in the sequence
  absl::Span<const int32_t> block_table;  // the sequence's blocks, covering start_position +
                                          // token_ids.size() tokens
  // True when the chunk ends at the sequence's last known token, so its last row's logits are
  // needed to sample the next token. False for all but the final chunk of a chunked prefill.
  bool needs_logits = false;
  // Prompt tokens this request took from the prefix cache when it was first admitted (the
  // engine's `cached_tokens`); the same value on every chunk of the request.
  int64_t num_cached_tokens = 0;
  // True only for a request's real decode step: the one token sampled last step, fed back. A
  // one-token prefill chunk (the tail of a chunked prompt, or of a recompute after preemption)
  // and a cache-correction chunk are false. Runners apply sparse policies to decode chunks only.
  bool is_decode = false;
  // A LycheeDecode cache correction (set by the scheduler): a dense recompute that starts
  // before the sequence's computed end, rewriting the K/V of its last generated tokens in every
  // layer, and then computes the pending token (so needs_logits is true). is_decode is false.
  bool cache_correction = false;
  // Set by the engine (not the scheduler) on sparse decode chunks it samples for a dense audit:
  // the runner also computes the exact dropped mass (SparseChunkStats::exact_max). The chunk's
  // output is still the sparse one.
  bool audit = false;
};

struct SchedulerOutput {
  std::vector<ScheduledChunk> chunks;  // decode chunks first, then prefill chunks
  int64_t num_batched_tokens = 0;      // Σ token_ids.size()
  std::vector<SeqId> preempted;        // requests whose blocks were freed this step (recompute)
  std::vector<SeqId> aborted;          // aborted requests whose blocks were freed this step
  bool empty() const { return chunks.empty(); }
};

}  // namespace lychee
