// SPDX-License-Identifier: Apache-2.0
// Tiny factories and a fake engine step for scheduler tests (after vLLM's tests/v1/core/utils.py):
// MakeConfig / MakeScheduler, MakePrompts, a deterministic fake model whose next token depends on
// the whole sequence so far (so a recompute that feeds the wrong tokens changes the stream), and
// Step(), which runs Schedule → (fake) Execute → Update and returns a copy of what was scheduled.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "scheduler/scheduler.h"

namespace lychee::testing {

inline SchedulerConfig MakeConfig(int32_t num_blocks, int32_t block_size,
                                  int64_t max_num_batched_tokens = 1024,
                                  int64_t max_num_seqs = 16) {
  SchedulerConfig c;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  c.max_num_batched_tokens = max_num_batched_tokens;
  c.max_num_seqs = max_num_seqs;
  return c;
}

inline std::unique_ptr<Scheduler> MakeScheduler(int32_t num_blocks, int32_t block_size,
                                                int64_t max_num_batched_tokens = 1024,
                                                int64_t max_num_seqs = 16) {
  return std::make_unique<Scheduler>(
      MakeConfig(num_blocks, block_size, max_num_batched_tokens, max_num_seqs));
}

// `n` prompts of `len` tokens, all different from their first token on: prompt i is
// first + 1000 * i + [0, len).
inline std::vector<std::vector<int32_t>> MakePrompts(int n, int len, int32_t first = 0) {
  std::vector<std::vector<int32_t>> prompts(n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < len; ++j) prompts[i].push_back(first + 1000 * i + j);
  }
  return prompts;
}

// The fake model: next token = hash of every token so far, in [1, vocab].
inline int32_t FakeNextToken(absl::Span<const int32_t> tokens, int32_t vocab = 50) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : tokens) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ULL;
  h ^= h >> 29;
  return 1 + static_cast<int32_t>(h % static_cast<uint64_t>(vocab));
}

// The tokens a request generates when nothing interrupts it: the reference stream.
inline std::vector<int32_t> ReferenceStream(std::vector<int32_t> prompt, int64_t max_tokens,
                                            int32_t stop_token = -1) {
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < max_tokens) {
    const int32_t t = FakeNextToken(prompt);
    out.push_back(t);
    prompt.push_back(t);
    if (t == stop_token) break;
  }
  return out;
}

struct ChunkRecord {
  SeqId seq_id;
  int64_t start;
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  bool needs_logits;
  int64_t num_cached_tokens;
  bool is_decode;
  bool cache_correction;
};

struct StepRecord {
  std::vector<ChunkRecord> chunks;
  std::vector<SeqId> preempted;
  std::vector<SeqId> aborted;
  std::vector<SampledToken> sampled;
  std::vector<FinishedRequest> finished;
  int64_t num_batched_tokens = 0;

  std::vector<SeqId> seq_ids() const {
    std::vector<SeqId> ids;
    for (const ChunkRecord& c : chunks) ids.push_back(c.seq_id);
    return ids;
  }
};

inline StepRecord Record(const SchedulerOutput& out) {
  StepRecord r;
  for (const ScheduledChunk& c : out.chunks) {
    r.chunks.push_back({c.seq_id, c.start_position,
                        std::vector<int32_t>(c.token_ids.begin(), c.token_ids.end()),
                        std::vector<int32_t>(c.block_table.begin(), c.block_table.end()),
                        c.needs_logits, c.num_cached_tokens, c.is_decode, c.cache_correction});
  }
  r.preempted = out.preempted;
  r.aborted = out.aborted;
  r.num_batched_tokens = out.num_batched_tokens;
  return r;
}

// The engine's side of a step. `stop_token`: the engine finishes a request that samples it.
// `on_output` (optional) sees the raw output before Update (the "runner").
inline StepRecord Step(Scheduler& s, int32_t stop_token = -1,
                       const std::function<void(const SchedulerOutput&)>& on_output = nullptr) {
  const SchedulerOutput out = s.Schedule();
  StepRecord rec = Record(out);
  if (on_output) on_output(out);
  std::vector<SampledToken> sampled;
  std::vector<SeqId> finished;
  for (const ScheduledChunk& c : out.chunks) {
    if (!c.needs_logits) continue;
    const SchedRequest* r = s.Find(c.seq_id);
    if (r == nullptr) continue;
    const int32_t t = FakeNextToken(r->tokens);
    sampled.push_back({c.seq_id, t});
    if (t == stop_token) finished.push_back(c.seq_id);
  }
  rec.finished = s.Update(out, sampled, finished);
  rec.sampled = sampled;
  return rec;
}

}  // namespace lychee::testing
