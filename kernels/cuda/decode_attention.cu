// SPDX-License-Identifier: Apache-2.0
// Split-KV (flash-decoding) paged decode attention on tensor cores, and its log-sum-exp merge
// (decode_attention.h).
//
// CTA (split, kv_head, sequence), 128 threads = 4 warps, attends the G query heads of kv_head's
// GQA group (G <= 8) to tokens [split * chunk, (split + 1) * chunk) of the sequence. The group's
// heads are the M rows of mma.sync m16n8k16 (rows G..15 are zero and never written), the tokens
// are N of S = Q·Kᵀ and K of O = P·V, so each K/V byte is read once per group, softmax runs once
// per (head, token) and no lane repeats another's work.
//
// K/V reach shared memory through a ring of kStages tiles of kKeys tokens: while one tile is
// computed the next kStages - 1 are in flight (the plan picks 2-4 stages; with 3 and head_dim
// 128, 96 KiB per CTA, two CTAs per SM). The plan's loader fills it either with cp.async 16-byte
// copies by every thread (rows XOR-swizzled by row % 8 for conflict-free ldmatrix) or with TMA
// tensor copies issued by lanes of warp 0, one per 16 tokens x 64 dims of K or V (the hardware's
// 128-byte swizzle: the same XOR over 128-byte rows), each stage completing on an mbarrier. The
// page ids a tile needs are read one tile ahead, so the copies never wait on them; the offsets
// inside a page use the block size as a shift and mask. Warp w computes tokens
// [16w, 16w + 16) of each tile with its own online-softmax state (fp32, log2 units; P rounded to
// bf16 for P·V, as in the prefill kernel); at the end the four warps merge through shared memory.
// Token slots past the split's end are masked, and their V rows zero (cp.async zero-fills them;
// after a TMA copy the warp that owns them zeroes them), so whatever the pool holds there cannot
// reach the result. On request the warps also write each block's exact score (LycheeDecode's
// retrieval heads: the max over the block's keys of the group-mean query's dot product, the mean
// of the group's S rows), so selection need not read those keys again. With more than one split,
// each CTA writes a partial (o, lse) to the workspace and counts itself in at an arrival counter;
// the last split of a (sequence, kv head) merges the partials by log-sum-exp (in two levels when
// there are more than twice the plan's merge_fan_in), so there is no second kernel to launch. The
// length, the first tile's page ids and q are loaded together before the first copy.
#include <cuda.h>  // CUtensorMap (the TMA loader); the encoder comes from the runtime
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cassert>
#include <cstdint>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_utils.cuh"

namespace lychee::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kKeys = 64;               // tokens per K/V tile: 16 per warp
constexpr int kTablePrefetchTiles = 8;  // the block table is prefetched into L2 this far ahead
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kMaxGroup = 8;  // query heads per kv head: the 8 real rows of an m16 tile
static_assert(kKeys == kWarps * 16, "one m16n8k16 key step per warp and tile");
constexpr int kTmaBoxBytes = 16 * 128;  // a TMA box: 16 tokens x 64 dims of K or V

template <int D, int kStages, bool kTma>
struct DecodeConfig {
  static constexpr int kChunks = D / 8;                // 16-byte chunks per row
  static constexpr int kKSteps = D / 16;               // k steps of Q·Kᵀ
  static constexpr int kDTiles = D / 8;                // n tiles of P·V
  static constexpr int kRowStep = kThreads / kChunks;  // rows per load iteration
  static constexpr int kLoadIters = kKeys / kRowStep;  // 16-byte copies per thread per K tile
  static constexpr int kTileElems = kKeys * D;
  static constexpr int kStageElems = 2 * kTileElems;  // K then V
  static constexpr int kRingBytes = kStages * kStageElems * 2;
  // A K or V tile in the ring. cp.async: [kKeys][D], the 16-byte chunks of each 128 bytes
  // XOR-swizzled by row % 8. TMA: [D / 64][kKeys][64], rows of 128 bytes in the hardware's
  // 128-byte swizzle (the same XOR), so ldmatrix addresses differ only in the two pitches.
  static constexpr int kRowBytes = kTma ? 128 : D * 2;
  static constexpr int kHalfBytes = kTma ? kKeys * 128 : 128;  // from dims [0, 64) to [64, 128)
  static constexpr int kHalves = D / 64;
  // TMA copies a tile: (16-token segment, K/V, 64 dims), one lane of warp 0 each.
  static constexpr int kTmaLanes = (kKeys / 16) * 2 * kHalves;
  // The ring (1024-byte aligned for the swizzle, hence the slack), then kStages mbarriers (TMA);
  // the epilogue reuses the ring for the warps' partial outputs (fp32 [warps][8][D]).
  static constexpr int kSmemBytes = kRingBytes + (kTma ? 1024 + kStages * 8 : 0);
  static_assert(kTmaLanes <= 32, "one warp issues a tile's copies");
  static_assert(kRowStep % 8 == 0 && kKeys % kRowStep == 0, "loads keep one swizzle per thread");
  static_assert(kWarps * 8 * D * 4 + 2 * kWarps * 8 * 4 <= kRingBytes, "epilogue fits");
};

