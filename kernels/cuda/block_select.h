// SPDX-License-Identifier: Apache-2.0
// Query-aware block selection on the GPU (Quest, arXiv 2406.10774): for one decode query per
// sequence, score every written block of the sequence by the upper bound of q·k over its keys
// from the pool's key summaries, then keep, per (sequence, kv head), the sink blocks, the query's
// own (last) block and the best-scoring others up to a block budget. The result is the input of
// sparse decode attention: DecodeAttention with per_kv_head_tables (decode_attention.h).
//
// Semantics are those of sparsity::QuestPolicy on the CPU, with the box bound only:
//   u_b,h = scale · Σ_e max(q_e · min_e, q_e · max_e)   (per query head h, block b),
//   a kv head ranks block b by max over its query heads of u_b,h; ties go to the earlier block;
//   blocks [0, sink_blocks) and the last block are always read (the sinks only when there is a
//   block after them); with budget_blocks >= the sequence's blocks every block is read.
// Selected blocks are written in ascending logical order as physical page ids, with the token
// count of the row (all pages full but the sequence's last, which is selected).
//
// Two launches, one for the whole batch and all kv heads (no host round trip): scoring (one warp
// per (sequence, kv head, block), the summaries read once per GQA group) and a per-(sequence,
// kv head) radix select of the budget over (score, -block) keys, then an in-order compaction.
// No host sync, no allocation: capturable in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {

inline constexpr int64_t kBlockSelectMaxGroup = 8;
// A row's scores are staged in shared memory for the select (200 KiB).
inline constexpr int64_t kBlockSelectMaxBlocks = 51200;

struct BlockSelectShape {
  int64_t batch = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;            // 64 or 128
  int64_t block_size = 0;          // tokens per page
  int64_t max_blocks_per_seq = 0;  // block_tables row width
  int64_t budget_blocks = 0;       // blocks read per (sequence, kv head), >= 1
  int64_t sink_blocks = 1;         // leading blocks always read, >= 0
};

struct BlockSelectParams {
  // Pointers.
  const bf16* q = nullptr;                // [batch, q_row_stride] ([num_heads, head_dim] used)
  PagedKvBf16 cache;                      // one layer; key_summary required
  const int32_t* block_tables = nullptr;  // [batch, max_blocks_per_seq]
  const int32_t* context_lens = nullptr;  // [batch] keys of the sequence, incl. the query's own
  int32_t* sel_tables = nullptr;          // out [batch * num_kv_heads, budget_blocks] page ids
  int32_t* sel_lens = nullptr;            // out [batch * num_kv_heads] tokens of each row
  int32_t* maybe_sel_blocks = nullptr;    // out, optional: the logical blocks, same layout
  float* scores = nullptr;  // [batch * num_kv_heads, max_blocks_per_seq] workspace; after the
                            // call, each row's scores of its blocks (in log units, unscaled by
                            // log2 e: the bound of scale · q·k)
  // Sizes.
  BlockSelectShape shape;
  int64_t q_row_stride = 0;  // 0 = num_heads * head_dim
  // Scalars.
  float scale = 1.0f;
};

// Supported: head_dim 64/128, GQA group 1..8, budget_blocks in (sink_blocks, max_blocks_per_seq],
// max_blocks_per_seq <= kBlockSelectMaxBlocks, the cache's key summaries present. Host logic.
absl::Status CanImplementBlockSelect(const BlockSelectShape& shape);
absl::Status CanRunBlockSelect(const BlockSelectParams& params);

// Enqueues scoring and selection on `stream`. Context lengths are read on the device (clamped to
// the block table); a length of 0 gives an empty row.
[[nodiscard]] absl::Status QuestBlockSelect(const BlockSelectParams& params, cudaStream_t stream);

}  // namespace lychee::cuda
