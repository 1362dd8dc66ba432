// SPDX-License-Identifier: Apache-2.0
// Scheduler traces with exact expected schedules: which requests, which token ranges, which
// blocks, in which order; chunked-prefill boundaries, decode-first ordering, max_num_seqs,
// prefix-hit accounting, aborts, priorities, preemption order and victims, and identical
// continuation after preemption by recompute; is_decode only on real decode steps; sparse-decoded
// K/V kept out of the prefix cache; LycheeDecode cache-correction chunks. Everything is
// deterministic: no seeds here.
#include "scheduler/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/scheduler/scheduler_test_utils.h"

namespace lychee {
namespace {

using ::lychee::testing::ChunkRecord;
using ::lychee::testing::MakeConfig;
using ::lychee::testing::MakePrompts;
using ::lychee::testing::MakeScheduler;
using ::lychee::testing::ReferenceStream;
using ::lychee::testing::Step;
using ::lychee::testing::StepRecord;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

using Ids = std::vector<SeqId>;
using Tokens = std::vector<int32_t>;

Tokens Range(int32_t from, int32_t to) {
  Tokens t;
  for (int32_t i = from; i < to; ++i) t.push_back(i);
  return t;
}

void Add(Scheduler& s, SeqId seq, Tokens prompt, int64_t max_tokens = 16, int32_t priority = 0) {
  ASSERT_TRUE(s.AddRequest(seq, std::move(prompt), max_tokens, priority, /*arrival=*/seq).ok());
}

// Collects every request's sampled tokens over steps.
struct Streams {
  std::map<SeqId, Tokens> tokens;
  void Take(const StepRecord& r) {
    for (const SampledToken& t : r.sampled) tokens[t.seq_id].push_back(t.token_id);
  }
};

TEST(SchedulerTest, PrefillsThenDecodesAndGrowsBlockTables) {
  auto s = MakeScheduler(/*num_blocks=*/10, /*block_size=*/4);
  const auto prompts = MakePrompts(3, 6);
  for (int i = 0; i < 3; ++i) Add(*s, i, prompts[i]);
  EXPECT_EQ(s->num_waiting(), 3);

  StepRecord r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1, 2));
  EXPECT_EQ(r.chunks[0].tokens, prompts[0]);
  EXPECT_EQ(r.chunks[0].start, 0);
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1}));
  EXPECT_EQ(r.chunks[1].blocks, (Tokens{2, 3}));
  EXPECT_EQ(r.chunks[2].blocks, (Tokens{4, 5}));
  EXPECT_TRUE(r.chunks[2].needs_logits);
  EXPECT_EQ(r.num_batched_tokens, 18);
  EXPECT_EQ(s->num_running(), 3);
  EXPECT_EQ(s->num_waiting(), 0);

  for (int64_t pos : {6, 7}) {  // decodes fill the second blocks
    r = Step(*s);
    ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1, 2));
    for (const auto& c : r.chunks) {
      EXPECT_EQ(c.start, pos);
      EXPECT_EQ(c.tokens.size(), 1u);
      EXPECT_TRUE(c.needs_logits);
      EXPECT_EQ(c.blocks.size(), 2u);
    }
  }
  r = Step(*s);  // position 8: a third block each, in scheduling order
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1, 6}));
  EXPECT_EQ(r.chunks[1].blocks, (Tokens{2, 3, 7}));
  EXPECT_EQ(r.chunks[2].blocks, (Tokens{4, 5, 8}));
  EXPECT_EQ(r.num_batched_tokens, 3);
  // The decode token is the one sampled in the previous step.
  const SchedRequest* req = s->Find(0);
  ASSERT_NE(req, nullptr);
  EXPECT_EQ(r.chunks[0].tokens[0], req->tokens[8]);
  EXPECT_DOUBLE_EQ(s->kv_usage(), 0.9);
}

