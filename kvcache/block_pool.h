// SPDX-License-Identifier: Apache-2.0
// BlockPool: which KV blocks are free, who references them, and which full blocks the prefix cache
// can hand out again.
//
// Pure bookkeeping over block ids [0, num_blocks): no KV data, no knowledge of sequences. Owned by
// the KvCacheManager and used on the engine thread only (not thread-safe).
//
// Block states:
//   free       refcount 0, not cached: on the free list, handed out first.
//   in use     refcount > 0 (one per block table holding it), cached or not.
//   evictable  refcount 0 but cached (its hash is in the prefix map): kept on an LRU list and
//              evicted (hash dropped, block reused) only when the free list is empty.
// A cached block is shared when a later sequence's prefix matches its hash and tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "kvcache/block_hash.h"
#include "kvcache/kv_events.h"

namespace lychee {

using BlockId = int32_t;

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  // Blocks an Allocate can hand out now: free + evictable.
  int32_t num_free_blocks() const {
    return static_cast<int32_t>(free_list_.size()) + num_evictable_;
  }
  int32_t num_evictable_blocks() const { return num_evictable_; }
  int32_t num_cached_blocks() const { return static_cast<int32_t>(cached_.size()); }
  int64_t num_evictions() const { return num_evictions_; }

  // `n` blocks with refcount 1, from the free list first, then by evicting the least recently
  // freed cached blocks. nullopt (and nothing changed) when fewer than n are available.
  [[nodiscard]] std::optional<std::vector<BlockId>> Allocate(int32_t n);

  // Takes one more reference to `block` (a prefix-cache hit); an evictable block leaves the LRU.
  void Ref(BlockId block);

  // Drops one reference from each block, in order. A block reaching refcount 0 goes to the free
  // list, or (when cached) to the LRU tail. Callers free a table's blocks from its last block to
  // its first, so that a sequence's tail blocks are evicted before its shared prefix.
  void Unref(absl::Span<const BlockId> blocks);

  // The cached block whose hash, parent hash and tokens all match, if any.
  std::optional<BlockId> Lookup(BlockHash hash, BlockHash parent,
                                absl::Span<const int32_t> tokens) const;

  // Registers an in-use, full block under `hash`. Returns false (and leaves the block uncached)
  // when the block is already cached or another block holds that hash (a duplicate computed
  // concurrently, or a collision): the first one stays the shared copy.
  bool Cache(BlockId block, BlockHash hash, BlockHash parent, absl::Span<const int32_t> tokens);

  int32_t RefCount(BlockId block) const { return meta_[block].ref_count; }
  bool IsCached(BlockId block) const { return meta_[block].cached; }
  std::optional<BlockHash> HashOf(BlockId block) const;

  // Drops every cached hash whose block is evictable (refcount 0); in-use blocks stay cached.
  void EvictAllCached();

  // KV events (off by default): every Cache that succeeds records kBlockStored, every dropped
  // hash kBlockRemoved, in order. TakeEvents returns and clears them.
  void set_record_events(bool on) { record_events_ = on; }
  std::vector<KvEvent> TakeEvents();

 private:
  struct Meta {
    int32_t ref_count = 0;
    bool cached = false;
    BlockHash hash = 0;
    BlockHash parent = 0;
    std::vector<int32_t> tokens;  // the cached block's tokens (collision check)
    // Intrusive LRU links (valid while evictable): -1 terminates.
    BlockId lru_prev = -1;
    BlockId lru_next = -1;
  };

  void LruPushBack(BlockId block);
  void LruRemove(BlockId block);
  void Uncache(BlockId block);

  int32_t num_blocks_;
  int32_t block_size_;
  std::vector<Meta> meta_;
  std::vector<BlockId> free_list_;  // stack: back() is handed out next
  BlockId lru_head_ = -1;           // least recently freed evictable block
  BlockId lru_tail_ = -1;
  int32_t num_evictable_ = 0;
  int64_t num_evictions_ = 0;
  absl::flat_hash_map<BlockHash, BlockId> cached_;
  bool record_events_ = false;
  std::vector<KvEvent> events_;
};

}  // namespace lychee