// Workspace views: o [rows, group, splits, D] fp32 (normalised), lse [rows, group, splits] fp32
// in log2 units, rows the launch's (sequence, kv head) rows (batch x kv heads, or the row list).
__device__ __forceinline__ float* WorkspaceO(const DecodeAttentionParams& p) {
  return static_cast<float*>(p.workspace);
}
__device__ __forceinline__ float* WorkspaceLse(const DecodeAttentionParams& p, int num_splits) {
  const int64_t kv_rows =
      p.maybe_row_list != nullptr ? p.row_list_len : p.shape.batch * p.shape.num_kv_heads;
  const int64_t group = p.shape.num_heads / p.shape.num_kv_heads;
  return WorkspaceO(p) + kv_rows * group * num_splits * p.shape.head_dim;
}

// Merges `count` partials of work_row's group of heads, at split slots first, first + stride,
// ... of the workspace, by log-sum-exp: into the output (final) or into slot `first` (a merge
// group's result, read by the final merge as a partial). Every thread of the CTA calls it, after
// the partials are visible; smem is the CTA's free ring. Each thread reads its columns of every
// partial before it writes them, and the LSEs are staged before any is written, so merging into
// slot `first` in place is safe.
template <int D>
__device__ void MergePartials(const DecodeAttentionParams& p, int num_splits, int64_t work_row,
                              int seq, int kv_head, int group, int first, int stride, int count,
                              bool final, uint8_t* smem) {
  const float kNegInf = -__int_as_float(0x7f800000);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // Stage the group's partial LSEs (log2 units), turn them into normalised weights once per head
  // (a warp per head), then each (head, d) output sums its partials with independent loads.
  // All of it in the dynamic ring: 64 more bytes of static shared memory cost 5-7% at large
  // batches on the H100 (same registers and occupancy; measured A/B in one device call).
  float* s_w = reinterpret_cast<float*>(smem);   // [group][count]
  float* s_merge_max = s_w + group * count;      // [group]
  float* s_merge_sum = s_merge_max + kMaxGroup;  // [group]
  const int64_t row0 = static_cast<int64_t>(seq) * p.shape.num_heads + kv_head * group;
  const int64_t work_head0 = work_row * group;  // the group's first partial row
  float* const lse0 = WorkspaceLse(p, num_splits) + work_head0 * num_splits + first;
  for (int i = threadIdx.x; i < group * count; i += kThreads) {
    s_w[i] = __ldcg(lse0 + (i / count) * num_splits + (i % count) * stride);
  }
  __syncthreads();
  for (int h = warp; h < group; h += kWarps) {
    float* w = s_w + h * count;
    float mx = kNegInf;
    for (int i = lane; i < count; i += 32) mx = fmaxf(mx, w[i]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
    }
    float sum = 0.0f;
    if (mx != kNegInf) {
      for (int i = lane; i < count; i += 32) {
        w[i] = exp2f(w[i] - mx);
        sum += w[i];
      }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      s_merge_max[h] = mx;
      s_merge_sum[h] = sum;
    }
  }
  __syncthreads();
  // Thread (h, c) sums 4 consecutive output columns over the partials with 16-byte loads, 8 in
  // flight: a group of 4 heads x 128 dims is one float4 column per thread.
  constexpr int kCols = D / 4;
  for (int idx = threadIdx.x; idx < group * kCols; idx += kThreads) {
    const int h = idx / kCols;
    const int c = idx % kCols;
    const float mx = s_merge_max[h];
    const bool empty = mx == kNegInf;
    float4* const po =
        reinterpret_cast<float4*>(WorkspaceO(p) + ((work_head0 + h) * num_splits + first) * D) + c;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (!empty) {
      const float* w = s_w + h * count;
#pragma unroll 8
      for (int i = 0; i < count; ++i) {
        const float4 v = __ldcg(po + static_cast<int64_t>(i) * stride * kCols);
        acc.x = fmaf(w[i], v.x, acc.x);
        acc.y = fmaf(w[i], v.y, acc.y);
        acc.z = fmaf(w[i], v.z, acc.z);
        acc.w = fmaf(w[i], v.w, acc.w);
      }
    }
    const float inv = empty ? 0.0f : 1.0f / s_merge_sum[h];
    if (final) {
      const int64_t row = row0 + h;
      __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(p.out + row * D + 4 * c);
      out[0] = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
      out[1] = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
      if (c == 0 && p.maybe_lse != nullptr) {
        p.maybe_lse[row] = empty ? kNegInf : (mx + log2f(s_merge_sum[h])) * kLn2;
      }
    } else {
      __stcg(po, make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv));
      if (c == 0) __stcg(lse0 + h * num_splits, empty ? kNegInf : mx + log2f(s_merge_sum[h]));
    }
  }
}

