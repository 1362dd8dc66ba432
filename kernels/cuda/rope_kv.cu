// SPDX-License-Identifier: Apache-2.0
// RoPE on q and k fused with writing k and v into the paged KV cache, and the key summaries of
// the written blocks (cuda_kernels.h, RopeKvWrite).
//
// One CTA per token. Decode steps are latency, not bytes (a few KiB a token): every thread
// issues all of its loads (v, then up to kPairsPerThread rotation pairs of q and k) before it
// uses any, while the angles are computed, so a round costs one memory round trip instead of one
// per element (the element-at-a-time form, whose stores the compiler could not move loads past,
// took 12.5 µs a layer at 3 tokens on the H100). A token alone in its block in this launch (every
// token of a decode step) also makes that block's summary (min/max over slots 0..offset, the
// earlier slots from the cache); blocks that receive several tokens (prefill) get theirs from a
// second kernel, launched only when the launch may hold such blocks.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"

namespace lychee::cuda {
namespace {

constexpr int kRopeThreads = 512;
constexpr int kPairsPerThread = 8;  // rotation pairs (and v elements) loaded before any is used
constexpr int kMaxHalf = 256;       // head_dim <= 512
constexpr double kTwoPi = 6.283185307179586476925286766559;

// Whether token t's neighbours in the launch write the same block (the slots before and after
// its own). The tokens of one block come consecutively and in slot order (cuda_kernels.h), so
// only the neighbours can share it: a token with neither is alone in its block.
struct BlockNeighbours {
  bool prev, next;
};
__device__ __forceinline__ BlockNeighbours SameBlockNeighbours(const RopeKvWriteParams& p,
                                                               int64_t t, int32_t slot) {
  const int64_t offset = slot % p.cache.block_size;
  return {
      offset > 0 && t > 0 && p.slot_mapping[t - 1] == slot - 1,
      offset + 1 < p.cache.block_size && t + 1 < p.num_tokens && p.slot_mapping[t + 1] == slot + 1};
}

// The summary of `block`: element-wise min and max of the keys in slots 0..offset, by the whole
// CTA (after the keys are visible to it). Each thread's loads are independent: unrolled, they
// are in flight together.
__device__ void WriteBlockSummary(const PagedKvBf16& c, int64_t block, int offset) {
  const int d = static_cast<int>(c.head_dim);
  const int elems = static_cast<int>(c.num_kv_heads) * d;
  for (int j = threadIdx.x; j < elems; j += blockDim.x) {
    const int h = j / d;
    const int e = j - h * d;
    const bf16* k = c.kv + block * c.block_stride() + h * c.head_stride() + e;
    float lo = __bfloat162float(k[0]);
    float hi = lo;
#pragma unroll 8
    for (int s = 1; s <= offset; ++s) {
      const float v = __bfloat162float(k[static_cast<int64_t>(s) * d]);
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
    bf16* summary = c.key_summary + block * c.summary_block_stride() + h * 2 * d;
    summary[e] = __float2bfloat16_rn(lo);  // exact: lo and hi are bf16 values
    summary[d + e] = __float2bfloat16_rn(hi);
  }
}

__global__ void __launch_bounds__(kRopeThreads)
    RopeKvWriteKernel(const __grid_constant__ RopeKvWriteParams p) {
  AllowDependentGrids();  // (launch.cuh) a decode step's attention or scoring may be placed
  __shared__ float s_cos[kMaxHalf];
  __shared__ float s_sin[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int d = static_cast<int>(p.head_dim);
  const int half = d / 2;
  const int32_t slot = p.slot_mapping[t];
  const PagedKvBf16& c = p.cache;
  const int64_t block = slot >= 0 ? slot / c.block_size : 0;
  const int offset = slot >= 0 ? static_cast<int>(slot % c.block_size) : 0;
  const int64_t q_stride = p.q_row_stride != 0 ? p.q_row_stride : p.num_heads * d;
  const int64_t k_stride = p.k_row_stride != 0 ? p.k_row_stride : p.num_kv_heads * d;
  const int64_t v_stride = p.v_row_stride != 0 ? p.v_row_stride : p.num_kv_heads * d;
  const int num_q_pairs = static_cast<int>(p.num_heads) * half;
  const int num_pairs = num_q_pairs + static_cast<int>(p.num_kv_heads) * half;
  const int v_elems = static_cast<int>(p.num_kv_heads) * d;
  // Pair j: element i = j % half of head j / half and its partner i + half; q heads, then k.
  auto pair_ptr = [&](int j) {
    const int head = j / half;
    const int i = j - head * half;
    return j < num_q_pairs ? p.q + t * q_stride + head * d + i
                           : p.k + t * k_stride + (head - p.num_heads) * d + i;
  };
  auto cache_kv = [&](int kv, int h, int e) {  // kv: 0 = K, 1 = V
    return c.kv + block * c.block_stride() + kv * c.kv_stride() + h * c.head_stride() + offset * d +
           e;
  };

  // Round 0's loads (v and the first pairs) go out together; the angles are computed while
  // they are in flight.
  const int stride = kPairsPerThread * kRopeThreads;
  bf16 v[kPairsPerThread] = {};
  float a[kPairsPerThread] = {}, b[kPairsPerThread] = {};
  auto load_v = [&](int base) {
#pragma unroll
    for (int u = 0; u < kPairsPerThread; ++u) {
      const int j = base + u * kRopeThreads;
      if (j < v_elems) v[u] = p.v[t * v_stride + j];
    }
  };
  auto store_v = [&](int base) {
#pragma unroll
    for (int u = 0; u < kPairsPerThread; ++u) {
      const int j = base + u * kRopeThreads;
      if (j < v_elems) *cache_kv(1, j / d, j % d) = v[u];
    }
  };
  auto load_round = [&](int base) {
#pragma unroll
    for (int u = 0; u < kPairsPerThread; ++u) {
      const int j = base + u * kRopeThreads;
      if (j < num_pairs) {
        const bf16* x = pair_ptr(j);
        a[u] = __bfloat162float(x[0]);
        b[u] = __bfloat162float(x[half]);
      }
    }
  };
  if (slot >= 0) load_v(threadIdx.x);
  load_round(threadIdx.x);
  {
    // The angle in double like the CPU path (position * inv_freq reaches 1e5, where float would
    // lose the fraction), reduced to [-pi, pi] in double (exact to ~1e-11 for any int32
    // position), then the fast float sincos, accurate to ~2^-21 there: far below bf16's 2^-9.
    // Double sincos itself would pull in its slow-path local-memory reduction.
    const double pos = static_cast<double>(p.positions[t]);
    for (int i = threadIdx.x; i < half; i += kRopeThreads) {
      const double angle = pos * static_cast<double>(p.inv_freq[i]);
      const double reduced = angle - kTwoPi * rint(angle * (1.0 / kTwoPi));
      float s, co;
      __sincosf(static_cast<float>(reduced), &s, &co);
      s_cos[i] = co;
      s_sin[i] = s;
    }
  }
  if (slot >= 0) {
    store_v(threadIdx.x);
    for (int base = threadIdx.x + stride; base < v_elems; base += stride) {
      load_v(base);
      store_v(base);
    }
  }
  __syncthreads();
  for (int base = threadIdx.x; base < num_pairs; base += stride) {
    if (base != threadIdx.x) load_round(base);
#pragma unroll
    for (int u = 0; u < kPairsPerThread; ++u) {
      const int j = base + u * kRopeThreads;
      if (j >= num_pairs) break;
      const int head = j / half;
      const int i = j - head * half;
      const bf16 ra = __float2bfloat16_rn(a[u] * s_cos[i] - b[u] * s_sin[i]);
      const bf16 rb = __float2bfloat16_rn(b[u] * s_cos[i] + a[u] * s_sin[i]);
      bf16* x = pair_ptr(j);
      x[0] = ra;
      x[half] = rb;
      if (j >= num_q_pairs && slot >= 0) {
        bf16* dst = cache_kv(0, head - static_cast<int>(p.num_heads), i);
        dst[0] = ra;
        dst[half] = rb;
      }
    }
  }
  if (c.key_summary == nullptr || slot < 0) return;
  const BlockNeighbours same = SameBlockNeighbours(p, t, slot);
  if (same.prev || same.next) return;  // the second kernel makes this block's summary
  __syncthreads();  // the token's key is in the cache for every thread of the CTA
  WriteBlockSummary(c, block, offset);
}

// One CTA per token; only the last token of a block that receives several tokens in this launch
// acts: it recomputes the block's min/max over slots 0..offset from the cache (written by the
// kernel before, stream-ordered). Exactly one token per such block does so given the layout rule
// in cuda_kernels.h, so no two CTAs write the same summary; a token alone in its block had its
// summary made by the write kernel.
__global__ void __launch_bounds__(kRopeThreads)
    KeySummaryKernel(const __grid_constant__ RopeKvWriteParams p) {
  AllowDependentGrids();
  const int64_t t = blockIdx.x;
  const int32_t slot = p.slot_mapping[t];
  if (slot < 0) return;
  const BlockNeighbours same = SameBlockNeighbours(p, t, slot);
  if (same.next || !same.prev) return;  // not the last of several (alone: the write kernel's)
  const PagedKvBf16& c = p.cache;
  WriteBlockSummary(c, slot / c.block_size, static_cast<int>(slot % c.block_size));
}

}  // namespace

absl::Status RopeKvWrite(const RopeKvWriteParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementRopeKvWrite(p));
  const dim3 grid(static_cast<unsigned>(p.num_tokens));
  RopeKvWriteKernel<<<grid, kRopeThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (p.cache.key_summary != nullptr && !p.tokens_in_distinct_blocks) {
    KeySummaryKernel<<<grid, kRopeThreads, 0, stream>>>(p);
    LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

}  // namespace lychee::cuda