TEST(SchedulerTest, ChunkedPrefillRespectsTheTokenBudget) {
  auto s = MakeScheduler(20, 4, /*max_num_batched_tokens=*/8);
  Add(*s, 0, Range(0, 20));
  Add(*s, 1, Range(100, 103));
  StepRecord r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0));
  EXPECT_EQ(r.chunks[0].tokens, Range(0, 8));
  EXPECT_FALSE(r.chunks[0].needs_logits);
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1}));
  EXPECT_THAT(r.sampled, IsEmpty());

  r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0));
  EXPECT_EQ(r.chunks[0].start, 8);
  EXPECT_EQ(r.chunks[0].tokens, Range(8, 16));
  EXPECT_FALSE(r.chunks[0].needs_logits);

  r = Step(*s);  // the last 4 prompt tokens, then seq 1 fits in the remaining 4
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_EQ(r.chunks[0].tokens, Range(16, 20));
  EXPECT_TRUE(r.chunks[0].needs_logits);
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1, 2, 3, 4}));
  EXPECT_EQ(r.chunks[1].tokens, Range(100, 103));
  EXPECT_EQ(r.chunks[1].blocks, (Tokens{5}));
  EXPECT_EQ(r.num_batched_tokens, 7);

  r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_EQ(r.chunks[0].start, 20);
  EXPECT_EQ(r.chunks[1].start, 3);
}

TEST(SchedulerTest, DecodesComeBeforePrefillChunksInTheOutput) {
  SchedulerConfig c = MakeConfig(40, 4, /*max_num_batched_tokens=*/8);
  c.max_prefill_chunk_tokens = 6;
  Scheduler s(c);
  Add(s, 0, Range(0, 20));
  Add(s, 1, Range(100, 102));
  StepRecord r = Step(s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_EQ(r.chunks[0].tokens, Range(0, 6));  // capped by max_prefill_chunk_tokens
  EXPECT_EQ(r.chunks[1].tokens, Range(100, 102));

  r = Step(s);  // running order is 0 then 1, but 1 decodes: it goes first
  ASSERT_THAT(r.seq_ids(), ElementsAre(1, 0));
  EXPECT_EQ(r.chunks[0].start, 2);
  EXPECT_EQ(r.chunks[1].tokens, Range(6, 12));
  EXPECT_EQ(r.num_batched_tokens, 7);
}

TEST(SchedulerTest, MaxNumSeqsLimitsRunningRequests) {
  auto s = MakeScheduler(40, 4, 1024, /*max_num_seqs=*/2);
  const auto prompts = MakePrompts(3, 5);
  Add(*s, 0, prompts[0], /*max_tokens=*/2);
  Add(*s, 1, prompts[1], /*max_tokens=*/10);
  Add(*s, 2, prompts[2], /*max_tokens=*/10);
  StepRecord r = Step(*s);
  EXPECT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_EQ(s->num_waiting(), 1);
  r = Step(*s);  // seq 0 reaches max_tokens = 2
  EXPECT_THAT(r.seq_ids(), ElementsAre(0, 1));
  ASSERT_EQ(r.finished.size(), 1u);
  EXPECT_EQ(r.finished[0].seq_id, 0);
  EXPECT_EQ(r.finished[0].status, RequestStatus::kFinishedLength);
  EXPECT_EQ(s->Find(0), nullptr);
  r = Step(*s);
  EXPECT_THAT(r.seq_ids(), ElementsAre(1, 2));
  EXPECT_EQ(r.chunks[1].start, 0);
}

TEST(SchedulerTest, EngineFinishedRequestsAreFreed) {
  auto s = MakeScheduler(10, 4);
  Add(*s, 7, Range(0, 9));
  (void)Step(*s);
  EXPECT_GT(s->kv_usage(), 0.0);
  const SchedulerOutput out = s->Schedule();
  const std::vector<SampledToken> sampled = {{7, 3}};
  const std::vector<SeqId> finished = {7};
  const auto done = s->Update(out, sampled, finished);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, RequestStatus::kFinishedStopped);
  EXPECT_EQ(s->num_unfinished(), 0);
  EXPECT_EQ(s->kv_cache_manager().num_used_blocks(), 0);
  EXPECT_TRUE(s->Schedule().empty());
}

