// SPDX-License-Identifier: Apache-2.0
// BlockPool: allocation order, reference counts, the prefix map (with its collision check) and
// LRU eviction of cached blocks only when the free list is empty.
#include "kvcache/block_pool.h"

#include <gtest/gtest.h>

#include <vector>

#include "kvcache/block_hash.h"

namespace lychee {
namespace {

using Blocks = std::vector<BlockId>;

TEST(BlockPoolTest, AllocatesLowIdsFirstAndRefusesWhenShort) {
  BlockPool pool(4, 2);
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_EQ(pool.Allocate(3), (Blocks{0, 1, 2}));
  EXPECT_EQ(pool.num_free_blocks(), 1);
  EXPECT_EQ(pool.Allocate(2), std::nullopt);
  EXPECT_EQ(pool.num_free_blocks(), 1);  // nothing changed
  EXPECT_EQ(pool.Allocate(0), Blocks{});
  pool.Unref(Blocks{2, 1});
  EXPECT_EQ(pool.num_free_blocks(), 3);
  // Freed blocks are reused most recently freed first.
  EXPECT_EQ(pool.Allocate(1), Blocks{1});
}

TEST(BlockPoolTest, RefCountsKeepSharedBlocksAlive) {
  BlockPool pool(2, 2);
  const Blocks b = *pool.Allocate(1);
  ASSERT_TRUE(pool.Cache(b[0], 42, 7, std::vector<int32_t>{1, 2}));
  pool.Ref(b[0]);
  EXPECT_EQ(pool.RefCount(b[0]), 2);
  pool.Unref(b);
  EXPECT_EQ(pool.RefCount(b[0]), 1);
  EXPECT_EQ(pool.num_free_blocks(), 1);
  pool.Unref(b);
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_EQ(pool.num_evictable_blocks(), 1);
  // Still cached, and reusable by a hit.
  ASSERT_EQ(pool.Lookup(42, 7, std::vector<int32_t>{1, 2}), b[0]);
  pool.Ref(b[0]);
  EXPECT_EQ(pool.num_evictable_blocks(), 0);
  EXPECT_EQ(pool.num_free_blocks(), 1);
}

TEST(BlockPoolTest, LookupChecksTokensAndParent) {
  BlockPool pool(2, 2);
  const Blocks b = *pool.Allocate(1);
  ASSERT_TRUE(pool.Cache(b[0], 42, 7, std::vector<int32_t>{1, 2}));
  EXPECT_EQ(pool.Lookup(42, 7, std::vector<int32_t>{1, 3}), std::nullopt);  // collision
  EXPECT_EQ(pool.Lookup(42, 8, std::vector<int32_t>{1, 2}), std::nullopt);
  EXPECT_EQ(pool.Lookup(43, 7, std::vector<int32_t>{1, 2}), std::nullopt);
  // A second block with the same hash stays uncached: the first copy is the shared one.
  const Blocks c = *pool.Allocate(1);
  EXPECT_FALSE(pool.Cache(c[0], 42, 7, std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(pool.IsCached(c[0]));
  EXPECT_FALSE(pool.Cache(b[0], 99, 7, std::vector<int32_t>{1, 2}));  // already cached
  EXPECT_EQ(pool.HashOf(b[0]), 42u);
}

TEST(BlockPoolTest, EvictsLeastRecentlyFreedCachedBlockOnlyWhenFreeListIsEmpty) {
  BlockPool pool(4, 1);
  const Blocks b = *pool.Allocate(3);  // 0, 1, 2
  for (BlockId id : b) ASSERT_TRUE(pool.Cache(id, 100 + id, 0, std::vector<int32_t>{id}));
  pool.Unref(Blocks{1});
  pool.Unref(Blocks{0});
  pool.Unref(Blocks{2});  // LRU order: 1, 0, 2
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_EQ(pool.num_cached_blocks(), 3);
  EXPECT_EQ(pool.Allocate(1), Blocks{3});  // the never-cached block first
  EXPECT_EQ(pool.num_cached_blocks(), 3);
  EXPECT_EQ(pool.Allocate(1), Blocks{1});  // then the least recently freed cached one
  EXPECT_EQ(pool.HashOf(1), std::nullopt);
  EXPECT_EQ(pool.Lookup(101, 0, std::vector<int32_t>{1}), std::nullopt);
  EXPECT_EQ(pool.num_evictions(), 1);
  // A hit refreshes nothing in the LRU but takes the block out of it.
  pool.Ref(2);
  EXPECT_EQ(pool.Allocate(1), Blocks{0});
  EXPECT_EQ(pool.Allocate(1), std::nullopt);
  EXPECT_EQ(pool.Lookup(102, 0, std::vector<int32_t>{2}), 2);
}

TEST(BlockPoolTest, EvictAllCachedDropsOnlyUnusedBlocks) {
  BlockPool pool(3, 1);
  const Blocks b = *pool.Allocate(2);
  ASSERT_TRUE(pool.Cache(0, 10, 0, std::vector<int32_t>{5}));
  ASSERT_TRUE(pool.Cache(1, 11, 0, std::vector<int32_t>{6}));
  pool.Unref(Blocks{0});
  pool.EvictAllCached();
  EXPECT_FALSE(pool.IsCached(0));
  EXPECT_TRUE(pool.IsCached(1));
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_EQ(pool.num_evictable_blocks(), 0);
}

TEST(BlockPoolTest, RecordsStoredAndRemovedEventsWhenEnabled) {
  BlockPool pool(2, 1);
  const Blocks b = *pool.Allocate(1);
  ASSERT_TRUE(pool.Cache(b[0], 10, 0, std::vector<int32_t>{5}));  // not recorded: off
  EXPECT_TRUE(pool.TakeEvents().empty());
  pool.set_record_events(true);
  const Blocks c = *pool.Allocate(1);
  ASSERT_TRUE(pool.Cache(c[0], 11, 10, std::vector<int32_t>{6}));
  pool.Unref(b);
  ASSERT_TRUE(pool.Allocate(1).has_value());  // evicts hash 10
  const std::vector<KvEvent> events = pool.TakeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, KvEvent::Kind::kBlockStored);
  EXPECT_EQ(events[0].hash, 11u);
  EXPECT_EQ(events[0].parent_hash, 10u);
  EXPECT_EQ(events[0].token_ids, std::vector<int32_t>{6});
  EXPECT_EQ(events[1].kind, KvEvent::Kind::kBlockRemoved);
  EXPECT_EQ(events[1].hash, 10u);
  EXPECT_TRUE(pool.TakeEvents().empty());
}

TEST(BlockHashTest, MatchesTheDocumentedSpec) {
  // Values from an independent Python transcription of block_hash.h (64-bit wrap-around
  // arithmetic), so other languages (KV-aware routers) can reproduce our hashes.
  const BlockHash a = HashBlockTokens(kRootBlockHash, std::vector<int32_t>{1, 2, 3, 4});
  EXPECT_EQ(a, 0xfa0df52bd073d86bULL);
  EXPECT_EQ(HashBlockTokens(a, std::vector<int32_t>{5, 6, 7, -1}), 0x6729cf8cf6091966ULL);
  EXPECT_EQ(HashBlockTokens(kRootBlockHash, std::vector<int32_t>{}), 0x701e54e86bce23ffULL);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, -1, 9};
  EXPECT_EQ(HashFullBlocks(tokens, 4),
            (std::vector<BlockHash>{0xfa0df52bd073d86bULL, 0x6729cf8cf6091966ULL}));
}

}  // namespace
}  // namespace lychee
