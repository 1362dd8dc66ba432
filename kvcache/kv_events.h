// SPDX-License-Identifier: Apache-2.0
// KvEvent: prefix-cache changes, published so that KV-aware routers (SMG, Dynamo, llm-d) can index
// which block hashes this server holds (vLLM's KVEvents: BlockStored / BlockRemoved).
//
// Recorded by the BlockPool on the engine thread when enabled, and drained by whoever publishes
// them (TakeEvents); the hashes are the reproducible ones of block_hash.h.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/block_hash.h"

namespace lychee {

struct KvEvent {
  enum class Kind {
    kBlockStored,   // a full block became reusable under `hash`
    kBlockRemoved,  // `hash` was evicted (its block reused or the cache reset)
  };
  Kind kind = Kind::kBlockStored;
  BlockHash hash = 0;
  BlockHash parent_hash = 0;       // kBlockStored only (kRootBlockHash for a first block)
  std::vector<int32_t> token_ids;  // kBlockStored only: the block's tokens
};

}  // namespace lychee
