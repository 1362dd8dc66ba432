// SPDX-License-Identifier: Apache-2.0
// Rotary position embedding in HF's rotate-half layout, with the inverse-frequency schedules of
// transformers' `modeling_rope_utils` (default, linear, llama3).
#include <cmath>
#include <numbers>

#include "kernels/cpu/cpu_kernels.h"

namespace lychee::cpu {

void ComputeRopeInvFreq(const RopeParams& params, float* inv_freq) {
  const int64_t half = params.head_dim / 2;
  const double dim = static_cast<double>(params.head_dim);
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1 / base^(arange(0, dim, 2) / dim).
    double f = 1.0 / std::pow(params.theta, static_cast<double>(2 * i) / dim);
    switch (params.scaling) {
      case RopeScalingKind::kNone:
        break;
      case RopeScalingKind::kLinear:
        // Dividing the frequency is dividing the position by the factor.
        f /= params.factor;
        break;
      case RopeScalingKind::kLlama3: {
        const double old_len = params.original_max_position_embeddings;
        const double low_freq_wavelen = old_len / params.low_freq_factor;
        const double high_freq_wavelen = old_len / params.high_freq_factor;
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen > low_freq_wavelen) {
          f /= params.factor;  // long wavelengths: fully interpolated
        } else if (wavelen >= high_freq_wavelen) {
          // Medium band: blend the interpolated and original frequency smoothly.
          const double smooth = (old_len / wavelen - params.low_freq_factor) /
                                (params.high_freq_factor - params.low_freq_factor);
          f = (1.0 - smooth) * f / params.factor + smooth * f;
        }  // short wavelengths (< high_freq_wavelen) stay as they are
        break;
      }
    }
    inv_freq[i] = static_cast<float>(f);
  }
}

void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t x_row_stride,
               const int64_t* positions, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = x + t * x_row_stride;
    const double pos = static_cast<double>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      // One angle per (token, frequency), shared by all heads of the row.
      const double angle = pos * static_cast<double>(inv_freq[i]);
      const float c = static_cast<float>(std::cos(angle));
      const float s = static_cast<float>(std::sin(angle));
      for (int64_t h = 0; h < heads; ++h) {
        float* v = row + h * head_dim;
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace lychee::cpu
