// SPDX-License-Identifier: Apache-2.0
// KvCacheManager: exact prefix-cache behaviour on small cases, then long random sequences of
// allocate / append / free / share / evict operations checked after every operation against a
// reference model (reference counts from the live tables, free counts, no block in two tables
// unless shared through the prefix cache) and against simulated KV contents: every block a prefix
// hit hands out must hold exactly the K/V (here: a hash of the whole prefix up to each slot) that
// the new sequence would have computed itself. Fresh seed per run (LYCHEE_TEST_SEED replays).
#include "kvcache/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

using Blocks = std::vector<BlockId>;

std::vector<int32_t> Iota(int32_t n, int32_t start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

KvCacheManager MakeManager(int32_t num_blocks, int32_t block_size, bool caching = true) {
  return KvCacheManager(
      {.num_blocks = num_blocks, .block_size = block_size, .enable_prefix_caching = caching});
}

std::vector<BlockId> ToVector(absl::Span<const BlockId> s) { return {s.begin(), s.end()}; }

TEST(KvCacheManagerTest, AllocatesBlocksAsSlotsGrow) {
  KvCacheManager m = MakeManager(10, 4);
  EXPECT_EQ(m.AllocateSlots(1, 5), (Blocks{0, 1}));
  EXPECT_EQ(m.AllocateSlots(1, 3), Blocks{});  // 8 slots: still two blocks
  EXPECT_EQ(m.AllocateSlots(1, 1), Blocks{2});
  EXPECT_EQ(ToVector(m.BlockTable(1)), (Blocks{0, 1, 2}));
  EXPECT_EQ(m.NumSlots(1), 9);
  EXPECT_EQ(m.num_used_blocks(), 3);
  EXPECT_DOUBLE_EQ(m.usage(), 0.3);
  m.Free(1);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_FALSE(m.Contains(1));
}

TEST(KvCacheManagerTest, FailedAllocationChangesNothing) {
  KvCacheManager m = MakeManager(3, 4);
  ASSERT_TRUE(m.AllocateSlots(1, 8).has_value());
  EXPECT_EQ(m.AllocateSlots(2, 5), std::nullopt);
  EXPECT_FALSE(m.Contains(2));
  EXPECT_EQ(m.AllocateSlots(1, 5), std::nullopt);
  EXPECT_EQ(m.NumSlots(1), 8);
  EXPECT_EQ(m.num_free_blocks(), 1);
  EXPECT_EQ(m.AllocateSlots(1, 4), Blocks{2});
}

TEST(KvCacheManagerTest, PrefixHitSharesFullBlocksButNeverTheWholePrompt) {
  KvCacheManager m = MakeManager(10, 4);
  const std::vector<int32_t> a = Iota(10);  // blocks [0..3] [4..7] + 2 tokens
  ASSERT_TRUE(m.AllocateSlots(1, 10).has_value());
  m.CacheFullBlocks(1, a);
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);

  // Same first 9 tokens: both full blocks hit.
  std::vector<int32_t> b = Iota(9);
  b.push_back(99);
  b.push_back(98);
  ComputedBlocks hit = m.GetComputedBlocks(b);
  EXPECT_EQ(hit.blocks, (Blocks{0, 1}));
  EXPECT_EQ(hit.num_tokens, 8);
  EXPECT_EQ(m.AllocateSlots(2, 3, hit), Blocks{3});
  EXPECT_EQ(ToVector(m.BlockTable(2)), (Blocks{0, 1, 3}));
  EXPECT_EQ(m.pool().RefCount(0), 2);
  EXPECT_EQ(m.prefix_cache_queries(), 11);
  EXPECT_EQ(m.prefix_cache_hits(), 8);

  // A prompt of exactly two cached blocks: only the first can be reused (logits need a token).
  EXPECT_EQ(m.GetComputedBlocks(Iota(8)).num_tokens, 4);
  // A different first token misses everything (hashes chain over earlier blocks).
  std::vector<int32_t> c = Iota(9);
  c[0] = 77;
  EXPECT_EQ(m.GetComputedBlocks(c).num_tokens, 0);
  // Same second block after a different first block: no hit either.
  EXPECT_EQ(m.GetComputedBlocks(c).blocks.size(), 0u);

  // Freed cached blocks stay reusable until evicted.
  m.Free(1);
  m.Free(2);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.GetComputedBlocks(a).num_tokens, 8);
}

TEST(KvCacheManagerTest, CachingOffNeverHits) {
  KvCacheManager m = MakeManager(4, 2, /*caching=*/false);
  ASSERT_TRUE(m.AllocateSlots(1, 4).has_value());
  m.CacheFullBlocks(1, Iota(4));
  EXPECT_EQ(m.pool().num_cached_blocks(), 0);
  EXPECT_EQ(m.GetComputedBlocks(Iota(5)).num_tokens, 0);
}

