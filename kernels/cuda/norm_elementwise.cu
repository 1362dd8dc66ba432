// SPDX-License-Identifier: Apache-2.0
// RMSNorm (+ fused residual add), per-head RMSNorm, SiLU·mul, embedding gather and greedy argmax
// (cuda_kernels.h). All memory-bound: 16-byte accesses where sizes and alignment allow, a scalar
// path otherwise, fp32 math on bf16 storage.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_utils.cuh"

namespace lychee::cuda {
namespace {

constexpr int kNormThreads = 256;

// Row `row` of x, of the residual (null without one) and of out.
struct NormRow {
  const bf16* x;
  bf16* res;
  bf16* out;
};
__device__ __forceinline__ NormRow RowOf(const RmsNormParams& p, int64_t row) {
  return {p.x + row * p.dim, p.maybe_residual != nullptr ? p.maybe_residual + row * p.dim : nullptr,
          p.out + row * p.dim};
}

// One CTA per row, for rows longer than the register kernel below takes (or unaligned). VEC = 8
// moves 16 bytes per access (dim % 8 == 0, aligned rows), VEC = 1 is the fallback. Two passes
// over the row: the second re-reads through L1/L2.
template <int VEC>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormKernel(const __grid_constant__ RmsNormParams p) {
  __shared__ float scratch[32];
  const auto [x, res, out] = RowOf(p, blockIdx.x);
  const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;

  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x * VEC; i < p.dim; i += step) {
    float v[VEC];
    if constexpr (VEC == 8) {
      Bf16x8 xv;
      xv.raw = *reinterpret_cast<const uint4*>(x + i);
      ToFloat8(xv, v);
      if (res != nullptr) {
        Bf16x8 rv;
        rv.raw = *reinterpret_cast<const uint4*>(res + i);
        float r[8];
        ToFloat8(rv, r);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] += r[e];
        const Bf16x8 sum = FromFloat8(v);
        *reinterpret_cast<uint4*>(res + i) = sum.raw;
        ToFloat8(sum, v);  // normalise exactly what was stored
      }
    } else {
      v[0] = __bfloat162float(x[i]);
      if (res != nullptr) {
        const bf16 sum = __float2bfloat16_rn(v[0] + __bfloat162float(res[i]));
        res[i] = sum;
        v[0] = __bfloat162float(sum);
      }
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) sum_sq += v[e] * v[e];
  }
  sum_sq = BlockSum(sum_sq, scratch);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);

  // Each thread re-reads only the elements it handled above, so `out` may alias `x`.
  const bf16* src = res != nullptr ? res : x;
  for (int64_t i = threadIdx.x * VEC; i < p.dim; i += step) {
    if constexpr (VEC == 8) {
      Bf16x8 xv, wv;
      xv.raw = *reinterpret_cast<const uint4*>(src + i);
      wv.raw = *reinterpret_cast<const uint4*>(p.weight + i);
      float v[8], w[8];
      ToFloat8(xv, v);
      ToFloat8(wv, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = w[e] * (v[e] * inv_rms);
      *reinterpret_cast<uint4*>(out + i) = FromFloat8(v).raw;
    } else {
      out[i] =
          __float2bfloat16_rn(__bfloat162float(p.weight[i]) * (__bfloat162float(src[i]) * inv_rms));
    }
  }
}

