// SPDX-License-Identifier: Apache-2.0
// Block selection (block_select.h): scoring, then a per-(sequence, kv head) radix select of the
// budget and an in-order compaction into sparse block-table rows; and the dropped-mass stats.
// QuestBlockSelect and SparseBlockSelect share both kernels (Quest: every row kTopK).
//
// Scoring: CTA (block range, kv head, sequence) of 8 warps; a warp scores one block at a time:
// lane l holds dims [l * D/32, (l + 1) * D/32) of every query head of the GQA group and of the
// block's min/max summary rows (or of eight of its keys at a time, for exact scores); the eight
// per-lane partial sums are reduced across the warp in one reduce-scatter (9 shuffles, not 40).
//
// Selection: CTA (kv head, sequence), 256 threads, the row's scores staged in shared memory. The
// take-th best candidate score is found by a 4-pass MSB-first radix select over order-preserving
// uint32 images of the floats (8 bits a pass, lanes with equal digits adding to the shared
// histogram once, the bin holding it found by a block scan over the 256 bins); candidates
// strictly above it are taken, and of those equal to it the earliest `remaining` ones (ties go
// to the earlier block). Per-warp counts in index order and ballots then give each taken block
// its output slot, so rows come out in ascending logical order without a sort. With a bound
// wanted, the read blocks' staged scores are set to -inf as they are emitted and a block
// reduction gives ln Σ tokens · exp(score) over the rest.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/dispatch.cuh"

