// SPDX-License-Identifier: Apache-2.0
// Split-KV (flash-decoding) paged decode attention and its log-sum-exp merge
// (decode_attention.h). CUDA cores, fp32 math; a first, plainly correct kernel that the tensor-core
// GQA kernel of KERNELS.md section 1.6 will be measured against.
//
// CTA (split, kv_head, sequence), 128 threads. A K (or V) row of head_dim bf16 is read by
// kLanes = head_dim / 8 threads, 16 bytes each; the CTA's kTokenGroups = 128 / kLanes groups of
// lanes take consecutive tokens, so a warp reads whole contiguous rows of a page. Each token
// group keeps its own online-softmax state (running max m, sum l, accumulator acc) for all G
// query heads of the GQA group (scores in log2 units: q is pre-scaled by scale * log2(e)), so
// every K/V byte is loaded once and used G times. kUnroll tokens per group are loaded before any
// math, keeping 2 * kUnroll 16-byte loads in flight per thread. At the end the token groups are
// merged through shared memory.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/dispatch.cuh"

namespace lychee::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTileTokens = 256;  // page ids of this many tokens are staged in shared memory
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D, int G>
struct DecodeConfig {
  static constexpr int kLanes = D / 8;
  static constexpr int kTokenGroups = kThreads / kLanes;
  static constexpr int kUnroll = G >= 8 ? 2 : 4;  // bounds registers: G * 8 accumulators
  static constexpr int kStep = kTokenGroups * kUnroll;
  static_assert(kThreads % kLanes == 0 && kLanes <= 32, "a K row must fit in one warp");
};

__device__ __forceinline__ int64_t ContextLen(const DecodeAttentionParams& p, int seq) {
  const int64_t max_tokens = p.shape.max_blocks_per_seq * p.shape.block_size;
  const int64_t ctx = p.context_lens[seq];
  return ctx < 0 ? 0 : (ctx > max_tokens ? max_tokens : ctx);
}

// Workspace views: o [batch, heads, splits, D] fp32 (normalised), lse [batch, heads, splits] fp32
// in log2 units.
__device__ __forceinline__ float* WorkspaceO(const DecodeAttentionParams& p) {
  return static_cast<float*>(p.workspace);
}
__device__ __forceinline__ float* WorkspaceLse(const DecodeAttentionParams& p, int num_splits) {
  return WorkspaceO(p) + p.shape.batch * p.shape.num_heads * num_splits * p.shape.head_dim;
}