// Rows of up to kRowVecs * kNormThreads * 8 elements (8192), 16-byte accesses: one CTA per row
// holds its row in registers, so x, the residual and the weight are loaded together and each
// element is read once (the two-pass form waited on memory four times: a decode step's norms
// are latency, a few KiB a row).
constexpr int kRowVecs = 4;
__global__ void __launch_bounds__(kNormThreads)
    RmsNormRowInRegistersKernel(const __grid_constant__ RmsNormParams p) {
  __shared__ float scratch[32];
  const auto [x, res, out] = RowOf(p, blockIdx.x);
  Bf16x8 xv[kRowVecs], rv[kRowVecs], wv[kRowVecs];
  auto at = [&](int j) { return (static_cast<int64_t>(j) * kNormThreads + threadIdx.x) * 8; };
#pragma unroll
  for (int j = 0; j < kRowVecs; ++j) {
    if (at(j) < p.dim) {
      xv[j].raw = *reinterpret_cast<const uint4*>(x + at(j));
      if (res != nullptr) rv[j].raw = *reinterpret_cast<const uint4*>(res + at(j));
      wv[j].raw = *reinterpret_cast<const uint4*>(p.weight + at(j));
    }
  }
  float v[kRowVecs][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kRowVecs; ++j) {
    if (at(j) >= p.dim) break;
    ToFloat8(xv[j], v[j]);
    if (res != nullptr) {
      float r[8];
      ToFloat8(rv[j], r);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[j][e] += r[e];
      const Bf16x8 sum = FromFloat8(v[j]);
      *reinterpret_cast<uint4*>(res + at(j)) = sum.raw;
      ToFloat8(sum, v[j]);  // normalise exactly what was stored
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += v[j][e] * v[j][e];
  }
  sum_sq = BlockSum(sum_sq, scratch);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  // Everything was read above: `out` may alias `x` (or the residual: out is written last).
#pragma unroll
  for (int j = 0; j < kRowVecs; ++j) {
    if (at(j) >= p.dim) break;
    float w[8];
    ToFloat8(wv[j], w);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[j][e] = w[e] * (v[j][e] * inv_rms);
    *reinterpret_cast<uint4*>(out + at(j)) = FromFloat8(v[j]).raw;
  }
}

// One warp per (token, head) vector, in place.
constexpr int kPerHeadThreads = 256;
__global__ void __launch_bounds__(kPerHeadThreads)
    RmsNormPerHeadKernel(const __grid_constant__ RmsNormPerHeadParams p) {
  const int64_t vec = static_cast<int64_t>(blockIdx.x) * (kPerHeadThreads / 32) + threadIdx.x / 32;
  if (vec >= p.tokens * p.heads) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  const int64_t token = vec / p.heads;
  const int64_t head = vec % p.heads;
  const int64_t row_stride = p.row_stride != 0 ? p.row_stride : p.heads * p.head_dim;
  bf16* x = p.x + token * row_stride + head * p.head_dim;
  float sum_sq = 0.0f;
  for (int64_t i = lane; i < p.head_dim; i += 32) {
    const float v = __bfloat162float(x[i]);
    sum_sq += v * v;
  }
  sum_sq = WarpSum(sum_sq);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(p.head_dim) + p.eps);
  for (int64_t i = lane; i < p.head_dim; i += 32) {
    x[i] = __float2bfloat16_rn(__bfloat162float(p.weight[i]) * (__bfloat162float(x[i]) * inv_rms));
  }
}

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + __expf(-g)); }

// Grid-stride over rows * (dim / VEC) vectors.
template <int VEC>
__global__ void SiluMulKernel(const __grid_constant__ SiluMulParams p) {
  const int64_t stride = p.in_row_stride != 0 ? p.in_row_stride : p.dim;
  const int64_t vecs_per_row = p.dim / VEC;
  const int64_t total = p.rows * vecs_per_row;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / vecs_per_row;
    const int64_t c = (idx % vecs_per_row) * VEC;
    if constexpr (VEC == 8) {
      Bf16x8 gv, uv;
      gv.raw = *reinterpret_cast<const uint4*>(p.gate + r * stride + c);
      uv.raw = *reinterpret_cast<const uint4*>(p.up + r * stride + c);
      float g[8], u[8];
      ToFloat8(gv, g);
      ToFloat8(uv, u);
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = Silu(g[e]) * u[e];
      *reinterpret_cast<uint4*>(p.out + r * p.dim + c) = FromFloat8(g).raw;
    } else {
      const float g = __bfloat162float(p.gate[r * stride + c]);
      const float u = __bfloat162float(p.up[r * stride + c]);
      p.out[r * p.dim + c] = __float2bfloat16_rn(Silu(g) * u);
    }
  }
}

// One CTA per token.
template <int VEC>
__global__ void EmbeddingGatherKernel(const __grid_constant__ EmbeddingGatherParams p) {
  const int64_t t = blockIdx.x;
  const int32_t id = p.ids[t];
  const bool valid = id >= 0 && id < p.vocab;
  const bf16* src = p.table + (valid ? static_cast<int64_t>(id) : 0) * p.hidden;
  bf16* dst = p.out + t * p.hidden;
  for (int64_t i = threadIdx.x * VEC; i < p.hidden; i += static_cast<int64_t>(blockDim.x) * VEC) {
    if constexpr (VEC == 8) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (valid) v = *reinterpret_cast<const uint4*>(src + i);
      *reinterpret_cast<uint4*>(dst + i) = v;
    } else {
      dst[i] = valid ? src[i] : __float2bfloat16_rn(0.0f);
    }
  }
}