template <int D, int kStages, bool kTma>
__global__ void __launch_bounds__(kThreads, 2)
    DecodeAttentionKernel(const __grid_constant__ DecodeAttentionParams p,
                          const __grid_constant__ DecodeAttentionPlan plan,
                          const __grid_constant__ CUtensorMap kv_map) {
  using Cfg = DecodeConfig<D, kStages, kTma>;
  extern __shared__ uint4 smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>(smem_raw);
  if constexpr (kTma) smem += (1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u;
  bf16* s_ring = reinterpret_cast<bf16*>(smem);            // [kStages][K, V][tile]
  const uint32_t bars = SmemAddr(smem + Cfg::kRingBytes);  // TMA: stage s's mbarrier at + 8 s

  AllowDependentGrids();
  if (kTma && threadIdx.x == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&kv_map))
                 : "memory");
  }
  WaitForPriorGrids();  // (launch.cuh: before any global access)

  const DecodeAttentionShape& s = p.shape;
  const int split = blockIdx.x;
  // (sequence, kv head) from the grid, or from the row list; work_row indexes the workspace and
  // the split counters.
  int kv_head, seq;
  int64_t work_row;
  bool reads_sequence = false;  // a hybrid launch's row that reads its sequence's own table
  if (p.maybe_row_list != nullptr) {
    int32_t listed = p.maybe_row_list[blockIdx.y];
    if (p.full_block_tables != nullptr) {
      reads_sequence = (listed & kDecodeRowReadsSequence) != 0;
      listed &= ~kDecodeRowReadsSequence;
    }
    seq = listed / static_cast<int>(s.num_kv_heads);
    kv_head = listed % static_cast<int>(s.num_kv_heads);
    work_row = blockIdx.y;
  } else {
    kv_head = blockIdx.y;
    seq = blockIdx.z;
    work_row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  }
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const bool direct = plan.num_splits == 1;  // no merge: write the final output here

  // Dense: one block table row and length per sequence. Sparse: one per (sequence, kv head).
  const int64_t table_row = p.per_kv_head_tables && !reads_sequence
                                ? static_cast<int64_t>(seq) * s.num_kv_heads + kv_head
                                : seq;
  const int start = split * plan.chunk_tokens;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // Loader (cp.async): thread t copies chunk t % kChunks of rows t / kChunks + it * kRowStep of a
  // tile.
  const int ld_chunk = threadIdx.x % Cfg::kChunks;
  const int ld_row = threadIdx.x / Cfg::kChunks;
  const int32_t* table =
      (reads_sequence ? p.full_block_tables : p.block_tables) + table_row * s.max_blocks_per_seq;
  const int bs_shift = __ffs(static_cast<int>(s.block_size)) - 1;
  // Loader (TMA): lane l < kTmaLanes of warp 0 copies 16-token segment l / (2 kHalves) of a tile,
  // K or V by (l / kHalves) % 2, dims [64 (l % kHalves), + 64).
  const bool tma_lane = kTma && warp == 0 && lane < Cfg::kTmaLanes;
  const int tma_seg = lane / (2 * Cfg::kHalves);
  // The table position of this thread's row `it` (TMA: its segment) of a tile.
  auto row_pos = [&](int tile, int it) {
    return kTma ? start + tile * kKeys + tma_seg * 16
                : start + tile * kKeys + ld_row + it * Cfg::kRowStep;
  };

  // Everything the first copies need is loaded at once, before any of it is used: the length,
  // the first tile's page ids (their table entries exist whatever the length is; which of them
  // count is decided once it is known) and q. In a row they were three dependent round trips to
  // memory before the first K/V byte was asked for.
  const int32_t raw_len = (reads_sequence ? p.full_context_lens : p.context_lens)[table_row];
  const int max_tokens = static_cast<int>(s.max_blocks_per_seq * s.block_size);
  constexpr int kPageRows = kTma ? 1 : Cfg::kLoadIters;  // page ids a thread holds per tile
  int32_t first_pages[kPageRows];
