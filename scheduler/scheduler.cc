// SPDX-License-Identifier: Apache-2.0
// Scheduler: the step planner (Schedule) and the result applier (Update). See scheduler.h.
#include "scheduler/scheduler.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/logging.h"

namespace lychee {
namespace {

KvCacheManagerConfig KvConfig(const SchedulerConfig& c) {
  KvCacheManagerConfig kv;
  kv.num_blocks = c.num_blocks;
  kv.block_size = c.block_size;
  kv.enable_prefix_caching = c.enable_prefix_caching;
  kv.enable_kv_events = c.enable_kv_events;
  return kv;
}

// A request's tokens planned for this step.
struct Planned {
  SchedRequest* request;
  int64_t start;
  int64_t num_tokens;
  bool correction = false;  // a cache correction: starts before num_computed_tokens
};

bool IsDecode(const Planned& p) {
  return p.start >= p.request->num_prefill_tokens && !p.correction;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config), kv_(KvConfig(config)), waiting_(config.policy) {
  LY_CHECK(config.max_num_seqs > 0 && config.max_num_batched_tokens > 0)
      << "max_num_seqs and max_num_batched_tokens must be positive";
}

absl::Status Scheduler::AddRequest(SeqId seq, std::vector<int32_t> prompt, int64_t max_tokens,
                                   int32_t priority, int64_t arrival,
                                   const SchedRequestOptions& options) {
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (max_tokens < 1) {
    return absl::InvalidArgumentError("max_tokens must be at least 1, got " +
                                      std::to_string(max_tokens));
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_tokens;
  if (config_.max_model_len > 0 && total > config_.max_model_len) {
    return absl::InvalidArgumentError("prompt (" + std::to_string(prompt.size()) +
                                      " tokens) + max_tokens (" + std::to_string(max_tokens) +
                                      ") exceeds max_model_len " +
                                      std::to_string(config_.max_model_len));
  }
  // A request larger than the whole pool could never finish, even alone: it would be preempted
  // forever and block the queue behind it.
  const int64_t capacity = static_cast<int64_t>(kv_.num_blocks()) * kv_.block_size();
  if (total > capacity) {
    return absl::InvalidArgumentError("prompt (" + std::to_string(prompt.size()) +
                                      " tokens) + max_tokens (" + std::to_string(max_tokens) +
                                      ") exceeds the KV cache capacity of " +
                                      std::to_string(capacity) + " tokens");
  }
  if (options.correction_interval < 0 ||
      (options.correction_interval > 0 && !options.sparse_decode)) {
    return absl::InvalidArgumentError("correction_interval needs sparse_decode and must be >= 0");
  }
  if (requests_.contains(seq)) {
    return absl::AlreadyExistsError("request " + std::to_string(seq) + " is already live");
  }
  if (config_.max_queue_len > 0 && num_waiting() >= config_.max_queue_len) {
    return absl::ResourceExhaustedError("waiting queue is full (" +
                                        std::to_string(config_.max_queue_len) + " requests)");
  }
  SchedRequest& r = requests_[seq];
  r.seq_id = seq;
  r.num_prompt_tokens = static_cast<int64_t>(prompt.size());
  r.tokens = std::move(prompt);
  // Reserved up front so appending sampled tokens never moves them: the token spans of a
  // SchedulerOutput stay valid through Update (the total is bounded by the pool check above).
  r.tokens.reserve(static_cast<size_t>(total));
  r.max_tokens = max_tokens;
  r.priority = priority;
  r.arrival = arrival;
  r.sparse_decode = options.sparse_decode;
  r.correction_interval = options.correction_interval;
  r.status = RequestStatus::kWaiting;
  waiting_.Add(&r);
  return absl::OkStatus();
}

void Scheduler::AbortRequest(SeqId seq) {
  const auto it = requests_.find(seq);
  if (it == requests_.end() || it->second.abort_pending) return;
  it->second.abort_pending = true;
  pending_aborts_.push_back(seq);
}

int64_t Scheduler::ChunkCap(int64_t budget) const {
  return config_.max_prefill_chunk_tokens > 0 ? std::min(budget, config_.max_prefill_chunk_tokens)
                                              : budget;
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;

  // 1. Aborts requested since the last step.
  for (SeqId seq : pending_aborts_) {
    const auto it = requests_.find(seq);
    if (it == requests_.end()) continue;
    Finish(&it->second, RequestStatus::kFinishedAborted);
    out.aborted.push_back(seq);
  }
  pending_aborts_.clear();

  // 2. Running requests, in admission order: each gets its decode token or next prefill chunk.
  int64_t budget = config_.max_num_batched_tokens;
  std::vector<Planned> planned;
  const std::vector<SchedRequest*> snapshot = running_;
  for (SchedRequest* r : snapshot) {
    if (budget <= 0) break;
    if (r->status != RequestStatus::kRunning) continue;  // preempted earlier in this step
    int64_t start = r->num_computed_tokens;
    int64_t n = std::min(r->num_uncomputed(), ChunkCap(budget));
    if (n <= 0) continue;
    // A due cache correction replaces the decode step: the sparse-decoded tokens since the last
    // dense computation and the new token, densely (when the budget takes them all; otherwise a
    // later step does it).
    const int64_t sparse_run = r->num_computed_tokens - r->dense_upto;
    const bool correction = r->correction_interval > 0 && r->num_uncomputed() == 1 &&
                            r->num_computed_tokens >= r->num_prefill_tokens &&
                            sparse_run >= r->correction_interval &&
                            sparse_run + 1 <= ChunkCap(budget);
    if (correction) {
      start = r->dense_upto;
      n = sparse_run + 1;
    }
    const int64_t grow = start + n - r->num_computed_tokens;  // new slots (1 for a correction)
    bool scheduled = false;
    while (true) {
      if (kv_.AllocateSlots(r->seq_id, grow).has_value()) {
        scheduled = true;
        break;
      }
      SchedRequest* victim = PickVictim();
      // A victim already planned this step gives its tokens back (its blocks go with Preempt).
      const auto p = std::find_if(planned.begin(), planned.end(),
                                  [victim](const Planned& x) { return x.request == victim; });
      if (p != planned.end()) {
        budget += p->num_tokens;
        planned.erase(p);
      }
      Preempt(victim);
      out.preempted.push_back(victim->seq_id);
      if (victim == r) break;
    }
    if (!scheduled) continue;
    planned.push_back({r, start, n, correction});
    budget -= n;
  }

  // 3. Admission, unless this step had to preempt (memory is short: admitting would thrash).
  if (out.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 && num_running() < config_.max_num_seqs) {
      SchedRequest* r = waiting_.Peek();
      ComputedBlocks computed = kv_.GetComputedBlocks(r->tokens);
      const int64_t num_computed = computed.num_tokens;
      const int64_t n = std::min(r->num_tokens() - num_computed, ChunkCap(budget));
      if (!kv_.AllocateSlots(r->seq_id, n, computed).has_value()) break;  // head-of-line waits
      waiting_.PopFront();
      r->status = RequestStatus::kRunning;
      r->num_computed_tokens = num_computed;
      r->num_prefill_tokens = r->num_tokens();
      r->dense_upto = r->num_tokens();  // every known token is (re)computed densely
      r->first_sparse_position = INT64_MAX;
      if (r->num_cached_tokens < 0) r->num_cached_tokens = num_computed;
      running_.push_back(r);
      planned.push_back({r, num_computed, n});
      budget -= n;
    }
  }

  // 4. Output: decode chunks first, then prefill chunks, each group in planning order.
  std::stable_partition(planned.begin(), planned.end(), IsDecode);
  out.chunks.reserve(planned.size());
  for (const Planned& p : planned) {
    SchedRequest* r = p.request;
    if (p.correction) {
      // Rewritten in place: none of these blocks may be shared or cached (sparse-decoded
      // positions are never registered, and prefix hits cover prompt blocks only).
      const int64_t bs = kv_.block_size();
      for (int64_t b = p.start / bs; b <= (r->num_computed_tokens - 1) / bs; ++b) {
        LY_CHECK(!kv_.IsBlockShared(r->seq_id, b))
            << "cache correction of seq " << r->seq_id << " would rewrite shared block " << b;
      }
      ++r->num_corrections;
    }
    r->num_computed_tokens = p.start + p.num_tokens;
    if (p.correction) r->dense_upto = r->num_computed_tokens;
    ScheduledChunk c;
    c.seq_id = r->seq_id;
    c.token_ids = absl::MakeConstSpan(r->tokens).subspan(p.start, p.num_tokens);
    c.start_position = p.start;
    c.block_table = kv_.BlockTable(r->seq_id);
    c.needs_logits = r->num_computed_tokens == r->num_tokens();
    c.num_cached_tokens = std::max<int64_t>(0, r->num_cached_tokens);
    // Decode: the token sampled last step, past everything known at admission (recompute and
    // chunked-prefill tails start before num_prefill_tokens; a correction is dense).
    c.is_decode = IsDecode(p);
    c.cache_correction = p.correction;
    if (c.is_decode && r->sparse_decode) {
      r->first_sparse_position = std::min(r->first_sparse_position, p.start);
    }
    out.chunks.push_back(c);
    out.num_batched_tokens += p.num_tokens;
  }
  return out;
}

std::vector<FinishedRequest> Scheduler::Update(const SchedulerOutput& out,
                                               absl::Span<const SampledToken> sampled,
                                               absl::Span<const SeqId> finished) {
  absl::flat_hash_map<SeqId, int32_t> sampled_by_seq;
  for (const SampledToken& s : sampled) sampled_by_seq[s.seq_id] = s.token_id;

  std::vector<FinishedRequest> done;
  std::vector<SeqId> touched;  // ids, not pointers: Finish below erases requests
  for (const ScheduledChunk& c : out.chunks) {
    const auto it = requests_.find(c.seq_id);
    if (it == requests_.end()) continue;
    SchedRequest* r = &it->second;
    if (r->abort_pending || r->status != RequestStatus::kRunning) continue;
    // The runner has written this step's K/V: full blocks become shareable, up to the first
    // sparse-decoded position (approximate K/V is never shared).
    const int64_t dense = std::min(r->num_computed_tokens, r->first_sparse_position);
    kv_.CacheFullBlocks(r->seq_id,
                        absl::MakeConstSpan(r->tokens).first(static_cast<size_t>(dense)));
    if (!c.needs_logits) continue;
    const auto s = sampled_by_seq.find(c.seq_id);
    LY_CHECK(s != sampled_by_seq.end()) << "no sampled token for seq " << c.seq_id;
    r->tokens.push_back(s->second);
    touched.push_back(r->seq_id);
  }
  for (SeqId seq : finished) {
    const auto it = requests_.find(seq);
    if (it == requests_.end()) continue;
    done.push_back({seq, RequestStatus::kFinishedStopped});
    Finish(&it->second, RequestStatus::kFinishedStopped);
  }
  // Length limits the engine did not already act on.
  for (SeqId seq : touched) {
    const auto it = requests_.find(seq);
    if (it == requests_.end()) continue;  // the engine finished it above
    SchedRequest* r = &it->second;
    const bool at_max_tokens = r->num_generated() >= r->max_tokens;
    const bool at_model_len = config_.max_model_len > 0 && r->num_tokens() >= config_.max_model_len;
    if (!at_max_tokens && !at_model_len) continue;
    done.push_back({r->seq_id, RequestStatus::kFinishedLength});
    Finish(r, RequestStatus::kFinishedLength);
  }
  return done;
}

SchedRequest* Scheduler::PickVictim() const {
  LY_CHECK(!running_.empty()) << "preemption with nothing running";
  switch (config_.policy) {
    case SchedulingPolicy::kFcfs:
      return running_.back();
    case SchedulingPolicy::kPriority: {
      SchedRequest* victim = running_.front();
      for (SchedRequest* r : running_) {
        if (!RanksBefore(*r, *victim)) victim = r;  // ties: the later admitted
      }
      return victim;
    }
  }
  return running_.back();
}

void Scheduler::Preempt(SchedRequest* r) {
  kv_.Free(r->seq_id);
  running_.erase(std::find(running_.begin(), running_.end(), r));
  r->status = RequestStatus::kPreempted;
  r->num_computed_tokens = 0;
  r->first_sparse_position = INT64_MAX;  // re-admission recomputes everything densely
  ++r->num_preemptions;
  ++num_preemptions_;
  waiting_.AddPreempted(r);
}

void Scheduler::Finish(SchedRequest* r, RequestStatus status) {
  kv_.Free(r->seq_id);
  if (const auto it = std::find(running_.begin(), running_.end(), r); it != running_.end()) {
    running_.erase(it);
  } else {
    waiting_.Remove(r);
  }
  r->status = status;
  const SeqId seq = r->seq_id;  // erase must not read the key from the node it destroys
  requests_.erase(seq);
}

SchedulerStats Scheduler::Stats() const {
  SchedulerStats st;
  st.num_running = num_running();
  st.num_waiting = num_waiting();
  st.num_preemptions = num_preemptions_;
  st.prefix_cache_queries = kv_.prefix_cache_queries();
  st.prefix_cache_hits = kv_.prefix_cache_hits();
  st.num_blocks = kv_.num_blocks();
  st.num_free_blocks = kv_.num_free_blocks();
  st.block_size = kv_.block_size();
  st.kv_usage = kv_.usage();
  return st;
}

const SchedRequest* Scheduler::Find(SeqId seq) const {
  const auto it = requests_.find(seq);
  return it == requests_.end() ? nullptr : &it->second;
}

std::vector<SeqId> Scheduler::RunningIds() const {
  std::vector<SeqId> ids;
  ids.reserve(running_.size());
  for (const SchedRequest* r : running_) ids.push_back(r->seq_id);
  return ids;
}

}  // namespace lychee
