// SPDX-License-Identifier: Apache-2.0
// Test helpers for numeric comparisons: fresh random inputs, NaN poisoning, relative L2 error.
//
// Seeds come from std::random_device so each run explores new inputs; tests print the seed
// (SeedTrace) so a failure can be replayed with LYCHEE_TEST_SEED=<seed>.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace lychee::testing {

// The seed for this test: LYCHEE_TEST_SEED when set, otherwise a fresh random one.
inline uint64_t TestSeed() {
  if (const char* env = std::getenv("LYCHEE_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline std::vector<float> RandomVector(std::mt19937_64& rng, size_t n, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> NanVector(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// ||got - want||₂ / ||want||₂ (absolute when want is zero); NaN anywhere in `got` gives +inf.
template <typename A, typename B>
double RelativeL2(const A* got, const B* want, size_t n) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]);
    const double w = static_cast<double>(want[i]);
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

template <typename A, typename B>
double RelativeL2(const std::vector<A>& got, const std::vector<B>& want) {
  return RelativeL2(got.data(), want.data(), want.size());
}

}  // namespace lychee::testing
