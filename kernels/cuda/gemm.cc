// SPDX-License-Identifier: Apache-2.0
// cuBLASLt GEMM wrapper (gemm.h). Row-major y[m, n] = x[m, k] · w[n, k]ᵀ is, read column-major,
// yᵀ[n, m] = w · xᵀ: A = w (column-major k x n, transposed), B = x (column-major k x m), C = yᵀ
// with leading dimension n. That is cuBLAS's TN case.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/skinny_gemm.h"

namespace lychee::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(s), " (",
                                          cublasLtGetStatusString(s), ")"));
}

#define LY_LT_RETURN_IF_ERROR(call)                                                    \
  do {                                                                                 \
    const cublasStatus_t ly_lt_status_ = (call);                                       \
    if (ly_lt_status_ != CUBLAS_STATUS_SUCCESS) return LtStatus(ly_lt_status_, #call); \
  } while (0)

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The largest power of two dividing the address, capped at 256 (what cuBLASLt asks about).
uint32_t Alignment(const void* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (addr & (align - 1)) != 0) align /= 2;
  return align;
}

constexpr int64_t kMaxDim = 2147483647;

}  // namespace

absl::Status CanImplementGemm(const GemmArgs& a) {
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr) {
    return absl::InvalidArgumentError("gemm: x, w and y must be set");
  }
  if (a.m <= 0 || a.n <= 0 || a.k <= 0 || a.m > kMaxDim || a.n > kMaxDim || a.k > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm: unsupported sizes m=", a.m, " n=", a.n, " k=", a.k));
  }
  if (a.k % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("gemm: k=", a.k, " is not a multiple of 8"));
  }
  if (a.n % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("gemm: n=", a.n, " is not a multiple of 8"));
  }
  if (!Aligned16(a.x) || !Aligned16(a.w) || !Aligned16(a.y)) {
    return absl::InvalidArgumentError("gemm: x, w and y must be 16-byte aligned");
  }
  const void* y = a.y;
  if (y == static_cast<const void*>(a.x) || y == static_cast<const void*>(a.w)) {
    return absl::InvalidArgumentError("gemm: y must not alias x or w");
  }
  switch (a.out_type) {
    case GemmOutType::kBf16:
    case GemmOutType::kFp32:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("gemm: unknown out_type");
}

absl::Status CanImplementSkinnyGemm(const GemmArgs& a) {
  if (absl::Status s = CanImplementGemm(a); !s.ok()) return s;
  if (a.m > kSkinnyGemmMaxRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("skinny gemm: m=", a.m, " exceeds ", kSkinnyGemmMaxRows, " rows"));
  }
  if (SkinnyGemmTiles(a.n) > kSkinnyGemmMaxTiles) {
    return absl::InvalidArgumentError(absl::StrCat("skinny gemm: n=", a.n, " exceeds ",
                                                   kSkinnyGemmMaxTiles * kSkinnyGemmTileRows));
  }
  return absl::OkStatus();
}

SkinnyGemmPlan PlanSkinnyGemm(int64_t m, int64_t n, int64_t k, int num_sms,
                              size_t workspace_bytes) {
  (void)m;  // the cut depends on (n, k) only: a row's sums are the same in any batch
  const int64_t tiles = SkinnyGemmTiles(n);
  const int64_t chunks = (k + kSkinnyGemmChunk - 1) / kSkinnyGemmChunk;
  // Eight CTAs an SM (about three resident, several waves so the last one is short), and at
  // least two chunks a warp.
  const int64_t target_ctas = int64_t{8} * std::max(1, num_sms);
  const int64_t max_splits = std::max<int64_t>(1, chunks / (2 * kSkinnyGemmWarps));
  int64_t splits = std::clamp<int64_t>((target_ctas + tiles - 1) / tiles, 1, max_splits);
  SkinnyGemmPlan plan;
  auto cut = [&](int64_t s) {
    const int64_t per_cta = (chunks + s - 1) / s;
    plan.chunks_per_warp = static_cast<int>((per_cta + kSkinnyGemmWarps - 1) / kSkinnyGemmWarps);
    plan.splits = static_cast<int>((chunks + plan.chunks_per_warp * kSkinnyGemmWarps - 1) /
                                   (plan.chunks_per_warp * kSkinnyGemmWarps));
  };
  cut(splits);
  if (SkinnyGemmWorkspaceBytes(n, plan) > workspace_bytes) cut(1);
  return plan;
}

