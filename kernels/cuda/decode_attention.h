// SPDX-License-Identifier: Apache-2.0
// Dense paged decode attention: one new query token per sequence, a batch of sequences with their
// own context lengths and block tables, over one layer of the bf16 paged pool (PagedKvBf16).
//
// Lifecycle (STYLE habit 3): CanImplementDecodeAttention(shape) -> PlanDecodeAttention(shape,
// num_sms) -> DecodeAttentionWorkspaceBytes(shape, plan) -> DecodeAttention(params, plan,
// stream). Planning is pure host arithmetic on sizes that the host knows without reading the
// device (the batch size and an upper bound of the context lengths), so a plan made for the
// largest context a CUDA graph will see stays valid for every step replayed through that graph;
// the actual lengths are read on the device.
//
// Work split (flash-decoding): CTA (split, kv_head, sequence) attends the query heads of kv_head's
// GQA group to tokens [split * chunk, (split + 1) * chunk) of the sequence on tensor cores (the
// group's heads are the rows of one mma tile), so each K/V byte is read once per group; K/V pages
// stream through a multi-stage ring (TMA or cp.async); fp32 online softmax. With more than one
// split, each CTA writes a partial (o, lse) to the workspace and the last split of a (sequence,
// kv head) to finish merges them by log-sum-exp; with many splits, in two levels (groups of
// merge_fan_in splits, then the groups), so no single CTA reads a hundred partials.
// decode_attention.cu has the details.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {

// Sizes known on the host; everything the plan and the kernel choice depend on.
struct DecodeAttentionShape {
  int64_t batch = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;            // 64 or 128
  int64_t block_size = 0;          // 16, 32 or 64
  int64_t max_blocks_per_seq = 0;  // block_tables row width
  int64_t max_context_len = 0;  // upper bound of context_lens (<= max_blocks_per_seq * block_size)
};

// The block size for which the kernel can write block scores (maybe_block_scores).
inline constexpr int64_t kBlockScoresBlockSize = 16;
// Split counters per (sequence, kv head) row: the row's, then one per merge group (at most
// ceil(1000 / 16) = 63 groups: merge_fan_in >= kMinMergeFanIn).
inline constexpr int64_t kDecodeSplitCountersPerRow = 64;
inline constexpr int kMinMergeFanIn = 16;
// A row-list entry's flag: the row reads its sequence's own table (full_block_tables).
inline constexpr int32_t kDecodeRowReadsSequence = int32_t{1} << 30;

