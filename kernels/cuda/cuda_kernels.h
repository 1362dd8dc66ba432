// SPDX-License-Identifier: Apache-2.0
// Small fused CUDA kernels of the decoder forward pass: RMSNorm (+ residual), per-head RMSNorm,
// RoPE fused with writing K/V into the paged cache, SiLU·mul, embedding gather, greedy sampling.
//
// bf16 storage, fp32 math. Like kernels/cpu: raw device pointers, sizes and strides only; no
// model, request or engine types; nothing allocates. Each family has one params struct; its
// launcher validates the params on the host (CanImplement*, also callable without a GPU), enqueues
// on `stream` and returns absl::Status; launches are asynchronous (errors of the kernel itself
// surface at the next synchronising call). Outputs may alias inputs only where a comment says so.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/host_device.h"

namespace lychee::cuda {

using bf16 = __nv_bfloat16;

// One layer of the paged KV pool in bf16 on the device: the GPU twin of kvcache/PagedKvView.
//   kv           [num_blocks][2 (K, V)][num_kv_heads][block_size][head_dim]
//   key_summary  [num_blocks][num_kv_heads][2 (min, max)][head_dim]
struct PagedKvBf16 {
  // Pointers.
  bf16* kv = nullptr;           // [num_blocks][2][num_kv_heads][block_size][head_dim]
  bf16* key_summary = nullptr;  // [num_blocks][num_kv_heads][2][head_dim]; may be null
  // Sizes.
  int64_t num_blocks = 0;
  int64_t num_kv_heads = 0;
  int64_t block_size = 0;  // tokens per block
  int64_t head_dim = 0;