namespace lychee::cuda {
namespace {

constexpr int kScoreWarps = 8;
constexpr int kScoreBlocksPerWarp = 8;  // blocks a warp scores, so q is loaded once per 8
constexpr int kSelectThreads = 256;     // one radix bin per thread
constexpr int kMaxGroup = kBlockSelectMaxGroup;
static_assert(kMaxGroup == 8, "the score kernel reduces eight heads in one reduce-scatter");
constexpr int kSelectWarps = kSelectThreads / 32;

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

// What a row does in this launch (QuestBlockSelect: every row kTopK under Quest's rule).
struct RowPlan {
  SelectRowMode mode = SelectRowMode::kTopK;
  SelectRange range;
  int32_t n = 0;
  int64_t ctx = 0;
  bool box_scores = false;    // the score kernel writes key-summary bounds for it
  bool exact_scores = false;  // ... or the exact scores of the group-mean query
};

__device__ __forceinline__ RowPlan PlanRow(const BlockSelectParams& p, int seq, int kv_head) {
  const BlockSelectShape& s = p.shape;
  RowPlan r;
  r.n = static_cast<int32_t>(NumBlocks(p, seq, &r.ctx));
  SelectSeqRule rule;
  if (p.row_modes == nullptr) {
    rule.budget_blocks = static_cast<int32_t>(s.budget_blocks);
    rule.sink_blocks = static_cast<int32_t>(s.sink_blocks);
    rule.rule = SelectRule::kQuest;
  } else {
    r.mode = static_cast<SelectRowMode>(
        p.row_modes[static_cast<int64_t>(seq) * s.num_kv_heads + kv_head]);
    rule = p.seq_rules[seq];
  }
  const bool bound = p.maybe_log_unread != nullptr;
  if (r.mode == SelectRowMode::kTopK || r.mode == SelectRowMode::kExactTopK) {
    r.range = ResolveSelectRule(rule, r.n);
    const int32_t cands = r.range.last_begin - r.range.first;
    const bool ranks = r.range.take > 0 && r.range.take < cands;
    r.box_scores = r.mode == SelectRowMode::kTopK && (ranks || (bound && r.range.take < cands));
    r.exact_scores = r.mode == SelectRowMode::kExactTopK && ranks;
  } else if (r.mode == SelectRowMode::kInherit) {
    r.box_scores = bound;
  }
  return r;
}

// Scoring: CTA (block range, kv head, sequence); a warp scores kScoreBlocksPerWarp blocks, lane l
// holding dims [l * D/32, (l + 1) * D/32). Box rows: the max over the group of the key-summary
// bound (scaled); exact rows: the max over the block's keys of the group-mean query's dot
// product (unscaled, as the CPU's ExactBlockScores).
template <int D>
__global__ void __launch_bounds__(kScoreWarps * 32)
    ScoreKernel(const __grid_constant__ BlockSelectParams p) {
  constexpr int kPer = D / 32;  // dims per lane
  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const RowPlan plan = PlanRow(p, seq, kv_head);
  if (!plan.box_scores && !plan.exact_scores) return;
  const int64_t n = plan.n;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kScoreWarps * kScoreBlocksPerWarp;
  if (first >= n) return;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
  float q[kMaxGroup][kPer];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h < group) {
      LoadBf16Floats<kPer>(
          p.q + seq * q_stride + (static_cast<int64_t>(kv_head) * group + h) * D + lane * kPer,
          q[h]);
    } else {
#pragma unroll
      for (int e = 0; e < kPer; ++e) q[h][e] = 0.0f;
    }
  }
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  float* out =
      p.scores + (static_cast<int64_t>(seq) * s.num_kv_heads + kv_head) * s.max_blocks_per_seq;
  const float kNegInf = -__int_as_float(0x7f800000);
  // After WarpReduceScatter8, lanes 4r..4r+3 hold row r's sum (a query head, or a key of the
  // block).
  const int lane_row = lane / 4;
  if (plan.exact_scores) {
    // The group-mean query, summed in head order then scaled, as GroupMeanQuery on the CPU.
    float qbar[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      float sum = 0.0f;
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h < group) sum += q[h][e];
      }
      qbar[e] = sum * (1.0f / static_cast<float>(group));
    }
    for (int i = 0; i < kScoreBlocksPerWarp; ++i) {
      const int64_t b = first + static_cast<int64_t>(warp) * kScoreBlocksPerWarp + i;
      if (b >= n) break;  // uniform over the warp
      const bf16* keys = p.cache.kv + table[b] * p.cache.block_stride() +
                         kv_head * p.cache.head_stride() + lane * kPer;
      const int rows_in_block =
          static_cast<int>(b == n - 1 ? plan.ctx - (n - 1) * s.block_size : s.block_size);
      // Eight keys at a time: per-lane partial dots, then one reduce-scatter for all eight.
      float best = kNegInf;
      for (int r0 = 0; r0 < rows_in_block; r0 += 8) {
        float part[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          part[j] = 0.0f;
          if (r0 + j < rows_in_block) {  // uniform over the warp
            float k[kPer];
            LoadBf16Floats<kPer>(keys + static_cast<int64_t>(r0 + j) * D, k);
#pragma unroll
            for (int e = 0; e < kPer; ++e) part[j] += qbar[e] * k[e];
          }
        }
        const float dot = WarpReduceScatter8(part);
        if (r0 + lane_row < rows_in_block) best = fmaxf(best, dot);
      }
      best = WarpMaxOverRows8(best);
      if (lane == 0) out[b] = best;
    }
    return;
  }
  const int64_t summary_stride = p.cache.summary_block_stride();
  for (int i = 0; i < kScoreBlocksPerWarp; ++i) {
    const int64_t b = first + static_cast<int64_t>(warp) * kScoreBlocksPerWarp + i;
    if (b >= n) break;  // uniform over the warp
    const bf16* summary =
        p.cache.key_summary + table[b] * summary_stride + kv_head * 2 * D + lane * kPer;
    float mn[kPer], mx[kPer];
    LoadBf16Floats<kPer>(summary, mn);
    LoadBf16Floats<kPer>(summary + D, mx);
    // Per-lane partial bounds of every query head (zero for the padding heads), summed over the
    // warp in one reduce-scatter; then the max over the group's heads.
    float part[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      part[h] = 0.0f;
#pragma unroll
      for (int e = 0; e < kPer; ++e) part[h] += fmaxf(q[h][e] * mn[e], q[h][e] * mx[e]);
    }
    float bound = WarpReduceScatter8(part);
    bound = WarpMaxOverRows8(lane_row < group ? bound : kNegInf);
    if (lane == 0) out[b] = bound * p.scale;
  }
}

