// SPDX-License-Identifier: Apache-2.0
// CudaWeights: a decoder's weights on the GPU in bf16, in the layout CudaModelRunner runs
// (q/k/v fused into one [q_dim + 2 kv_dim, hidden] matrix, gate/up into [2 inter, hidden]).
//
// Load streams a safetensors checkpoint tensor by tensor from the memory-mapped shards through
// one bf16 staging buffer (the size of the largest tensor), so an 8B model never has a full host
// copy; F32/F16/BF16 sources are converted on the host (round to nearest even). Synthetic fills
// every tensor on the device with seeded uniform values scaled like an initialised model. Both
// check each tensor's shape against the config and name the tensor in errors. One device
// allocation holds everything; the object owns it.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace lychee {

struct CudaLayerWeights {
  const __nv_bfloat16* input_norm = nullptr;           // [hidden]
  const __nv_bfloat16* w_qkv = nullptr;                // [q_dim + 2 kv_dim, hidden]
  const __nv_bfloat16* b_qkv = nullptr;                // [q_dim + 2 kv_dim] or null
  const __nv_bfloat16* q_norm = nullptr;               // [head_dim] or null (Qwen3)
  const __nv_bfloat16* k_norm = nullptr;               // [head_dim] or null
  const __nv_bfloat16* wo = nullptr;                   // [hidden, q_dim]
  const __nv_bfloat16* bo = nullptr;                   // [hidden] or null
  const __nv_bfloat16* post_attention_norm = nullptr;  // [hidden]
  const __nv_bfloat16* w_gate_up = nullptr;            // [2 inter_p, hidden]
  const __nv_bfloat16* w_down = nullptr;               // [hidden, inter_p]
};

// The MLP width as stored: intermediate_size rounded up to a multiple of 8, so that every matrix
// row is 16-byte aligned for the tensor cores (stories260K has 172). The padding rows of gate/up
// and columns of down are zero, so silu(0) * 0 = 0 adds nothing: the result is exact.
int64_t CudaPaddedIntermediate(const ModelConfig& config);

class CudaWeights {
 public:
  static absl::StatusOr<std::unique_ptr<CudaWeights>> Load(const SafetensorsArchive& archive,
                                                           const ModelConfig& config);
  static absl::StatusOr<std::unique_ptr<CudaWeights>> Synthetic(const ModelConfig& config,
                                                                uint64_t seed);

  const __nv_bfloat16* embed_tokens() const { return embed_tokens_; }  // [vocab, hidden]
  const __nv_bfloat16* final_norm() const { return final_norm_; }      // [hidden]
  const __nv_bfloat16* lm_head() const { return lm_head_; }  // [vocab, hidden] (may be embed)
  const std::vector<CudaLayerWeights>& layers() const { return layers_; }
  size_t bytes() const { return storage_.bytes(); }

 public:
  struct Builder;  // the layout pass (defined in the .cc)

 private:
  CudaWeights() = default;
  void Bind(const Builder& builder);  // sets the pointers from the layout's offsets

  cuda::DeviceBuffer<__nv_bfloat16> storage_;
  const __nv_bfloat16* embed_tokens_ = nullptr;
  const __nv_bfloat16* final_norm_ = nullptr;
  const __nv_bfloat16* lm_head_ = nullptr;
  std::vector<CudaLayerWeights> layers_;
};

}  // namespace lychee