  // Strides in elements.
  LY_HOST_DEVICE int64_t head_stride() const { return block_size * head_dim; }
  LY_HOST_DEVICE int64_t kv_stride() const {
    return num_kv_heads * head_stride();
  }  // K half → V half
  LY_HOST_DEVICE int64_t block_stride() const { return 2 * kv_stride(); }
  LY_HOST_DEVICE int64_t summary_block_stride() const { return num_kv_heads * 2 * head_dim; }
};

// ---- RMSNorm ----------------------------------------------------------------------------------

// Without a residual: out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight[:].
// With maybe_residual (the fused pre-norm add of a decoder layer):
//   residual[r, :] = bf16(x[r, :] + residual[r, :]);  out[r, :] = norm(residual[r, :]) * weight.
// The sum is rounded to bf16 before it is normalised, so `out` equals an unfused RmsNorm of the
// stored residual. `out` may alias `x`; `residual` must not alias `out`.
struct RmsNormParams {
  // Pointers.
  const bf16* x = nullptr;         // [rows, dim]
  bf16* maybe_residual = nullptr;  // [rows, dim] in/out
  const bf16* weight = nullptr;    // [dim]
  bf16* out = nullptr;             // [rows, dim]
  // Sizes.
  int64_t rows = 0;
  int64_t dim = 0;
  // Scalars.
  float eps = 1e-6f;
};
absl::Status CanImplementRmsNorm(const RmsNormParams& params);
[[nodiscard]] absl::Status RmsNorm(const RmsNormParams& params, cudaStream_t stream);

// Per-head RMSNorm in place (Qwen3's q_norm / k_norm): x viewed as [tokens, heads, head_dim] with
// `row_stride` elements between tokens (so q or k inside a fused QKV buffer), every head vector
// normalised with the shared weight[head_dim].
struct RmsNormPerHeadParams {
  // Pointers.
  bf16* x = nullptr;             // [tokens, row_stride] holding [heads, head_dim] at the front
  const bf16* weight = nullptr;  // [head_dim]
  // Sizes.
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;  // 1..1024 (one warp per head vector)
  // Strides.
  int64_t row_stride = 0;  // elements between tokens; 0 = heads * head_dim
  // Scalars.
  float eps = 1e-6f;
};
absl::Status CanImplementRmsNormPerHead(const RmsNormPerHeadParams& params);
[[nodiscard]] absl::Status RmsNormPerHead(const RmsNormPerHeadParams& params, cudaStream_t stream);

// ---- RoPE + paged K/V write -------------------------------------------------------------------

// For each token t at position positions[t]: rotates q[t] (num_heads heads) and k[t]
// (num_kv_heads heads) in place in HF's rotate-half convention with inv_freq (from
// cpu::ComputeRopeInvFreq, so every scaling the CPU path knows applies), then writes the rotated
// k[t] and v[t] into the paged cache at slot slot_mapping[t] = block_id * block_size + offset
// (a negative slot skips the token: padding). Angles are computed in double like the CPU path.
//
// When cache.key_summary is set, the summary (element-wise min and max of the keys in slots
// 0..offset) of every block this launch wrote is recomputed, which equals cpu::WritePagedKv's
// incremental rule as long as a block is filled in slot order by one sequence: by the token's
// own CTA when it is the only token of its block in the launch, else by a second kernel after
// the writes. It requires that the tokens of one block appear in this launch consecutively and
// in slot order (how a scheduler lays out each sequence's new tokens).
struct RopeKvWriteParams {
  // Pointers.
  bf16* q = nullptr;                      // [num_tokens, q_row_stride] ([num_heads, head_dim] used)
  bf16* k = nullptr;                      // [num_tokens, k_row_stride] ([num_kv_heads, head_dim])
  const bf16* v = nullptr;                // [num_tokens, v_row_stride] ([num_kv_heads, head_dim])
  const int32_t* positions = nullptr;     // [num_tokens]
  const int32_t* slot_mapping = nullptr;  // [num_tokens] block_id * block_size + offset, or < 0
  const float* inv_freq = nullptr;        // [head_dim / 2]
  PagedKvBf16 cache;                      // one layer; cache.head_dim == head_dim
  // Sizes.
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == cache.num_kv_heads
  int64_t head_dim = 0;      // even, <= 512
  // Strides in elements between tokens; 0 = contiguous (heads * head_dim).
  int64_t q_row_stride = 0;
  int64_t k_row_stride = 0;
  int64_t v_row_stride = 0;
  // No block receives two tokens of this launch (a decode step: one token per sequence). Then
  // the second kernel is not launched; if a block did receive several, its summary would go
  // stale (never a race: such blocks are left to the second kernel).
  bool tokens_in_distinct_blocks = false;
};
absl::Status CanImplementRopeKvWrite(const RopeKvWriteParams& params);
[[nodiscard]] absl::Status RopeKvWrite(const RopeKvWriteParams& params, cudaStream_t stream);

// ---- Element-wise -----------------------------------------------------------------------------

// out[r, i] = silu(gate[r, i]) * up[r, i] in fp32, rounded once. gate and up rows are
// `in_row_stride` elements apart (a fused gate_up GEMM output passes 2 * dim and up = gate + dim).
// `out` is contiguous [rows, dim] and may alias `gate` only when in_row_stride == dim.
struct SiluMulParams {
  // Pointers.
  const bf16* gate = nullptr;  // [rows, in_row_stride]
  const bf16* up = nullptr;    // [rows, in_row_stride]
  bf16* out = nullptr;         // [rows, dim]
  // Sizes.
  int64_t rows = 0;
  int64_t dim = 0;
  // Strides.
  int64_t in_row_stride = 0;  // 0 = dim
};
absl::Status CanImplementSiluMul(const SiluMulParams& params);
[[nodiscard]] absl::Status SiluMul(const SiluMulParams& params, cudaStream_t stream);

// out[t, :] = table[ids[t], :]. An id outside [0, vocab) writes a zero row (kernels cannot fail
// loudly; the caller validates ids on the host as the CPU path does).
struct EmbeddingGatherParams {
  // Pointers.
  const bf16* table = nullptr;   // [vocab, hidden]
  const int32_t* ids = nullptr;  // [tokens]
  bf16* out = nullptr;           // [tokens, hidden]
  // Sizes.
  int64_t tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
};
absl::Status CanImplementEmbeddingGather(const EmbeddingGatherParams& params);
[[nodiscard]] absl::Status EmbeddingGather(const EmbeddingGatherParams& params,
                                           cudaStream_t stream);

// ---- Sampling ---------------------------------------------------------------------------------

// Greedy sampling: out_ids[r] = argmax over logits[r, :]; ties go to the smallest index (like
// std::max_element), NaN never wins; a row of only NaN gives 0.
struct ArgmaxParams {
  // Pointers.
  const float* logits = nullptr;  // [rows, row_stride] ([vocab] used per row)
  int32_t* out_ids = nullptr;     // [rows]
  // Sizes.
  int64_t rows = 0;
  int64_t vocab = 0;
  // Strides.
  int64_t row_stride = 0;  // 0 = vocab
};
absl::Status CanImplementArgmax(const ArgmaxParams& params);
[[nodiscard]] absl::Status Argmax(const ArgmaxParams& params, cudaStream_t stream);

}  // namespace lychee::cuda