// Selection: CTA (kv head, sequence). See the file comment for the radix select.
__global__ void __launch_bounds__(kSelectThreads)
    SelectKernel(const __grid_constant__ BlockSelectParams p) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  using Reduce = cub::BlockReduce<float, kSelectThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } storage;
  __shared__ int s_hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  __shared__ int s_last_read;  // the sequence's last (partial) block is read
  __shared__ float s_max;
  __shared__ int s_warp_above[kSelectWarps], s_warp_equal[kSelectWarps];
  extern __shared__ float s_scores[];

  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.x;
  const int seq = blockIdx.y;
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  const RowPlan plan = PlanRow(p, seq, kv_head);
  const int n = plan.n;
  const int64_t width = p.row_modes == nullptr ? s.budget_blocks : s.max_blocks_per_seq;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  int32_t* out_pages = p.sel_tables + row * width;
  int32_t* set = p.maybe_sel_blocks == nullptr ? nullptr : p.maybe_sel_blocks + row * width;
  const float* scores = p.scores + row * s.max_blocks_per_seq;
  const bool bound = p.maybe_log_unread != nullptr;
  const bool reads_all = plan.mode == SelectRowMode::kAll || plan.mode == SelectRowMode::kExactTopK;
  if (threadIdx.x == 0) s_last_read = 0;

  if (reads_all) {
    for (int b = threadIdx.x; b < n; b += kSelectThreads) out_pages[b] = table[b];
    if (threadIdx.x == 0) {
      p.sel_lens[row] = static_cast<int32_t>(plan.ctx);
      if (bound) p.maybe_log_unread[row] = -__int_as_float(0x7f800000);
      if (p.maybe_split_lens != nullptr) {
        p.maybe_split_lens[row] = static_cast<int32_t>(plan.ctx);
        p.maybe_split_lens[s.batch * s.num_kv_heads + row] = -1;
      }
    }
    if (plan.mode == SelectRowMode::kAll) return;
  }
  // Marks a read block when the bound is wanted: its score leaves the unread sum.
  auto mark = [&](int block) {
    if (bound) s_scores[block] = -__int_as_float(0x7f800000);
    if (block == n - 1) s_last_read = 1;
  };
  int count = 0;  // blocks in the row's set (read, for kTopK and kInherit)
  if (plan.mode == SelectRowMode::kInherit) {
    count = p.maybe_set_sizes[row];
    if (bound) {
      for (int b = threadIdx.x; b < n; b += kSelectThreads) s_scores[b] = scores[b];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < count; i += kSelectThreads) {
      out_pages[i] = table[set[i]];
      mark(set[i]);
    }
  } else {
    // kTopK / kExactTopK: the forced ranges and the best `take` candidates, in block order.
    const bool write_pages = plan.mode == SelectRowMode::kTopK;
    const bool stage_all = write_pages && bound;
    auto emit = [&](int slot, int block) {
      if (write_pages) out_pages[slot] = table[block];
      if (set != nullptr) set[slot] = block;
      if (write_pages) mark(block);
    };
    const int first = plan.range.first, cand_end = plan.range.last_begin;
    const int cands = cand_end - first;
    const int take = plan.range.take;
    if (take >= cands) {  // everything is chosen
      count = n;
      __syncthreads();  // s_last_read is reset
      for (int b = threadIdx.x; b < n; b += kSelectThreads) emit(b, b);
    } else {
      count = first + take + (n - cand_end);
      if (plan.box_scores || plan.exact_scores) {
        const int lo_b = stage_all ? 0 : first, hi_b = stage_all ? n : cand_end;
        for (int b = lo_b + threadIdx.x; b < hi_b; b += kSelectThreads) s_scores[b] = scores[b];
      }
      if (threadIdx.x == 0) {
        s_prefix = 0;
        s_remaining = take;
      }
      __syncthreads();

      // Radix select of the take-th largest candidate image, 8 bits a pass from the top. Lanes
      // of a warp with the same digit add to its bin once (__match_any_sync): the top digits
      // of similar scores are mostly one bin, and 8192 single-lane atomics on one shared
      // address would serialise.
      const int lane = threadIdx.x % 32;
      for (int shift = 24; shift >= 0 && take > 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += kSelectThreads) s_hist[i] = 0;
        __syncthreads();
        const uint32_t prefix = s_prefix;
        const uint32_t high_mask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
        // The trip count is the block's, so every lane takes part in each __match_any_sync.
        for (int base = first; base < cand_end; base += kSelectThreads) {
          const int b = base + static_cast<int>(threadIdx.x);
          uint32_t key = 256;  // outside every bin: a lane with nothing to count
          if (b < cand_end) {
            const uint32_t u = OrderedBits(s_scores[b]);
            if ((u & high_mask) == prefix) key = (u >> shift) & 0xff;
          }
          const unsigned peers = __match_any_sync(0xffffffffu, key);
          if (key < 256 && __ffs(peers) - 1 == lane) atomicAdd(&s_hist[key], __popc(peers));
        }
        __syncthreads();
        // Thread t looks at digit 255 - t: with the counts of the digits above it (a block
        // scan), the one thread whose digit holds the remaining-th best sets the prefix.
        const int digit = 255 - static_cast<int>(threadIdx.x);
        const int digit_count = s_hist[digit];
        const int remaining = s_remaining;
        int above = 0;
        Scan(storage.scan).ExclusiveSum(digit_count, above);
        if (above < remaining && above + digit_count >= remaining) {
          s_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
          s_remaining = remaining - above;  // still to take among those equal to the prefix
        }
        __syncthreads();
      }
      const uint32_t threshold = s_prefix;  // image of the take-th best score
      const int equal_quota = s_remaining;  // how many candidates equal to it are taken

      // In index order, warp w owns candidates [lo, hi) and walks them 32 at a time, a lane per
      // candidate (conflict-free shared reads): first its counts of candidates above and equal
      // to the threshold, then, with the warps before it counted, each taken candidate's slot
      // from ballots.
      const int warp = threadIdx.x / 32;
      const int per = (cands + kSelectWarps - 1) / kSelectWarps;
      const int lo = min(cand_end, first + warp * per);
      const int hi = min(cand_end, lo + per);
      const unsigned lanes_below = (1u << lane) - 1u;
      if (take > 0) {
        int above = 0, equal = 0;
        for (int b = lo + lane; b < hi; b += 32) {
          const uint32_t u = OrderedBits(s_scores[b]);
          above += u > threshold;
          equal += u == threshold;
        }
        above = __reduce_add_sync(0xffffffffu, above);
        equal = __reduce_add_sync(0xffffffffu, equal);
        if (lane == 0) {
          s_warp_above[warp] = above;
          s_warp_equal[warp] = equal;
        }
      }
      __syncthreads();  // the warps' counts are in; every thread has read the scores it needs
      if (take > 0) {
        // The ties taken before this warp's range, and this warp's first output slot.
        int equal_rank = 0, slot = first;
        for (int w = 0; w < warp; ++w) {
          const int eq = s_warp_equal[w];
          slot += s_warp_above[w] + min(eq, max(0, equal_quota - equal_rank));
          equal_rank += eq;
        }
        for (int base = lo; base < hi; base += 32) {
          const int b = base + lane;
          const uint32_t u = b < hi ? OrderedBits(s_scores[b]) : 0u;
          const bool eq = b < hi && u == threshold;
          const unsigned eq_mask = __ballot_sync(0xffffffffu, eq);
          const bool taken =
              b < hi &&
              (u > threshold || (eq && equal_rank + __popc(eq_mask & lanes_below) < equal_quota));
          const unsigned taken_mask = __ballot_sync(0xffffffffu, taken);
          if (taken) emit(slot + __popc(taken_mask & lanes_below), b);
          slot += __popc(taken_mask);
          equal_rank += __popc(eq_mask);
        }
      }
      for (int b = threadIdx.x; b < first; b += kSelectThreads) emit(b, b);
      for (int b = cand_end + threadIdx.x; b < n; b += kSelectThreads) {
        emit(first + take + (b - cand_end), b);
      }
    }
    if (p.maybe_set_sizes != nullptr && threadIdx.x == 0) p.maybe_set_sizes[row] = count;
    if (!write_pages) return;  // kExactTopK: reads everything (written above)
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // Every read page is full except the sequence's last one.
    p.sel_lens[row] =
        count == 0
            ? 0
            : static_cast<int32_t>(
                  static_cast<int64_t>(count) * s.block_size -
                  (s_last_read != 0 ? static_cast<int64_t>(n) * s.block_size - plan.ctx : 0));
    if (p.maybe_split_lens != nullptr) {
      p.maybe_split_lens[row] = -1;
      p.maybe_split_lens[s.batch * s.num_kv_heads + row] = p.sel_lens[row];
    }
  }
  if (!bound) return;
  // ln Σ over unread blocks of tokens · exp(score), shifted by the largest unread score.
  float m = -__int_as_float(0x7f800000);
  for (int b = threadIdx.x; b < n; b += kSelectThreads) m = fmaxf(m, s_scores[b]);
  m = Reduce(storage.reduce).Reduce(m, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) s_max = m;
  __syncthreads();
  m = s_max;
  float sum = 0.0f;
  if (m != -__int_as_float(0x7f800000)) {
    for (int b = threadIdx.x; b < n; b += kSelectThreads) {
      const float tokens =
          b == n - 1 ? static_cast<float>(plan.ctx - static_cast<int64_t>(n - 1) * s.block_size)
                     : static_cast<float>(s.block_size);
      sum += tokens * __expf(s_scores[b] - m);
    }
  }
  sum = Reduce(storage.reduce).Sum(sum);
  if (threadIdx.x == 0) {
    p.maybe_log_unread[row] = m == -__int_as_float(0x7f800000) ? m : m + __logf(sum);
  }
}

