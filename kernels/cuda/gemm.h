// SPDX-License-Identifier: Apache-2.0
// Linear layers on cuBLASLt: y[m, n] = x[m, k] · w[n, k]ᵀ with bf16 inputs, fp32 accumulation and
// a bf16 or fp32 output (fp32 for logits). `w` is the weight as Hugging Face stores it,
// [out_features, in_features], so cuBLASLt runs its TN layout (the one FP8 will need too).
//
// Ownership: a LtGemm belongs to one thread (the engine thread) and one stream at a time; it owns
// the cuBLASLt handle, a cache of matmul descriptors and the heuristic's algorithm per shape,
// filled on first use of a shape (host work only: no allocation on the device, no
// synchronisation, so warm calls are CUDA graph capturable), and the skinny kernel's arrival
// counters (allocated once by Create). The caller owns the workspace and every tensor.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lychee::cuda {

enum class GemmOutType { kBf16, kFp32 };

// Which kernel runs a GEMM. kAuto is cuBLASLt. kSkinny (m <= 16, skinny_gemm.h) is deterministic
// and batch-invariant but not yet as fast: 0.70-0.86x cuBLASLt on Llama-3-8B's decode layers on
// the H100 (docs/PERFORMANCE.md, cuda_gemm_bench), so nothing picks it by default.
enum class GemmBackend { kAuto, kCublasLt, kSkinny };

struct GemmArgs {
  // Pointers.
  const __nv_bfloat16* x = nullptr;  // [m, k]
  const __nv_bfloat16* w = nullptr;  // [n, k]
  void* y = nullptr;                 // [m, n] of out_type; must not alias x or w
  // Sizes.
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  // Scalars.
  GemmOutType out_type = GemmOutType::kBf16;
  GemmBackend backend = GemmBackend::kAuto;
};

// Size and alignment rules: m, n, k in [1, 2^31); k % 8 == 0 and n % 8 == 0 (16-byte rows for
// the tensor-core kernels: every model dimension we load satisfies it) ; x, w, y 16-byte aligned.
absl::Status CanImplementGemm(const GemmArgs& args);

// Workspace the heuristic may use; 32 MiB is what cuBLAS recommends for Hopper.
inline constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

class LtGemm {
 public:
  // Creates the cuBLASLt handle and the skinny kernel's counters on the current device (needs
  // the CUDA runtime; Unavailable without a device).
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Enqueues y = x · wᵀ on `stream`. `workspace` is device memory of `workspace_bytes` bytes
  // (may be 0; kGemmWorkspaceBytes lets the heuristic choose freely). The first call for a
  // (m, n, k, out_type, workspace_bytes, pointer alignments) runs the heuristic on the host; later
  // calls reuse it. Skinny launches (args.backend) use the workspace for split-k partials.
  [[nodiscard]] absl::Status Run(const GemmArgs& args, void* workspace, size_t workspace_bytes,
                                 cudaStream_t stream);

  size_t cached_shapes() const { return plans_.size(); }

 private:
  struct Plan;
  // (m, n, k, out_type, workspace_bytes, alignment of x, w, y).
  using Key = std::tuple<int64_t, int64_t, int64_t, int, size_t, uint32_t, uint32_t, uint32_t>;
  LtGemm(cublasLtHandle_t handle, int32_t* counters, int num_sms);  // out of line: Plan is
                                                                    // incomplete here
  absl::StatusOr<const Plan*> GetPlan(const GemmArgs& args, size_t workspace_bytes);

  cublasLtHandle_t handle_ = nullptr;
  int32_t* skinny_counters_ = nullptr;  // device, kSkinnyGemmMaxTiles
  int num_sms_ = 1;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace lychee::cuda
