// SPDX-License-Identifier: Apache-2.0
// Prefix-cache block hashes: a 64-bit hash chained over all earlier blocks of a sequence.
//
// hash(block i) = H(hash(block i-1), token ids of block i), with hash(block -1) = kRootBlockHash.
// H is a fixed, documented mix (below) over the little-endian values, so the same token blocks
// hash the same in every process and language (KV-aware routers can recompute it). Equal hashes
// are not trusted on their own: the BlockPool also compares the tokens and the parent hash.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace lychee {

using BlockHash = uint64_t;

inline constexpr BlockHash kRootBlockHash = 0x6c79636865654b56ULL;  // "lycheeKV"

// H(parent, tokens): start from parent ^ (0x9e3779b97f4a7c15 * (n + 1)); for each token t,
// h = Mix64(h ^ uint32(t)) where Mix64 is the splitmix64 finaliser; finally Mix64(h ^ n).
BlockHash HashBlockTokens(BlockHash parent, absl::Span<const int32_t> tokens);

// Hashes of the full blocks of `tokens` (tokens.size() / block_size of them), chained from
// `parent` (kRootBlockHash for a sequence's first block).
std::vector<BlockHash> HashFullBlocks(absl::Span<const int32_t> tokens, int64_t block_size,
                                      BlockHash parent = kRootBlockHash);

}  // namespace lychee
