// SPDX-License-Identifier: Apache-2.0
// Host-side validation of the small fused kernels' params (cuda_kernels.h). Plain C++ so that CI
// without a GPU runs it; every launcher calls its CanImplement* before enqueuing anything.
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {
namespace {

constexpr int64_t kMaxInt32 = 2147483647;

absl::Status NeedPtr(const void* p, const char* name) {
  if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, " is null"));
  return absl::OkStatus();
}

absl::Status NeedPositive(int64_t v, const char* name) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be > 0, got ", v));
  if (v > kMaxInt32) {
    return absl::InvalidArgumentError(absl::StrCat(name, " too large for a grid: ", v));
  }
  return absl::OkStatus();
}

#define LY_CHECK_OK_(expr)             \
  do {                                 \
    const absl::Status ly_s_ = (expr); \
    if (!ly_s_.ok()) return ly_s_;     \
  } while (0)

}  // namespace

absl::Status CanImplementRmsNorm(const RmsNormParams& p) {
  LY_CHECK_OK_(NeedPtr(p.x, "x"));
  LY_CHECK_OK_(NeedPtr(p.weight, "weight"));
  LY_CHECK_OK_(NeedPtr(p.out, "out"));
  LY_CHECK_OK_(NeedPositive(p.rows, "rows"));
  LY_CHECK_OK_(NeedPositive(p.dim, "dim"));
  if (!(p.eps >= 0.0f)) return absl::InvalidArgumentError("eps must be >= 0");
  if (p.maybe_residual != nullptr && p.maybe_residual == p.out) {
    return absl::InvalidArgumentError("residual must not alias out");
  }
  return absl::OkStatus();
}

absl::Status CanImplementRmsNormPerHead(const RmsNormPerHeadParams& p) {
  LY_CHECK_OK_(NeedPtr(p.x, "x"));
  LY_CHECK_OK_(NeedPtr(p.weight, "weight"));
  LY_CHECK_OK_(NeedPositive(p.tokens, "tokens"));
  LY_CHECK_OK_(NeedPositive(p.heads, "heads"));
  LY_CHECK_OK_(NeedPositive(p.head_dim, "head_dim"));
  if (p.head_dim > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported head_dim: ", p.head_dim));
  }
  if (p.row_stride != 0 && p.row_stride < p.heads * p.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_stride ", p.row_stride, " < heads * head_dim ", p.heads * p.head_dim));
  }
  if (p.tokens * p.heads > kMaxInt32) return absl::InvalidArgumentError("tokens * heads too large");
  if (!(p.eps >= 0.0f)) return absl::InvalidArgumentError("eps must be >= 0");
  return absl::OkStatus();
}

absl::Status CanImplementRopeKvWrite(const RopeKvWriteParams& p) {
  LY_CHECK_OK_(NeedPtr(p.q, "q"));
  LY_CHECK_OK_(NeedPtr(p.k, "k"));
  LY_CHECK_OK_(NeedPtr(p.v, "v"));
  LY_CHECK_OK_(NeedPtr(p.positions, "positions"));
  LY_CHECK_OK_(NeedPtr(p.slot_mapping, "slot_mapping"));
  LY_CHECK_OK_(NeedPtr(p.inv_freq, "inv_freq"));
  LY_CHECK_OK_(NeedPtr(p.cache.kv, "cache.kv"));
  LY_CHECK_OK_(NeedPositive(p.num_tokens, "num_tokens"));
  LY_CHECK_OK_(NeedPositive(p.num_heads, "num_heads"));
  LY_CHECK_OK_(NeedPositive(p.num_kv_heads, "num_kv_heads"));
  LY_CHECK_OK_(NeedPositive(p.head_dim, "head_dim"));
  LY_CHECK_OK_(NeedPositive(p.cache.num_blocks, "cache.num_blocks"));
  LY_CHECK_OK_(NeedPositive(p.cache.block_size, "cache.block_size"));
  if (p.head_dim % 2 != 0 || p.head_dim > 512) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported head_dim: ", p.head_dim, " (even, <= 512)"));
  }
  if (p.cache.head_dim != p.head_dim || p.cache.num_kv_heads != p.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache shape (kv_heads ", p.cache.num_kv_heads, ", head_dim ", p.cache.head_dim,
        ") differs from the tokens' (", p.num_kv_heads, ", ", p.head_dim, ")"));
  }
  if (p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError("num_heads must be a multiple of num_kv_heads");
  }
  if ((p.num_heads + p.num_kv_heads) * p.head_dim > kMaxInt32) {
    return absl::InvalidArgumentError("(num_heads + num_kv_heads) * head_dim too large");
  }
  const auto stride_ok = [](int64_t stride, int64_t width) {
    return stride == 0 || stride >= width;
  };
  if (!stride_ok(p.q_row_stride, p.num_heads * p.head_dim) ||
      !stride_ok(p.k_row_stride, p.num_kv_heads * p.head_dim) ||
      !stride_ok(p.v_row_stride, p.num_kv_heads * p.head_dim)) {
    return absl::InvalidArgumentError("a row stride is smaller than its row");
  }
  if (p.cache.num_blocks * p.cache.block_size > kMaxInt32) {
    return absl::InvalidArgumentError("num_blocks * block_size exceeds the int32 slot range");
  }
  return absl::OkStatus();
}

absl::Status CanImplementSiluMul(const SiluMulParams& p) {
  LY_CHECK_OK_(NeedPtr(p.gate, "gate"));
  LY_CHECK_OK_(NeedPtr(p.up, "up"));
  LY_CHECK_OK_(NeedPtr(p.out, "out"));
  LY_CHECK_OK_(NeedPositive(p.rows, "rows"));
  LY_CHECK_OK_(NeedPositive(p.dim, "dim"));
  const int64_t stride = p.in_row_stride == 0 ? p.dim : p.in_row_stride;
  if (stride < p.dim) return absl::InvalidArgumentError("in_row_stride < dim");
  if (stride != p.dim && (p.out == p.gate || p.out == p.up)) {
    return absl::InvalidArgumentError("out may alias an input only when rows are contiguous");
  }
  return absl::OkStatus();
}

absl::Status CanImplementEmbeddingGather(const EmbeddingGatherParams& p) {
  LY_CHECK_OK_(NeedPtr(p.table, "table"));
  LY_CHECK_OK_(NeedPtr(p.ids, "ids"));
  LY_CHECK_OK_(NeedPtr(p.out, "out"));
  LY_CHECK_OK_(NeedPositive(p.tokens, "tokens"));
  LY_CHECK_OK_(NeedPositive(p.vocab, "vocab"));
  LY_CHECK_OK_(NeedPositive(p.hidden, "hidden"));
  return absl::OkStatus();
}

absl::Status CanImplementArgmax(const ArgmaxParams& p) {
  LY_CHECK_OK_(NeedPtr(p.logits, "logits"));
  LY_CHECK_OK_(NeedPtr(p.out_ids, "out_ids"));
  LY_CHECK_OK_(NeedPositive(p.rows, "rows"));
  LY_CHECK_OK_(NeedPositive(p.vocab, "vocab"));
  if (p.row_stride != 0 && p.row_stride < p.vocab) {
    return absl::InvalidArgumentError("row_stride < vocab");
  }
  return absl::OkStatus();
}

}  // namespace lychee::cuda