size_t SkinnyGemmWorkspaceBytes(int64_t n, const SkinnyGemmPlan& plan) {
  if (plan.splits <= 1) return 0;
  return static_cast<size_t>(SkinnyGemmTiles(n)) * static_cast<size_t>(plan.splits) *
         kSkinnyGemmTileRows * kSkinnyGemmMaxRows * sizeof(float);
}

struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create() {
  cublasLtHandle_t handle = nullptr;
  if (const cublasStatus_t s = cublasLtCreate(&handle); s != CUBLAS_STATUS_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("cublasLtCreate: ", cublasLtGetStatusString(s)));
  }
  int device = 0, num_sms = 1;
  int32_t* counters = nullptr;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    err = cudaMalloc(reinterpret_cast<void**>(&counters), kSkinnyGemmMaxTiles * sizeof(int32_t));
  }
  if (err == cudaSuccess) err = cudaMemset(counters, 0, kSkinnyGemmMaxTiles * sizeof(int32_t));
  if (err != cudaSuccess) {
    if (counters != nullptr) cudaFree(counters);
    cublasLtDestroy(handle);
    return absl::UnavailableError(
        absl::StrCat("gemm: skinny kernel counters: ", cudaGetErrorString(err)));
  }
  return std::unique_ptr<LtGemm>(new LtGemm(handle, counters, num_sms));
}

LtGemm::LtGemm(cublasLtHandle_t handle, int32_t* counters, int num_sms)
    : handle_(handle), skinny_counters_(counters), num_sms_(num_sms) {}

LtGemm::~LtGemm() {
  plans_.clear();
  if (skinny_counters_ != nullptr) cudaFree(skinny_counters_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<const LtGemm::Plan*> LtGemm::GetPlan(const GemmArgs& a, size_t workspace_bytes) {
  const Key key{a.m,
                a.n,
                a.k,
                static_cast<int>(a.out_type),
                workspace_bytes,
                Alignment(a.x),
                Alignment(a.w),
                Alignment(a.y)};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();

  auto plan = std::make_unique<Plan>();
  const cudaDataType_t out_type = a.out_type == GemmOutType::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
  LY_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  LY_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                       &trans_a, sizeof(trans_a)));
  LY_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                       &trans_b, sizeof(trans_b)));
  // A = w stored k x n (ld k), B = x stored k x m (ld k), C = y stored n x m (ld n).
  LY_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, a.k, a.n, a.k));
  LY_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, a.k, a.m, a.k));
  LY_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, out_type, a.n, a.m, a.n));

  cublasLtMatmulPreference_t pref = nullptr;
  LY_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes));
  // The heuristic assumes 256-byte aligned operands unless told otherwise; views into larger
  // buffers (a row block of the hidden states, q inside a fused QKV output) may be aligned less,
  // so it is told the actual alignment (part of the cache key).
  const uint32_t align_a = Alignment(a.w), align_b = Alignment(a.x), align_c = Alignment(a.y);
  const std::pair<cublasLtMatmulPreferenceAttributes_t, const uint32_t*> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c}};
  for (const auto& [attr, value] : aligns) {
    if (s == CUBLAS_STATUS_SUCCESS) {
      s = cublasLtMatmulPreferenceSetAttribute(pref, attr, value, sizeof(*value));
    }
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref,
                                       1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  LY_LT_RETURN_IF_ERROR(s);
  if (found == 0) {
    return absl::UnimplementedError(
        absl::StrCat("cuBLASLt has no algorithm for m=", a.m, " n=", a.n, " k=", a.k));
  }
  plan->algo = result.algo;
  const Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status LtGemm::Run(const GemmArgs& args, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream) {
  if (absl::Status s = CanImplementGemm(args); !s.ok()) return s;
  if (workspace_bytes > 0 && workspace == nullptr) {
    return absl::InvalidArgumentError("gemm: workspace_bytes > 0 but workspace is null");
  }
  if (args.backend == GemmBackend::kSkinny) {
    const SkinnyGemmPlan plan = PlanSkinnyGemm(args.m, args.n, args.k, num_sms_, workspace_bytes);
    return SkinnyGemm(args, plan, workspace, workspace_bytes, skinny_counters_, stream);
  }
  absl::StatusOr<const Plan*> plan = GetPlan(args, workspace_bytes);
  if (!plan.ok()) return plan.status();
  const float alpha = 1.0f, beta = 0.0f;
  LY_LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, (*plan)->op, &alpha, args.w, (*plan)->a, args.x,
                                       (*plan)->b, &beta, args.y, (*plan)->c, args.y, (*plan)->c,
                                       &(*plan)->algo, workspace, workspace_bytes, stream));
  return absl::OkStatus();
}

}  // namespace lychee::cuda