struct DecodeAttentionParams {
  // Pointers.
  const bf16* q = nullptr;                // [batch, q_row_stride] ([num_heads, head_dim] used)
  PagedKvBf16 cache;                      // one layer (key_summary unused)
  const int32_t* block_tables = nullptr;  // [batch, max_blocks_per_seq]
  const int32_t* context_lens = nullptr;  // [batch] keys to attend, incl. the query's own
  bf16* out = nullptr;                    // [batch, num_heads, head_dim]
  float* maybe_lse = nullptr;             // [batch, num_heads] natural-log sum of exp(scores)
  void* workspace = nullptr;              // DecodeAttentionWorkspaceBytes bytes (splits > 1)
  // [batch * num_kv_heads, kDecodeSplitCountersPerRow] arrival counters of the splits and of
  // their merge groups (splits > 1): zero-filled once after allocation; every launch leaves them
  // at zero again, so a captured graph can replay.
  int32_t* split_counters = nullptr;
  // Sizes.
  DecodeAttentionShape shape;
  int64_t q_row_stride = 0;  // elements between the rows of q, even; 0 = num_heads * head_dim
  // Sparse attention (kernels/cuda/block_select.h makes these): block_tables and context_lens
  // have one row per (sequence, kv head), row seq * num_kv_heads + kv_head, holding the pages
  // that kv head reads (a subset of the sequence's, in any order; every page full except the
  // last) and their token count. max_blocks_per_seq is then the width of those rows.
  bool per_kv_head_tables = false;
  // Optional: the (sequence, kv head) rows this launch computes, as seq * num_kv_heads + kv_head,
  // row_list_len of them (grid over the list instead of batch x kv heads). The workspace and the
  // split counters are then indexed by position in the list, so a launch over a few rows (the
  // runner's rows that read everything, among many budget-bound ones) can take many splits out of
  // a small workspace: DecodeAttentionWorkspaceBytesForRows.
  const int32_t* maybe_row_list = nullptr;
  int64_t row_list_len = 0;
  // Optional, with per_kv_head_tables and a row list: LycheeDecode's hybrid launch, the rows
  // that read everything (retrieval heads, dense requests) and the budget-bound ones (sparse
  // heads reading an earlier layer's set) in ONE launch, planned for the long rows. A list entry
  // with kDecodeRowReadsSequence set reads its sequence's own table (full_block_tables, [batch,
  // max_blocks_per_seq]) over full_context_lens[seq]; the others their row of block_tables and
  // context_lens. A budget row's few tokens then take a few splits of the long rows' length and
  // the rest of its CTAs exit at once, so no launch waits for another (ALGORITHMS.md 3.2: one
  // hybrid launch per layer). Only flagged rows write maybe_block_scores.
  const int32_t* full_block_tables = nullptr;
  const int32_t* full_context_lens = nullptr;
  // Optional, block_size 16 with the sequences' own tables (not per_kv_head_tables, or the
  // flagged rows of a hybrid launch): the exact
  // block scores that LycheeDecode's retrieval heads rank blocks by, a by-product of the
  // attention's Q·Kᵀ: for every block the launch reads, the max over its keys of the GQA group's
  // mean query's dot product (unscaled, as block_select.h's exact scores and the CPU's
  // ExactBlockScores), at [(seq * num_kv_heads + kv_head) * block_scores_row_stride + block].
  // Blocks past a row's length, and rows the launch does not compute, are not written. Selection
  // then ranks the row without reading its keys a second time (BlockSelectParams::
  // exact_scores_given).
  float* maybe_block_scores = nullptr;
  int64_t block_scores_row_stride = 0;
  // Scalars.
  float scale = 1.0f;  // 1/sqrt(head_dim) for every model we load
  // Launch with programmatic dependent launch (kernels/cuda/launch.cuh): the kernel may be
  // placed during the previous kernel of the stream and waits for it before it reads anything.
  bool programmatic_launch = false;
};

// How K/V tiles reach shared memory.
enum class DecodeLoader : int8_t {
  // Every thread copies 16-byte pieces with cp.async, rows XOR-swizzled by hand.
  kCpAsync = 0,
  // Lanes of warp 0 issue one TMA tensor copy per 16 tokens, 64 dims and K/V (the hardware's
  // 128-byte swizzle); each stage completes on an mbarrier. Far fewer instructions and requests
  // in flight per byte than 16-byte copies.
  kTma = 1,
};

// How the work is cut. Plain data: store it next to a captured CUDA graph.
struct DecodeAttentionPlan {
  int num_splits = 1;    // CTAs per (sequence, kv head)
  int chunk_tokens = 0;  // tokens per split, a multiple of block_size
  int stages = 3;        // K/V tiles of 64 tokens in the ring: 2, 3 or 4
  DecodeLoader loader = DecodeLoader::kTma;
  // Rows of more than 2 * merge_fan_in splits merge in two levels: the last split of each group
  // of merge_fan_in merges the group's partials into the group's first, the last group merges
  // the groups. Up to 2 * merge_fan_in partials one CTA merges faster than two merges in a row
  // (H100: 32 splits at 1 x 32K, 66.0 µs one level, 67.8 two). 0: always one level. Else
  // >= kMinMergeFanIn.
  int merge_fan_in = 16;
};

