// SPDX-License-Identifier: Apache-2.0
// fp32 CPU kernels for block-sparse decoding over the paged KV layout (kvcache/paged_kv_view.h):
// the per-block upper bounds of q·k from the key summaries (what Quest ranks blocks by), and
// decode attention over a selection of blocks that also certifies the softmax mass it skipped.
//
// Like paged_kv.h: raw pointers, sizes and the POD PagedKvView only; no allocation, the caller
// owns every buffer; synchronous on the calling thread. Blocks are named by their logical index
// in the sequence (0 .. num_blocks - 1); block_table maps them to pool blocks. There is no
// sliding window here: callers with one use PagedAttention.
#pragma once

#include <cstdint>

#include "kvcache/paged_kv_view.h"

namespace lychee::cpu {

// u = scale · Σ_e max(q_e·lo_e, q_e·hi_e): no key k with lo <= k <= hi (element-wise) scores
// above u. `scale` must be > 0.
float BlockScoreBound(const float* q, const float* lo, const float* hi, int64_t head_dim,
                      float scale);

// The score upper bound of every block of one sequence for one query token, per query head.
// Query head h reads kv head h / (num_heads / cache.num_kv_heads).
struct BlockScoreBoundsParams {
  // Pointers.
  const float* q = nullptr;              // [num_heads, head_dim] one query token
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_blocks]
  float* out = nullptr;                  // [num_heads, num_blocks]
  // Sizes.
  int64_t num_heads = 0;
  int64_t num_blocks = 0;  // logical blocks to score (each holds at least one written key)
  // Scalars.
  float scale = 1.0f;  // > 0
};
void BlockScoreBounds(const BlockScoreBoundsParams& params);

// Decode attention of one query token at `position` over the selected blocks of its sequence
// (causal: keys 0 .. position, so the last block may be partial), and the certified bound of the
// softmax mass of the keys it did not read, per query head:
//   m = max of the read scores, S = Σ_read exp(s - m),
//   U = Σ_{b unread} n_b · exp(u_b - m)  (n_b: keys of block b at or before `position`),
//   dropped_mass[h] = U / (S + U)  >= the exact mass dense attention puts on the unread keys,
// and exactly 0 when every block is selected. The output is normalised over the read keys only.
// With every block selected the result equals PagedAttention (same loop order).
struct SparseDecodeAttentionParams {
  // Pointers.
  const float* q = nullptr;              // [num_heads, head_dim]
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_table_blocks]
  // Selected logical blocks per kv head: selected[offsets[g] .. offsets[g + 1]) for kv head g,
  // strictly ascending, each < (position / block_size) + 1.
  const int32_t* selected = nullptr;
  const int64_t* selected_offsets = nullptr;  // [num_kv_heads + 1]
  float* out = nullptr;                       // [num_heads, head_dim]; must not alias q
  float* dropped_mass = nullptr;              // [num_heads]
  float* scratch = nullptr;                   // [position + 1] scores of the read keys
  // Sizes.
  int64_t num_heads = 0;
  int64_t num_table_blocks = 0;  // must cover position + 1 keys
  int64_t position = 0;          // of the query; its own key is already written
  // Scalars.
  float scale = 1.0f;  // > 0
};
void SparseDecodeAttention(const SparseDecodeAttentionParams& params);

}  // namespace lychee::cpu