// One warp per sequence: lanes over kv heads.
__global__ void __launch_bounds__(32)
    DroppedMassKernel(const __grid_constant__ DroppedMassParams p) {
  const int seq = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t group = p.num_heads / p.num_kv_heads;
  float max_bound = 0.0f, sum_bound = 0.0f, exact_max = 0.0f;
  long long tokens = 0;
  for (int64_t g = lane; g < p.num_kv_heads; g += 32) {
    const int64_t row = seq * p.num_kv_heads + g;
    const float log_unread = p.log_unread[row];
    float bound = 0.0f;
    if (log_unread != -__int_as_float(0x7f800000)) {
      for (int64_t h = 0; h < group; ++h) {
        const float lse = p.lse[seq * p.num_heads + g * group + h];
        bound = fmaxf(bound, 1.0f / (1.0f + __expf(lse - log_unread)));
      }
    }
    if (p.maybe_dense_lse != nullptr) {
      for (int64_t h = 0; h < group; ++h) {
        const int64_t i = seq * p.num_heads + g * group + h;
        // The sparse set is a subset of the dense one: read mass / all mass = exp(lse - dense).
        if (p.maybe_dense_lse[i] != -__int_as_float(0x7f800000)) {
          exact_max = fmaxf(exact_max, 1.0f - __expf(p.lse[i] - p.maybe_dense_lse[i]));
        }
      }
    }
    max_bound = fmaxf(max_bound, bound);
    sum_bound += bound;
    tokens += p.sel_lens[row];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    max_bound = fmaxf(max_bound, __shfl_xor_sync(0xffffffffu, max_bound, offset));
    exact_max = fmaxf(exact_max, __shfl_xor_sync(0xffffffffu, exact_max, offset));
    sum_bound += __shfl_xor_sync(0xffffffffu, sum_bound, offset);
    tokens += __shfl_xor_sync(0xffffffffu, tokens, offset);
  }
  if (lane == 0) {
    SparseSeqStats& st = p.stats[seq];
    st.max_bound = fmaxf(st.max_bound, max_bound);
    st.exact_max = fmaxf(st.exact_max, exact_max);
    st.sum_bound += sum_bound;
    st.heads += p.num_kv_heads;
    st.tokens_read += tokens;
  }
}

