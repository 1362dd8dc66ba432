// SPDX-License-Identifier: Apache-2.0
// The synthetic workload of lychee-load: prompts as token ids (so no tokenizer is needed and the
// input length is exact), output lengths, and arrival times, all drawn from one seeded generator
// so that the same flags give the same requests — which is what lets a run compare two policies
// on identical traffic (--baseline-policy) and two runs compare at all.
//
// Input lengths follow vLLM's random dataset: input_len × U[1 − range, 1 + range]. A shared
// prefix (a fraction of each prompt, the same tokens for every request) exercises the prefix
// cache. Arrivals are a Poisson process at `request_rate` (exponential gaps), or all at time 0
// when the rate is infinite; closed-loop runs ignore them. Pure functions; no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lychee::loadtest {

struct WorkloadOptions {
  int64_t num_prompts = 16;
  int64_t input_len = 1024;
  double input_len_range = 0.0;  // [0, 1): lengths uniform in input_len × [1 − r, 1 + r]
  int64_t output_len = 128;
  double shared_prefix_fraction = 0.0;  // [0, 1]: leading share of every prompt that is common
  int64_t vocab_size = 0;               // token ids are drawn from [kMinTokenId, vocab_size)
  double request_rate = 0.0;            // requests/s; <= 0 or inf: all arrive at once
  uint64_t seed = 0;
  // This share of the requests is cancelled by the client (gRPC: the call is cancelled; HTTP:
  // the connection is closed) after a delay uniform in [0, cancel_after_max_seconds]. Drawn
  // from a generator of its own, so the prompts and arrivals of a seed do not change.
  double cancel_fraction = 0.0;
  double cancel_after_max_seconds = 5.0;
};

// Ids below this are left out of prompts: models put BOS/EOS/UNK/pad there (Llama 2: 0..2).
inline constexpr int32_t kMinTokenId = 3;

struct PlannedRequest {
  int64_t index = 0;
  std::vector<int32_t> prompt;
  int64_t output_len = 0;
  double arrival_seconds = 0.0;        // since the start of the run (open loop)
  double cancel_after_seconds = -1.0;  // >= 0: the client gives up this long after sending
};

// InvalidArgument naming the flag when an option is out of range.
absl::Status ValidateWorkload(const WorkloadOptions& options);

// The requests in arrival order. Deterministic in `options` (including the seed).
absl::StatusOr<std::vector<PlannedRequest>> BuildWorkload(const WorkloadOptions& options);

}  // namespace lychee::loadtest
