// SPDX-License-Identifier: Apache-2.0
// Skinny GEMM (skinny_gemm.h). The mma's k order is ours to choose as long as both operands use
// it: lane (g, t) loads 16 bytes (8 consecutive k) of weight rows g and g + 8 and of batch row g
// at the chunk's offset 8t, and the first half of them feeds k step 0 (k 2t, 2t + 1 and 2t + 8,
// 2t + 9 of the mma), the second half k step 1. So every load is a 16-byte vector and a warp's
// request covers 64 contiguous bytes of each of 16 rows, with no shared-memory staging.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/skinny_gemm.h"

namespace lychee::cuda {
namespace {

constexpr int kThreads = kSkinnyGemmWarps * 32;
constexpr int kTile = kSkinnyGemmTileRows;
constexpr int kMaxCols = kSkinnyGemmMaxRows;  // batch rows of a partial

struct SkinnyParams {
  const bf16* x;
  const bf16* w;
  void* y;
  float* partials;    // [tiles][splits][kTile][kMaxCols]
  int32_t* counters;  // [tiles]
  int64_t m, n, k;
  int splits, chunks_per_warp;
  bool interleave;
};

// kMTiles: batch rows in tiles of 8 (1: m <= 8, 2: m <= 16). kUnroll: chunks whose loads a warp
// has in flight together.
template <int kMTiles, bool kFp32Out, int kUnroll>
__global__ void __launch_bounds__(kThreads)
    SkinnyGemmKernel(const __grid_constant__ SkinnyParams p) {
  __shared__ float s_red[kSkinnyGemmWarps][kMTiles][4][32];
  __shared__ float s_sum[kTile][kMaxCols];
  __shared__ int s_last;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t n0 = static_cast<int64_t>(tile) * kTile;
  const bool has0 = n0 + g < p.n, has1 = n0 + g + 8 < p.n;
  const uint4* w0 = reinterpret_cast<const uint4*>(p.w + (has0 ? n0 + g : 0) * p.k);
  const uint4* w1 = reinterpret_cast<const uint4*>(p.w + (has1 ? n0 + g + 8 : 0) * p.k);
  const uint4* xr[kMTiles];
  bool has_x[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    has_x[mt] = g + 8 * mt < p.m;
    xr[mt] = reinterpret_cast<const uint4*>(p.x + (has_x[mt] ? g + 8 * mt : 0) * p.k);
  }
  const int64_t segs = p.k / 8;  // 16-byte pieces of a row
  const int64_t chunks = (p.k + kSkinnyGemmChunk - 1) / kSkinnyGemmChunk;
  // The split's chunks. Contiguous: warp w takes chunks_per_warp consecutive ones. Interleaved:
  // the warps take turns, kUnroll chunks each, so the CTA sweeps its rows front to back.
  const int64_t split_begin = static_cast<int64_t>(split) * kSkinnyGemmWarps * p.chunks_per_warp;
  const int64_t split_end =
      min(split_begin + static_cast<int64_t>(kSkinnyGemmWarps) * p.chunks_per_warp, chunks);
  const int64_t c_first = split_begin + warp * (p.interleave ? kUnroll : p.chunks_per_warp);
  const int64_t c_end = p.interleave ? split_end : min(c_first + p.chunks_per_warp, split_end);
  const int64_t c_step = p.interleave ? kSkinnyGemmWarps * kUnroll : kUnroll;
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);

