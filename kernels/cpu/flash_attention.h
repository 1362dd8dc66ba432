// SPDX-License-Identifier: Apache-2.0
// FlashAttention: causal GQA attention over the paged KV cache as a blocked, flash-style kernel
// on all threads; the fast path for prefill chunks and dense decode. PagedAttention (paged_kv.h)
// is its reference: same semantics, same parameters.
//
// Work: one unit is (kv head, tile of consecutive queries, range of keys). A unit folds the
// query tile's rows of every query head of the kv head's group into one M-row tile, so each K/V
// row it reads serves the whole group; keys stream through in tiles of kKeyTile through the block
// table (a tile may span pages) with online softmax (base-2, running max and sum per row), the
// products Q·Kᵀ and P·V on AVX-512 or AVX2/FMA micro-kernels (or portable scalar code;
// flash_tiles.h). Causal and sliding-window masks apply only to tiles that cross a row's bounds.
// When there are too few (kv head, query tile) pairs to fill the threads (decode, short chunks over
// a long context), the keys are split over threads as in flash-decoding and the partial results
// merged with their log-sum-exp. Units run on NumThreads() threads (ParallelFor), longest first.
//
// The cache may be fp32 or bf16 (PagedKvView::kv_bf16): a bf16 key tile is widened to fp32 once
// per unit and read from the thread's scratch, so the tile math is the same.
//
// No allocation: the caller passes a workspace of at least FlashAttentionWorkspaceFloats(...)
// floats; the kernel runs on as many threads (and key splits) as the workspace was sized for.
#pragma once

#include <cstdint>

#include "kernels/cpu/paged_kv.h"

namespace lychee::cpu {

struct FlashAttentionParams {
  // Pointers.
  const float* q = nullptr;              // [num_queries, num_heads, head_dim]
  PagedKvView cache;                     // one layer
  const int32_t* block_table = nullptr;  // [num_table_blocks]
  float* out = nullptr;                  // [num_queries, num_heads, head_dim]; must not alias q
  float* workspace = nullptr;            // [workspace_floats]
  // Sizes.
  int64_t workspace_floats = 0;
  int64_t num_queries = 0;
  int64_t num_heads = 0;
  int64_t num_table_blocks = 0;  // must cover query_start + num_queries positions
  int64_t query_start = 0;       // position of query 0
  // Scalars.
  int64_t sliding_window = 0;  // 0 = unlimited
  float scale = 1.0f;
};

// Floats of workspace for FlashAttention on `num_threads` threads (per-thread tiles plus the
// partial results of key splits).
int64_t FlashAttentionWorkspaceFloats(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                      int num_threads);

void FlashAttention(const FlashAttentionParams& params);

}  // namespace lychee::cpu
