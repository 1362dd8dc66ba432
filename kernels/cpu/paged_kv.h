// SPDX-License-Identifier: Apache-2.0
// fp32 CPU kernels over the paged KV layout (kvcache/paged_kv_view.h): scattering a chunk's new
// K/V rows into its blocks, and causal GQA attention through a block table. Both take fp32 or
// bf16 views (bf16: K/V stored rounded to nearest even, read back exactly; math in fp32).
//
// Like cpu_kernels.h: raw pointers, sizes and the POD PagedKvView only; no allocation, the caller
// owns every buffer (scratch included); synchronous on the calling thread. Block tables are the
// sequence's block ids in order: position p lives in block block_table[p / block_size] at slot
// p % block_size.
#pragma once

#include <cstdint>

#include "common/bf16.h"
#include "kvcache/paged_kv_view.h"

namespace lychee::cpu {

// Row `slot` of (block, kv_head)'s keys or values as fp32, for code that reads rows one at a
// time (sparse attention, block scoring): a pointer into an fp32 view, or the row of a bf16 view
// widened (exactly) into `scratch` [head_dim]. Either way the values are the ones attention
// reads, so scores and bounds computed from them agree across dtypes.
inline const float* RowAsFloat(const PagedKvView& c, bool values, int64_t block, int64_t kv_head,
                               int64_t slot, float* scratch) {
  if (!c.is_bf16()) return (values ? c.V(block, kv_head) : c.K(block, kv_head)) + slot * c.head_dim;
  const uint16_t* src =
      (values ? c.VBf16(block, kv_head) : c.KBf16(block, kv_head)) + slot * c.head_dim;
  for (int64_t e = 0; e < c.head_dim; ++e) scratch[e] = Bf16ToFloat(src[e]);
  return scratch;
}
// The row kernels widen into a stack buffer of this many floats (no allocation per call);
// CheckWidenedRowFits aborts with a message for a larger head_dim (models have <= 256).
inline constexpr int64_t kMaxWidenedRow = 1024;
void CheckWidenedRowFits(int64_t head_dim);

inline const float* KeyRow(const PagedKvView& c, int64_t block, int64_t kv_head, int64_t slot,
                           float* scratch) {
  return RowAsFloat(c, false, block, kv_head, slot, scratch);
}
inline const float* ValueRow(const PagedKvView& c, int64_t block, int64_t kv_head, int64_t slot,
                             float* scratch) {
  return RowAsFloat(c, true, block, kv_head, slot, scratch);
}

// Writes K/V of `num_tokens` tokens at positions start_position .. start_position + num_tokens - 1
// into one layer of the paged cache, and updates each touched block's key summary: a block's
// min/max are reset to the key written into its slot 0, and widened by every later slot (a slot
// rewritten in place, as cache correction does, only widens the box: still a valid bound). When
// the view has a key ball, each touched block's ball is recomputed from slots 0 .. the last slot
// this call wrote in it (UpdateKeyBall), so writes must end at the sequence's last written
// position (appends do; a cache correction rewrites the tail).
struct WritePagedKvParams {
  // Pointers.
  PagedKvView cache;                     // one layer
  const float* k = nullptr;              // [num_tokens, num_kv_heads, head_dim] (row stride below)
  const float* v = nullptr;              // [num_tokens, num_kv_heads, head_dim] (row stride below)
  const int32_t* block_table = nullptr;  // [num_table_blocks]
  // Sizes.
  int64_t num_tokens = 0;
  int64_t num_table_blocks = 0;  // must cover start_position + num_tokens positions
  int64_t start_position = 0;
  // Strides in floats between consecutive tokens of k / v; 0 means num_kv_heads * head_dim
  // (contiguous). A fused QKV buffer passes its row width here.
  int64_t k_row_stride = 0;
  int64_t v_row_stride = 0;
};
void WritePagedKv(const WritePagedKvParams& params);

// Recomputes the key ball (paged_kv_view.h) of (block, kv_head) from its slots 0 .. filled - 1:
// the centroid is their mean (rounded to float), the radius the largest distance of a key from
// that stored centroid, rounded up, so that ‖k − c‖ <= r holds exactly. Needs cache.key_ball.
void UpdateKeyBall(const PagedKvView& cache, int64_t block, int64_t kv_head, int64_t filled);

// Causal grouped-query attention of `num_queries` new tokens over a sequence's paged K/V, which
// already holds their own keys and values (WritePagedKv first). Same semantics as Attention in
// cpu_kernels.h: query i at position query_start + i reads keys j with
// max(0, pos - sliding_window + 1) <= j <= pos (no lower bound when sliding_window is 0); query
// head h reads kv head h / (num_heads / cache.num_kv_heads); fp32 softmax with the max
// subtracted; scores scaled by `scale`.
struct PagedAttentionParams {
  // Pointers.
  const float* q = nullptr;              // [num_queries, num_heads, head_dim]
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_table_blocks]
  float* out = nullptr;                  // [num_queries, num_heads, head_dim]; must not alias q
  float* scratch = nullptr;              // [query_start + num_queries] scores
  // Sizes.
  int64_t num_queries = 0;
  int64_t num_heads = 0;
  int64_t num_table_blocks = 0;  // must cover query_start + num_queries positions
  int64_t query_start = 0;       // position of query 0
  // Scalars.
  int64_t sliding_window = 0;  // 0 = unlimited
  float scale = 1.0f;
};
void PagedAttention(const PagedAttentionParams& params);

}  // namespace lychee::cpu
