// SPDX-License-Identifier: Apache-2.0
// bfloat16 on the host as raw bits (uint16_t): the upper half of an IEEE fp32. Conversions only:
// FloatToBf16 rounds to nearest even (NaN stays NaN), Bf16ToFloat is exact. The CPU KV cache's
// bf16 storage (kvcache/paged_kv_view.h) and its kernels use these; fp32 stays the arithmetic.
#pragma once

#include <cstdint>
#include <cstring>

namespace lychee {

inline uint16_t FloatToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float Bf16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// x rounded to bf16 precision, as fp32.
inline float RoundToBf16(float x) { return Bf16ToFloat(FloatToBf16(x)); }

}  // namespace lychee