#pragma unroll
  for (int it = 0; it < kPageRows; ++it) {
    const int pos = row_pos(0, it);
    first_pages[it] =
        (!kTma || tma_lane) && pos < max_tokens ? __ldg(table + (pos >> bs_shift)) : -1;
  }
  // Q's A fragments: row lane / 4 is head kv_head * G + lane / 4 when < G, rows 8..15 are zero.
  const int q_row = lane / 4;
  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
  uint32_t qf[Cfg::kKSteps][2];
  {
    const bool has_row = q_row < group;
    const uint32_t* q32 = reinterpret_cast<const uint32_t*>(
        p.q + seq * q_stride + (static_cast<int64_t>(kv_head) * group + (has_row ? q_row : 0)) * D +
        2 * (lane % 4));
#pragma unroll
    for (int kk = 0; kk < Cfg::kKSteps; ++kk) {
      qf[kk][0] = has_row ? __ldg(q32 + kk * 8) : 0u;
      qf[kk][1] = has_row ? __ldg(q32 + kk * 8 + 4) : 0u;
    }
  }

  // A negative length leaves the row to another launch: nothing is written for it.
  if (raw_len < 0) return;
  const int ctx = min(static_cast<int>(raw_len), max_tokens);
  // Splits past the end hold no tokens and take no part in the merge; an empty sequence gets its
  // zeros and -inf from split 0 directly.
  if (!direct && start >= ctx && !(ctx == 0 && split == 0)) return;
  // Splits that hold tokens (the last one takes any excess over num_splits * chunk_tokens).
  const int num_parts = min((ctx + plan.chunk_tokens - 1) / plan.chunk_tokens, plan.num_splits);
  const int end = split == plan.num_splits - 1 ? ctx : min(ctx, start + plan.chunk_tokens);
  const int num_tiles = end > start ? (end - start + kKeys - 1) / kKeys : 0;

  if constexpr (kTma) {
    if (threadIdx.x == 0) {
      for (int st = 0; st < kStages; ++st) MbarInit(bars + 8 * st, 1);
      MbarInitFence();
    }
    __syncthreads();
  }

  const uint32_t ld_dst = SmemAddr(s_ring + Swz<D>(ld_row, ld_chunk));
  const int bs_mask = static_cast<int>(s.block_size) - 1;
  const int64_t block_stride = p.cache.block_stride();
  const int64_t kv_stride = p.cache.kv_stride();
  const bf16* k_head = p.cache.kv + kv_head * p.cache.head_stride() + ld_chunk * 8;
  const int tma_kv = (lane / Cfg::kHalves) % 2;
  const int tma_half = lane % Cfg::kHalves;
  // Page ids of this thread's rows (TMA: its segment) of the next tile to load (-1: past the end).
  int32_t pages[Cfg::kLoadIters];
  auto fetch_pages = [&](int tile) {
#pragma unroll
    for (int it = 0; it < kPageRows; ++it) {
      if (kTma && !tma_lane) break;
      const int pos = row_pos(tile, it);
      const bool valid = tile < num_tiles && pos < end;
      const int32_t raw =
          tile == 0 ? first_pages[it] : (valid ? __ldg(table + (pos >> bs_shift)) : -1);
      pages[it] = valid ? raw : -1;
#ifndef NDEBUG
      // Debug builds check every page id a row uses against the pool (a bad block table would
      // otherwise read another sequence's KV, or outside the pool, silently).
      assert(pages[it] < p.cache.num_blocks && (pages[it] >= 0 || !valid));
#endif
    }
  };
  auto load_tile = [&](int tile) {
    const uint32_t stage = (tile % kStages) * Cfg::kStageElems * 2;
    if constexpr (kTma) {
      if (warp == 0) {
        const uint32_t bar = bars + 8 * (tile % kStages);
        // The stage was read (or zeroed) through the generic proxy before the CTA's barrier.
        FenceProxyAsyncShared();
        if (lane == 0) {
          const int segs = (min(kKeys, end - (start + tile * kKeys)) + 15) / 16;
          MbarArriveExpectTx(bar, segs * 2 * Cfg::kHalves * kTmaBoxBytes);
        }
        __syncwarp();
        if (tma_lane && pages[0] >= 0) {
          const int pos = start + tile * kKeys + tma_seg * 16;
          const int row = static_cast<int>(
              ((static_cast<int64_t>(pages[0]) * 2 + tma_kv) * s.num_kv_heads + kv_head) *
                  s.block_size +
              (pos & bs_mask));
          const uint32_t dst = SmemAddr(s_ring) + stage + tma_kv * Cfg::kTileElems * 2 +
                               tma_half * Cfg::kHalfBytes + tma_seg * kTmaBoxBytes;
          TmaLoad2d(dst, &kv_map, tma_half * 64, row, bar);
        }
      }
    } else {
#pragma unroll
      for (int it = 0; it < Cfg::kLoadIters; ++it) {
        const int pos = start + tile * kKeys + ld_row + it * Cfg::kRowStep;
        const bool valid = pages[it] >= 0;
        const bf16* src = p.cache.kv;
        if (valid) src = k_head + pages[it] * block_stride + (pos & bs_mask) * D;
        const uint32_t dst = ld_dst + stage + it * Cfg::kRowStep * D * 2;
        CpAsync16(dst, src, valid);
        CpAsync16(dst + Cfg::kTileElems * 2, valid ? src + kv_stride : src, valid);
      }
    }
  };

  // Prologue: kStages - 1 tiles in flight (empty groups past the end keep the count uniform).
  fetch_pages(0);
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < num_tiles) load_tile(t);
    if constexpr (!kTma) CpAsyncCommit();
    fetch_pages(t + 1);
  }

  // ldmatrix addresses (as in prefill_attention.cu): K x4 covers keys +0..7 / +8..15 by lane bit
  // 4 and d chunk +0 / +1 by lane bit 3; V .trans keys by lane bit 3, d chunk by lane bit 4.
  uint32_t k_ld[4], v_ld[4];
  {
    const int k_row = warp * 16 + (lane & 7) + ((lane >> 4) << 3);
    const int k_sw = ((lane >> 3) & 1) ^ (lane & 7);
    const int v_row = warp * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
    const int v_sw = (lane >> 4) ^ (lane & 7);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      k_ld[c] = SmemAddr(s_ring) + k_row * Cfg::kRowBytes + (((2 * c) ^ k_sw) << 4);
      v_ld[c] =
          SmemAddr(s_ring) + Cfg::kTileElems * 2 + v_row * Cfg::kRowBytes + (((2 * c) ^ v_sw) << 4);
    }
  }

  const float kNegInf = -__int_as_float(0x7f800000);
  const float scale_log2 = p.scale * kLog2e;
  // This row's block scores (optional), indexed by block of the sequence.
  float* const block_scores =
      p.maybe_block_scores == nullptr || (p.full_block_tables != nullptr && !reads_sequence)
          ? nullptr
          : p.maybe_block_scores +
                (static_cast<int64_t>(seq) * s.num_kv_heads + kv_head) * p.block_scores_row_stride;
  const float inv_group = 1.0f / static_cast<float>(group);
  // O's accumulators: elements 0, 1 are row q_row; 2, 3 (rows 8..15) stay zero, as P's rows
  // 8..15 are, and are never read: keeping them saves re-zeroing them for every mma.
  float o[Cfg::kDTiles][4];