// (value, index) with "a beats b" = larger value, or equal value and smaller index; NaN never
// beats anything. The empty candidate is (-inf, INT32_MAX).
struct ArgmaxCandidate {
  float value;
  int32_t index;
};
__device__ __forceinline__ bool Beats(float v, int32_t i, const ArgmaxCandidate& b) {
  return v > b.value || (v == b.value && i < b.index);
}

constexpr int kArgmaxThreads = 512;
__global__ void __launch_bounds__(kArgmaxThreads)
    ArgmaxKernel(const __grid_constant__ ArgmaxParams p) {
  __shared__ ArgmaxCandidate warp_best[kArgmaxThreads / 32];
  const int64_t row = blockIdx.x;
  const int64_t stride = p.row_stride != 0 ? p.row_stride : p.vocab;
  const float* logits = p.logits + row * stride;
  ArgmaxCandidate best{-__int_as_float(0x7f800000), 0x7fffffff};
  for (int64_t i = threadIdx.x; i < p.vocab; i += blockDim.x) {
    const float v = logits[i];
    if (Beats(v, static_cast<int32_t>(i), best)) best = {v, static_cast<int32_t>(i)};
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best.value, offset);
    const int32_t i = __shfl_xor_sync(0xffffffffu, best.index, offset);
    if (Beats(v, i, best)) best = {v, i};
  }
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
      if (Beats(warp_best[w].value, warp_best[w].index, best)) best = warp_best[w];
    }
    p.out_ids[row] = best.index == 0x7fffffff ? 0 : best.index;
  }
}

int GridFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  // Enough CTAs to fill an H100 several times over; the kernels stride over the rest.
  return static_cast<int>(blocks < 132 * 32 ? (blocks > 0 ? blocks : 1) : 132 * 32);
}

}  // namespace

absl::Status RmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementRmsNorm(p));
  const bool vec = p.dim % 8 == 0 && IsAligned16(p.x) && IsAligned16(p.out) &&
                   IsAligned16(p.weight) &&
                   (p.maybe_residual == nullptr || IsAligned16(p.maybe_residual));
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (vec && p.dim <= int64_t{kRowVecs} * kNormThreads * 8) {
    RmsNormRowInRegistersKernel<<<grid, kNormThreads, 0, stream>>>(p);
  } else if (vec) {
    RmsNormKernel<8><<<grid, kNormThreads, 0, stream>>>(p);
  } else {
    RmsNormKernel<1><<<grid, kNormThreads, 0, stream>>>(p);
  }
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status RmsNormPerHead(const RmsNormPerHeadParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementRmsNormPerHead(p));
  const int64_t warps = p.tokens * p.heads;
  const int64_t per_block = kPerHeadThreads / 32;
  const dim3 grid(static_cast<unsigned>((warps + per_block - 1) / per_block));
  RmsNormPerHeadKernel<<<grid, kPerHeadThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status SiluMul(const SiluMulParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementSiluMul(p));
  const int64_t stride = p.in_row_stride != 0 ? p.in_row_stride : p.dim;
  const bool vec = p.dim % 8 == 0 && stride % 8 == 0 && IsAligned16(p.gate) && IsAligned16(p.up) &&
                   IsAligned16(p.out);
  constexpr int kThreads = 256;
  if (vec) {
    SiluMulKernel<8><<<GridFor(p.rows * p.dim / 8, kThreads), kThreads, 0, stream>>>(p);
  } else {
    SiluMulKernel<1><<<GridFor(p.rows * p.dim, kThreads), kThreads, 0, stream>>>(p);
  }
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status EmbeddingGather(const EmbeddingGatherParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementEmbeddingGather(p));
  const bool vec = p.hidden % 8 == 0 && IsAligned16(p.table) && IsAligned16(p.out);
  const dim3 grid(static_cast<unsigned>(p.tokens));
  if (vec) {
    EmbeddingGatherKernel<8><<<grid, 128, 0, stream>>>(p);
  } else {
    EmbeddingGatherKernel<1><<<grid, 128, 0, stream>>>(p);
  }
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status Argmax(const ArgmaxParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementArgmax(p));
  ArgmaxKernel<<<dim3(static_cast<unsigned>(p.rows)), kArgmaxThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace lychee::cuda