TEST(KvCacheManagerTest, AdoptingEvictableBlocksCountsAgainstCapacity) {
  KvCacheManager m = MakeManager(3, 2);
  ASSERT_TRUE(m.AllocateSlots(1, 4).has_value());  // blocks 0, 1
  m.CacheFullBlocks(1, Iota(4));
  m.Free(1);  // both evictable: 3 free
  const ComputedBlocks hit = m.GetComputedBlocks(Iota(5));
  ASSERT_EQ(hit.num_tokens, 4);
  // 2 adopted + needs 2 more blocks for 3 new tokens (slots 4..6): 4 > 3 available.
  EXPECT_EQ(m.AllocateSlots(2, 3, hit), std::nullopt);
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);  // nothing evicted by the failed attempt
  EXPECT_EQ(m.AllocateSlots(2, 2, hit), Blocks{2});
  EXPECT_EQ(ToVector(m.BlockTable(2)), (Blocks{0, 1, 2}));
  EXPECT_EQ(m.num_free_blocks(), 0);
}

// ---- Randomized against a reference model ----

// What K/V a runner would write at each position: a function of the whole prefix, like real K/V.
uint64_t PrefixValue(const std::vector<int32_t>& tokens, int64_t pos) {
  uint64_t h = 1469598103934665603ULL;
  for (int64_t i = 0; i <= pos; ++i) h = (h ^ static_cast<uint32_t>(tokens[i])) * 1099511628211ULL;
  return h;
}

struct RefSeq {
  std::vector<int32_t> tokens;  // every token it will ever have (extended on demand)
  int64_t num_slots = 0;        // written (and reserved) positions
};

class KvCacheManagerRandomTest : public ::testing::TestWithParam<int> {
 protected:
  KvCacheManagerRandomTest() : seed_(::lychee::testing::TestSeed() + GetParam()), rng_(seed_) {}
  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  std::string SeedNote() const {
    return "LYCHEE_TEST_SEED=" + std::to_string(seed_ - GetParam()) + " param " +
           std::to_string(GetParam());
  }
  uint64_t seed_;
  std::mt19937_64 rng_;
};

