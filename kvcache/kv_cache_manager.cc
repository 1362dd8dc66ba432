// SPDX-License-Identifier: Apache-2.0
// KvCacheManager: block tables, slot reservation with all-or-nothing allocation, prefix lookup.
#include "kvcache/kv_cache_manager.h"

#include <algorithm>

#include "common/logging.h"

namespace lychee {

KvCacheManager::KvCacheManager(const KvCacheManagerConfig& config)
    : config_(config), pool_(config.num_blocks, config.block_size) {
  pool_.set_record_events(config.enable_kv_events && config.enable_prefix_caching);
}

double KvCacheManager::usage() const {
  return static_cast<double>(num_used_blocks()) / static_cast<double>(num_blocks());
}

ComputedBlocks KvCacheManager::GetComputedBlocks(absl::Span<const int32_t> tokens) const {
  ComputedBlocks out;
  out.num_queried_tokens = static_cast<int64_t>(tokens.size());
  if (!config_.enable_prefix_caching || tokens.empty()) return out;
  const int64_t bs = config_.block_size;
  // Never the whole prompt: the last token must be computed so that its logits exist.
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / bs;
  BlockHash parent = kRootBlockHash;
  for (int64_t b = 0; b < max_blocks; ++b) {
    const auto block_tokens = tokens.subspan(b * bs, bs);
    const BlockHash hash = HashBlockTokens(parent, block_tokens);
    const std::optional<BlockId> hit = pool_.Lookup(hash, parent, block_tokens);
    if (!hit) break;
    out.blocks.push_back(*hit);
    out.hashes.push_back(hash);
    parent = hash;
  }
  out.num_tokens = static_cast<int64_t>(out.blocks.size()) * bs;
  return out;
}

std::optional<std::vector<BlockId>> KvCacheManager::AllocateSlots(int64_t seq,
                                                                  int64_t num_new_tokens,
                                                                  const ComputedBlocks& computed) {
  LY_CHECK(num_new_tokens >= 0) << num_new_tokens;
  const int64_t bs = config_.block_size;
  const auto it = seqs_.find(seq);
  const bool is_new = it == seqs_.end();
  LY_CHECK(is_new || computed.blocks.empty())
      << "computed blocks are adopted only by a sequence's first AllocateSlots";
  const int64_t have_blocks = is_new ? static_cast<int64_t>(computed.blocks.size())
                                     : static_cast<int64_t>(it->second.table.size());
  const int64_t have_slots = is_new ? computed.num_tokens : it->second.num_slots;
  const int64_t need_blocks = (have_slots + num_new_tokens + bs - 1) / bs;
  const int64_t new_blocks = std::max<int64_t>(0, need_blocks - have_blocks);
  // Adopting an evictable cached block takes it off the free side too.
  int64_t adopt_evictable = 0;
  for (BlockId b : computed.blocks) {
    if (pool_.RefCount(b) == 0) ++adopt_evictable;
  }
  if (new_blocks + adopt_evictable > pool_.num_free_blocks()) return std::nullopt;

  SeqBlocks& s = is_new ? seqs_[seq] : it->second;
  if (is_new) {
    for (BlockId b : computed.blocks) {
      LY_CHECK(pool_.IsCached(b)) << "stale ComputedBlocks: block " << b << " was evicted";
      pool_.Ref(b);
    }
    s.table = computed.blocks;
    s.hashes = computed.hashes;
    s.num_slots = computed.num_tokens;
    prefix_queries_ += computed.num_queried_tokens;
    prefix_hits_ += computed.num_tokens;
  }
  std::optional<std::vector<BlockId>> fresh = pool_.Allocate(static_cast<int32_t>(new_blocks));
  LY_CHECK(fresh.has_value()) << "capacity was checked above";
  s.table.insert(s.table.end(), fresh->begin(), fresh->end());
  s.num_slots += num_new_tokens;
  return fresh;
}

void KvCacheManager::CacheFullBlocks(int64_t seq, absl::Span<const int32_t> tokens) {
  if (!config_.enable_prefix_caching) return;
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  SeqBlocks& s = it->second;
  LY_CHECK(static_cast<int64_t>(tokens.size()) <= s.num_slots)
      << "caching " << tokens.size() << " tokens of a sequence with " << s.num_slots << " slots";
  const int64_t bs = config_.block_size;
  const int64_t full = static_cast<int64_t>(tokens.size()) / bs;
  for (int64_t b = static_cast<int64_t>(s.hashes.size()); b < full; ++b) {
    const BlockHash parent = b == 0 ? kRootBlockHash : s.hashes[b - 1];
    const auto block_tokens = tokens.subspan(b * bs, bs);
    const BlockHash hash = HashBlockTokens(parent, block_tokens);
    s.hashes.push_back(hash);
    // A duplicate of an already cached block stays private; the chain continues regardless.
    (void)pool_.Cache(s.table[b], hash, parent, block_tokens);
  }
}

void KvCacheManager::Free(int64_t seq) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  // Tail first: the LRU then evicts a sequence's last blocks before its (more shareable) prefix.
  std::vector<BlockId> reversed(it->second.table.rbegin(), it->second.table.rend());
  pool_.Unref(reversed);
  seqs_.erase(it);
}

absl::Span<const BlockId> KvCacheManager::BlockTable(int64_t seq) const {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return {};
  return it->second.table;
}

bool KvCacheManager::IsBlockShared(int64_t seq, int64_t index) const {
  const auto it = seqs_.find(seq);
  LY_CHECK(it != seqs_.end() && index >= 0 && index < static_cast<int64_t>(it->second.table.size()))
      << "no block " << index << " in seq " << seq;
  const BlockId block = it->second.table[static_cast<size_t>(index)];
  return pool_.RefCount(block) > 1 || pool_.IsCached(block);
}

int64_t KvCacheManager::NumSlots(int64_t seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.num_slots;
}

}  // namespace lychee
