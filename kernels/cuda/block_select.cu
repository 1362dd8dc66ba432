// SPDX-License-Identifier: Apache-2.0
// Quest block selection (block_select.h): key-summary scoring, then a per-(sequence, kv head)
// radix select of the budget and an in-order compaction into sparse block-table rows.
//
// Scoring: CTA (block range, kv head, sequence) of 8 warps; a warp scores one block at a time:
// lane l holds dims [l * D/32, (l + 1) * D/32) of every query head of the GQA group and of the
// block's min/max summary rows, and the group's bounds are reduced across the warp.
//
// Selection: CTA (kv head, sequence), 256 threads, the row's scores staged in shared memory. The
// take-th best candidate score is found by a 4-pass MSB-first radix select over order-preserving
// uint32 images of the floats (8 bits a pass, the bin holding it found by a block scan over the
// 256 bins); candidates strictly above it are taken, and of
// those equal to it the earliest `remaining` ones (ties go to the earlier block). Two block-wide
// prefix sums in index order then give each taken block its output slot, so rows come out in
// ascending logical order without a sort.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dispatch.cuh"

namespace lychee::cuda {
namespace {

constexpr int kScoreWarps = 8;
constexpr int kScoreBlocksPerWarp = 8;  // blocks a warp scores, so q is loaded once per 8
constexpr int kSelectThreads = 256;     // one radix bin per thread
constexpr int kMaxGroup = kBlockSelectMaxGroup;

__device__ __forceinline__ int64_t NumBlocks(const BlockSelectParams& p, int seq, int64_t* ctx) {
  const BlockSelectShape& s = p.shape;
  const int64_t max_tokens = s.max_blocks_per_seq * s.block_size;
  int64_t c = p.context_lens[seq];
  c = c < 0 ? 0 : (c > max_tokens ? max_tokens : c);
  *ctx = c;
  return (c + s.block_size - 1) / s.block_size;
}

// Larger float -> larger uint32 (NaN is not expected: the summaries hold written keys).
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <int D>
__global__ void __launch_bounds__(kScoreWarps * 32)
    QuestScoreKernel(const __grid_constant__ BlockSelectParams p) {
  constexpr int kPer = D / 32;  // dims per lane
  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  int64_t ctx = 0;
  const int64_t n = NumBlocks(p, seq, &ctx);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kScoreWarps * kScoreBlocksPerWarp;
  if (first >= n) return;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
  float q[kMaxGroup][kPer];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      q[h][e] = h < group
                    ? __bfloat162float(
                          p.q[seq * q_stride + (static_cast<int64_t>(kv_head) * group + h) * D +
                              lane * kPer + e])
                    : 0.0f;
    }
  }
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  float* out =
      p.scores + (static_cast<int64_t>(seq) * s.num_kv_heads + kv_head) * s.max_blocks_per_seq;
  const int64_t summary_stride = p.cache.summary_block_stride();
  for (int i = 0; i < kScoreBlocksPerWarp; ++i) {
    const int64_t b = first + static_cast<int64_t>(warp) * kScoreBlocksPerWarp + i;
    if (b >= n) break;  // uniform over the warp
    const bf16* summary =
        p.cache.key_summary + table[b] * summary_stride + kv_head * 2 * D + lane * kPer;
    float mn[kPer], mx[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      mn[e] = __bfloat162float(summary[e]);
      mx[e] = __bfloat162float(summary[D + e]);
    }
    float best = -__int_as_float(0x7f800000);
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      float bound = 0.0f;
#pragma unroll
      for (int e = 0; e < kPer; ++e) bound += fmaxf(q[h][e] * mn[e], q[h][e] * mx[e]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        bound += __shfl_xor_sync(0xffffffffu, bound, offset);
      }
      best = fmaxf(best, bound);
    }
    if (lane == 0) out[b] = best * p.scale;
  }
}

