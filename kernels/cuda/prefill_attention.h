// SPDX-License-Identifier: Apache-2.0
// Chunked causal paged prefill attention on tensor cores: the new query rows of one or more
// chunks (each chunk a run of consecutive positions of one sequence) attend, causally, to their
// sequence's keys in one layer of the bf16 paged pool (PagedKvBf16), whose slots already hold the
// chunk's own K/V (RopeKvWrite first).
//
// Lifecycle: CanImplementPrefillAttention(shape) on the host; AppendPrefillTiles per chunk to
// build the tile list, which the caller copies to the device; PrefillAttention(params, stream).
// The grid is sized from shape.num_tiles (host-known), the rows and positions of each tile are
// read on the device, so a CUDA graph captured with a tile count replays for any tile list of
// that count stored at the same address.
//
// Work split (flash-attention 2): CTA (q head, tile), 4 warps of 16 query rows each, keys in
// tiles of 64 gathered page by page into shared memory (cp.async, double-buffered); S = Q·Kᵀ and
// O += P·V on mma.sync m16n8k16 (bf16 in, fp32 accumulate), fp32 online softmax in registers;
// the causal mask is applied only on key tiles that reach past a warp's first position, and a
// tile stops at its last query position. The heads of one GQA group are adjacent in blockIdx.x,
// so their CTAs run together and read the group's K/V from L2 after the first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {

// Query rows per tile: one CTA of 4 warps x 16 rows (the m16 of mma.sync m16n8k16). 64 rather
// than 128 keeps the diagonal (masked) share of short chunks small and the grid large.
inline constexpr int kPrefillTileRows = 64;

// One unit of work: up to kPrefillTileRows consecutive query rows of one chunk.
struct PrefillTile {
  int32_t chunk = 0;           // row of block_tables
  int32_t row_begin = 0;       // first query row in q / out (global row index of the step)
  int32_t num_rows = 0;        // 1..kPrefillTileRows
  int32_t first_position = 0;  // sequence position of query row_begin; row r is at
                               // first_position + (r - row_begin)
};

// Host helper: appends the tiles of one chunk of `num_rows` queries starting at global row
// `row_begin`, position `start_position`: ceil(num_rows / kPrefillTileRows) tiles in row order,
// all full but the last. Appends nothing for num_rows <= 0.
void AppendPrefillTiles(int32_t chunk, int32_t row_begin, int32_t num_rows, int32_t start_position,
                        std::vector<PrefillTile>* tiles);

// Sizes known on the host; everything the kernel choice and the grid depend on.
struct PrefillAttentionShape {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;            // 64 or 128
  int64_t block_size = 0;          // 16, 32 or 64
  int64_t num_chunks = 0;          // block_tables rows
  int64_t max_blocks_per_seq = 0;  // block_tables row width
  int64_t num_tiles = 0;           // entries of `tiles`; the grid's y extent
};

struct PrefillAttentionParams {
  // Pointers.
  const bf16* q = nullptr;                // [rows, q_row_stride] ([num_heads, head_dim] used)
  PagedKvBf16 cache;                      // one layer (key_summary unused); holds the chunks' K/V
  const int32_t* block_tables = nullptr;  // [num_chunks, max_blocks_per_seq]
  const PrefillTile* tiles = nullptr;     // device array [num_tiles]
  bf16* out = nullptr;                    // [rows, num_heads * head_dim]; must not alias q
  // Strides.
  int64_t q_row_stride = 0;  // elements between rows of q, a multiple of 8; 0 = heads * head_dim
  // Sizes.
  PrefillAttentionShape shape;
  // Scalars.
  float scale = 1.0f;  // 1/sqrt(head_dim) for every model we load
};

// Supported: head_dim 64/128, block_size 16/32/64, any GQA group (num_heads a multiple of
// num_kv_heads), sizes positive, num_tiles and num_heads within the grid limits, block table
// positions within int32. Pure host logic (no GPU needed).
absl::Status CanImplementPrefillAttention(const PrefillAttentionShape& shape);

// Checks the params on the host: the shape, pointers set, q / cache.kv / out 16-byte aligned,
// q_row_stride a multiple of 8 elements and at least num_heads * head_dim, the cache matching
// the shape, scale > 0.
absl::Status CanRunPrefillAttention(const PrefillAttentionParams& params);

// Enqueues the attention on `stream`. No host sync, no allocation. Tiles are trusted as built by
// AppendPrefillTiles: a tile with num_rows <= 0 or a negative position writes nothing; positions
// past max_blocks_per_seq * block_size are clamped to the block table (never read beyond it).
[[nodiscard]] absl::Status PrefillAttention(const PrefillAttentionParams& params,
                                            cudaStream_t stream);

}  // namespace lychee::cuda