struct DecodeAttentionPlanOptions {
  // CTAs of the kernel resident per SM: DecodeAttentionCtasPerSm on the GPU that will run it
  // (the default is the H100's for head_dim 128 and 3 stages).
  int ctas_per_sm = 2;
  int min_chunk_tokens = 256;  // below this a split costs more than it saves
  int max_splits = 128;        // bounds the workspace (the kernel takes at most 1000)
  int stages = 3;
  // TMA by default: 0.96-1.02x torch SDPA and 99-101% of the copy's rate at large sizes on the
  // H100, where cp.async reached 0.91-0.97x and 93-95% (docs/PERFORMANCE.md, 2026-12-07).
  DecodeLoader loader = DecodeLoader::kTma;
  int merge_fan_in = 16;  // DecodeAttentionPlan::merge_fan_in
  // Long splits stream better from a ring of 2 tiles and the third CTA an SM it leaves room
  // for; short ones need the third tile's prefetch (H100, cuda_decode_attention_bench, one
  // call: 2 stages 1-2% faster at 1 x 128K, 8 x 32K .. 32 x 128K, whose 2-stage splits are
  // >= 2736 tokens; 1-6% slower at 1 x 4K, 1 x 32K and 32 x 4K, whose are <= 1376). A plan whose
  // splits would be at least long_split_tokens with 2 stages at long_split_ctas_per_sm CTAs an SM
  // (DecodeAttentionCtasPerSm for 2 stages; the H100's for head_dim 128 by default) is made so.
  // 0 in either: always `stages`.
  int long_split_tokens = 2560;
  int long_split_ctas_per_sm = 3;
};

// CTAs of the decode kernel for `head_dim`, `stages` and `loader` that fit on one SM of the
// current device (the occupancy calculator: shared memory and registers); needs a GPU.
absl::StatusOr<int> DecodeAttentionCtasPerSm(int64_t head_dim, int stages,
                                             DecodeLoader loader = DecodeLoader::kTma);

// Supported: head_dim 64/128, block_size 16/32/64, GQA group (num_heads / num_kv_heads) 1..8,
// sizes positive and within the int32 grid limits, max_context_len <= max_blocks_per_seq *
// block_size. Pure host logic (no GPU needed).
absl::Status CanImplementDecodeAttention(const DecodeAttentionShape& shape);

// Host-only: chooses the split (and the stages: options.long_split_tokens) from the batch, kv
// heads, max_context_len and the SM count. Unless
// the batch's (sequence, kv head) pairs alone fill two waves of ctas_per_sm * num_sms CTAs, each
// is split into chunks (of at least min_chunk_tokens) so that the grid fills its waves evenly:
// the fewest splits whose wave efficiency (CTAs / (waves * wave size)) is within 5% of the best
// reachable with up to two waves.
DecodeAttentionPlan PlanDecodeAttention(const DecodeAttentionShape& shape, int num_sms,
                                        const DecodeAttentionPlanOptions& options = {});

// Bytes of workspace `plan` needs (0 for one split): fp32 partial outputs and log-sum-exps. The
// split counters (params.split_counters) are a separate buffer of batch * num_kv_heads *
// kDecodeSplitCountersPerRow int32.
size_t DecodeAttentionWorkspaceBytes(const DecodeAttentionShape& shape,
                                     const DecodeAttentionPlan& plan);
// The same for a launch over a row list of `kv_rows` (sequence, kv head) rows.
size_t DecodeAttentionWorkspaceBytesForRows(const DecodeAttentionShape& shape,
                                            const DecodeAttentionPlan& plan, int64_t kv_rows);

// The most workspace any launch a runner may plan needs: dense batches of 1..largest.batch
// sequences at largest.max_context_len, and, with row_lists, lists of 1..largest.batch *
// num_kv_heads rows each planned alone (a sparse step's parts). What a runner reserves once.
size_t DecodeAttentionMaxWorkspaceBytes(const DecodeAttentionShape& largest, int num_sms,
                                        const DecodeAttentionPlanOptions& options, bool row_lists);

// Checks the params against the plan (pointers, alignment, plan consistency) on the host.
absl::Status CanRunDecodeAttention(const DecodeAttentionParams& params,
                                   const DecodeAttentionPlan& plan);

// Enqueues the attention on `stream`; with plan.num_splits > 1 the last split of each (sequence,
// kv head) to finish merges the partials (no second kernel). No host sync, no allocation. A context
// length of 0 writes zeros and lse = -inf; a context length above max_context_len is still attended
// completely (the last split takes the excess, slowly); one above max_blocks_per_seq * block_size
// is clamped to it. A negative context length skips the row: nothing of it is written, so two
// launches with complementary rows (each planned for its own rows: the runner's sparse steps, long
// rows apart from short ones) fill one output.
[[nodiscard]] absl::Status DecodeAttention(const DecodeAttentionParams& params,
                                           const DecodeAttentionPlan& plan, cudaStream_t stream);

}  // namespace lychee::cuda