__global__ void __launch_bounds__(kSelectThreads)
    QuestSelectKernel(const __grid_constant__ BlockSelectParams p) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int s_hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  extern __shared__ float s_scores[];

  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.x;
  const int seq = blockIdx.y;
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  int64_t ctx = 0;
  const int n = static_cast<int>(NumBlocks(p, seq, &ctx));
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  int32_t* out_pages = p.sel_tables + row * s.budget_blocks;
  int32_t* out_blocks =
      p.maybe_sel_blocks == nullptr ? nullptr : p.maybe_sel_blocks + row * s.budget_blocks;
  auto emit = [&](int slot, int block) {
    out_pages[slot] = table[block];
    if (out_blocks != nullptr) out_blocks[slot] = block;
  };

  const int budget = static_cast<int>(s.budget_blocks);
  if (n <= budget) {  // everything fits
    for (int b = threadIdx.x; b < n; b += kSelectThreads) emit(b, b);
    if (threadIdx.x == 0) p.sel_lens[row] = static_cast<int32_t>(ctx);
    return;
  }
  const int sinks = min(n - 1, static_cast<int>(s.sink_blocks));
  const int cand_begin = sinks, cand_end = n - 1;  // the last block is forced too
  const int take = budget - sinks - 1;             // >= 0: budget_blocks > sink_blocks
  const float* scores = p.scores + row * s.max_blocks_per_seq;
  for (int b = cand_begin + threadIdx.x; b < cand_end; b += kSelectThreads) s_scores[b] = scores[b];
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_remaining = take;
  }
  __syncthreads();

  // Radix select of the take-th largest candidate image, 8 bits a pass from the top.
  for (int shift = 24; shift >= 0 && take > 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kSelectThreads) s_hist[i] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix;
    const uint32_t high_mask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
    for (int b = cand_begin + threadIdx.x; b < cand_end; b += kSelectThreads) {
      const uint32_t u = OrderedBits(s_scores[b]);
      if ((u & high_mask) == prefix) atomicAdd(&s_hist[(u >> shift) & 0xff], 1);
    }
    __syncthreads();
    // Thread t looks at digit 255 - t: with the counts of the digits above it (a block scan), the
    // one thread whose digit holds the remaining-th best sets the prefix.
    const int digit = 255 - static_cast<int>(threadIdx.x);
    const int count = s_hist[digit];
    const int remaining = s_remaining;
    int above = 0;
    Scan(scan_storage).ExclusiveSum(count, above);
    if (above < remaining && above + count >= remaining) {
      s_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
      s_remaining = remaining - above;  // still to take among those equal to the prefix so far
    }
    __syncthreads();
  }
  const uint32_t threshold = s_prefix;  // image of the take-th best score
  const int equal_quota = s_remaining;  // how many candidates equal to it are taken

  // In index order: thread t owns candidates [lo, hi). First the ranks of the equal ones, then the
  // output slots of the taken ones.
  const int per = (cand_end - cand_begin + kSelectThreads - 1) / kSelectThreads;
  const int lo = min(cand_end, cand_begin + static_cast<int>(threadIdx.x) * per);
  const int hi = min(cand_end, lo + per);
  int equal = 0;
  if (take > 0) {
    for (int b = lo; b < hi; ++b) equal += OrderedBits(s_scores[b]) == threshold;
  }
  int equal_before = 0;
  Scan(scan_storage).ExclusiveSum(equal, equal_before);
  __syncthreads();
  int taken = 0;
  if (take > 0) {
    int rank = equal_before;
    for (int b = lo; b < hi; ++b) {
      const uint32_t u = OrderedBits(s_scores[b]);
      if (u > threshold || (u == threshold && rank++ < equal_quota)) ++taken;
    }
  }
  int slot = 0;
  Scan(scan_storage).ExclusiveSum(taken, slot);
  if (take > 0) {
    int rank = equal_before;
    slot += sinks;
    for (int b = lo; b < hi; ++b) {
      const uint32_t u = OrderedBits(s_scores[b]);
      if (u > threshold || (u == threshold && rank++ < equal_quota)) emit(slot++, b);
    }
  }
  for (int b = threadIdx.x; b < sinks; b += kSelectThreads) emit(b, b);
  if (threadIdx.x == 0) {
    emit(sinks + take, n - 1);
    // Every selected page is full except the sequence's last one.
    p.sel_lens[row] = static_cast<int32_t>((sinks + take) * s.block_size + ctx -
                                           static_cast<int64_t>(n - 1) * s.block_size);
  }
}

template <int D>
absl::Status Launch(const BlockSelectParams& p, cudaStream_t stream) {
  const BlockSelectShape& s = p.shape;
  const int64_t per_cta = kScoreWarps * kScoreBlocksPerWarp;
  const dim3 score_grid(static_cast<unsigned>((s.max_blocks_per_seq + per_cta - 1) / per_cta),
                        static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  QuestScoreKernel<D><<<score_grid, kScoreWarps * 32, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const int smem = static_cast<int>(s.max_blocks_per_seq * sizeof(float));
  // A host-side attribute (no stream op): legal during graph capture.
  LY_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(QuestSelectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 select_grid(static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  QuestSelectKernel<<<select_grid, kSelectThreads, smem, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status QuestBlockSelect(const BlockSelectParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunBlockSelect(p));
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

}  // namespace lychee::cuda