#pragma unroll
  for (int n = 0; n < Cfg::kDTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m = kNegInf;
  float l = 0.0f;  // this thread's partial row sum; reduced over the quad at the end

  for (int kt = 0; kt < num_tiles; ++kt) {
    if constexpr (kTma) {
      MbarWait(bars + 8 * (kt % kStages), (kt / kStages) & 1);
    } else {
      CpAsyncWait<kStages - 2>();
    }
    __syncthreads();  // tile kt landed for every thread; tile kt - 1's stage is free again
    if (kt + kStages - 1 < num_tiles) load_tile(kt + kStages - 1);
    if constexpr (!kTma) CpAsyncCommit();
    fetch_pages(kt + kStages);
    // The page ids come one tile ahead of their copies; prefetching the table into L2 further
    // ahead keeps a miss to DRAM off that short path.
    if (threadIdx.x == 0 && kt % 2 == 0 && kt + kTablePrefetchTiles < num_tiles) {
      const int pos = start + (kt + kTablePrefetchTiles) * kKeys;
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(table + (pos >> bs_shift)));
    }

    const uint32_t stage = (kt % kStages) * Cfg::kStageElems * 2;
    const int key0 = start + kt * kKeys + warp * 16;  // this warp's first token
    if (key0 < end) {
      // S = Q·Kᵀ over this warp's 16 tokens: two n tiles of 8.
      float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
      for (int kk = 0; kk < Cfg::kKSteps; ++kk) {
        uint32_t b[4];
        Ldmatrix4(b, k_ld[kk & 3] + stage + (kk >> 2) * Cfg::kHalfBytes);
        const uint32_t a[4] = {qf[kk][0], 0u, qf[kk][1], 0u};
        Mma16816(sc[0], a, b[0], b[1]);
        Mma16816(sc[1], a, b[2], b[3]);
      }
      // Row q_row's scores are elements 0, 1 of each n tile: tokens key0 + 8n + 2(lane % 4) + e.
      if (block_scores != nullptr) {
        // The group-mean query's dot with each token is the mean of the group's rows (the padding
        // rows are zero); the warp's 16 tokens are one block (block size 16, chunks in whole
        // blocks), its score their max.
        float best = kNegInf;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float sum = sc[n][e];
            sum += __shfl_xor_sync(0xffffffffu, sum, 4);
            sum += __shfl_xor_sync(0xffffffffu, sum, 8);
            sum += __shfl_xor_sync(0xffffffffu, sum, 16);
            if (key0 + n * 8 + 2 * (lane & 3) + e < end) best = fmaxf(best, sum);
          }
        }
        best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, 1));
        best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, 2));
        if (lane == 0) block_scores[key0 >> 4] = best * inv_group;
      }
      float mx = kNegInf;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = key0 + n * 8 + 2 * (lane & 3) + e;
          const float v = key < end ? sc[n][e] * scale_log2 : kNegInf;
          sc[n][e] = v;
          mx = fmaxf(mx, v);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m, mx);
      const float base = m_new == kNegInf ? 0.0f : m_new;
      // Rescale only when some row's max grew (rare once the scores settle): otherwise the
      // factor is exactly 1, or 0 for a row that has seen nothing (its l and O are 0 anyway).
      if (__any_sync(0xffffffffu, m_new > m)) {
        const float corr = exp2f(m - base);  // m == -inf gives 0
        l *= corr;
#pragma unroll
        for (int n = 0; n < Cfg::kDTiles; ++n) {
          o[n][0] *= corr;
          o[n][1] *= corr;
        }
      }
      m = m_new;
      float pr[2][2];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          pr[n][e] = exp2f(sc[n][e] - base);  // -inf gives 0
          l += pr[n][e];
        }
      }
      if constexpr (kTma) {
        // The copies bring whole 16-token segments: V rows of this warp past the end hold a
        // page's tail or an earlier tile (or nothing yet), and P = 0 there would still turn a NaN
        // into a NaN. Zero them (cp.async zero-fills such rows instead).
        if (key0 + 16 > end) {
          const int first_row = end - (start + kt * kKeys);  // the tile's first row past the end
          uint8_t* v_tile = smem + stage + Cfg::kTileElems * 2;
          const int chunks = (warp * 16 + 16 - first_row) * Cfg::kHalves * 8;
          for (int i = lane; i < chunks; i += 32) {
            const int r = first_row + i / (Cfg::kHalves * 8);
            const int rest = i % (Cfg::kHalves * 8);
            *reinterpret_cast<uint4*>(v_tile + (rest / 8) * Cfg::kHalfBytes + r * 128 +
                                      (rest % 8) * 16) = make_uint4(0u, 0u, 0u, 0u);
          }
          __syncwarp();
        }
      }
      // O += P·V: P's A fragment (rows 8..15 zero) from the two n tiles of S.
      const uint32_t a[4] = {PackBf16(pr[0][0], pr[0][1]), 0u, PackBf16(pr[1][0], pr[1][1]), 0u};
