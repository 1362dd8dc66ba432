// SPDX-License-Identifier: Apache-2.0
// Kernels the CUDA model runner needs beside the fused ops of cuda_kernels.h: bias addition
// (Qwen2's q/k/v bias, o_proj bias), random bf16 fills (synthetic models measured at real size
// without a download), and a generic paged attention for the shapes the tensor-core kernels do
// not cover (head_dim other than 64/128, sliding windows): correct for any head_dim <= 256, slow
// (one warp per query head, keys one at a time), meant for small models and tests.
//
// Same conventions as cuda_kernels.h: params structs, host-side CanImplement*, asynchronous
// launches on `stream`, nothing allocates.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {

// x[r, i] = bf16(x[r, i] + bias[i]) for i < dim, rows `row_stride` elements apart.
struct AddBiasParams {
  bf16* x = nullptr;           // [rows, row_stride]
  const bf16* bias = nullptr;  // [dim]
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t row_stride = 0;  // 0 = dim
};
absl::Status CanImplementAddBias(const AddBiasParams& params);
[[nodiscard]] absl::Status AddBias(const AddBiasParams& params, cudaStream_t stream);

// out[i] = bf16(lo + (hi - lo) * u_i) with u_i uniform in [0, 1) from a counter-based hash of
// (seed, i): the same seed gives the same tensor on every GPU and launch configuration.
struct FillUniformParams {
  bf16* out = nullptr;
  int64_t count = 0;
  uint64_t seed = 0;
  float lo = -1.0f;
  float hi = 1.0f;
};
absl::Status CanImplementFillUniform(const FillUniformParams& params);
[[nodiscard]] absl::Status FillUniform(const FillUniformParams& params, cudaStream_t stream);

// Query row r (position row_position[r] of the sequence whose block table is row row_seq[r] of
// block_tables) attends, per head h, the keys at positions [first, row_position[r]] with first =
// max(0, position - sliding_window + 1) when sliding_window > 0, else 0; GQA head h reads kv head
// h / (num_heads / num_kv_heads). fp32 online softmax; out is bf16.
struct GenericPagedAttentionParams {
  // Pointers.
  const bf16* q = nullptr;                // [rows, q_row_stride] ([num_heads, head_dim] used)
  PagedKvBf16 cache;                      // one layer
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  const int32_t* row_seq = nullptr;       // [rows]
  const int32_t* row_position = nullptr;  // [rows]
  bf16* out = nullptr;                    // [rows, num_heads * head_dim]
  // Sizes.
  int64_t rows = 0;
  int64_t num_heads = 0;
  int64_t max_blocks_per_seq = 0;
  // Strides.
  int64_t q_row_stride = 0;  // 0 = num_heads * head_dim
  // Scalars.
  int64_t sliding_window = 0;
  float scale = 1.0f;
};
absl::Status CanImplementGenericPagedAttention(const GenericPagedAttentionParams& params);
[[nodiscard]] absl::Status GenericPagedAttention(const GenericPagedAttentionParams& params,
                                                 cudaStream_t stream);

}  // namespace lychee::cuda
