// SPDX-License-Identifier: Apache-2.0
// A minimal reader for NumPy .npy files (format 1.0/2.0/3.0, C order, little-endian f4/f8/i4/i8),
// enough for the reference logits that tests compare against.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::testing {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<double> data;  // every element converted to double, C order
  int64_t NumElements() const;
};

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

}  // namespace lychee::testing
