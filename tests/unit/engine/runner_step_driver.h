// SPDX-License-Identifier: Apache-2.0
// A small step driver for model-runner tests: sequences scheduled the way the engine would
// (rotating order, random chunk sizes, decode steps once caught up, shuffled block tables), run
// through any ModelRunner (CPU or CUDA), recording the logits returned for every position.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <numeric>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "engine/model_runner.h"
#include "scheduler/scheduler_output.h"
#include "sparsity/policy.h"

namespace lychee::testing {

// One sequence: `tokens` holds what is known so far (the prompt, then one token per decode
// step, revealed by the driver's `next_token` callback once the last one's logits came back).
struct SimSeq {
  std::vector<int32_t> tokens;
  int64_t final_len = 0;                   // stop once this many tokens have K/V in the pool
  std::vector<int32_t> table;              // block table (shuffled pool blocks)
  int64_t computed = 0;                    // tokens with K/V in the pool
  std::vector<std::vector<float>> logits;  // [position] → logits after it (empty: not returned)
};

using NextToken = std::function<int32_t(const SimSeq&, const std::vector<float>& last_logits)>;

// Optional sparse decoding in RunToCompletion: the policy of sequence i (null: dense) for its
// one-token chunks, audits on those, and a look at each step's stats.
struct SparseHooks {
  std::function<sparsity::Policy*(size_t seq)> policy_of;
  bool audit = false;
  std::function<void(const SchedulerOutput&, absl::Span<const SparseChunkStats>,
                     const std::vector<size_t>& owner)>
      after_step;
};

// Gives every sequence shuffled, non-contiguous blocks of `pool`.
inline void AssignBlocks(std::vector<SimSeq>& seqs, int64_t block_size, int64_t num_blocks,
                         std::mt19937_64& rng) {
  std::vector<int32_t> free(static_cast<size_t>(num_blocks));
  std::iota(free.begin(), free.end(), 0);
  std::shuffle(free.begin(), free.end(), rng);
  size_t next = 0;
  for (SimSeq& s : seqs) {
    const int64_t needed = (s.final_len + block_size - 1) / block_size;
    ASSERT_LE(next + static_cast<size_t>(needed), free.size());
    s.table.assign(free.begin() + static_cast<std::ptrdiff_t>(next),
                   free.begin() + static_cast<std::ptrdiff_t>(next + static_cast<size_t>(needed)));
    next += static_cast<size_t>(needed);
  }
}

// Runs all sequences to final_len: each step takes up to `budget` tokens, visiting sequences in
// a rotating order; a sequence with known tokens left gets a chunk of a random (mostly odd) size,
// one that is caught up is a decode step (chunk sizes drawn from `chunk_sizes`). needs_logits is
// set where the engine sets it (the chunk reaches the last known token) and at random on other
// chunks, to check those rows too.
inline void RunToCompletion(ModelRunner& runner, std::vector<SimSeq>& seqs, int64_t budget,
                            std::mt19937_64& rng, const NextToken& next_token,
                            const std::vector<int64_t>& chunk_sizes = {1, 2, 3, 5, 7, 9, 13},
                            const SparseHooks& sparse = {}) {
  const int64_t vocab = runner.config().vocab_size;
  std::uniform_int_distribution<size_t> pick(0, chunk_sizes.size() - 1);
  std::bernoulli_distribution extra_logits(0.3);
  for (SimSeq& s : seqs) s.logits.assign(static_cast<size_t>(s.final_len), {});
  size_t first = 0;
  for (int step_no = 0;; ++step_no) {
    ASSERT_LT(step_no, 10000) << "driver made no progress";
    SchedulerOutput step;
    std::vector<size_t> owner;
    int64_t left = budget;
    for (size_t k = 0; k < seqs.size() && left > 0; ++k) {
      const size_t i = (first + k) % seqs.size();
      SimSeq& s = seqs[i];
      const int64_t known = static_cast<int64_t>(s.tokens.size());
      if (s.computed >= known) continue;
      const int64_t n = std::min({known - s.computed, chunk_sizes[pick(rng)], left});
      ScheduledChunk ch;
      ch.seq_id = static_cast<SeqId>(i);
      ch.token_ids = absl::MakeConstSpan(s.tokens).subspan(static_cast<size_t>(s.computed),
                                                           static_cast<size_t>(n));
      ch.start_position = s.computed;
      ch.block_table = s.table;
      ch.needs_logits = s.computed + n == known || extra_logits(rng);
      step.chunks.push_back(ch);
      step.num_batched_tokens += n;
      owner.push_back(i);
      left -= n;
    }
    first = (first + 1) % seqs.size();
    if (step.chunks.empty()) break;
    std::vector<sparsity::Policy*> policies;
    if (sparse.policy_of) {
      for (size_t c = 0; c < step.chunks.size(); ++c) {
        ScheduledChunk& ch = step.chunks[c];
        sparsity::Policy* p = ch.token_ids.size() == 1 ? sparse.policy_of(owner[c]) : nullptr;
        ch.is_decode = p != nullptr;
        ch.audit = p != nullptr && sparse.audit;
        policies.push_back(p);
      }
    }
    auto logits = runner.Execute(step, policies);
    ASSERT_TRUE(logits.ok()) << logits.status();
    if (sparse.after_step) sparse.after_step(step, runner.sparse_stats(), owner);
    size_t row = 0;
    for (size_t c = 0; c < step.chunks.size(); ++c) {
      SimSeq& s = seqs[owner[c]];
      const ScheduledChunk& ch = step.chunks[c];
      s.computed += static_cast<int64_t>(ch.token_ids.size());
      if (!ch.needs_logits) continue;
      const float* r = logits->data() + row * static_cast<size_t>(vocab);
      s.logits[static_cast<size_t>(s.computed - 1)].assign(r, r + vocab);
      ++row;
    }
    ASSERT_EQ(row * static_cast<size_t>(vocab), logits->size());
    // Sequences that caught up with their known tokens "sample" the next one.
    for (SimSeq& s : seqs) {
      if (s.computed == static_cast<int64_t>(s.tokens.size()) && s.computed < s.final_len) {
        s.tokens.push_back(next_token(s, s.logits[static_cast<size_t>(s.computed - 1)]));
      }
    }
  }
  for (const SimSeq& s : seqs) ASSERT_EQ(s.computed, s.final_len);
}

}  // namespace lychee::testing
