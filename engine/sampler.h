// SPDX-License-Identifier: Apache-2.0
// Next-token sampling for one request: penalties, temperature, top-k, top-p, min-p, then a draw
// from a per-request seeded RNG.
//
// Ownership: one Sampler per request, owned by whoever owns the request's state (the engine
// thread); it is not thread-safe. Determinism: each Sample() call consumes exactly one draw of
// the request's own RNG, so the same seed gives the same tokens whatever else is in the batch.
// The filter stages are free functions so tests (and the GPU sampler, kernels/cuda/sampling.h,
// which has the same semantics) can check each alone.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace lychee {

struct SamplingParams {
  float temperature = 0.0f;         // 0 (below 1e-5) → greedy argmax, no filters
  int top_k = 0;                    // <= 0: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // > 0; 1: off (prompt and output tokens)
  float presence_penalty = 0.0f;    // [-2, 2] (output tokens)
  float frequency_penalty = 0.0f;   // [-2, 2] (output tokens)
  uint64_t seed = 0;
  bool has_seed = false;  // false: the engine picks a seed for the request
};

// InvalidArgument naming the offending field; for front ends to answer 400 early.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// vLLM's penalties, in place. Repetition: tokens seen in prompt or output get a positive logit
// divided by, a negative one multiplied by, the penalty. Presence: subtract presence_penalty once
// per distinct output token. Frequency: subtract frequency_penalty × its output count. Token ids
// outside [0, logits.size()) are ignored.
void ApplyPenalties(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens, absl::Span<float> logits);

// Filters: removed tokens become -inf. Ties at a cut keep the lower token id. NaN counts as -inf.
void ApplyTopK(int top_k, absl::Span<float> logits);
// Keeps the smallest prefix of tokens, in descending probability, whose mass is >= top_p.
void ApplyTopP(float top_p, absl::Span<float> logits);
void ApplyMinP(float min_p, absl::Span<float> logits);

// Index of the largest logit (lowest id on ties; NaN ignored; 0 when no logit is a number).
int32_t Argmax(absl::Span<const float> logits);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};
// The k most likely tokens under log-softmax(logits), best first. Call on the raw logits,
// before Sample() modifies them, to report what the model said (as OpenAI and vLLM do).
std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, int k);

// Top logprobs a request may ask for per token (OpenAI's and vLLM's limit).
inline constexpr int kMaxTopLogprobs = 20;

// The distinct tokens a request's penalties touch, kept up to date one generated token at a time,
// for samplers that apply the penalties elsewhere (the GPU: ModelRunner::ExecuteAndSample): the
// ids of prompt ∪ output when repetition_penalty != 1, else of the output only (none when no
// penalty is on), ascending, each with its count among the output tokens (0: prompt only). What
// ApplyPenalties derives from the token lists, without re-sorting the prompt every step.
class PenaltyTokens {
 public:
  PenaltyTokens(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                absl::Span<const int32_t> output_tokens, int64_t vocab);

  // A token was generated.
  void Append(int32_t token);

  absl::Span<const int32_t> ids() const { return ids_; }
  absl::Span<const int32_t> counts() const { return counts_; }

 private:
  bool active_ = false;
  int64_t vocab_ = 0;
  std::vector<int32_t> ids_, counts_;
};

// One logit row's sampling inputs for a sampler that runs elsewhere (a device; see
// ModelRunner::ExecuteAndSample). The spans are the request's, valid until the step returns.
struct DeviceSamplingInput {
  SamplingParams params;     // temperature 0: greedy (rows without a live request use the default)
  uint64_t seed = 0;         // the request's seed (params.seed, else the engine's for the request)
  int64_t step = 0;          // tokens generated so far: with the seed, which random numbers to use
  int32_t top_logprobs = 0;  // [0, kMaxTopLogprobs]; > 0 also asks for the chosen token's logprob
  absl::Span<const int32_t> penalty_ids;     // PenaltyTokens::ids() (empty: no penalty)
  absl::Span<const int32_t> penalty_counts;  // PenaltyTokens::counts()
};

class Sampler {
 public:
  // `seed` seeds this request's RNG: pass params.seed when params.has_seed, else an engine seed.
  Sampler(const SamplingParams& params, uint64_t seed);

  // Picks the next token. `logits` (one per vocabulary entry) is overwritten with the processed
  // logits. This overload counts every previous token as output (all penalties apply to all).
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> previous_tokens);
  // vLLM's split: repetition penalty sees prompt and output, presence/frequency only output.
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> prompt_tokens,
                 absl::Span<const int32_t> output_tokens);

  const SamplingParams& params() const { return params_; }

 private:
  // Uniform in [0, 1) from 53 random bits: fixed across standard libraries, unlike
  // std::uniform_real_distribution.
  double NextUniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> probs_;  // scratch, reused across steps
};

}  // namespace lychee
