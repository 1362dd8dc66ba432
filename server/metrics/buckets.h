// SPDX-License-Identifier: Apache-2.0
// Bucket-boundary helpers for histograms. Pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace lychee::metrics {

// vLLM's 1-2-5 series for token counts: 1, 2, 5, 10, 20, 50, ... up to and including the last
// value <= max_value (at least {1}).
std::vector<double> OneTwoFiveBuckets(int64_t max_value);

// start, start*factor, ... (count values). start > 0, factor > 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

}  // namespace lychee::metrics
