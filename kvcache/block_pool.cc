// SPDX-License-Identifier: Apache-2.0
// BlockPool: free list, reference counts, prefix map and the intrusive LRU of evictable blocks.
#include "kvcache/block_pool.h"

#include <algorithm>

#include "common/logging.h"

namespace lychee {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size), meta_(num_blocks) {
  LY_CHECK(num_blocks > 0 && block_size > 0)
      << "BlockPool(" << num_blocks << ", " << block_size << ")";
  // Stack with block 0 on top: allocation order is 0, 1, 2, ... on a fresh pool (exact tests).
  free_list_.reserve(num_blocks);
  for (BlockId b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

std::optional<std::vector<BlockId>> BlockPool::Allocate(int32_t n) {
  LY_CHECK(n >= 0) << n;
  if (n > num_free_blocks()) return std::nullopt;
  std::vector<BlockId> out;
  out.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    BlockId b;
    if (!free_list_.empty()) {
      b = free_list_.back();
      free_list_.pop_back();
    } else {
      // Only now does a cached block lose its contents: the least recently freed one.
      b = lru_head_;
      LruRemove(b);
      Uncache(b);
      ++num_evictions_;
    }
    LY_CHECK(meta_[b].ref_count == 0) << "block " << b;
    meta_[b].ref_count = 1;
    out.push_back(b);
  }
  return out;
}

void BlockPool::Ref(BlockId block) {
  Meta& m = meta_[block];
  if (m.ref_count == 0) {
    LY_CHECK(m.cached) << "Ref of free uncached block " << block;
    LruRemove(block);
  }
  ++m.ref_count;
}

void BlockPool::Unref(absl::Span<const BlockId> blocks) {
  for (BlockId b : blocks) {
    Meta& m = meta_[b];
    LY_CHECK(m.ref_count > 0) << "double free of block " << b;
    if (--m.ref_count > 0) continue;
    if (m.cached) {
      LruPushBack(b);
    } else {
      free_list_.push_back(b);
    }
  }
}

std::optional<BlockId> BlockPool::Lookup(BlockHash hash, BlockHash parent,
                                         absl::Span<const int32_t> tokens) const {
  const auto it = cached_.find(hash);
  if (it == cached_.end()) return std::nullopt;
  const Meta& m = meta_[it->second];
  if (m.parent != parent ||
      !std::equal(m.tokens.begin(), m.tokens.end(), tokens.begin(), tokens.end())) {
    return std::nullopt;  // a 64-bit collision: treat as a miss
  }
  return it->second;
}

bool BlockPool::Cache(BlockId block, BlockHash hash, BlockHash parent,
                      absl::Span<const int32_t> tokens) {
  Meta& m = meta_[block];
  LY_CHECK(m.ref_count > 0) << "caching a free block " << block;
  LY_CHECK(static_cast<int32_t>(tokens.size()) == block_size_) << "only full blocks are cached";
  if (m.cached) return false;
  if (!cached_.try_emplace(hash, block).second) return false;
  m.cached = true;
  m.hash = hash;
  m.parent = parent;
  m.tokens.assign(tokens.begin(), tokens.end());
  if (record_events_) {
    events_.push_back({KvEvent::Kind::kBlockStored, hash, parent, m.tokens});
  }
  return true;
}

std::optional<BlockHash> BlockPool::HashOf(BlockId block) const {
  if (!meta_[block].cached) return std::nullopt;
  return meta_[block].hash;
}

void BlockPool::EvictAllCached() {
  while (lru_head_ != -1) {
    const BlockId b = lru_head_;
    LruRemove(b);
    Uncache(b);
    free_list_.push_back(b);
  }
}

void BlockPool::LruPushBack(BlockId block) {
  Meta& m = meta_[block];
  m.lru_prev = lru_tail_;
  m.lru_next = -1;
  if (lru_tail_ != -1) {
    meta_[lru_tail_].lru_next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++num_evictable_;
}

void BlockPool::LruRemove(BlockId block) {
  Meta& m = meta_[block];
  if (m.lru_prev != -1) {
    meta_[m.lru_prev].lru_next = m.lru_next;
  } else {
    lru_head_ = m.lru_next;
  }
  if (m.lru_next != -1) {
    meta_[m.lru_next].lru_prev = m.lru_prev;
  } else {
    lru_tail_ = m.lru_prev;
  }
  m.lru_prev = m.lru_next = -1;
  --num_evictable_;
}

void BlockPool::Uncache(BlockId block) {
  Meta& m = meta_[block];
  if (!m.cached) return;
  cached_.erase(m.hash);
  m.cached = false;
  m.tokens.clear();
  if (record_events_) events_.push_back({KvEvent::Kind::kBlockRemoved, m.hash, 0, {}});
}

std::vector<KvEvent> BlockPool::TakeEvents() {
  std::vector<KvEvent> out;
  out.swap(events_);
  return out;
}

}  // namespace lychee
