// SPDX-License-Identifier: Apache-2.0
// KvCacheManager: per-sequence block tables over a BlockPool, with automatic prefix caching.
//
// Ownership and threading: the Scheduler owns one KvCacheManager and calls it on the engine
// thread only (not thread-safe). It knows sequences only as opaque int64 ids and token ids; the
// KV data lives in a KvPool that the model runner writes through the block tables read here.
//
// Life of a sequence (the shape of vLLM's kv_cache_manager.py):
//   computed = GetComputedBlocks(tokens);            // longest cached prefix, full blocks only
//   AllocateSlots(seq, n, computed)                  // first call: adopts `computed`, adds n slots
//   ... the runner writes K/V for the new slots ...
//   CacheFullBlocks(seq, tokens[0, num_computed))    // registers newly full blocks for reuse
//   AllocateSlots(seq, n') ...                        // later steps: more slots
//   Free(seq)                                        // finished, aborted or preempted
// A failed AllocateSlots returns nullopt and changes nothing: the scheduler then preempts.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/types/span.h"
#include "kvcache/block_hash.h"
#include "kvcache/block_pool.h"

namespace lychee {

struct KvCacheManagerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  bool enable_prefix_caching = true;
  bool enable_kv_events = false;  // record KvEvents for TakeEvents
};

// A cached prefix found by GetComputedBlocks. Valid until the next mutating call on the manager
// (an allocation may evict its blocks), so pass it straight to AllocateSlots.
struct ComputedBlocks {
  std::vector<BlockId> blocks;     // shared blocks, in sequence order
  std::vector<BlockHash> hashes;   // their chained hashes
  int64_t num_tokens = 0;          // blocks.size() * block_size: tokens whose K/V is reused
  int64_t num_queried_tokens = 0;  // tokens looked up (counted as prefix-cache queries on use)
};

class KvCacheManager {
 public:
  explicit KvCacheManager(const KvCacheManagerConfig& config);

  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  int32_t block_size() const { return config_.block_size; }
  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t num_free_blocks() const { return pool_.num_free_blocks(); }
  // Blocks referenced by some sequence (evictable cached blocks count as free).
  int32_t num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  // num_used_blocks / num_blocks in [0, 1] (vLLM's kv_cache_usage_perc).
  double usage() const;
  bool prefix_caching_enabled() const { return config_.enable_prefix_caching; }

  // The longest cached prefix of `tokens` in full blocks, never covering the whole of `tokens`:
  // at least one token is left to compute so its logits exist. Empty when caching is off. Does
  // not change any reference count.
  ComputedBlocks GetComputedBlocks(absl::Span<const int32_t> tokens) const;

  // Reserves slots for `num_new_tokens` more tokens of `seq` (after the ones it already has),
  // allocating blocks as needed. On the first call for `seq`, `computed` (from
  // GetComputedBlocks) becomes the start of its block table and its tokens count as already
  // present. Returns the newly allocated blocks (possibly none), or nullopt with nothing changed
  // when the pool cannot supply them.
  [[nodiscard]] std::optional<std::vector<BlockId>> AllocateSlots(
      int64_t seq, int64_t num_new_tokens, const ComputedBlocks& computed = {});

  // Registers the full blocks among `tokens` (the first tokens.size() tokens of `seq`, whose K/V
  // has been written) in the prefix cache. Cheap when nothing new is full; no-op when caching is
  // off. tokens.size() must not exceed the slots reserved for `seq`.
  void CacheFullBlocks(int64_t seq, absl::Span<const int32_t> tokens);

  // Releases every block of `seq` (its cached blocks stay reusable until evicted). Unknown
  // sequences are ignored.
  void Free(int64_t seq);

  bool Contains(int64_t seq) const { return seqs_.contains(seq); }
  // The block table of `seq` (empty for an unknown one). Valid until the next AllocateSlots or
  // Free for that sequence.
  absl::Span<const BlockId> BlockTable(int64_t seq) const;
  // Whether logical block `index` of `seq` is shared: another sequence references it, or it is
  // registered in the prefix cache (so a later sequence may). Blocks rewritten in place (cache
  // correction) must not be.
  bool IsBlockShared(int64_t seq, int64_t index) const;
  // Token slots reserved for `seq` (its cached prefix included).
  int64_t NumSlots(int64_t seq) const;
  int64_t num_seqs() const { return static_cast<int64_t>(seqs_.size()); }

  // Prefix-cache counters, in tokens (vLLM's prefix_cache_queries / prefix_cache_hits): counted
  // when AllocateSlots adopts a ComputedBlocks.
  int64_t prefix_cache_queries() const { return prefix_queries_; }
  int64_t prefix_cache_hits() const { return prefix_hits_; }

  // Forgets every cached block not in use (e.g. after a model reload).
  void ResetPrefixCache() { pool_.EvictAllCached(); }

  // Prefix-cache changes since the last call (empty unless enable_kv_events).
  std::vector<KvEvent> TakeEvents() { return pool_.TakeEvents(); }

  const BlockPool& pool() const { return pool_; }

 private:
  struct SeqBlocks {
    std::vector<BlockId> table;
    int64_t num_slots = 0;          // tokens reserved
    std::vector<BlockHash> hashes;  // chained hashes of its first hashes.size() full blocks
  };

  KvCacheManagerConfig config_;
  BlockPool pool_;
  absl::node_hash_map<int64_t, SeqBlocks> seqs_;  // node map: tables never move on rehash
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
};

}  // namespace lychee
