// SPDX-License-Identifier: Apache-2.0
// The host's reading of GrowPrhsToBound (kernels/cuda/select_search.cuh), in double: PrHS's
// accuracy control in advance as the GPU runs it, for the tests that check the device code
// (select_search_host_test under the CPU emulation, cuda_block_select_test on a GPU).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace lychee::cuda {

struct PrhsGrowOutcome {
  std::vector<uint8_t> read;  // [n] the final set (every block on a fallback)
  bool fallback = false;      // the set would have passed the cap: it reads everything
  // The least |δ_pre - max_mass| / max_mass over the decisions taken: the device sums in float
  // (another order), so a margin below ~1e-4 may be decided the other way there.
  double margin = std::numeric_limits<double>::infinity();
};

// `read`: the row's set before the control ([n], 1 = read); box[b]: the kv head's box bound;
// lower[h * lower_stride + b]: query head h's lower bound (h < group); blocks hold min(bs, ctx -
// b * bs) keys. While U / (U + min_h L_h) > max_mass, the unread blocks of the highest box bound
// (ties to the earlier block, by the device's order of float bits) join, max(1, |set| / 4) at a
// time, until the set would pass cap_blocks (a fallback).
inline PrhsGrowOutcome PrhsGrowReference(std::vector<uint8_t> read, const float* box,
                                         const float* lower, int64_t lower_stride, int64_t group,
                                         int64_t bs, int64_t ctx, double max_mass,
                                         int64_t cap_blocks) {
  const int64_t n = static_cast<int64_t>(read.size());
  const auto ordered = [](float f) {  // OrderedBits
    const uint32_t u = std::bit_cast<uint32_t>(f);
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
  };
  const auto tokens = [&](int64_t b) { return static_cast<double>(std::min(bs, ctx - b * bs)); };
  PrhsGrowOutcome out;
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < n; ++b) top = std::max(top, static_cast<double>(box[b]));
  int64_t count = std::accumulate(read.begin(), read.end(), int64_t{0});
  while (n > 0 && top != -std::numeric_limits<double>::infinity() && count < n) {
    double unread = 0.0;
    for (int64_t b = 0; b < n; ++b) {
      if (read[b] == 0) unread += tokens(b) * std::exp(box[b] - top);
    }
    if (unread == 0.0) break;
    double least_read = std::numeric_limits<double>::infinity();
    for (int64_t h = 0; h < group; ++h) {
      double sum = 0.0;
      for (int64_t b = 0; b < n; ++b) {
        if (read[b] != 0) sum += tokens(b) * std::exp(lower[h * lower_stride + b] - top);
      }
      least_read = std::min(least_read, sum);
    }
    const double bound = unread / (unread + least_read);
    out.margin = std::min(out.margin, std::fabs(bound - max_mass) / std::max(max_mass, 1e-30));
    if (bound <= max_mass) break;
    const int64_t step = std::max<int64_t>(1, count / 4);
    if (count + step > cap_blocks) {
      out.fallback = true;
      std::fill(read.begin(), read.end(), uint8_t{1});
      break;
    }
    std::vector<int64_t> order;
    for (int64_t b = 0; b < n; ++b) {
      if (read[b] == 0) order.push_back(b);
    }
    const int64_t take = std::min<int64_t>(step, static_cast<int64_t>(order.size()));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ordered(box[a]) > ordered(box[b]); });
    for (int64_t i = 0; i < take; ++i) read[order[i]] = 1;
    count += take;
  }
  out.read = std::move(read);
  return out;
}

}  // namespace lychee::cuda
