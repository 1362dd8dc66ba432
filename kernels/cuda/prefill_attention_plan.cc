// SPDX-License-Identifier: Apache-2.0
// Host side of prefill attention (prefill_attention.h): capability and parameter checks, the tile
// list. Plain C++ so CI without a GPU tests it.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/prefill_attention.h"

namespace lychee::cuda {
namespace {

constexpr int64_t kMaxGridY = 65535;       // gridDim.y limit (tiles)
constexpr int64_t kMaxGridX = 2147483647;  // gridDim.x limit (heads)
constexpr int64_t kMaxInt32 = 2147483647;

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void AppendPrefillTiles(int32_t chunk, int32_t row_begin, int32_t num_rows, int32_t start_position,
                        std::vector<PrefillTile>* tiles) {
  for (int32_t r = 0; r < num_rows; r += kPrefillTileRows) {
    PrefillTile t;
    t.chunk = chunk;
    t.row_begin = row_begin + r;
    t.num_rows = std::min<int32_t>(kPrefillTileRows, num_rows - r);
    t.first_position = start_position + r;
    tiles->push_back(t);
  }
}

absl::Status CanImplementPrefillAttention(const PrefillAttentionShape& s) {
  if (s.num_heads <= 0 || s.num_kv_heads <= 0 || s.num_chunks <= 0 || s.max_blocks_per_seq <= 0 ||
      s.num_tiles <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: sizes must be positive (heads ", s.num_heads,
                     ", kv_heads ", s.num_kv_heads, ", chunks ", s.num_chunks,
                     ", max_blocks_per_seq ", s.max_blocks_per_seq, ", tiles ", s.num_tiles, ")"));
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: unsupported head_dim: ", s.head_dim, " (64, 128)"));
  }
  if (s.block_size != 16 && s.block_size != 32 && s.block_size != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: unsupported block_size: ", s.block_size, " (16, 32, 64)"));
  }
  if (s.num_heads % s.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("prefill attention: num_heads ", s.num_heads,
                                                   " is not a multiple of num_kv_heads ",
                                                   s.num_kv_heads));
  }
  if (s.num_tiles > kMaxGridY || s.num_heads > kMaxGridX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill attention: ", s.num_tiles, " tiles exceed the grid (at most ", kMaxGridY, ")"));
  }
  if (s.max_blocks_per_seq > kMaxInt32 / s.block_size ||
      s.num_chunks > kMaxInt32 / s.max_blocks_per_seq) {
    return absl::InvalidArgumentError("prefill attention: sizes exceed int32 ranges");
  }
  return absl::OkStatus();
}

absl::Status CanRunPrefillAttention(const PrefillAttentionParams& p) {
  const PrefillAttentionShape& s = p.shape;
  if (absl::Status st = CanImplementPrefillAttention(s); !st.ok()) return st;
  if (p.q == nullptr || p.cache.kv == nullptr || p.block_tables == nullptr || p.tiles == nullptr ||
      p.out == nullptr) {
    return absl::InvalidArgumentError(
        "prefill attention: q, cache.kv, block_tables, tiles and out must be set");
  }
  if (!Aligned16(p.q) || !Aligned16(p.cache.kv) || !Aligned16(p.out)) {
    return absl::InvalidArgumentError(
        "prefill attention: q, cache.kv and out must be 16-byte aligned");
  }
  if ((reinterpret_cast<uintptr_t>(p.tiles) & 3u) != 0 ||
      (reinterpret_cast<uintptr_t>(p.block_tables) & 3u) != 0) {
    return absl::InvalidArgumentError(
        "prefill attention: tiles and block_tables must be 4-byte aligned");
  }
  const int64_t q_width = s.num_heads * s.head_dim;
  if (p.q_row_stride != 0 && (p.q_row_stride < q_width || p.q_row_stride % 8 != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: q_row_stride ", p.q_row_stride,
                     " must be a multiple of 8 and at least num_heads * head_dim = ", q_width));
  }
  if (p.cache.head_dim != s.head_dim || p.cache.block_size != s.block_size ||
      p.cache.num_kv_heads != s.num_kv_heads || p.cache.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: cache (kv_heads ", p.cache.num_kv_heads, ", block_size ",
                     p.cache.block_size, ", head_dim ", p.cache.head_dim, ", blocks ",
                     p.cache.num_blocks, ") does not match the shape"));
  }
  if (!(p.scale > 0.0f)) return absl::InvalidArgumentError("prefill attention: scale must be > 0");
  return absl::OkStatus();
}

}  // namespace lychee::cuda