TEST(SchedulerTest, PrefixHitsSkipCachedBlocksAndAreCounted) {
  auto s = MakeScheduler(20, 4);
  Add(*s, 0, Range(0, 10));
  StepRecord r = Step(*s);
  EXPECT_EQ(r.chunks[0].num_cached_tokens, 0);
  // Blocks [0..4) and [4..8) are full and cached now; seq 1 shares the first 9 tokens.
  Tokens p1 = Range(0, 9);
  p1.push_back(500);
  p1.push_back(501);
  Add(*s, 1, p1);
  r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_EQ(r.chunks[1].start, 8);
  EXPECT_EQ(r.chunks[1].tokens, (Tokens{8, 500, 501}));
  EXPECT_EQ(r.chunks[1].blocks, (Tokens{0, 1, 3}));
  EXPECT_EQ(r.chunks[1].num_cached_tokens, 8);
  EXPECT_EQ(r.num_batched_tokens, 1 + 3);
  EXPECT_EQ(s->prefix_cache_queries(), 10 + 11);
  EXPECT_EQ(s->prefix_cache_hits(), 8);
  const SchedulerStats st = s->Stats();
  EXPECT_EQ(st.prefix_cache_hits, 8);
  EXPECT_EQ(st.num_running, 2);
  EXPECT_EQ(st.num_blocks, 20);
  EXPECT_EQ(st.num_free_blocks, 20 - 4);  // seq 0: 3 blocks, seq 1: 1 more (2 shared)
  EXPECT_DOUBLE_EQ(st.kv_usage, 4.0 / 20.0);

  // A prompt made only of cached full blocks still computes its last block.
  Add(*s, 2, Range(0, 8));
  r = Step(*s);
  ASSERT_EQ(r.chunks.back().seq_id, 2);
  EXPECT_EQ(r.chunks.back().start, 4);
  EXPECT_EQ(r.chunks.back().num_cached_tokens, 4);
  EXPECT_EQ(s->prefix_cache_hits(), 12);
}

TEST(SchedulerTest, PrefixCachingOffComputesEverything) {
  SchedulerConfig c = MakeConfig(20, 4);
  c.enable_prefix_caching = false;
  Scheduler s(c);
  Add(s, 0, Range(0, 10));
  (void)Step(s);
  Add(s, 1, Range(0, 10));
  const StepRecord r = Step(s);
  EXPECT_EQ(r.chunks[1].start, 0);
  EXPECT_EQ(s.prefix_cache_hits(), 0);
}

TEST(SchedulerTest, PublishesKvEventsForCachedBlocks) {
  SchedulerConfig c = MakeConfig(3, 4);
  c.enable_kv_events = true;
  Scheduler s(c);
  Add(s, 0, Range(0, 9), /*max_tokens=*/1);
  (void)Step(s);  // caches [0, 4) and [4, 8), then finishes
  std::vector<KvEvent> events = s.TakeKvEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, KvEvent::Kind::kBlockStored);
  EXPECT_EQ(events[0].parent_hash, kRootBlockHash);
  EXPECT_EQ(events[0].token_ids, Range(0, 4));
  EXPECT_EQ(events[1].parent_hash, events[0].hash);
  // A different 9-token prompt needs all 3 blocks: one cached block is evicted.
  Add(s, 1, Range(50, 59), 1);
  (void)Step(s);
  events = s.TakeKvEvents();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].kind, KvEvent::Kind::kBlockRemoved);
}

TEST(SchedulerTest, AbortFreesBlocksOnTheNextSchedule) {
  auto s = MakeScheduler(10, 4);
  const auto prompts = MakePrompts(3, 5);
  for (int i = 0; i < 2; ++i) Add(*s, i, prompts[i]);
  (void)Step(*s);
  Add(*s, 2, prompts[2]);
  s->AbortRequest(0);
  s->AbortRequest(2);                                     // still waiting
  s->AbortRequest(42);                                    // unknown: ignored
  EXPECT_EQ(s->kv_cache_manager().num_used_blocks(), 4);  // nothing freed before Schedule
  const StepRecord r = Step(*s);
  EXPECT_THAT(r.aborted, ElementsAre(0, 2));
  EXPECT_THAT(r.seq_ids(), ElementsAre(1));
  EXPECT_EQ(s->kv_cache_manager().num_used_blocks(), 2);
  EXPECT_EQ(s->num_unfinished(), 1);
  EXPECT_EQ(s->Find(0), nullptr);
}

