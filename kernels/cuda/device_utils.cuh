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

// Eight warp-wide sums at once (a reduce-scatter): lane l returns the sum over all 32 lanes of
// v[l / 4]. 9 shuffles instead of the 40 of eight WarpSums; lanes 4r..4r+3 hold row r. Each
// butterfly step keeps the half of the rows selected by the lane's bit and sends the other half.
__device__ __forceinline__ float WarpReduceScatter8(const float (&v)[8]) {
  const int lane = threadIdx.x % 32;
  const bool b4 = (lane & 16) != 0, b3 = (lane & 8) != 0, b2 = (lane & 4) != 0;
  float w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float keep = b4 ? v[i + 4] : v[i];
    const float send = b4 ? v[i] : v[i + 4];
    w[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
  }
  float x[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float keep = b3 ? w[i + 2] : w[i];
    const float send = b3 ? w[i] : w[i + 2];
    x[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
  float y = (b2 ? x[1] : x[0]) + __shfl_xor_sync(0xffffffffu, b2 ? x[0] : x[1], 4);
  y += __shfl_xor_sync(0xffffffffu, y, 2);
  y += __shfl_xor_sync(0xffffffffu, y, 1);
  return y;
}

// Max over the eight rows WarpReduceScatter8 spread over the warp (lanes differing in bits 2..4).
__device__ __forceinline__ float WarpMaxOverRows8(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
}

// kPer consecutive bf16 values (kPer 2 or 4, 4 * kPer-byte aligned) as floats, one load.
template <int kPer>
__device__ __forceinline__ void LoadBf16Floats(const __nv_bfloat16* src, float (&out)[kPer]) {
  static_assert(kPer == 2 || kPer == 4, "2 or 4 values");
  if constexpr (kPer == 4) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(src));
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    out[0] = a.x;
    out[1] = a.y;
    out[2] = b.x;
    out[3] = b.y;
  } else {
    const unsigned raw = __ldg(reinterpret_cast<const unsigned*>(src));
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw));
    out[0] = a.x;
    out[1] = a.y;
  }
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
