// SPDX-License-Identifier: Apache-2.0
// fp32 CPU kernels for sparse decoding over the paged KV layout (kvcache/paged_kv_view.h): the
// per-block upper and lower bounds of q·k from the key summaries (what Quest ranks blocks by and
// what PrHS's accuracy control grows a selection with), and decode attention over a selection
// of blocks or tokens that also certifies the softmax mass it skipped. The view may be fp32 or
// bf16: bf16 rows are widened exactly and the summaries bound the rounded keys, so the bounds and
// the certificate hold alike (head_dim <= 1024).
//
// Bounds per (block, kv head), from the two key summaries the pool keeps:
//   box  (element-wise min lo / max hi):  scale · Σ_e min/max(q_e·lo_e, q_e·hi_e)
//   ball (centroid c, radius r):          scale · (q·c ∓ ‖q‖·r)
// The upper bound is min(box, ball), the lower bound max(box, ball) (the ball only when the view
// has key_ball). Both carry a rounding slack so that they hold for the exact scores and for the
// fp32 scores the kernels compute alike. At head_dim 64-128 the ball is usually the tighter one.
//
// Like paged_kv.h: raw pointers, sizes and the POD PagedKvView only; no allocation, the caller
// owns every buffer; synchronous on the calling thread. Blocks are named by their logical index
// in the sequence (0 .. num_blocks - 1); block_table maps them to pool blocks. There is no
// sliding window here: callers with one use PagedAttention.
#pragma once

#include <cstdint>
#include <string>

#include "kvcache/paged_kv_view.h"

namespace lychee::cpu {

// u = scale · Σ_e max(q_e·lo_e, q_e·hi_e) (plus slack): no key k with lo <= k <= hi
// (element-wise) scores above u. `scale` must be > 0. The box bound alone.
float BlockScoreBound(const float* q, const float* lo, const float* hi, int64_t head_dim,
                      float scale);

// The score range of one (block, kv head) for query `q` (one query head, head_dim floats):
// lower <= scale · q·k <= upper for every key written into the block (exactly, and for the fp32
// Dot the kernels score with).
struct BlockScoreRange {
  float lower = 0.0f;
  float upper = 0.0f;
};
BlockScoreRange BlockScoreRangeOf(const float* q, const PagedKvView& cache, int64_t block,
                                  int64_t kv_head, float scale);

// The score bounds of every block of one sequence for one query token, per query head.
// Query head h reads kv head h / (num_heads / cache.num_kv_heads).
struct BlockScoreBoundsParams {
  // Pointers.
  const float* q = nullptr;              // [num_heads, head_dim] one query token
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_blocks]
  float* out = nullptr;                  // [num_heads, num_blocks] upper bounds min(box, ball)
  float* lower = nullptr;  // optional [num_heads, num_blocks] lower bounds max(box, ball)
  // Sizes.
  int64_t num_heads = 0;
  int64_t num_blocks = 0;  // logical blocks to score (each holds at least one written key)
  // Scalars.
  float scale = 1.0f;  // > 0
};
void BlockScoreBounds(const BlockScoreBoundsParams& params);

// Decode attention of one query token at `position` over the selected keys of its sequence
// (causal: keys 0 .. position, so the last block may be partial), and the certified bound of the
// softmax mass of the keys it did not read, per query head:
//   m = max of the read scores, S = Σ_read exp(s − m),
//   U = Σ_b unread_b · exp(u_b − m)  (unread_b: keys of block b at or before `position` that
//       were not read; u_b: the block's upper bound above),
//   dropped_mass[h] = U / (S + U)  >= the exact mass dense attention puts on the unread keys.
// Certified, not rounded: S is accumulated in double and lowered by the fp32 scores' worst
// rounding error, U raised, and δ rounded up to float; it is exactly 0 when every key is read.
// The output is normalised over the read keys only. With every block (or every position)
// selected the output equals PagedAttention bit for bit (same scores, same loop order).
struct SparseDecodeAttentionParams {
  // Pointers.
  const float* q = nullptr;              // [num_heads, head_dim]
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_table_blocks]
  // Selected per kv head: selected[offsets[g] .. offsets[g + 1]) for kv head g, strictly
  // ascending. Logical blocks, each < (position / block_size) + 1; or, with token_level, token
  // positions, each <= position.
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
  float scale = 1.0f;        // > 0
  bool token_level = false;  // `selected` holds token positions instead of block indices
  // Optional [num_kv_heads]: only the query heads of kv heads whose flag is non-zero are
  // computed; the others' out and dropped_mass are left as they are (a runner redoing only the
  // kv heads whose budget it widened).
  const uint8_t* kv_head_mask = nullptr;
};
void SparseDecodeAttention(const SparseDecodeAttentionParams& params);

// The selection contract above, checked: offsets start at 0 and never decrease, every kv head's
// list is strictly ascending (so unique) and in range. Returns "" when it holds, otherwise what
// is wrong (runners check it in debug builds).
std::string SelectionError(const SparseDecodeAttentionParams& params);

// Audits: the exact dropped mass of the same selection, per query head: 1 − Z_S / Z_all with the
// scores of every key up to `position` computed in double (what the certified bound above
// bounds). Reads the same fields as SparseDecodeAttention except out, dropped_mass and scratch;
// writes exact[num_heads].
void ExactDroppedMass(const SparseDecodeAttentionParams& params, double* exact);

}  // namespace lychee::cpu
