// SPDX-License-Identifier: Apache-2.0
// fp32 CPU kernels for the decoder forward pass: the reference backend and the laptop path.
//
// Every kernel takes raw pointers and sizes, row-major and contiguous unless a stride says
// otherwise; none knows about models, requests or the engine, and none allocates: callers own
// every buffer (including scratch). Kernels are synchronous and run on the calling thread (Gemm
// additionally uses OpenBLAS's own thread pool). Outputs may alias inputs only where a comment
// says so.
#pragma once

#include <cstdint>

namespace lychee::cpu {

// ---- GEMM -------------------------------------------------------------------------------------

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ maybe_bias[n] on every row).
// `w` is a linear layer's weight as Hugging Face stores it: [out_features, in_features].
// Runs on OpenBLAS (sgemv when m == 1). `y` must not alias `x` or `w`.
void Gemm(const float* x, const float* w, const float* maybe_bias, float* y, int64_t m, int64_t n,
          int64_t k);

// ---- Normalisation ----------------------------------------------------------------------------

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight[:] for r in [0, rows).
// `out` may alias `x`. Per-head RMSNorm (Qwen3 q/k norm) is this kernel over rows * heads rows
// of head_dim: see RmsNormPerHead.
void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps);

// x viewed as [tokens, heads, head_dim]: normalises each head vector with the shared `weight`
// [head_dim]. In place.
inline void RmsNormPerHead(float* x, const float* weight, int64_t tokens, int64_t heads,
                           int64_t head_dim, float eps) {
  RmsNorm(x, weight, x, tokens * heads, head_dim, eps);
}

// ---- Rotary position embedding ----------------------------------------------------------------

enum class RopeScalingKind { kNone, kLinear, kLlama3 };

struct RopeParams {
  int64_t head_dim = 0;  // rotary dimension (the whole head here); even
  double theta = 10000.0;
  RopeScalingKind scaling = RopeScalingKind::kNone;
  double factor = 1.0;  // kLinear: positions are divided by it; kLlama3: low-frequency divisor
  // kLlama3 only (HF `_compute_llama3_parameters`).
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

// inv_freq[head_dim / 2] for `params`, as Hugging Face computes it (including the scaling).
void ComputeRopeInvFreq(const RopeParams& params, float* inv_freq);

// Rotates x viewed as [tokens, heads, head_dim] in place, token t at position positions[t], in
// HF's rotate-half convention: element i pairs with i + head_dim/2 (i < head_dim/2), angle
// positions[t] * inv_freq[i]. `x_row_stride` is the distance between tokens in floats
// (heads * head_dim when contiguous).
void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t x_row_stride,
               const int64_t* positions, const float* inv_freq);

// ---- Attention --------------------------------------------------------------------------------

// Causal grouped-query attention of `num_queries` new tokens over a contiguous KV cache that
// already holds their own keys and values. Query i sits at position query_start + i and reads
// keys j with max(0, pos - sliding_window + 1) <= j <= pos (no lower bound when sliding_window is
// 0). Query head h reads kv head h / (num_heads / num_kv_heads). Softmax in fp32 with the max
// subtracted; scores scaled by `scale` (1/sqrt(head_dim) for every model we load).
struct AttentionParams {
  // Pointers.
  const float* q = nullptr;        // [num_queries, num_heads, head_dim]
  const float* k_cache = nullptr;  // [>= query_start + num_queries, num_kv_heads, head_dim]
  const float* v_cache = nullptr;  // [>= query_start + num_queries, num_kv_heads, head_dim]
  float* out = nullptr;            // [num_queries, num_heads, head_dim]; must not alias q
  float* scratch = nullptr;        // [query_start + num_queries] scores
  // Sizes.
  int64_t num_queries = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t query_start = 0;  // cache position of query 0 (tokens already in the cache before it)
  // Scalars.
  int64_t sliding_window = 0;  // 0 = unlimited
  float scale = 1.0f;
};
void Attention(const AttentionParams& params);

// ---- Element-wise -----------------------------------------------------------------------------

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. `out` may alias either.
void SiluMul(const float* gate, const float* up, float* out, int64_t n);

// x[i] += y[i] (the residual add).
void AddInPlace(float* x, const float* y, int64_t n);

// out[t, :] = table[ids[t], :] for t in [0, tokens). Ids must lie in [0, vocab); the caller checks.
void EmbeddingGather(const float* table, const int32_t* ids, float* out, int64_t tokens,
                     int64_t hidden);

}  // namespace lychee::cpu
