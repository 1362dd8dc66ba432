// SPDX-License-Identifier: Apache-2.0
// CUDA device discovery: which GPUs exist and what they offer. The engine uses it to pick its
// backend (`--device auto` chooses CUDA when a device of compute capability >= 9.0 exists), and
// GPU tests use it to skip with a clear message on machines without one (CI).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int num_sms = 0;
  size_t total_memory_bytes = 0;
  size_t free_memory_bytes = 0;
};

// Every visible device. Unavailable (with the CUDA runtime's reason) when there is no driver or
// no device; never aborts.
absl::StatusOr<std::vector<DeviceInfo>> ListDevices();

// The compute capabilities this binary carries code for, e.g. "sm_90a".
std::string CompiledArchitectures();

}  // namespace lychee::cuda
