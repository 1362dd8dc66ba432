// SPDX-License-Identifier: Apache-2.0
// Scheduler: continuous batching with chunked prefill, prefix caching, priorities and preemption
// by recompute, in the shape of vLLM V1's scheduler.
//
// Ownership and threading: the engine thread owns the Scheduler, which owns every live request's
// state and the KvCacheManager (block bookkeeping). Nothing here is thread-safe, nothing reads a
// clock, nothing is random: the same calls give the same schedules. The KV data itself lives in a
// KvPool owned by the engine/runner; the runner reads block tables from the SchedulerOutput.
//
// One engine step:
//   out = scheduler.Schedule();       // which tokens of which requests, with their block tables
//   runner.Execute(out);              // writes K/V into the blocks, logits for needs_logits rows
//   scheduler.Update(out, sampled, finished);  // appends tokens, caches full blocks, frees
//
// Schedule(): (1) frees aborted requests; (2) gives every running request, in admission order,
// its next tokens (one decode token, or the next prefill chunk) within max_num_batched_tokens,
// preempting the lowest-priority / latest-arrived running request by recompute whenever blocks
// run out; (3) when nothing was preempted, admits waiting requests in policy order while
// max_num_seqs, the token budget and free blocks allow, skipping their prefix-cache hits and
// chunking prompts that do not fit the remaining budget.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kvcache/kv_cache_manager.h"
#include "scheduler/request_queue.h"
#include "scheduler/request_state.h"
#include "scheduler/scheduler_output.h"

namespace lychee {

struct SchedulerConfig {
  int32_t num_blocks = 0;  // KV pool capacity (NumKvBlocksForBudget)
  int32_t block_size = 16;
  int64_t max_num_seqs = 16;              // running requests at most
  int64_t max_num_batched_tokens = 1024;  // tokens per step at most
  int64_t max_model_len = 0;              // prompt + max_tokens per request; 0: no limit
  int64_t max_queue_len = 0;              // waiting requests at most; 0: no limit
  // A prefill chunk takes at most this many tokens (vLLM's long_prefill_token_threshold), so one
  // long prompt cannot take a whole step from short ones; 0: no cap beyond the budget.
  int64_t max_prefill_chunk_tokens = 0;
  bool enable_prefix_caching = true;
  bool enable_kv_events = false;  // record prefix-cache KvEvents (TakeKvEvents)
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
};

// Per-request options beyond the token counts.
struct SchedRequestOptions {
  // The engine runs this request's decode steps through a sparse policy. Their K/V is
  // approximate, so blocks holding such positions are never registered in the prefix cache (a
  // later request must not reuse them); blocks of prefill, recompute and dense decode steps are.
  bool sparse_decode = false;
  // LycheeDecode cache correction, for sparse_decode requests: > 0 makes the request's decode
  // step, once this many decode tokens accumulated since the last dense computation, a dense
  // chunk over those tokens plus the new one (ScheduledChunk::cache_correction): their K/V is
  // rewritten in every layer as a dense run computes it. 0: off.
  int64_t correction_interval = 0;
};

// One sampled token for a chunk that had needs_logits.
struct SampledToken {
  SeqId seq_id = 0;
  int32_t token_id = 0;
};

// A snapshot for metrics (lychee_num_requests_running, lychee_kv_cache_usage_perc, ...).
struct SchedulerStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_preemptions = 0;       // cumulative
  int64_t prefix_cache_queries = 0;  // cumulative, tokens
  int64_t prefix_cache_hits = 0;     // cumulative, tokens
  int32_t num_blocks = 0;
  int32_t num_free_blocks = 0;  // free + evictable cached
  int32_t block_size = 0;
  double kv_usage = 0.0;  // used blocks / num_blocks
};

// A request that left the scheduler in an Update, and why.
struct FinishedRequest {
  SeqId seq_id = 0;
  RequestStatus status = RequestStatus::kFinishedStopped;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. InvalidArgument: empty prompt, max_tokens < 1, prompt + max_tokens beyond
  // max_model_len or beyond the whole KV pool (it could never finish); AlreadyExists: `seq` is
  // live; ResourceExhausted: the waiting queue is full. `arrival` orders FCFS and breaks
  // priority ties (the engine passes a counter).
  [[nodiscard]] absl::Status AddRequest(SeqId seq, std::vector<int32_t> prompt, int64_t max_tokens,
                                        int32_t priority, int64_t arrival,
                                        const SchedRequestOptions& options = {});

  // Marks `seq` aborted; its blocks are freed and it is reported in `aborted` by the next
  // Schedule. Unknown or finished ids are ignored. Chunks already scheduled for it are skipped by
  // Update.
  void AbortRequest(SeqId seq);

  // Plans one step. The spans in the output point into scheduler state and stay valid until the
  // next Schedule, except those of a request that Update finishes (its state is gone then).
  SchedulerOutput Schedule();

  // Applies the step's results: appends each sampled token (one per chunk with needs_logits),
  // registers newly full, densely computed blocks in the prefix cache, and finishes `finished`
  // (decided by the engine: stop, EOS, length) plus requests that reached max_tokens or
  // max_model_len. Returns the requests that finished (their state is gone afterwards).
  std::vector<FinishedRequest> Update(const SchedulerOutput& out,
                                      absl::Span<const SampledToken> sampled,
                                      absl::Span<const SeqId> finished);

  // Queries.
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_unfinished() const { return static_cast<int64_t>(requests_.size()); }
  bool has_unfinished() const { return !requests_.empty(); }
  double kv_usage() const { return kv_.usage(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  int64_t prefix_cache_queries() const { return kv_.prefix_cache_queries(); }
  int64_t prefix_cache_hits() const { return kv_.prefix_cache_hits(); }
  SchedulerStats Stats() const;
  // Prefix-cache changes since the last call, for KV-aware routers (empty unless enabled).
  std::vector<KvEvent> TakeKvEvents() { return kv_.TakeEvents(); }
  const SchedulerConfig& config() const { return config_; }
  const KvCacheManager& kv_cache_manager() const { return kv_; }

  // A live request's state (nullptr when unknown or finished).
  const SchedRequest* Find(SeqId seq) const;
  // Running requests in admission order.
  std::vector<SeqId> RunningIds() const;

 private:
  // Frees `request`'s blocks and puts it back in the waiting queue to recompute.
  void Preempt(SchedRequest* request);
  // Chooses the running request to preempt: the last admitted (kFcfs) or the lowest priority,
  // latest arrival (kPriority).
  SchedRequest* PickVictim() const;
  void Finish(SchedRequest* request, RequestStatus status);
  int64_t ChunkCap(int64_t budget) const;

  SchedulerConfig config_;
  KvCacheManager kv_;
  absl::node_hash_map<SeqId, SchedRequest> requests_;  // node map: pointers stay valid
  RequestQueue waiting_;
  std::vector<SchedRequest*> running_;  // admission order
  std::vector<SeqId> pending_aborts_;   // AbortRequest order; applied by the next Schedule
  int64_t num_preemptions_ = 0;
};

}  // namespace lychee