TEST(SchedulerTest, AbortBetweenScheduleAndUpdateSkipsTheChunk) {
  auto s = MakeScheduler(10, 4);
  Add(*s, 0, Range(0, 5));
  const SchedulerOutput out = s->Schedule();
  s->AbortRequest(0);
  const std::vector<SampledToken> sampled = {{0, 9}};
  EXPECT_THAT(s->Update(out, sampled, {}), IsEmpty());
  EXPECT_EQ(s->Find(0)->num_tokens(), 5);  // nothing appended
  const SchedulerOutput next = s->Schedule();
  EXPECT_THAT(next.aborted, ElementsAre(0));
  EXPECT_TRUE(next.empty());
  EXPECT_EQ(s->kv_cache_manager().num_used_blocks(), 0);
}

TEST(SchedulerTest, PriorityPolicyAdmitsLowerValuesFirstThenArrival) {
  SchedulerConfig c = MakeConfig(20, 4, 1024, /*max_num_seqs=*/1);
  c.policy = SchedulingPolicy::kPriority;
  Scheduler s(c);
  const auto prompts = MakePrompts(4, 3);
  ASSERT_TRUE(s.AddRequest(0, prompts[0], 1, /*priority=*/5, /*arrival=*/0).ok());
  ASSERT_TRUE(s.AddRequest(1, prompts[1], 1, 1, 1).ok());
  ASSERT_TRUE(s.AddRequest(2, prompts[2], 1, 1, 2).ok());
  ASSERT_TRUE(s.AddRequest(3, prompts[3], 1, 0, 3).ok());
  Ids order;
  while (s.has_unfinished()) {
    const StepRecord r = Step(s);
    ASSERT_EQ(r.chunks.size(), 1u);
    order.push_back(r.chunks[0].seq_id);
  }
  EXPECT_THAT(order, ElementsAre(3, 1, 2, 0));
}

TEST(SchedulerTest, FcfsPreemptsTheLatestArrivalAndItContinuesIdentically) {
  // 4 blocks of 4 tokens. Two prompts of 7 fill all four blocks after one decode each.
  auto s = MakeScheduler(4, 4);
  const auto prompts = MakePrompts(2, 7);
  Add(*s, 0, prompts[0], /*max_tokens=*/3);
  Add(*s, 1, prompts[1], /*max_tokens=*/8);
  Streams streams;
  StepRecord r = Step(*s);
  streams.Take(r);
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1}));
  EXPECT_EQ(r.chunks[1].blocks, (Tokens{2, 3}));
  r = Step(*s);  // position 7: the last free slots
  streams.Take(r);
  EXPECT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_THAT(r.preempted, IsEmpty());

  r = Step(*s);  // seq 0 needs a fifth block: seq 1 (latest arrival) is preempted
  streams.Take(r);
  ASSERT_EQ(r.finished.size(), 1u);  // and seq 0 reaches max_tokens = 3 in the same step
  EXPECT_THAT(r.preempted, ElementsAre(1));
  ASSERT_THAT(r.seq_ids(), ElementsAre(0));
  // seq 1 freed its blocks tail first, so the LRU evicts its block 3 before its block 2.
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1, 3}));
  EXPECT_EQ(s->num_preemptions(), 1);
  EXPECT_EQ(s->Find(1)->status, RequestStatus::kPreempted);
  EXPECT_EQ(s->Find(1)->num_computed_tokens, 0);
  EXPECT_EQ(s->num_waiting(), 1);

  // seq 1 comes back once seq 0 is gone, recomputing prompt + its 2 generated tokens, with its
  // first block (still cached: only block 3 was evicted) reused.
  const Tokens generated_before = streams.tokens[1];
  ASSERT_EQ(generated_before.size(), 2u);
  bool resumed = false;
  while (s->has_unfinished()) {
    r = Step(*s);
    streams.Take(r);
    for (const auto& c : r.chunks) {
      if (c.seq_id != 1 || resumed) continue;
      resumed = true;
      EXPECT_EQ(c.start, 4);  // block 2 = prompt tokens [0, 4) came from the prefix cache
      EXPECT_EQ(c.blocks[0], 2);
      Tokens expect(prompts[1].begin() + 4, prompts[1].end());
      expect.insert(expect.end(), generated_before.begin(), generated_before.end());
      EXPECT_EQ(c.tokens, expect);  // the rest of the prompt, then the 2 generated tokens
      EXPECT_TRUE(c.needs_logits);
      EXPECT_EQ(c.num_cached_tokens, 0);  // cached_tokens reports the first admission only
    }
    ASSERT_LT(s->num_preemptions(), 10);
  }
  EXPECT_TRUE(resumed);
  EXPECT_EQ(streams.tokens[0], ReferenceStream(prompts[0], 3));
  EXPECT_EQ(streams.tokens[1], ReferenceStream(prompts[1], 8));
  EXPECT_EQ(s->kv_cache_manager().num_used_blocks(), 0);
}

