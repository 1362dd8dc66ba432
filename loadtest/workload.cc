// SPDX-License-Identifier: Apache-2.0
#include "loadtest/workload.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace lychee::loadtest {

absl::Status ValidateWorkload(const WorkloadOptions& o) {
  if (o.num_prompts < 1) {
    return absl::InvalidArgumentError(
        fmt::format("--num-prompts is {}, must be at least 1", o.num_prompts));
  }
  if (o.input_len < 1) {
    return absl::InvalidArgumentError(
        fmt::format("--input-len is {}, must be at least 1", o.input_len));
  }
  if (!(o.input_len_range >= 0.0 && o.input_len_range < 1.0)) {
    return absl::InvalidArgumentError(
        fmt::format("--input-len-range is {}, must be in [0, 1)", o.input_len_range));
  }
  if (o.output_len < 1) {
    return absl::InvalidArgumentError(
        fmt::format("--output-len is {}, must be at least 1", o.output_len));
  }
  if (!(o.shared_prefix_fraction >= 0.0 && o.shared_prefix_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        fmt::format("--shared-prefix-fraction is {}, must be in [0, 1]", o.shared_prefix_fraction));
  }
  if (o.vocab_size <= kMinTokenId) {
    return absl::InvalidArgumentError(
        fmt::format("--vocab-size is {}, must be above {}", o.vocab_size, kMinTokenId));
  }
  if (!(o.cancel_fraction >= 0.0 && o.cancel_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        fmt::format("--cancel-fraction is {}, must be in [0, 1]", o.cancel_fraction));
  }
  if (!(o.cancel_after_max_seconds >= 0.0) || std::isinf(o.cancel_after_max_seconds)) {
    return absl::InvalidArgumentError(
        fmt::format("--cancel-after-max is {}, must be a finite number of seconds",
                    o.cancel_after_max_seconds));
  }
  if (std::isnan(o.request_rate)) {
    return absl::InvalidArgumentError("--request-rate is not a number");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PlannedRequest>> BuildWorkload(const WorkloadOptions& o) {
  if (absl::Status st = ValidateWorkload(o); !st.ok()) return st;
  // One generator, consumed in a fixed order (prefix, then per request: length, tokens, gap), so
  // a seed names one workload regardless of the backend or the policy.
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> token(kMinTokenId, static_cast<int32_t>(o.vocab_size - 1));

  const int64_t max_len = static_cast<int64_t>(
      std::floor(static_cast<double>(o.input_len) * (1.0 + o.input_len_range)));
  const int64_t min_len =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(static_cast<double>(o.input_len) *
                                                          (1.0 - o.input_len_range))));
  // The shared prefix is a fraction of the nominal length, capped by the shortest prompt so that
  // every request really starts with all of it.
  const int64_t prefix_len =
      std::min(min_len, static_cast<int64_t>(std::llround(o.shared_prefix_fraction *
                                                          static_cast<double>(o.input_len))));
  std::vector<int32_t> prefix(static_cast<size_t>(prefix_len));
  for (int32_t& t : prefix) t = token(rng);

  std::uniform_int_distribution<int64_t> length(min_len, std::max(min_len, max_len));
  const bool all_at_once = !(o.request_rate > 0.0) || std::isinf(o.request_rate);
  std::exponential_distribution<double> gap(all_at_once ? 1.0 : o.request_rate);

  std::vector<PlannedRequest> out;
  out.reserve(static_cast<size_t>(o.num_prompts));
  double now = 0.0;
  for (int64_t i = 0; i < o.num_prompts; ++i) {
    PlannedRequest r;
    r.index = i;
    const int64_t len = o.input_len_range > 0.0 ? length(rng) : o.input_len;
    r.prompt = prefix;
    r.prompt.reserve(static_cast<size_t>(len));
    while (static_cast<int64_t>(r.prompt.size()) < len) r.prompt.push_back(token(rng));
    r.output_len = o.output_len;
    // vLLM's convention: the first request goes at once, later ones after exponential gaps.
    if (i > 0 && !all_at_once) now += gap(rng);
    r.arrival_seconds = now;
    out.push_back(std::move(r));
  }
  if (o.cancel_fraction > 0.0) {
    std::mt19937_64 cancel_rng(o.seed ^ 0x9e3779b97f4a7c15ull);
    std::bernoulli_distribution cancel(o.cancel_fraction);
    std::uniform_real_distribution<double> after(0.0, o.cancel_after_max_seconds);
    for (PlannedRequest& r : out) {
      const bool cancelled = cancel(cancel_rng);
      const double delay = after(cancel_rng);
      if (cancelled) r.cancel_after_seconds = delay;
    }
  }
  return out;
}

}  // namespace lychee::loadtest
