// SPDX-License-Identifier: Apache-2.0
// Which backend a `--device` value means on this machine and in this build.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace lychee {

struct ResolvedDevice {
  std::string backend;      // "cpu" or "cuda"
  int index = 0;            // CUDA device index (cuda only)
  std::string description;  // "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)"
};

// "auto": CUDA device 0 when this build has the CUDA backend and a device of compute capability
// 9.x is visible, else the CPU. "cpu": the CPU. "cuda" or "cuda:N": that GPU, or
// FailedPrecondition naming the device and why it cannot be used (no CUDA backend in this build,
// no driver or device, wrong compute capability). Anything else: InvalidArgument.
absl::StatusOr<ResolvedDevice> ResolveDevice(const std::string& requested);

}  // namespace lychee