TEST_P(KvCacheManagerRandomTest, MatchesReferenceModel) {
  SCOPED_TRACE(SeedNote());
  const int32_t block_size =
      static_cast<int32_t>(std::vector<int64_t>{1, 2, 3, 4, 16}[Uniform(0, 4)]);
  const int32_t num_blocks = static_cast<int32_t>(Uniform(4, 48));
  const bool caching = Uniform(0, 4) != 0;
  SCOPED_TRACE("bs=" + std::to_string(block_size) + " blocks=" + std::to_string(num_blocks) +
               " caching=" + std::to_string(caching));
  KvCacheManager m = MakeManager(num_blocks, block_size, caching);

  // Shared "documents" make prefix hits common; a tiny vocabulary makes near-misses common too.
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 4; ++d) {
    std::vector<int32_t> doc(Uniform(1, 5 * block_size));
    for (int32_t& t : doc) t = static_cast<int32_t>(Uniform(0, 3));
    docs.push_back(doc);
  }
  std::map<int64_t, RefSeq> live;  // ordered: deterministic iteration
  std::vector<std::vector<uint64_t>> content(num_blocks, std::vector<uint64_t>(block_size, 0));
  int64_t next_seq = 0;
  int64_t shared_hits = 0;

  auto write = [&](int64_t seq, RefSeq& s, int64_t from, int64_t to) {
    const auto table = m.BlockTable(seq);
    for (int64_t p = from; p < to; ++p) {
      const BlockId b = table[p / block_size];
      ASSERT_EQ(m.pool().RefCount(b), 1) << "writing into a shared block " << b;
      content[b][p % block_size] = PrefixValue(s.tokens, p);
    }
  };
  auto extend = [&](RefSeq& s, int64_t upto) {
    while (static_cast<int64_t>(s.tokens.size()) < upto) {
      s.tokens.push_back(static_cast<int32_t>(Uniform(0, 3)));
    }
  };
  auto check = [&]() {
    std::vector<int32_t> refs(num_blocks, 0);
    absl::flat_hash_map<BlockId, std::vector<std::pair<int64_t, int64_t>>> owners;
    for (const auto& [seq, s] : live) {
      const auto table = m.BlockTable(seq);
      ASSERT_EQ(static_cast<int64_t>(table.size()), (s.num_slots + block_size - 1) / block_size);
      ASSERT_EQ(m.NumSlots(seq), s.num_slots);
      for (size_t i = 0; i < table.size(); ++i) {
        ++refs[table[i]];
        owners[table[i]].push_back({seq, static_cast<int64_t>(i)});
      }
      // Every written slot holds what this sequence would have computed.
      for (int64_t p = 0; p < s.num_slots; ++p) {
        ASSERT_EQ(content[table[p / block_size]][p % block_size], PrefixValue(s.tokens, p))
            << "seq " << seq << " position " << p;
      }
    }
    int32_t used = 0;
    for (BlockId b = 0; b < num_blocks; ++b) {
      ASSERT_EQ(m.pool().RefCount(b), refs[b]) << "block " << b;
      if (refs[b] > 0) ++used;
      if (refs[b] > 1) {
        // Shared only through the prefix cache: cached, full, at the same index everywhere.
        ASSERT_TRUE(m.pool().IsCached(b)) << "block " << b << " shared but not cached";
        const auto& o = owners[b];
        for (const auto& [seq, idx] : o) {
          ASSERT_EQ(idx, o[0].second);
          ASSERT_GE(live[seq].num_slots, (idx + 1) * block_size);
        }
      }
    }
    ASSERT_EQ(m.num_used_blocks(), used);
    ASSERT_EQ(m.num_free_blocks(), num_blocks - used);
    ASSERT_LE(m.prefix_cache_hits(), m.prefix_cache_queries());
    ASSERT_EQ(m.num_seqs(), static_cast<int64_t>(live.size()));
  };

  for (int op = 0; op < 3000; ++op) {
    const int64_t kind = Uniform(0, 9);
    if (kind <= 3 || live.empty()) {
      // New sequence, maybe sharing a document prefix.
      RefSeq s;
      if (Uniform(0, 3) != 0) {
        const auto& doc = docs[Uniform(0, docs.size() - 1)];
        s.tokens.assign(doc.begin(), doc.begin() + Uniform(1, doc.size()));
      }
      extend(s, static_cast<int64_t>(s.tokens.size()) + Uniform(s.tokens.empty() ? 1 : 0, 6));
      const ComputedBlocks hit = m.GetComputedBlocks(s.tokens);
      ASSERT_LT(hit.num_tokens, static_cast<int64_t>(s.tokens.size()));
      ASSERT_EQ(hit.num_tokens % block_size, 0);
      if (!caching) {
        ASSERT_EQ(hit.num_tokens, 0);
      }
      const int64_t n = Uniform(1, static_cast<int64_t>(s.tokens.size()) - hit.num_tokens);
      const int32_t free_before = m.num_free_blocks();
      const int64_t seq = next_seq++;
      if (!m.AllocateSlots(seq, n, hit).has_value()) {
        ASSERT_EQ(m.num_free_blocks(), free_before);
        ASSERT_FALSE(m.Contains(seq));
      } else {
        s.num_slots = hit.num_tokens + n;
        shared_hits += hit.num_tokens;
        write(seq, s, hit.num_tokens, s.num_slots);
        m.CacheFullBlocks(seq, absl::MakeConstSpan(s.tokens).first(s.num_slots));
        live[seq] = std::move(s);
      }
    } else if (kind <= 7) {
      // Append (a prefill chunk or decode steps) to a random live sequence.
      auto it = std::next(live.begin(), Uniform(0, live.size() - 1));
      RefSeq& s = it->second;
      const int64_t n = Uniform(1, 2 * block_size);
      extend(s, s.num_slots + n);
      const auto before = ToVector(m.BlockTable(it->first));
      if (!m.AllocateSlots(it->first, n).has_value()) {
        ASSERT_EQ(ToVector(m.BlockTable(it->first)), before);
      } else {
        write(it->first, s, s.num_slots, s.num_slots + n);
        s.num_slots += n;
        m.CacheFullBlocks(it->first, absl::MakeConstSpan(s.tokens).first(s.num_slots));
      }
    } else {
      auto it = std::next(live.begin(), Uniform(0, live.size() - 1));
      m.Free(it->first);
      live.erase(it);
    }
    check();
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Whether a random run produced prefix hits depends on its seed (tiny pools can evict every
  // cached block first), so it is recorded, not asserted; the exact prefix-cache tests above
  // cover hits deterministically.
  if (caching) {
    EXPECT_EQ(m.prefix_cache_hits(), shared_hits);
  }
  RecordProperty("evictions", std::to_string(m.pool().num_evictions()));
  RecordProperty("hit_tokens", std::to_string(shared_hits));
  for (const auto& [seq, s] : live) m.Free(seq);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

INSTANTIATE_TEST_SUITE_P(Seeds, KvCacheManagerRandomTest, ::testing::Range(0, 16));

}  // namespace
}  // namespace lychee