TEST(SchedulerTest, PreemptsLatestArrivalsOneByOneUntilTheChunkFits) {
  SchedulerConfig c = MakeConfig(/*num_blocks=*/4, /*block_size=*/2, /*max_num_batched_tokens=*/6);
  c.max_prefill_chunk_tokens = 4;
  Scheduler s(c);
  Add(s, 0, Range(0, 7), /*max_tokens=*/1);
  Add(s, 1, {100}, 3);
  Add(s, 2, {200}, 3);
  StepRecord r = Step(s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1, 2));
  EXPECT_EQ(r.chunks[0].tokens, Range(0, 4));
  EXPECT_EQ(s.kv_cache_manager().num_free_blocks(), 0);
  // Seq 0's next chunk [4, 7) needs two blocks: seq 2 goes first, then seq 1.
  r = Step(s);
  EXPECT_THAT(r.preempted, ElementsAre(2, 1));
  ASSERT_THAT(r.seq_ids(), ElementsAre(0));
  EXPECT_EQ(r.chunks[0].tokens, Range(4, 7));
  EXPECT_EQ(r.chunks[0].blocks, (Tokens{0, 1, 2, 3}));  // most recently freed first
  EXPECT_EQ(s.num_preemptions(), 2);
  ASSERT_EQ(r.finished.size(), 1u);  // seq 0 had max_tokens = 1
  // Back in arrival order: the last preempted (seq 1) is at the front of the queue.
  r = Step(s);
  EXPECT_THAT(r.seq_ids(), ElementsAre(1, 2));
  EXPECT_EQ(r.chunks[0].tokens, (Tokens{100, r.chunks[0].tokens[1]}));
  EXPECT_EQ(r.chunks[0].start, 0);
}

TEST(SchedulerTest, PriorityPreemptsTheLowestPriorityEvenIfAlreadyScheduled) {
  SchedulerConfig c = MakeConfig(/*num_blocks=*/6, /*block_size=*/2);
  c.policy = SchedulingPolicy::kPriority;
  Scheduler s(c);
  ASSERT_TRUE(s.AddRequest(1, {1, 2}, 5, /*priority=*/5, /*arrival=*/0).ok());
  StepRecord r = Step(s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(1));
  ASSERT_TRUE(s.AddRequest(0, {3, 4, 5}, 3, /*priority=*/0, 1).ok());
  ASSERT_TRUE(s.AddRequest(2, {7, 7, 7, 7}, 4, /*priority=*/1, 2).ok());
  r = Step(s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(1, 0, 2));  // decode first, then admissions by priority
  EXPECT_EQ(s.kv_cache_manager().num_free_blocks(), 0);
  // Running order is 1, 0, 2. Seq 1 and 0 decode into their second blocks; seq 2 (position 4)
  // needs a third block. Seq 1 has the lowest priority: it loses its already planned decode.
  r = Step(s);
  EXPECT_THAT(r.preempted, ElementsAre(1));
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 2));
  EXPECT_EQ(r.num_batched_tokens, 2);
  EXPECT_EQ(r.chunks[1].start, 4);
  EXPECT_EQ(r.chunks[1].blocks.size(), 3u);
  EXPECT_THAT(s.RunningIds(), ElementsAre(0, 2));
  EXPECT_EQ(s.Find(1)->status, RequestStatus::kPreempted);
}

