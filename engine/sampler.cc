// SPDX-License-Identifier: Apache-2.0
// Sampler stages. Order: penalties (on raw logits, as vLLM) → greedy exit → temperature → top-k →
// top-p → min-p → softmax → one draw. Every stage treats NaN as -inf, and +inf logits share all
// the mass, so bad model output degrades to a defined token instead of UB.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lychee {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// vLLM's _SAMPLING_EPS: temperatures below this are greedy.
constexpr float kGreedyTemperature = 1e-5f;

bool Usable(float x) { return !std::isnan(x) && x != kNegInf; }

// Distinct in-range ids of `tokens`, sorted, with their counts.
void CountTokens(absl::Span<const int32_t> tokens, size_t vocab, std::vector<int32_t>* ids,
                 std::vector<int32_t>* counts) {
  std::vector<int32_t> sorted;
  sorted.reserve(tokens.size());
  for (int32_t t : tokens) {
    if (t >= 0 && static_cast<size_t>(t) < vocab) sorted.push_back(t);
  }
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j < sorted.size() && sorted[j] == sorted[i]) ++j;
    ids->push_back(sorted[i]);
    counts->push_back(static_cast<int32_t>(j - i));
    i = j;
  }
}

// Token ids with usable logits, best first (ties: lower id first).
std::vector<int32_t> SortedCandidates(absl::Span<const float> logits) {
  std::vector<int32_t> ids;
  ids.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (Usable(logits[i])) ids.push_back(static_cast<int32_t>(i));
  }
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  return ids;
}

// Softmax in place over `logits` into `probs`; returns false when no token is usable. +inf
// logits, if any, split the mass evenly.
bool Softmax(absl::Span<const float> logits, std::vector<float>* probs) {
  probs->assign(logits.size(), 0.0f);
  float max = kNegInf;
  for (float x : logits) {
    if (Usable(x)) max = std::max(max, x);
  }
  if (max == kNegInf) return false;
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!Usable(logits[i])) continue;
    const float p = std::isinf(max) ? (logits[i] == max ? 1.0f : 0.0f) : std::exp(logits[i] - max);
    (*probs)[i] = p;
    total += p;
  }
  for (float& p : *probs) p = static_cast<float>(p / total);
  return true;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  auto bad = [](const char* field, float value, const char* range) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling `", field, "` is ", value, ", must be ", range));
  };
  if (!(p.temperature >= 0 && std::isfinite(p.temperature))) {
    return bad("temperature", p.temperature, ">= 0");
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", p.top_p, "in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p", p.min_p, "in [0, 1]");
  if (!(p.repetition_penalty > 0 && std::isfinite(p.repetition_penalty))) {
    return bad("repetition_penalty", p.repetition_penalty, "> 0");
  }
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    return bad("presence_penalty", p.presence_penalty, "in [-2, 2]");
  }
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    return bad("frequency_penalty", p.frequency_penalty, "in [-2, 2]");
  }
  return absl::OkStatus();
}

void ApplyPenalties(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens, absl::Span<float> logits) {
  const size_t vocab = logits.size();
  if (params.repetition_penalty != 1.0f) {
    std::vector<int32_t> all(prompt_tokens.begin(), prompt_tokens.end());
    all.insert(all.end(), output_tokens.begin(), output_tokens.end());
    std::vector<int32_t> ids, counts;
    CountTokens(all, vocab, &ids, &counts);
    for (int32_t id : ids) {
      float& x = logits[id];
      x = x > 0 ? x / params.repetition_penalty : x * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    std::vector<int32_t> ids, counts;
    CountTokens(output_tokens, vocab, &ids, &counts);
    for (size_t i = 0; i < ids.size(); ++i) {
      logits[ids[i]] -=
          params.frequency_penalty * static_cast<float>(counts[i]) + params.presence_penalty;
    }
  }
}

void ApplyTopK(int top_k, absl::Span<float> logits) {
  if (top_k <= 0 || static_cast<size_t>(top_k) >= logits.size()) return;
  const std::vector<int32_t> order = SortedCandidates(logits);
  std::vector<bool> keep(logits.size(), false);
  for (size_t i = 0; i < order.size() && i < static_cast<size_t>(top_k); ++i) keep[order[i]] = true;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!keep[i]) logits[i] = kNegInf;
  }
}

void ApplyTopP(float top_p, absl::Span<float> logits) {
  if (!(top_p < 1.0f)) return;
  std::vector<float> probs;
  if (!Softmax(logits, &probs)) return;
  const std::vector<int32_t> order = SortedCandidates(logits);
  std::vector<bool> keep(logits.size(), false);
  double mass = 0;
  for (int32_t id : order) {
    keep[id] = true;
    mass += probs[id];
    if (mass >= top_p) break;
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!keep[i]) logits[i] = kNegInf;
  }
}