#pragma unroll
      for (int dp = 0; dp < Cfg::kDTiles / 2; ++dp) {
        uint32_t b[4];
        Ldmatrix4Trans(b, v_ld[dp & 3] + stage + (dp >> 2) * Cfg::kHalfBytes);
        Mma16816(o[2 * dp], a, b[0], b[1]);
        Mma16816(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
  }
  if constexpr (!kTma) CpAsyncWait<0>();  // (TMA: every copy issued was waited for)
  __syncthreads();  // every warp is done with the ring: the epilogue reuses it

  // Merge the warps: each writes its normalised-later partial (o, m, l) of rows 0..7.
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  float* s_o = reinterpret_cast<float*>(smem);  // [kWarps][8][D]
  float* s_m = s_o + kWarps * 8 * D;            // [kWarps][8]
  float* s_l = s_m + kWarps * 8;                // [kWarps][8]
#pragma unroll
  for (int n = 0; n < Cfg::kDTiles; ++n) {
    *reinterpret_cast<float2*>(s_o + (warp * 8 + q_row) * D + n * 8 + 2 * (lane & 3)) =
        make_float2(o[n][0], o[n][1]);
  }
  if ((lane & 3) == 0) {
    s_m[warp * 8 + q_row] = m;
    s_l[warp * 8 + q_row] = l;
  }
  __syncthreads();

  const bool final_here = direct || ctx == 0;
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int h = idx / D;
    const int d = idx % D;
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w * 8 + h]);
    float sum = 0.0f, acc = 0.0f;
    if (mx != kNegInf) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float wt = exp2f(s_m[w * 8 + h] - mx);
        sum = fmaf(s_l[w * 8 + h], wt, sum);
        acc = fmaf(s_o[(w * 8 + h) * D + d], wt, acc);
      }
    }
    const bool empty = mx == kNegInf || !(sum > 0.0f);
    const int64_t row = static_cast<int64_t>(seq) * s.num_heads + kv_head * group + h;
    if (final_here) {
      p.out[row * D + d] = __float2bfloat16_rn(empty ? 0.0f : acc / sum);
      if (d == 0 && p.maybe_lse != nullptr) {
        p.maybe_lse[row] = empty ? kNegInf : (mx + log2f(sum)) * kLn2;
      }
    } else {
      const int64_t part = (work_row * group + h) * plan.num_splits + split;
      WorkspaceO(p)[part * D + d] = empty ? 0.0f : acc / sum;
      if (d == 0) WorkspaceLse(p, plan.num_splits)[part] = empty ? kNegInf : mx + log2f(sum);
    }
  }
  if (final_here) return;

  // The last split of (seq, kv_head) to arrive merges the partials by log-sum-exp. With more
  // than 2 * merge_fan_in of them, the last split of each group of merge_fan_in merges its group
  // into the group's first slot, and the last group to arrive merges the groups: two short
  // merges in a row instead of one CTA reading every partial (H100, one row of 4 heads: 121
  // splits at 32K took 23.6 µs one level, 21.3 two). The fences order the partials before each
  // arrival; the counters go back to zero for the next launch.
  int32_t* const counters = p.split_counters + work_row * kDecodeSplitCountersPerRow;
  const int fan_in = plan.merge_fan_in;
  const bool two_level = fan_in > 0 && num_parts > 2 * fan_in;
  // The final merge's partials: the groups' results (slots 0, fan_in, ...), or every split's.
  const int final_count = two_level ? (num_parts + fan_in - 1) / fan_in : num_parts;
  const int final_stride = two_level ? fan_in : 1;
  __shared__ bool s_last;
  auto arrive_last = [&](int32_t* counter, int arrivals) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      s_last = atomicAdd(counter, 1) == arrivals - 1;
      if (s_last) *counter = 0;  // every arrival is in: no one else touches it this launch
    }
    __syncthreads();
    if (s_last) __threadfence();
    return s_last;
  };
  if (two_level) {
    const int g = split / fan_in;
    const int in_group = min(fan_in, num_parts - g * fan_in);
    if (!arrive_last(counters + 1 + g, in_group)) return;
    MergePartials<D>(p, plan.num_splits, work_row, seq, kv_head, group, g * fan_in, 1, in_group,
                     false, smem);
  }
  if (!arrive_last(counters, final_count)) return;
  MergePartials<D>(p, plan.num_splits, work_row, seq, kv_head, group, 0, final_stride, final_count,
                   true, smem);
}

