// SPDX-License-Identifier: Apache-2.0
// Skinny GEMM for decode steps: y[m, n] = x[m, k] · w[n, k]ᵀ with m <= 16 rows (the batch),
// bf16 inputs, fp32 accumulation, bf16 or fp32 output. At such m a linear layer only streams its
// weight, so the kernel is built for bytes in flight, not FLOPs: a CTA of 8 warps takes 16 output
// features (one mma m16n8k16 tile: the weight rows are M, the batch rows N, padded to 8 or 16)
// over a slice of k, each warp a contiguous run of 32-element chunks with four chunks' loads in
// flight; the warps reduce through shared memory and, when k is split over several CTAs, the
// last CTA of a tile to finish adds the partials in split order. Every sum is in a fixed order
// that depends only on (n, k) and the GPU's SM count, so results are deterministic and the same
// for a row whatever else is in the batch (m <= 16).
//
// LtGemm::Run (gemm.h) takes this path when GemmArgs::backend asks for it. Not the default: on
// the H100 it streams the weight at 47-69% of the copy rate where cuBLASLt reaches 62-93%
// (cuda_gemm_bench, docs/PERFORMANCE.md); each warp waits for its four chunks before loading
// more (no software pipeline). SkinnyGemmPlan's experiments (more chunks in flight, warps
// interleaved along k) are what the bench compares next.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/gemm.h"

namespace lychee::cuda {

inline constexpr int64_t kSkinnyGemmMaxRows = 16;
inline constexpr int64_t kSkinnyGemmTileRows = 16;     // output features per CTA
inline constexpr int64_t kSkinnyGemmChunk = 32;        // k elements per warp step
inline constexpr int64_t kSkinnyGemmWarps = 8;         // k slices of a CTA
inline constexpr int64_t kSkinnyGemmMaxTiles = 65536;  // arrival counters LtGemm keeps

// How k is cut: `splits` CTAs per tile, each warp `chunks_per_warp` chunks of 32. The last two
// are open experiments, both as measured in PlanSkinnyGemm's plans: `unroll` chunks' loads in
// flight per warp (4 or 8), and `interleave`: the warps of a CTA take turns along k, so the CTA
// reads each weight row front to back (DRAM page locality), instead of each warp a run of its own.
struct SkinnyGemmPlan {
  int splits = 1;
  int chunks_per_warp = 1;
  int unroll = 4;
  bool interleave = false;
};

// Tiles of 16 output features.
inline int64_t SkinnyGemmTiles(int64_t n) {
  return (n + kSkinnyGemmTileRows - 1) / kSkinnyGemmTileRows;
}

// Enough CTAs for several waves on `num_sms` SMs (splitting k when the tiles alone are too few),
// at least two chunks per warp, and partials that fit `workspace_bytes` (else no split).
SkinnyGemmPlan PlanSkinnyGemm(int64_t m, int64_t n, int64_t k, int num_sms, size_t workspace_bytes);

// fp32 partials of a plan: [tiles][splits][16][16]; 0 without a split.
size_t SkinnyGemmWorkspaceBytes(int64_t n, const SkinnyGemmPlan& plan);

// The shapes the skinny path takes (CanImplementGemm's rules, m <= 16, n / 16 <= max tiles).
absl::Status CanImplementSkinnyGemm(const GemmArgs& args);

// Enqueues the GEMM. `counters` (kSkinnyGemmMaxTiles int32, zero) are left zero again; launches
// that share them must not overlap (one stream). No allocation, no host sync: capturable.
[[nodiscard]] absl::Status SkinnyGemm(const GemmArgs& args, const SkinnyGemmPlan& plan,
                                      void* workspace, size_t workspace_bytes, int32_t* counters,
                                      cudaStream_t stream);

}  // namespace lychee::cuda
