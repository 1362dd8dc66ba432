// SPDX-License-Identifier: Apache-2.0
// The chained block hash: splitmix64 finaliser over token ids (see block_hash.h for the spec).
#include "kvcache/block_hash.h"

namespace lychee {
namespace {

inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

BlockHash HashBlockTokens(BlockHash parent, absl::Span<const int32_t> tokens) {
  const uint64_t n = tokens.size();
  uint64_t h = parent ^ (0x9e3779b97f4a7c15ULL * (n + 1));
  for (int32_t t : tokens) h = Mix64(h ^ static_cast<uint32_t>(t));
  return Mix64(h ^ n);
}

std::vector<BlockHash> HashFullBlocks(absl::Span<const int32_t> tokens, int64_t block_size,
                                      BlockHash parent) {
  std::vector<BlockHash> hashes;
  const int64_t n_full = static_cast<int64_t>(tokens.size()) / block_size;
  hashes.reserve(n_full);
  for (int64_t b = 0; b < n_full; ++b) {
    parent = HashBlockTokens(parent, tokens.subspan(b * block_size, block_size));
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace lychee
