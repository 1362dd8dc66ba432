// SPDX-License-Identifier: Apache-2.0
// Every runtime -> compile-time switch of the CUDA kernels in one place (STYLE habit 5). Each
// dispatcher calls `f` with a std::integral_constant for a supported value and returns
// InvalidArgument ("unsupported X: value") for the rest, so a combination that CanImplement let
// through but nothing instantiated is an error, not a silent fallback.
#pragma once

#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace lychee::cuda {

// head_dim of the decode attention kernels: 64, 128.
template <typename F>
absl::Status DispatchHeadDim(int64_t head_dim, F&& f) {
  switch (head_dim) {
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported head_dim: ", head_dim));
  }
}

// GQA group size rounded up to the kernel's compile-time capacity: 1, 2, 4, 8. A group of 3 runs
// the 4-wide kernel with one idle (zero) query slot; cheaper in build time than one instance per
// group size.
template <typename F>
absl::Status DispatchGroupCapacity(int64_t group, F&& f) {
  if (group == 1) return f(std::integral_constant<int, 1>{});
  if (group == 2) return f(std::integral_constant<int, 2>{});
  if (group >= 3 && group <= 4) return f(std::integral_constant<int, 4>{});
  if (group >= 5 && group <= 8) return f(std::integral_constant<int, 8>{});
  return absl::InvalidArgumentError(absl::StrCat("unsupported GQA group size: ", group));
}

}  // namespace lychee::cuda
