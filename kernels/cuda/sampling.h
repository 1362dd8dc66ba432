// SPDX-License-Identifier: Apache-2.0
// Next-token sampling on the GPU with the CPU sampler's semantics (engine/sampler.h): for a batch
// of fp32 logit rows, per-row penalties (repetition over prompt and output, presence and
// frequency over output, vLLM's rules), greedy argmax, or temperature → top-k → top-p → min-p →
// one seeded draw; plus the raw log-softmax of the chosen token and the top-N (N <= 20) raw
// logprobs, as engine/live_request.cc reports them.
//
// One kernel launch, one thread block per row, sort-free:
//   - top-k and the top-N logprobs: a radix select (8 bits per pass over a block-wide histogram in
//     shared memory) of the k-th largest 64-bit key (value, then lower id first: the CPU's order,
//     ties at a cut keep the lower id), stopping early once the cut bucket is taken whole;
//   - top-p: the same radix walk over histograms of probability mass (fp64), which finds the
//     smallest prefix of the order with mass >= top_p; ties at the cut resolved by id;
//   - min-p: an element-wise test against min_p * p_max, exactly the CPU's expression;
//   - the draw: Gumbel-max (exponential race) over the kept tokens with a Philox4x32-10
//   counter-based
//     RNG keyed by the row's seed and counted by (step, token id). The random number of a token
//     depends only on (seed, step, token), so a row gives the same token on the same device
//     whatever else is in the batch. It is a different RNG from the CPU sampler's mt19937_64:
//     seeded streams agree in distribution, not token for token, across backends.
// Exact agreement with the CPU: greedy ids, penalised logits and processed logits (bit for bit;
// no contraction into FMAs), the kept sets of the filters (up to fp rounding of probability
// sums exactly at a top-p or min-p boundary). Logprobs agree within fp32 rounding.
//
// Conventions as the other kernels (cuda_kernels.h): raw device pointers, one params struct,
// CanImplementSample on the host (no GPU needed), nothing allocated, nothing synchronised, so the
// launch can be captured into a CUDA graph: per-row parameters and penalty lists are read on the
// device, and `penalty_capacity` (not the step's count) sizes the workspace.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/host_device.h"

namespace lychee::cuda {

inline constexpr int kMaxTopLogprobs = 20;
// vLLM's _SAMPLING_EPS, as engine/sampler.cc: temperatures below this are greedy.
inline constexpr float kGreedyTemperature = 1e-5f;

// One row's parameters (a device array of them; 64 bytes each). Semantics and ranges of
// lychee::SamplingParams (engine/sampler.h); the launcher does not re-validate them.
struct SamplingRow {
  float temperature = 0.0f;  // < kGreedyTemperature, or top_k == 1: greedy argmax
  float top_p = 1.0f;        // (0, 1]; 1: off
  float min_p = 0.0f;        // [0, 1]; 0: off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_k = 0;          // <= 0: off
  int32_t top_logprobs = 0;   // [0, kMaxTopLogprobs]: top-N raw logprobs into out_top
  int32_t want_logprob = 0;   // nonzero: out_logprobs gets the chosen token's raw logprob
  int32_t penalty_begin = 0;  // this row's entries of penalty_ids/penalty_counts:
  int32_t penalty_count = 0;  //   [begin, begin + count), 0 when no penalty applies
  int32_t reserved = 0;
  uint64_t seed = 0;  // the request's seed
  uint64_t step = 0;  // the request's draw counter (tokens generated so far)
};
static_assert(sizeof(SamplingRow) == 64, "SamplingRow is uploaded as a packed array");

// One of the top-N logprobs: token -1 marks an unused slot (fewer usable logits than N).
struct TopLogprobEntry {
  int32_t token;
  float logprob;
};

// Penalty entries: per row, the DISTINCT token ids the penalties touch (ids of prompt ∪ output
// when repetition_penalty != 1, else of the output only) with their counts among the output
// tokens (0: prompt only); the repetition penalty applies to every entry, presence and
// frequency to entries with count > 0 (engine/sampler.h's PenaltyTokens builds them). Ids outside
// [0, vocab) are ignored, like the CPU; a duplicated id within a row is a caller bug (two
// threads would write it).
struct SampleParams {
  // Pointers.
  float* logits = nullptr;                  // [rows, row_stride]: raw logits in; see below
  const SamplingRow* row_params = nullptr;  // [rows]
  const int32_t* penalty_ids = nullptr;     // [penalty_capacity]; may be null when capacity 0
  const int32_t* penalty_counts = nullptr;  // [penalty_capacity]
  int32_t* out_tokens = nullptr;            // [rows]
  float* out_logprobs = nullptr;            // [rows]; 0 for rows without want_logprob
  TopLogprobEntry* out_top = nullptr;       // [rows, kMaxTopLogprobs], best first
  void* workspace = nullptr;                // SampleWorkspaceBytes(penalty_capacity) bytes
  size_t workspace_bytes = 0;
  // Sizes.
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t penalty_capacity = 0;  // entries the penalty arrays (and workspace) hold
  // Strides.
  int64_t row_stride = 0;  // 0 = vocab
  // Flags.
  // false: `logits` comes back with the penalties applied (what the CPU's ApplyPenalties
  // leaves). true: also with the CPU Sampler::Sample's processed logits, i.e. for random rows
  // temperature-scaled values where kept and -inf where a filter removed the token (one extra
  // pass; for tests).
  bool write_processed = false;
};

// Workspace for the raw logits of penalised tokens (the chosen token's logprob is of the raw
// row); 16 bytes at least so the pointer check is uniform.
size_t SampleWorkspaceBytes(int64_t penalty_capacity);

absl::Status CanImplementSample(const SampleParams& params);
[[nodiscard]] absl::Status Sample(const SampleParams& params, cudaStream_t stream);

// ---- The random numbers (host and device) -------------------------------------------------------

// Philox4x32-10 (Salmon et al., Random123), the generator behind curand's Philox: four 32-bit
// words from a 128-bit counter and a 64-bit key.
struct Philox4 {
  uint32_t v[4];
};
LY_HOST_DEVICE inline Philox4 Philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                            uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 53-bit uniform in [0, 1), scaled by 2^53, that token `token` of draw `step` of seed `seed`
// uses (the kernel turns it into an Exp(1) variable as -log1p(-u)). Key = seed, counter =
// (token / 2, step): one Philox block serves two neighbouring tokens.
LY_HOST_DEVICE inline uint64_t SampleUniformBits(uint64_t seed, uint64_t step, uint32_t token) {
  const Philox4 r =
      Philox4x32_10(token >> 1, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0u,
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint32_t hi = (token & 1u) != 0 ? r.v[2] : r.v[0];
  const uint32_t lo = (token & 1u) != 0 ? r.v[3] : r.v[1];
  return ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
}

}  // namespace lychee::cuda
