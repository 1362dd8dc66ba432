// SPDX-License-Identifier: Apache-2.0
// Device helpers shared by the .cu files: 16-byte bf16 vectors, warp and block reductions.
// Device-only; include from .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lychee::cuda {

// 8 bf16 values moved as one 16-byte access (a plain struct: __nv_bfloat162 is not trivially
// copyable, so a union with it would have no copy constructor).
struct Bf16x8 {
  uint4 raw;
};

__device__ __forceinline__ void ToFloat8(const Bf16x8& v, float (&out)[8]) {
  const __nv_bfloat162* pair = reinterpret_cast<const __nv_bfloat162*>(&v.raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pair[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ Bf16x8 FromFloat8(const float (&in)[8]) {
  Bf16x8 v;
  __nv_bfloat162* pair = reinterpret_cast<__nv_bfloat162*>(&v.raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) pair[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call contains __syncthreads, so every thread of
// the block must reach it.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int num_warps = blockDim.x / 32;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

inline bool IsAligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace lychee::cuda