// The pool as the TMA loader sees it: a 2-D tensor of bf16 rows of head_dim elements (every
// (block, K/V, kv head, token) row of PagedKvBf16, in pool order), read in boxes of 64 elements x
// 16 rows with the 128-byte swizzle. Built on the host per launch (no stream op: capturable).
absl::Status EncodeKvTensorMap(const PagedKvBf16& cache, CUtensorMap* map) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (encode == nullptr) {
    return absl::InternalError("decode attention: the driver has no cuTensorMapEncodeTiled");
  }
  const cuuint64_t dims[2] = {
      static_cast<cuuint64_t>(cache.head_dim),
      static_cast<cuuint64_t>(cache.num_blocks * cache.block_stride() / cache.head_dim)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cache.head_dim * sizeof(bf16))};
  const cuuint32_t box[2] = {64, 16};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r =
      encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, cache.kv, dims, strides, box,
             element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("decode attention: cuTensorMapEncodeTiled failed (CUresult ", r, ")"));
  }
  return absl::OkStatus();
}

template <int D, int kStages, bool kTma>
absl::Status Launch(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                    cudaStream_t stream) {
  constexpr int kSmem = DecodeConfig<D, kStages, kTma>::kSmemBytes;
  // Above 48 KiB of dynamic shared memory needs the opt-in; a host-side attribute, no stream op,
  // so it is legal while a stream is being captured.
  LY_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(DecodeAttentionKernel<D, kStages, kTma>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  CUtensorMap kv_map{};  // unused by the cp.async loader
  if constexpr (kTma) LY_CUDA_RETURN_IF_NOT_OK(EncodeKvTensorMap(p.cache, &kv_map));
  const bool listed = p.maybe_row_list != nullptr;
  const dim3 grid(static_cast<unsigned>(plan.num_splits),
                  static_cast<unsigned>(listed ? p.row_list_len : p.shape.num_kv_heads),
                  static_cast<unsigned>(listed ? 1 : p.shape.batch));
  LY_CUDA_RETURN_IF_ERROR(LaunchKernel(DecodeAttentionKernel<D, kStages, kTma>, grid,
                                       dim3(kThreads), kSmem, stream, p.programmatic_launch, p,
                                       plan, kv_map));
  return absl::OkStatus();
}

// Runtime stages and loader -> template (the plan's choice).
template <typename F>
absl::Status DispatchStagesAndLoader(int stages, DecodeLoader loader, F&& f) {
  auto with_stages = [&](auto tma) -> absl::Status {
    switch (stages) {
      case 2:
        return f(std::integral_constant<int, 2>{}, tma);
      case 3:
        return f(std::integral_constant<int, 3>{}, tma);
      case 4:
        return f(std::integral_constant<int, 4>{}, tma);
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("decode attention: unsupported stages: ", stages, " (2, 3, 4)"));
    }
  };
  switch (loader) {
    case DecodeLoader::kCpAsync:
      return with_stages(std::false_type{});
    case DecodeLoader::kTma:
      return with_stages(std::true_type{});
  }
  return absl::InvalidArgumentError(
      absl::StrCat("decode attention: unsupported loader ", static_cast<int>(loader)));
}

}  // namespace

absl::Status DecodeAttention(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                             cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunDecodeAttention(p, plan));
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return DispatchStagesAndLoader(plan.stages, plan.loader, [&](auto stages, auto tma) {
      return Launch<decltype(head_dim)::value, decltype(stages)::value, decltype(tma)::value>(
          p, plan, stream);
    });
  });
}

absl::StatusOr<int> DecodeAttentionCtasPerSm(int64_t head_dim, int stages, DecodeLoader loader) {
  int ctas = 0;
  const absl::Status st = DispatchHeadDim(head_dim, [&](auto hd) {
    return DispatchStagesAndLoader(stages, loader, [&](auto sg, auto tma) -> absl::Status {
      constexpr int kD = decltype(hd)::value, kS = decltype(sg)::value;
      constexpr bool kT = decltype(tma)::value;
      constexpr int kSmem = DecodeConfig<kD, kS, kT>::kSmemBytes;
      LY_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
          DecodeAttentionKernel<kD, kS, kT>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      LY_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &ctas, DecodeAttentionKernel<kD, kS, kT>, kThreads, kSmem));
      return absl::OkStatus();
    });
  });
  if (!st.ok()) return st;
  return ctas;
}

}  // namespace lychee::cuda