void ApplyMinP(float min_p, absl::Span<float> logits) {
  if (!(min_p > 0.0f)) return;
  std::vector<float> probs;
  if (!Softmax(logits, &probs)) return;
  const float threshold = min_p * *std::max_element(probs.begin(), probs.end());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (probs[i] < threshold || !Usable(logits[i])) logits[i] = kNegInf;
  }
}

int32_t Argmax(absl::Span<const float> logits) {
  int32_t best = 0;
  float best_value = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (std::isnan(best_value) || logits[i] > best_value) {
      best = static_cast<int32_t>(i);
      best_value = logits[i];
    }
  }
  return best;
}

std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, int k) {
  std::vector<TokenLogprob> out;
  if (k <= 0) return out;
  float max = kNegInf;
  for (float x : logits) {
    if (Usable(x)) max = std::max(max, x);
  }
  if (max == kNegInf || std::isinf(max)) {
    // Nothing finite to normalise against: report the best ids with -inf/0 honestly.
    for (int32_t id : SortedCandidates(logits)) {
      if (static_cast<int>(out.size()) == k) break;
      out.push_back({id, logits[id] == max ? 0.0f : kNegInf});
    }
    return out;
  }
  double sum = 0;
  for (float x : logits) {
    if (Usable(x)) sum += std::exp(static_cast<double>(x) - max);
  }
  const double log_z = max + std::log(sum);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (Usable(logits[i])) ids.push_back(static_cast<int32_t>(i));
  }
  const size_t n = std::min(ids.size(), static_cast<size_t>(k));
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  for (size_t i = 0; i < n; ++i) {
    out.push_back({ids[i], static_cast<float>(logits[ids[i]] - log_z)});
  }
  return out;
}

PenaltyTokens::PenaltyTokens(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                             absl::Span<const int32_t> output_tokens, int64_t vocab)
    : vocab_(vocab) {
  const bool repetition = params.repetition_penalty != 1.0f;
  active_ = repetition || params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f;
  if (!active_) return;
  const size_t v = static_cast<size_t>(std::max<int64_t>(vocab, 0));
  std::vector<int32_t> output_ids, output_counts;
  CountTokens(output_tokens, v, &output_ids, &output_counts);
  if (!repetition) {
    ids_ = std::move(output_ids);
    counts_ = std::move(output_counts);
    return;
  }
  std::vector<int32_t> prompt_ids, prompt_counts;
  CountTokens(prompt_tokens, v, &prompt_ids, &prompt_counts);
  // Merge: prompt-only ids count 0.
  size_t a = 0, b = 0;
  while (a < prompt_ids.size() || b < output_ids.size()) {
    if (b == output_ids.size() || (a < prompt_ids.size() && prompt_ids[a] < output_ids[b])) {
      ids_.push_back(prompt_ids[a++]);
      counts_.push_back(0);
    } else {
      if (a < prompt_ids.size() && prompt_ids[a] == output_ids[b]) ++a;
      ids_.push_back(output_ids[b]);
      counts_.push_back(output_counts[b++]);
    }
  }
}

void PenaltyTokens::Append(int32_t token) {
  if (!active_ || token < 0 || token >= vocab_) return;
  const auto it = std::lower_bound(ids_.begin(), ids_.end(), token);
  const size_t at = static_cast<size_t>(it - ids_.begin());
  if (it != ids_.end() && *it == token) {
    ++counts_[at];
    return;
  }
  ids_.insert(it, token);
  counts_.insert(counts_.begin() + static_cast<std::ptrdiff_t>(at), 1);
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}

double Sampler::NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> previous_tokens) {
  return Sample(logits, {}, previous_tokens);
}

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> prompt_tokens,
                        absl::Span<const int32_t> output_tokens) {
  // Draw first, unconditionally: the RNG advances once per step whatever the logits hold, so a
  // request's stream never depends on earlier steps' values or on greedy fallbacks.
  const double u = NextUniform();
  ApplyPenalties(params_, prompt_tokens, output_tokens, logits);
  if (params_.temperature < kGreedyTemperature || params_.top_k == 1) return Argmax(logits);
  const float inv_t = 1.0f / params_.temperature;
  for (float& x : logits) {
    x = std::isnan(x) ? kNegInf : x * inv_t;
  }
  ApplyTopK(params_.top_k, logits);
  ApplyTopP(params_.top_p, logits);
  ApplyMinP(params_.min_p, logits);
  if (!Softmax(logits, &probs_)) return Argmax(logits);
  // Inverse CDF; float rounding can leave the sum just below u, so fall back to the last token
  // with mass.
  const double target = u * std::accumulate(probs_.begin(), probs_.end(), 0.0);
  double cumulative = 0;
  int32_t last = -1;
  for (size_t i = 0; i < probs_.size(); ++i) {
    if (probs_[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    cumulative += probs_[i];
    if (cumulative > target) return last;
  }
  return last >= 0 ? last : Argmax(logits);
}

}  // namespace lychee
