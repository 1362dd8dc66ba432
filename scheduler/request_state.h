// SPDX-License-Identifier: Apache-2.0
// The scheduler's view of one request: its lifecycle state and token progress.
//
// Owned by the Scheduler (engine thread only). `tokens` is the prompt followed by every token
// sampled so far; `num_computed_tokens` of them have K/V in the cache. After a preemption by
// recompute, num_computed_tokens drops to 0 (or the prefix-cache hit) and the whole of `tokens`
// (prompt + generated) is prefilled again, so generation continues exactly where it stopped.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "scheduler/scheduler_output.h"

namespace lychee {

enum class RequestStatus {
  kWaiting,          // queued, never scheduled
  kRunning,          // holds blocks; scheduled every step while budget allows
  kPreempted,        // blocks freed, back in the waiting queue to recompute
  kFinishedStopped,  // the engine finished it (stop string, stop token, EOS)
  kFinishedLength,   // max_tokens or max_model_len reached
  kFinishedAborted,  // AbortRequest
};

std::string_view RequestStatusName(RequestStatus status);
bool IsFinished(RequestStatus status);

struct SchedRequest {
  SeqId seq_id = 0;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t num_prompt_tokens = 0;
  int64_t max_tokens = 0;  // generated tokens at most
  int32_t priority = 0;    // lower first (kPriority policy)
  int64_t arrival = 0;     // arrival order: ties and FCFS
  RequestStatus status = RequestStatus::kWaiting;
  int64_t num_computed_tokens = 0;
  // tokens.size() when last admitted: chunks before it are prefill, after it decode.
  int64_t num_prefill_tokens = 0;
  int64_t num_cached_tokens = -1;  // prefix-cache hit at first admission (-1: not admitted yet)
  int64_t num_preemptions = 0;
  bool abort_pending = false;
  // Sparse decoding (SchedRequestOptions): decode steps write approximate K/V, so positions from
  // first_sparse_position on never enter the prefix cache (until a preemption recomputes them
  // all densely). Positions below dense_upto were computed densely since the last admission
  // (prefill, recompute, or a cache correction); a correction rewinds to it.
  bool sparse_decode = false;
  int64_t correction_interval = 0;
  int64_t first_sparse_position = INT64_MAX;
  int64_t dense_upto = 0;
  int64_t num_corrections = 0;

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_generated() const { return num_tokens() - num_prompt_tokens; }
  int64_t num_uncomputed() const { return num_tokens() - num_computed_tokens; }
};

}  // namespace lychee
