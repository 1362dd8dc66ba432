// SPDX-License-Identifier: Apache-2.0
// RoPE on q and k fused with writing k and v into the paged KV cache, then the key summaries of
// the written blocks (cuda_kernels.h, RopeKvWrite). Scalar bf16 accesses: the kernel moves
// (heads + 2 * kv_heads) * head_dim elements per token, small next to the GEMMs around it, and
// the simple form is easy to check against cpu::ApplyRope + cpu::WritePagedKv.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {
namespace {

constexpr int kRopeThreads = 256;
constexpr int kMaxHalf = 256;  // head_dim <= 512
constexpr double kTwoPi = 6.283185307179586476925286766559;

// One CTA per token: cos/sin of the token's angles into shared memory (the angle in double like
// the CPU path, since position * inv_freq reaches 1e5 and float would lose the fraction), then
// rotate q and k, write k and v into the token's cache slot.
__global__ void __launch_bounds__(kRopeThreads)
    RopeKvWriteKernel(const __grid_constant__ RopeKvWriteParams p) {
  __shared__ float s_cos[kMaxHalf];
  __shared__ float s_sin[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int64_t d = p.head_dim;
  const int64_t half = d / 2;
  const double pos = static_cast<double>(p.positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    // Reduce to [-pi, pi] in double (exact to ~1e-11 for any int32 position), then the fast
    // float sincos, accurate to ~2^-21 there: far below bf16's 2^-9. Double sincos itself would
    // pull in its slow-path local-memory reduction.
    const double angle = pos * static_cast<double>(p.inv_freq[i]);
    const double reduced = angle - kTwoPi * rint(angle * (1.0 / kTwoPi));
    float s, c;
    __sincosf(static_cast<float>(reduced), &s, &c);
    s_cos[i] = c;
    s_sin[i] = s;
  }
  __syncthreads();

  const int64_t q_stride = p.q_row_stride != 0 ? p.q_row_stride : p.num_heads * d;
  const int64_t k_stride = p.k_row_stride != 0 ? p.k_row_stride : p.num_kv_heads * d;
  const int64_t v_stride = p.v_row_stride != 0 ? p.v_row_stride : p.num_kv_heads * d;
  const int32_t slot = p.slot_mapping[t];
  const PagedKvBf16& c = p.cache;
  const int64_t block = slot >= 0 ? slot / c.block_size : 0;
  const int64_t offset = slot >= 0 ? slot % c.block_size : 0;

  // Rotation pairs (head, i) over the q heads followed by the k heads.
  const int64_t num_pairs = (p.num_heads + p.num_kv_heads) * half;
  for (int64_t j = threadIdx.x; j < num_pairs; j += blockDim.x) {
    const int64_t head = j / half;
    const int64_t i = j % half;
    const bool is_q = head < p.num_heads;
    const int64_t kv_head = head - p.num_heads;
    bf16* x = is_q ? p.q + t * q_stride + head * d : p.k + t * k_stride + kv_head * d;
    const float a = __bfloat162float(x[i]);
    const float b = __bfloat162float(x[i + half]);
    const bf16 ra = __float2bfloat16_rn(a * s_cos[i] - b * s_sin[i]);
    const bf16 rb = __float2bfloat16_rn(b * s_cos[i] + a * s_sin[i]);
    x[i] = ra;
    x[i + half] = rb;
    if (!is_q && slot >= 0) {
      bf16* dst = c.kv + block * c.block_stride() + kv_head * c.head_stride() + offset * d;
      dst[i] = ra;
      dst[i + half] = rb;
    }
  }
  if (slot >= 0) {
    for (int64_t j = threadIdx.x; j < p.num_kv_heads * d; j += blockDim.x) {
      const int64_t h = j / d;
      const int64_t e = j % d;
      c.kv[block * c.block_stride() + c.kv_stride() + h * c.head_stride() + offset * d + e] =
          p.v[t * v_stride + h * d + e];
    }
  }
}

// One CTA per token; only the token that wrote the last slot of its block in this launch acts:
// it recomputes the block's min/max over slots 0..offset from the cache (written by the kernel
// before, stream-ordered). Exactly one token per touched block does so given the layout rule in
// cuda_kernels.h, so no two CTAs write the same summary.
__global__ void __launch_bounds__(kRopeThreads)
    KeySummaryKernel(const __grid_constant__ RopeKvWriteParams p) {
  const int64_t t = blockIdx.x;
  const int32_t slot = p.slot_mapping[t];
  if (slot < 0) return;
  const PagedKvBf16& c = p.cache;
  const int64_t offset = slot % c.block_size;
  const bool block_continues =
      offset + 1 < c.block_size && t + 1 < p.num_tokens && p.slot_mapping[t + 1] == slot + 1;
  if (block_continues) return;
  const int64_t block = slot / c.block_size;
  const int64_t d = c.head_dim;
  for (int64_t j = threadIdx.x; j < c.num_kv_heads * d; j += blockDim.x) {
    const int64_t h = j / d;
    const int64_t e = j % d;
    const bf16* k = c.kv + block * c.block_stride() + h * c.head_stride() + e;
    float lo = __bfloat162float(k[0]);
    float hi = lo;
    for (int64_t s = 1; s <= offset; ++s) {
      const float v = __bfloat162float(k[s * d]);
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
    bf16* summary = c.key_summary + block * c.summary_block_stride() + h * 2 * d;
    summary[e] = __float2bfloat16_rn(lo);  // exact: lo and hi are bf16 values
    summary[d + e] = __float2bfloat16_rn(hi);
  }
}

}  // namespace

absl::Status RopeKvWrite(const RopeKvWriteParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementRopeKvWrite(p));
  const dim3 grid(static_cast<unsigned>(p.num_tokens));
  RopeKvWriteKernel<<<grid, kRopeThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (p.cache.key_summary != nullptr) {
    KeySummaryKernel<<<grid, kRopeThreads, 0, stream>>>(p);
    LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

}  // namespace lychee::cuda