TEST(SchedulerTest, RequestPreemptsItselfWhenItIsTheVictim) {
  SchedulerConfig c = MakeConfig(4, 2);
  c.policy = SchedulingPolicy::kPriority;
  Scheduler s(c);
  ASSERT_TRUE(s.AddRequest(0, {1, 2, 3}, 4, /*priority=*/9, 0).ok());  // first, least important
  ASSERT_TRUE(s.AddRequest(1, {4, 5, 6}, 4, /*priority=*/0, 1).ok());
  (void)Step(s);
  (void)Step(s);                 // position 3: both still fit
  const StepRecord r = Step(s);  // position 4: seq 0 (scheduled first) needs a block, loses
  EXPECT_THAT(r.preempted, ElementsAre(0));
  EXPECT_THAT(r.seq_ids(), ElementsAre(1));
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFit) {
  SchedulerConfig c = MakeConfig(4, 4);  // 16 token slots
  c.max_model_len = 12;
  c.max_queue_len = 2;
  Scheduler s(c);
  EXPECT_EQ(s.AddRequest(0, {}, 1, 0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.AddRequest(0, {1}, 0, 0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.AddRequest(0, Range(0, 10), 3, 0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(s.AddRequest(0, Range(0, 10), 2, 0, 0).ok());
  EXPECT_EQ(s.AddRequest(0, {1}, 1, 0, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(s.AddRequest(1, {1}, 1, 0, 1).ok());
  EXPECT_EQ(s.AddRequest(2, {1}, 1, 0, 2).code(), absl::StatusCode::kResourceExhausted);

  SchedulerConfig big = MakeConfig(4, 4);  // no max_model_len: the pool is the limit
  Scheduler t(big);
  EXPECT_EQ(t.AddRequest(0, Range(0, 10), 7, 0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(t.AddRequest(0, Range(0, 10), 6, 0, 0).ok());
}

TEST(SchedulerTest, LongestRequestThatFitsTheWholePoolCompletesAlone) {
  auto s = MakeScheduler(4, 4, /*max_num_batched_tokens=*/5);
  const auto prompts = MakePrompts(3, 10);
  Streams streams;
  Add(*s, 0, prompts[0], 6);  // exactly 16 slots
  Add(*s, 1, prompts[1], 6);
  Add(*s, 2, prompts[2], 6);
  int steps = 0;
  while (s->has_unfinished()) {
    streams.Take(Step(*s));
    ASSERT_LT(++steps, 500);
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(streams.tokens[i], ReferenceStream(prompts[i], 6));
}

// ---- is_decode, sparse-decoded K/V and the prefix cache, cache corrections ----------------

void AddSparse(Scheduler& s, SeqId seq, Tokens prompt, int64_t max_tokens,
               int64_t correction_interval = 0) {
  SchedRequestOptions options;
  options.sparse_decode = true;
  options.correction_interval = correction_interval;
  ASSERT_TRUE(s.AddRequest(seq, std::move(prompt), max_tokens, 0, seq, options).ok());
}

TEST(SchedulerTest, IsDecodeMarksOnlyRealDecodeSteps) {
  auto s = MakeScheduler(16, 4, /*max_num_batched_tokens=*/8);
  const auto prompts = MakePrompts(2, 9);
  Add(*s, 0, Tokens(prompts[0].begin(), prompts[0].begin() + 7), 4);
  Add(*s, 1, prompts[1], 3);
  StepRecord r = Step(*s);  // seq 0's prompt (7) and seq 1's first token: a one-token prefill
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_FALSE(r.chunks[0].is_decode);
  EXPECT_EQ(r.chunks[1].tokens.size(), 1u);
  EXPECT_FALSE(r.chunks[1].is_decode);
  r = Step(*s);
  EXPECT_TRUE(r.chunks[0].is_decode);
  EXPECT_EQ(r.chunks[1].start, 1);
  EXPECT_FALSE(r.chunks[1].is_decode);
  r = Step(*s);  // seq 1's prompt ends with a one-token chunk: still prefill
  ASSERT_THAT(r.seq_ids(), ElementsAre(0, 1));
  EXPECT_TRUE(r.chunks[0].is_decode);
  EXPECT_EQ(r.chunks[1].start, 8);
  EXPECT_EQ(r.chunks[1].tokens.size(), 1u);
  EXPECT_TRUE(r.chunks[1].needs_logits);
  EXPECT_FALSE(r.chunks[1].is_decode);
  r = Step(*s);
  for (const auto& c : r.chunks) EXPECT_TRUE(c.is_decode) << c.seq_id;
}

TEST(SchedulerTest, RecomputeAfterPreemptionIsNotDecode) {
  auto s = MakeScheduler(4, 4, /*max_num_batched_tokens=*/4);
  const auto prompts = MakePrompts(2, 7);
  Add(*s, 0, prompts[0], 3);
  Add(*s, 1, prompts[1], 8);
  Streams streams;
  bool preempted = false, resumed_prefill = false;
  int64_t known_at_admission = 0;
  for (int steps = 0; s->has_unfinished(); ++steps) {
    ASSERT_LT(steps, 200);
    const StepRecord r = Step(*s);
    streams.Take(r);
    if (!r.preempted.empty()) preempted = true;
    for (const auto& c : r.chunks) {
      const SchedRequest* q = s->Find(c.seq_id);
      if (q != nullptr) known_at_admission = q->num_prefill_tokens;
      // A decode step is one token past everything known when the request was (re)admitted.
      if (c.is_decode) {
        EXPECT_EQ(c.tokens.size(), 1u);
        EXPECT_TRUE(c.needs_logits);
        if (q != nullptr) {
          EXPECT_GE(c.start, known_at_admission);
        }
      } else if (q != nullptr) {
        EXPECT_LT(c.start, known_at_admission);
      }
      if (preempted && c.seq_id == 1 && !c.is_decode) resumed_prefill = true;
    }
  }
  EXPECT_TRUE(preempted);
  EXPECT_TRUE(resumed_prefill);
  EXPECT_EQ(streams.tokens[1], ReferenceStream(prompts[1], 8));
}

// Runs `seq` of `s` to completion alone and returns its whole sequence (prompt + generated).
Tokens RunAlone(Scheduler& s, SeqId seq, const Tokens& prompt, int64_t max_tokens) {
  Streams streams;
  for (int steps = 0; s.Find(seq) != nullptr; ++steps) {
    EXPECT_LT(steps, 200);
    if (steps >= 200) break;
    streams.Take(Step(s));
  }
  Tokens all = prompt;
  all.insert(all.end(), streams.tokens[seq].begin(), streams.tokens[seq].end());
  EXPECT_EQ(static_cast<int64_t>(streams.tokens[seq].size()), max_tokens);
  return all;
}

// K/V written by sparse decode steps is approximate: a later request with the same tokens must
// not reuse it. Only the sparse request's prompt blocks are shared; a dense request's decoded
// blocks are.
TEST(SchedulerTest, SparseDecodedBlocksNeverEnterThePrefixCache) {
  auto s = MakeScheduler(64, 4);
  const auto prompts = MakePrompts(2, 8);
  AddSparse(*s, 0, prompts[0], 10);
  const Tokens sparse_all = RunAlone(*s, 0, prompts[0], 10);
  Add(*s, 1, prompts[1], 10);
  const Tokens dense_all = RunAlone(*s, 1, prompts[1], 10);

  // Later dense requests whose prompt is the whole earlier sequence plus one token.
  Tokens after_sparse = sparse_all, after_dense = dense_all;
  after_sparse.push_back(7);
  after_dense.push_back(7);
  Add(*s, 2, after_sparse, 1);
  Add(*s, 3, after_dense, 1);
  const StepRecord r = Step(*s);
  ASSERT_THAT(r.seq_ids(), ElementsAre(2, 3));
  EXPECT_EQ(r.chunks[0].num_cached_tokens, 8) << "only the sparse request's prompt blocks";
  // The dense request computed 8 + 9 = 17 tokens: 4 full blocks, all shared.
  EXPECT_EQ(r.chunks[1].num_cached_tokens, 16);
}

// What a sparse request prefills (its prompt, or everything after a preemption, which feeds the
// whole sequence as a prompt again) is dense K/V: those full blocks are shareable.
TEST(SchedulerTest, SparseRequestsPrefilledBlocksAreShareable) {
  auto s = MakeScheduler(64, 4);
  const auto prompts = MakePrompts(1, 6);
  AddSparse(*s, 0, prompts[0], 12);
  for (int i = 0; i < 6; ++i) Step(*s);  // prompt + 5 sparse decodes: 11 tokens computed
  // A second sparse request whose prompt is everything so far (what a recompute feeds).
  const SchedRequest* q = s->Find(0);
  ASSERT_NE(q, nullptr);
  const Tokens so_far = q->tokens;
  AddSparse(*s, 1, so_far, 2);
  Step(*s);  // seq 1's prefill: only the sparse request's first block (prompt) is hit
  Tokens probe = so_far;
  probe.push_back(9);
  Add(*s, 2, probe, 1);
  const StepRecord r = Step(*s);
  ASSERT_EQ(r.chunks.back().seq_id, 2);
  // seq 1 prefilled every token of so_far densely: its full blocks (floor(12 / 4) = 3) are
  // shared, whatever seq 0 decoded sparsely.
  EXPECT_EQ(r.chunks.back().num_cached_tokens, static_cast<int64_t>(so_far.size()) / 4 * 4);
}

// Cache correction every 3 sparse decode tokens: the 4th step of each window is one dense chunk
// over the 3 sparse-decoded tokens and the new one, then decoding goes on; the generated stream
// is what it is without corrections, and the rewritten blocks are never shared.
TEST(SchedulerTest, CacheCorrectionRecomputesTheLastDecodedTokensDensely) {
  auto s = MakeScheduler(32, 4);
  const auto prompts = MakePrompts(1, 5);
  AddSparse(*s, 0, prompts[0], 12, /*correction_interval=*/3);
  Streams streams;
  std::vector<ChunkRecord> chunks;
  while (s->has_unfinished()) {
    const StepRecord r = Step(*s);
    streams.Take(r);
    ASSERT_EQ(r.chunks.size(), 1u);
    chunks.push_back(r.chunks[0]);
    ASSERT_LT(chunks.size(), 100u);
  }
  EXPECT_EQ(streams.tokens[0], ReferenceStream(prompts[0], 12));
  // prefill [0, 5); decodes 5, 6, 7; correction [5, 9); decodes 9, 10, 11; correction [9, 13);
  // decodes 13, 14, 15 and the last token sampled there.
  std::vector<std::pair<int64_t, size_t>> want = {{0, 5}, {5, 1},  {6, 1},  {7, 1},
                                                  {5, 4}, {9, 1},  {10, 1}, {11, 1},
                                                  {9, 4}, {13, 1}, {14, 1}, {15, 1}};
  ASSERT_EQ(chunks.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("chunk " + std::to_string(i));
    EXPECT_EQ(chunks[i].start, want[i].first);
    EXPECT_EQ(chunks[i].tokens.size(), want[i].second);
    const bool correction = i == 4 || i == 8;
    EXPECT_EQ(chunks[i].cache_correction, correction);
    EXPECT_EQ(chunks[i].is_decode, i > 0 && !correction);
    EXPECT_TRUE(chunks[i].needs_logits);
  }
  // Nothing past the prompt's first full block was registered (positions 5.. were sparse).
  Tokens probe = prompts[0];
  probe.insert(probe.end(), streams.tokens[0].begin(), streams.tokens[0].end());
  probe.push_back(3);
  Add(*s, 1, probe, 1);
  const StepRecord r = Step(*s);
  EXPECT_EQ(r.chunks[0].num_cached_tokens, 4);
}

TEST(SchedulerTest, CorrectionNeedsSparseDecode) {
  auto s = MakeScheduler(8, 4);
  SchedRequestOptions options;
  options.correction_interval = 4;
  EXPECT_EQ(s->AddRequest(0, Range(0, 4), 2, 0, 0, options).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lychee