template <int D>
absl::Status Launch(const BlockSelectParams& p, cudaStream_t stream) {
  const BlockSelectShape& s = p.shape;
  const int64_t per_cta = kScoreWarps * kScoreBlocksPerWarp;
  const dim3 score_grid(static_cast<unsigned>((s.max_blocks_per_seq + per_cta - 1) / per_cta),
                        static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  ScoreKernel<D><<<score_grid, kScoreWarps * 32, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const int smem = static_cast<int>(s.max_blocks_per_seq * sizeof(float));
  // A host-side attribute (no stream op): legal during graph capture.
  LY_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(SelectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 select_grid(static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  SelectKernel<<<select_grid, kSelectThreads, smem, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status QuestBlockSelect(const BlockSelectParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunBlockSelect(p));
  if (p.row_modes != nullptr || p.seq_rules != nullptr || p.maybe_log_unread != nullptr) {
    return absl::InvalidArgumentError(
        "QuestBlockSelect: row_modes, seq_rules and maybe_log_unread are SparseBlockSelect's");
  }
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

absl::Status SparseBlockSelect(const BlockSelectParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunSparseBlockSelect(p));
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

absl::Status AccumulateDroppedMass(const DroppedMassParams& p, cudaStream_t stream) {
  if (p.lse == nullptr || p.log_unread == nullptr || p.sel_lens == nullptr || p.stats == nullptr) {
    return absl::InvalidArgumentError(
        "dropped mass: lse, log_unread, sel_lens and stats must be set");
  }
  if (p.batch <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.batch > 2147483647) {
    return absl::InvalidArgumentError(
        "dropped mass: sizes must be positive, heads a multiple of kv heads");
  }
  DroppedMassKernel<<<static_cast<unsigned>(p.batch), 32, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace lychee::cuda
