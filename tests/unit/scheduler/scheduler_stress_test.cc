// SPDX-License-Identifier: Apache-2.0
// Randomized scheduler stress: random configurations (block size, pool size, budgets, chunk cap,
// policy, prefix caching), random arrivals with shared prefixes, random aborts and stop tokens,
// run until every request is done. Every step checks the invariants: token budget and max_num_seqs
// respected, each chunk's tokens are the request's next uncomputed tokens, block tables cover
// them, reference counts equal the live tables, blocks are shared only through the prefix cache,
// waiting requests hold no blocks, and a simulated runner verifies that every slot a chunk
// attends to holds the K/V this request would have computed (so prefix hits and recomputes after
// preemption are exact). At the end each finished request's token stream must equal its
// uninterrupted reference stream. Fresh seed per run (LYCHEE_TEST_SEED replays).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "scheduler/scheduler.h"
#include "tests/unit/scheduler/scheduler_test_utils.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

using ::lychee::testing::ReferenceStream;
using ::lychee::testing::Step;
using ::lychee::testing::StepRecord;

uint64_t PrefixValue(const std::vector<int32_t>& tokens, int64_t pos) {
  uint64_t h = 1469598103934665603ULL;
  for (int64_t i = 0; i <= pos; ++i) h = (h ^ static_cast<uint32_t>(tokens[i])) * 1099511628211ULL;
  return h;
}

struct Totals {
  int64_t preemptions = 0;
  int64_t hits = 0;
  int64_t finished = 0;
  int64_t aborted = 0;
  int64_t rejected = 0;
};

