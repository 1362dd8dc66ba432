// SPDX-License-Identifier: Apache-2.0
// The fp32 dot product every CPU attention kernel scores with. One definition on purpose: the
// contiguous and the paged attention must produce bit-identical scores for the same keys.
#pragma once

#include <cstdint>

namespace lychee::cpu {

// Four independent partial sums let the compiler vectorise without reassociating one chain.
inline float Dot(const float* a, const float* b, int64_t n) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace lychee::cpu