template <int D, int G>
__global__ void __launch_bounds__(kThreads)
    DecodeAttentionKernel(const __grid_constant__ DecodeAttentionParams p,
                          const __grid_constant__ DecodeAttentionPlan plan) {
  using Cfg = DecodeConfig<D, G>;
  constexpr int kLanes = Cfg::kLanes;
  constexpr int kGroups = Cfg::kTokenGroups;
  constexpr int kUnroll = Cfg::kUnroll;
  __shared__ int32_t s_pages[kTileTokens];
  __shared__ float s_m[kGroups][G];
  __shared__ float s_l[kGroups][G];
  __shared__ float s_acc[kGroups * G * D];

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const DecodeAttentionShape& s = p.shape;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const int64_t bs = s.block_size;
  const bool direct = plan.num_splits == 1;  // no merge: write the final output here

  const int64_t ctx = ContextLen(p, seq);
  const int64_t start = static_cast<int64_t>(split) * plan.chunk_tokens;
  if (!direct && start >= ctx) return;  // the merge reads only splits that hold tokens
  const int64_t end = split == plan.num_splits - 1
                          ? ctx
                          : (ctx < start + plan.chunk_tokens ? ctx : start + plan.chunk_tokens);

  const int lane = threadIdx.x % kLanes;
  const int tg = threadIdx.x / kLanes;

  // The group's queries, pre-scaled into log2 units; idle slots (h >= group) stay zero.
  float q[G][8];
  const float q_scale = p.scale * kLog2e;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (h < group) {
      Bf16x8 v;
      v.raw = *reinterpret_cast<const uint4*>(
          p.q + (static_cast<int64_t>(seq) * s.num_heads + kv_head * group + h) * D + lane * 8);
      ToFloat8(v, q[h]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] *= q_scale;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] = 0.0f;
    }
  }

  const float kNegInf = -__int_as_float(0x7f800000);
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = kNegInf;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  const int64_t block_stride = p.cache.block_stride();
  const bf16* k_base = p.cache.kv + kv_head * p.cache.head_stride() + lane * 8;
  const bf16* v_base = k_base + p.cache.kv_stride();

  for (int64_t tile = start; tile < end; tile += kTileTokens) {
    const int64_t tile_end = end < tile + kTileTokens ? end : tile + kTileTokens;
    const int64_t first_page = tile / bs;  // tile starts on a page boundary (chunk % bs == 0)
    const int64_t num_pages = (tile_end + bs - 1) / bs - first_page;
    __syncthreads();  // the previous tile's page ids are no longer read
    for (int64_t i = threadIdx.x; i < num_pages; i += kThreads) s_pages[i] = table[first_page + i];
    __syncthreads();

    for (int64_t base = tile; base < tile_end; base += Cfg::kStep) {
      Bf16x8 kr[kUnroll], vr[kUnroll];
      bool valid[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t tok = base + u * kGroups + tg;
        valid[u] = tok < tile_end;
        kr[u].raw = make_uint4(0, 0, 0, 0);
        vr[u].raw = make_uint4(0, 0, 0, 0);
        if (valid[u]) {
          const int64_t page = s_pages[tok / bs - first_page];
          const int64_t off = page * block_stride + (tok % bs) * D;
          kr[u].raw = __ldg(reinterpret_cast<const uint4*>(k_base + off));
          vr[u].raw = __ldg(reinterpret_cast<const uint4*>(v_base + off));
        }
      }

      // Scores of kUnroll tokens for every head; the lanes of a token group all end up with the
      // full dot product (xor butterfly within the group's kLanes lanes).
      float score[kUnroll][G];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float kf[8];
        ToFloat8(kr[u], kf);
#pragma unroll
        for (int h = 0; h < G; ++h) {
          float dot = 0.0f;
#pragma unroll
          for (int e = 0; e < 8; ++e) dot = fmaf(q[h][e], kf[e], dot);
#pragma unroll
          for (int offset = kLanes / 2; offset > 0; offset /= 2) {
            dot += __shfl_xor_sync(0xffffffffu, dot, offset);
          }
          score[u][h] = valid[u] ? dot : kNegInf;
        }
      }

      // One rescale per kUnroll tokens.
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float mx = m[h];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) mx = fmaxf(mx, score[u][h]);
        if (mx == kNegInf) continue;          // nothing seen yet for this group of lanes
        const float corr = exp2f(m[h] - mx);  // m[h] == -inf gives 0
        l[h] *= corr;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] *= corr;
        m[h] = mx;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float vf[8];
        ToFloat8(vr[u], vf);
