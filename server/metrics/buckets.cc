// SPDX-License-Identifier: Apache-2.0
// Bucket-boundary helpers (see buckets.h).
#include "server/metrics/buckets.h"

#include "common/logging.h"

namespace lychee::metrics {

std::vector<double> OneTwoFiveBuckets(int64_t max_value) {
  std::vector<double> buckets;
  for (int64_t exponent = 1;; exponent *= 10) {
    for (int64_t mantissa : {1, 2, 5}) {
      const int64_t value = mantissa * exponent;
      if (value > max_value) {
        if (buckets.empty()) buckets.push_back(1);
        return buckets;
      }
      buckets.push_back(static_cast<double>(value));
    }
  }
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  LY_CHECK(start > 0 && factor > 1 && count > 0) << "bad exponential buckets";
  std::vector<double> buckets;
  double value = start;
  for (int i = 0; i < count; ++i, value *= factor) buckets.push_back(value);
  return buckets;
}

}  // namespace lychee::metrics