void RunOne(uint64_t seed, Totals& totals) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  SchedulerConfig c;
  c.block_size = static_cast<int32_t>(std::vector<int64_t>{1, 2, 4, 8, 16}[uniform(0, 4)]);
  c.num_blocks = static_cast<int32_t>(uniform(3, 48));
  c.max_num_seqs = uniform(1, 8);
  c.max_num_batched_tokens = uniform(1, 64);
  c.max_prefill_chunk_tokens = uniform(0, 1) == 0 ? 0 : uniform(1, 32);
  c.enable_prefix_caching = uniform(0, 3) != 0;
  c.policy = uniform(0, 1) == 0 ? SchedulingPolicy::kFcfs : SchedulingPolicy::kPriority;
  const int64_t capacity = static_cast<int64_t>(c.num_blocks) * c.block_size;
  SCOPED_TRACE("seed " + std::to_string(seed) + " bs=" + std::to_string(c.block_size) + " blocks=" +
               std::to_string(c.num_blocks) + " seqs=" + std::to_string(c.max_num_seqs) +
               " budget=" + std::to_string(c.max_num_batched_tokens) +
               " chunk=" + std::to_string(c.max_prefill_chunk_tokens) +
               " caching=" + std::to_string(c.enable_prefix_caching) +
               " priority=" + std::to_string(c.policy == SchedulingPolicy::kPriority));
  Scheduler s(c);
  const int32_t stop_token = 7;

  std::vector<std::vector<int32_t>> docs(3);
  for (auto& d : docs) {
    d.resize(uniform(1, std::min<int64_t>(capacity - 1, 3 * c.block_size + 5)));
    for (int32_t& t : d) t = static_cast<int32_t>(uniform(100, 103));
  }
  struct Meta {
    std::vector<int32_t> prompt;
    int64_t max_tokens;
    std::vector<int32_t> stream;
    bool aborted = false;
    bool finished = false;
    int64_t idle_steps = 0;
  };
  std::map<SeqId, Meta> meta;
  std::vector<std::vector<uint64_t>> content(c.num_blocks, std::vector<uint64_t>(c.block_size, 0));
  const int kRequests = 40;
  SeqId next = 0;

  auto runner = [&](const SchedulerOutput& out) {
    const KvCacheManager& kv = s.kv_cache_manager();
    ASSERT_LE(out.num_batched_tokens, c.max_num_batched_tokens);
    ASSERT_LE(static_cast<int64_t>(out.chunks.size()), c.max_num_seqs);
    int64_t sum = 0;
    std::set<SeqId> seen;
    bool seen_prefill = false;
    for (const ScheduledChunk& ch : out.chunks) {
      ASSERT_TRUE(seen.insert(ch.seq_id).second) << "seq " << ch.seq_id << " scheduled twice";
      const SchedRequest* r = s.Find(ch.seq_id);
      ASSERT_NE(r, nullptr);
      ASSERT_EQ(r->status, RequestStatus::kRunning);
      const int64_t n = static_cast<int64_t>(ch.token_ids.size());
      ASSERT_GT(n, 0);
      sum += n;
      ASSERT_EQ(ch.start_position + n, r->num_computed_tokens);
      ASSERT_TRUE(std::equal(ch.token_ids.begin(), ch.token_ids.end(),
                             r->tokens.begin() + ch.start_position));
      ASSERT_EQ(ch.needs_logits, r->num_computed_tokens == r->num_tokens());
      ASSERT_GE(static_cast<int64_t>(ch.block_table.size()) * c.block_size, ch.start_position + n);
      const bool is_decode = ch.start_position >= r->num_prefill_tokens;
      if (!is_decode) seen_prefill = true;
      ASSERT_FALSE(is_decode && seen_prefill) << "decode chunk after a prefill chunk";
      if (!is_decode && c.max_prefill_chunk_tokens > 0) {
        ASSERT_LE(n, c.max_prefill_chunk_tokens);
      }
      // Every earlier position (computed before, or from the prefix cache) holds this
      // sequence's K/V.
      for (int64_t p = 0; p < ch.start_position; ++p) {
        ASSERT_EQ(content[ch.block_table[p / c.block_size]][p % c.block_size],
                  PrefixValue(r->tokens, p))
            << "seq " << ch.seq_id << " position " << p;
      }
      for (int64_t p = ch.start_position; p < ch.start_position + n; ++p) {
        const BlockId b = ch.block_table[p / c.block_size];
        ASSERT_EQ(kv.pool().RefCount(b), 1) << "writing into shared block " << b;
        content[b][p % c.block_size] = PrefixValue(r->tokens, p);
      }
    }
    ASSERT_EQ(sum, out.num_batched_tokens);
  };

  auto check_state = [&]() {
    const KvCacheManager& kv = s.kv_cache_manager();
    ASSERT_LE(s.num_running(), c.max_num_seqs);
    std::vector<int32_t> refs(c.num_blocks, 0);
    for (SeqId id : s.RunningIds()) {
      const SchedRequest* r = s.Find(id);
      ASSERT_EQ(kv.NumSlots(id), r->num_computed_tokens);
      for (BlockId b : kv.BlockTable(id)) ++refs[b];
    }
    int32_t used = 0;
    for (BlockId b = 0; b < c.num_blocks; ++b) {
      ASSERT_EQ(kv.pool().RefCount(b), refs[b]) << "block " << b;
      if (refs[b] > 1) {
        ASSERT_TRUE(kv.pool().IsCached(b));
      }
      used += refs[b] > 0;
    }
    ASSERT_EQ(kv.num_used_blocks(), used);
    ASSERT_EQ(kv.num_seqs(), s.num_running()) << "a waiting request holds blocks";
    ASSERT_EQ(s.num_running() + s.num_waiting(), s.num_unfinished());
  };

  int64_t steps = 0;
  while (next < kRequests || s.has_unfinished()) {
    ASSERT_LT(++steps, 20000) << "no progress";
    // Arrivals.
    for (int64_t k = uniform(0, 2); k > 0 && next < kRequests; --k) {
      Meta m;
      if (uniform(0, 2) != 0) {
        const auto& d = docs[uniform(0, 2)];
        m.prompt.assign(d.begin(), d.begin() + uniform(1, d.size()));
      }
      for (int64_t extra = uniform(m.prompt.empty() ? 1 : 0, 2 * c.block_size + 3); extra > 0;
           --extra) {
        m.prompt.push_back(static_cast<int32_t>(uniform(100, 140)));
      }
      m.max_tokens = uniform(1, 24);
      const SeqId id = next++;
      const int64_t total = static_cast<int64_t>(m.prompt.size()) + m.max_tokens;
      const absl::Status st =
          s.AddRequest(id, m.prompt, m.max_tokens, static_cast<int32_t>(uniform(0, 3)), id);
      if (total > capacity) {
        ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
        ++totals.rejected;
        continue;
      }
      ASSERT_TRUE(st.ok()) << st;
      meta[id] = std::move(m);
    }
    // Occasional aborts.
    if (uniform(0, 49) == 0 && !meta.empty()) {
      auto it = std::next(meta.begin(), uniform(0, meta.size() - 1));
      if (!it->second.finished && !it->second.aborted) {
        s.AbortRequest(it->first);
        it->second.aborted = true;
      }
    }
    const StepRecord rec = Step(s, stop_token, runner);
    if (::testing::Test::HasFatalFailure()) return;
    for (const SampledToken& t : rec.sampled) meta[t.seq_id].stream.push_back(t.token_id);
    for (const FinishedRequest& f : rec.finished) {
      Meta& m = meta[f.seq_id];
      m.finished = true;
      const bool stopped = !m.stream.empty() && m.stream.back() == stop_token;
      ASSERT_EQ(f.status,
                stopped ? RequestStatus::kFinishedStopped : RequestStatus::kFinishedLength);
    }
    for (SeqId id : rec.aborted) ASSERT_TRUE(meta[id].aborted);
    totals.aborted += static_cast<int64_t>(rec.aborted.size());
    // Running requests progress: none is skipped for long.
    std::set<SeqId> scheduled;
    for (const auto& ch : rec.chunks) scheduled.insert(ch.seq_id);
    for (SeqId id : s.RunningIds()) {
      Meta& m = meta[id];
      m.idle_steps = scheduled.contains(id) ? 0 : m.idle_steps + 1;
      ASSERT_LT(m.idle_steps, 200) << "running seq " << id << " starves";
    }
    check_state();
    if (::testing::Test::HasFatalFailure()) return;
  }
  for (const auto& [id, m] : meta) {
    if (m.aborted) continue;
    ASSERT_TRUE(m.finished) << "seq " << id;
    ++totals.finished;
    ASSERT_EQ(m.stream, ReferenceStream(m.prompt, m.max_tokens, stop_token)) << "seq " << id;
  }
  EXPECT_EQ(s.kv_cache_manager().num_used_blocks(), 0);
  totals.preemptions += s.num_preemptions();
  totals.hits += s.prefix_cache_hits();
}

TEST(SchedulerStressTest, InvariantsHoldAndStreamsMatchReference) {
  const uint64_t base = ::lychee::testing::TestSeed();
  RecordProperty("seed", std::to_string(base));
  Totals totals;
  for (int i = 0; i < 300; ++i) {
    SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(base) + " run " + std::to_string(i));
    RunOne(base + i, totals);
    if (HasFatalFailure()) return;
  }
  // The runs must actually exercise the interesting paths.
  EXPECT_GT(totals.preemptions, 0);
  EXPECT_GT(totals.hits, 0);
  EXPECT_GT(totals.finished, 0);
  RecordProperty("preemptions", std::to_string(totals.preemptions));
  RecordProperty("prefix_hit_tokens", std::to_string(totals.hits));
  RecordProperty("finished", std::to_string(totals.finished));
  RecordProperty("aborted", std::to_string(totals.aborted));
  RecordProperty("rejected", std::to_string(totals.rejected));
}

}  // namespace
}  // namespace lychee