#pragma unroll
        for (int h = 0; h < G; ++h) {
          const float prob = score[u][h] == kNegInf ? 0.0f : exp2f(score[u][h] - m[h]);
          l[h] += prob;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(prob, vf[e], acc[h][e]);
        }
      }
    }
  }

  // Merge the token groups.
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (lane == 0) {
      s_m[tg][h] = m[h];
      s_l[tg][h] = l[h];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) s_acc[(tg * G + h) * D + lane * 8 + e] = acc[h][e];
  }
  __syncthreads();

  const int64_t num_heads = s.num_heads;
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int h = idx / D;
    const int d = idx % D;
    float mx = kNegInf;
    for (int g = 0; g < kGroups; ++g) mx = fmaxf(mx, s_m[g][h]);
    float sum = 0.0f, o = 0.0f;
    if (mx != kNegInf) {
      for (int g = 0; g < kGroups; ++g) {
        const float w = exp2f(s_m[g][h] - mx);
        sum = fmaf(s_l[g][h], w, sum);
        o = fmaf(s_acc[(g * G + h) * D + d], w, o);
      }
    }
    const bool empty = mx == kNegInf;
    const int64_t head = static_cast<int64_t>(kv_head) * group + h;
    const int64_t row = static_cast<int64_t>(seq) * num_heads + head;
    if (direct) {
      p.out[row * D + d] = __float2bfloat16_rn(empty ? 0.0f : o / sum);
      if (d == 0 && p.maybe_lse != nullptr) {
        p.maybe_lse[row] = empty ? kNegInf : (mx + log2f(sum)) * kLn2;
      }
    } else {
      const int64_t part = row * plan.num_splits + split;
      WorkspaceO(p)[part * D + d] = empty ? 0.0f : o / sum;
      if (d == 0) WorkspaceLse(p, plan.num_splits)[part] = empty ? kNegInf : mx + log2f(sum);
    }
  }
}

// CTA (head, sequence), one thread per output element: out = Σ_s w_s o_s / Σ_s w_s with
// w_s = 2^(lse_s - max lse) over the splits that hold tokens of this sequence.
template <int D>
__global__ void __launch_bounds__(D)
    MergeSplitsKernel(const __grid_constant__ DecodeAttentionParams p,
                      const __grid_constant__ DecodeAttentionPlan plan) {
  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int d = threadIdx.x;
  const int64_t ctx = ContextLen(p, seq);
  const int64_t needed = (ctx + plan.chunk_tokens - 1) / plan.chunk_tokens;
  const int n = static_cast<int>(needed < plan.num_splits ? needed : plan.num_splits);
  const int64_t row = static_cast<int64_t>(seq) * p.shape.num_heads + head;
  const float* lse = WorkspaceLse(p, plan.num_splits) + row * plan.num_splits;
  const float* o = WorkspaceO(p) + row * plan.num_splits * D + d;
  const float kNegInf = -__int_as_float(0x7f800000);
  float mx = kNegInf;
  for (int i = 0; i < n; ++i) mx = fmaxf(mx, lse[i]);
  float sum = 0.0f, acc = 0.0f;
  if (mx != kNegInf) {
    for (int i = 0; i < n; ++i) {
      const float w = exp2f(lse[i] - mx);
      sum += w;
      acc = fmaf(w, o[static_cast<int64_t>(i) * D], acc);
    }
  }
  const bool empty = mx == kNegInf;
  p.out[row * D + d] = __float2bfloat16_rn(empty ? 0.0f : acc / sum);
  if (d == 0 && p.maybe_lse != nullptr)
    p.maybe_lse[row] = empty ? kNegInf : (mx + log2f(sum)) * kLn2;
}

template <int D, int G>
absl::Status Launch(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                    cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.num_splits),
                  static_cast<unsigned>(p.shape.num_kv_heads),
                  static_cast<unsigned>(p.shape.batch));
  DecodeAttentionKernel<D, G><<<grid, kThreads, 0, stream>>>(p, plan);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (plan.num_splits > 1) {
    const dim3 merge_grid(static_cast<unsigned>(p.shape.num_heads),
                          static_cast<unsigned>(p.shape.batch));
    MergeSplitsKernel<D><<<merge_grid, D, 0, stream>>>(p, plan);
    LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeAttention(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                             cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunDecodeAttention(p, plan));
  const int64_t group = p.shape.num_heads / p.shape.num_kv_heads;
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return DispatchGroupCapacity(group, [&](auto capacity) {
      return Launch<decltype(head_dim)::value, decltype(capacity)::value>(p, plan, stream);
    });
  });
}

}  // namespace lychee::cuda