  float acc[kMTiles][4] = {};
  for (int64_t c = c_first; c < c_end; c += c_step) {
    uint4 a0[kUnroll], a1[kUnroll], b[kUnroll][kMTiles];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t seg = (c + u) * 4 + t;
      const bool ok = c + u < c_end && seg < segs;
      a0[u] = ok && has0 ? __ldcs(w0 + seg) : zero;  // read once: evict first
      a1[u] = ok && has1 ? __ldcs(w1 + seg) : zero;
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) b[u][mt] = ok && has_x[mt] ? __ldg(xr[mt] + seg) : zero;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const uint32_t lo[4] = {a0[u].x, a1[u].x, a0[u].y, a1[u].y};
        const uint32_t hi[4] = {a0[u].z, a1[u].z, a0[u].w, a1[u].w};
        Mma16816(acc[mt], lo, b[u][mt].x, b[u][mt].y);
        Mma16816(acc[mt], hi, b[u][mt].z, b[u][mt].w);
      }
    }
  }

  // The warps' sums, in warp order. acc[mt][r]: feature g (r < 2) or g + 8, batch row
  // 8 mt + 2t + (r & 1).
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int r = 0; r < 4; ++r) s_red[warp][mt][r][lane] = acc[mt][r];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kMTiles * 4 * 32; i += kThreads) {
    const int mt = i / 128, r = (i / 32) % 4, l = i % 32;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kSkinnyGemmWarps; ++w) sum += s_red[w][mt][r][l];
    s_sum[l / 4 + 8 * (r / 2)][8 * mt + 2 * (l % 4) + (r & 1)] = sum;
  }
  __syncthreads();

  auto store = [&](int row, int col, float v) {  // (feature row of the tile, batch row)
    const int64_t i = col * p.n + n0 + row;
    if constexpr (kFp32Out) {
      static_cast<float*>(p.y)[i] = v;
    } else {
      static_cast<bf16*>(p.y)[i] = __float2bfloat16_rn(v);
    }
  };
  constexpr int kCols = 8 * kMTiles;
  if (p.splits == 1) {
    for (int i = threadIdx.x; i < kTile * kCols; i += kThreads) {
      const int row = i % kTile, col = i / kTile;  // consecutive threads: consecutive features
      if (col < p.m && n0 + row < p.n) store(row, col, s_sum[row][col]);
    }
    return;
  }
  // Split k: publish this CTA's partial; the tile's last CTA adds them in split order.
  float* const partials = p.partials + static_cast<int64_t>(tile) * p.splits * kTile * kMaxCols;
  for (int i = threadIdx.x; i < kTile * kCols; i += kThreads) {
    const int row = i / kCols, col = i % kCols;
    partials[(static_cast<int64_t>(split) * kTile + row) * kMaxCols + col] = s_sum[row][col];
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(p.counters + tile, 1) == p.splits - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int i = threadIdx.x; i < kTile * kCols; i += kThreads) {
    const int row = i % kTile, col = i / kTile;
    if (col >= p.m || n0 + row >= p.n) continue;
    float sum = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      sum += __ldcg(partials + (static_cast<int64_t>(s) * kTile + row) * kMaxCols + col);
    }
    store(row, col, sum);
  }
  if (threadIdx.x == 0) p.counters[tile] = 0;  // ready for the next launch (stream-ordered)
}

template <int kMTiles, bool kFp32Out>
cudaError_t Launch(const SkinnyParams& p, int unroll, dim3 grid, cudaStream_t stream) {
  if (unroll == 8) {
    SkinnyGemmKernel<kMTiles, kFp32Out, 8><<<grid, kThreads, 0, stream>>>(p);
  } else {
    SkinnyGemmKernel<kMTiles, kFp32Out, 4><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

absl::Status SkinnyGemm(const GemmArgs& a, const SkinnyGemmPlan& plan, void* workspace,
                        size_t workspace_bytes, int32_t* counters, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementSkinnyGemm(a));
  if (plan.splits < 1 || plan.chunks_per_warp < 1 || plan.splits > 65535 ||
      (plan.unroll != 4 && plan.unroll != 8)) {
    return absl::InvalidArgumentError("skinny gemm: invalid plan");
  }
  const size_t need = SkinnyGemmWorkspaceBytes(a.n, plan);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need || counters == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("skinny gemm: the plan's ", plan.splits,
                                                   " splits need ", need,
                                                   " bytes of workspace and the arrival counters"));
  }
  const int64_t chunks = (a.k + kSkinnyGemmChunk - 1) / kSkinnyGemmChunk;
  if (static_cast<int64_t>(plan.splits) * kSkinnyGemmWarps * plan.chunks_per_warp < chunks) {
    return absl::InvalidArgumentError("skinny gemm: the plan does not cover k");
  }
  SkinnyParams p{a.x, a.w, a.y,         static_cast<float*>(workspace), counters,       a.m,
                 a.n, a.k, plan.splits, plan.chunks_per_warp,           plan.interleave};
  const dim3 grid(static_cast<unsigned>(SkinnyGemmTiles(a.n)), static_cast<unsigned>(plan.splits));
  const bool fp32 = a.out_type == GemmOutType::kFp32;
  const cudaError_t err = a.m <= 8 ? (fp32 ? Launch<1, true>(p, plan.unroll, grid, stream)
                                           : Launch<1, false>(p, plan.unroll, grid, stream))
                                   : (fp32 ? Launch<2, true>(p, plan.unroll, grid, stream)
                                           : Launch<2, false>(p, plan.unroll, grid, stream));
  LY_CUDA_RETURN_IF_ERROR(err);
  return absl::OkStatus();
}

}  // namespace lychee::cuda
