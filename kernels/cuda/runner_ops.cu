// SPDX-License-Identifier: Apache-2.0
// Kernels of runner_ops.h and their host-side checks.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/runner_ops.h"

namespace lychee::cuda {
namespace {

constexpr int kMaxGenericHeadDim = 256;

absl::Status NeedPositive(int64_t v, const char* name) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be > 0, got ", v));
  if (v > 2147483647) {
    return absl::InvalidArgumentError(absl::StrCat(name, " too large for a grid: ", v));
  }
  return absl::OkStatus();
}

absl::Status NeedPtr(const void* p, const char* name) {
  if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, " is null"));
  return absl::OkStatus();
}

int GridFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 132 * 32 ? (blocks > 0 ? blocks : 1) : 132 * 32);
}

__global__ void AddBiasKernel(const __grid_constant__ AddBiasParams p) {
  const int64_t stride = p.row_stride != 0 ? p.row_stride : p.dim;
  const int64_t total = p.rows * p.dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / p.dim;
    const int64_t c = i - r * p.dim;
    bf16* x = p.x + r * stride + c;
    *x = __float2bfloat16_rn(__bfloat162float(*x) + __bfloat162float(p.bias[c]));
  }
}

// SplitMix64: a counter-based generator, so element i depends only on (seed, i).
__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void FillUniformKernel(const __grid_constant__ FillUniformParams p) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < p.count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t bits = SplitMix64(p.seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);  // 24 bits
    p.out[i] = __float2bfloat16_rn(p.lo + (p.hi - p.lo) * u);
  }
}

// One warp per (row, head); lane l holds dims l, l + 32, ... of q and of the output.
constexpr int kGenericWarps = 4;
__global__ void __launch_bounds__(kGenericWarps * 32)
    GenericPagedAttentionKernel(const __grid_constant__ GenericPagedAttentionParams p) {
  constexpr int kPerLane = kMaxGenericHeadDim / 32;
  const int64_t warp = blockIdx.x * int64_t{kGenericWarps} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= p.rows * p.num_heads) return;
  const int64_t row = warp / p.num_heads;
  const int64_t h = warp - row * p.num_heads;
  const int64_t d = p.cache.head_dim;
  const int64_t group = p.num_heads / p.cache.num_kv_heads;
  const int64_t kvh = h / group;
  const int64_t q_stride = p.q_row_stride != 0 ? p.q_row_stride : p.num_heads * d;
  const bf16* q = p.q + row * q_stride + h * d;
  float qv[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t dim = lane + 32 * i;
    qv[i] = dim < d ? __bfloat162float(q[dim]) * p.scale : 0.0f;
    acc[i] = 0.0f;
  }
  const int64_t pos = p.row_position[row];
  const int64_t first = p.sliding_window > 0 ? max(int64_t{0}, pos - p.sliding_window + 1) : 0;
  const int32_t* table = p.block_tables + int64_t{p.row_seq[row]} * p.max_blocks_per_seq;
  float m = -INFINITY, s = 0.0f;
  for (int64_t t = first; t <= pos; ++t) {
    const int64_t block = table[t / p.cache.block_size];
    const int64_t slot = t % p.cache.block_size;
    const bf16* k =
        p.cache.kv + block * p.cache.block_stride() + kvh * p.cache.head_stride() + slot * d;
    const bf16* v = k + p.cache.kv_stride();
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t dim = lane + 32 * i;
      if (dim < d) dot += qv[i] * __bfloat162float(k[dim]);
    }
    dot = WarpSum(dot);
    const float m_new = fmaxf(m, dot);
    const float correction = __expf(m - m_new);
    const float w = __expf(dot - m_new);
    s = s * correction + w;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t dim = lane + 32 * i;
      if (dim < d) acc[i] = acc[i] * correction + w * __bfloat162float(v[dim]);
    }
    m = m_new;
  }
  bf16* out = p.out + row * p.num_heads * d + h * d;
  const float inv = s > 0.0f ? 1.0f / s : 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t dim = lane + 32 * i;
    if (dim < d) out[dim] = __float2bfloat16_rn(acc[i] * inv);
  }
}

}  // namespace

absl::Status CanImplementAddBias(const AddBiasParams& p) {
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.x, "x"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.bias, "bias"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.rows, "rows"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.dim, "dim"));
  if (p.row_stride != 0 && p.row_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_stride ", p.row_stride, " is below dim ", p.dim));
  }
  return absl::OkStatus();
}

absl::Status AddBias(const AddBiasParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementAddBias(p));
  constexpr int kThreads = 256;
  AddBiasKernel<<<GridFor(p.rows * p.dim, kThreads), kThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status CanImplementFillUniform(const FillUniformParams& p) {
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.out, "out"));
  if (p.count <= 0) return absl::InvalidArgumentError("count must be > 0");
  if (!(p.lo <= p.hi)) return absl::InvalidArgumentError("lo must be <= hi");
  return absl::OkStatus();
}

absl::Status FillUniform(const FillUniformParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementFillUniform(p));
  constexpr int kThreads = 256;
  FillUniformKernel<<<GridFor(p.count, kThreads), kThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status CanImplementGenericPagedAttention(const GenericPagedAttentionParams& p) {
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.q, "q"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.cache.kv, "cache.kv"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.block_tables, "block_tables"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.row_seq, "row_seq"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.row_position, "row_position"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPtr(p.out, "out"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.rows, "rows"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.num_heads, "num_heads"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.max_blocks_per_seq, "max_blocks_per_seq"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.cache.num_kv_heads, "cache.num_kv_heads"));
  LY_CUDA_RETURN_IF_NOT_OK(NeedPositive(p.cache.block_size, "cache.block_size"));
  if (p.cache.head_dim <= 0 || p.cache.head_dim > kMaxGenericHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim ", p.cache.head_dim, " is outside [1, ", kMaxGenericHeadDim, "]"));
  }
  if (p.num_heads % p.cache.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_heads ", p.num_heads, " is not a multiple of num_kv_heads ", p.cache.num_kv_heads));
  }
  if (p.rows * p.num_heads > int64_t{2147483647} * kGenericWarps) {
    return absl::InvalidArgumentError("rows * num_heads too large for a grid");
  }
  return absl::OkStatus();
}

absl::Status GenericPagedAttention(const GenericPagedAttentionParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementGenericPagedAttention(p));
  const int64_t warps = p.rows * p.num_heads;
  const dim3 grid(static_cast<unsigned>((warps + kGenericWarps - 1) / kGenericWarps));
  GenericPagedAttentionKernel<<<grid, kGenericWarps * 32, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace lychee::cuda
