// SPDX-License-Identifier: Apache-2.0
#include "engine/device_select.h"

#include <cstdlib>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#if defined(LYCHEE_HAVE_CUDA)
#include "kernels/cuda/cuda_device.h"
#endif

namespace lychee {
namespace {

ResolvedDevice Cpu() { return {"cpu", 0, "cpu"}; }

// Empty when device `index` can run this build's CUDA code; otherwise why not.
std::string CudaUnusableReason(int index, ResolvedDevice* out) {
#if defined(LYCHEE_HAVE_CUDA)
  auto devices = cuda::ListDevices();
  if (!devices.ok()) return std::string(devices.status().message());
  if (index < 0 || index >= static_cast<int>(devices->size())) {
    return absl::StrCat("only ", devices->size(), " CUDA device(s) are visible");
  }
  const cuda::DeviceInfo& d = (*devices)[static_cast<size_t>(index)];
  if (d.compute_major != 9) {
    return absl::StrCat(d.name, " is sm_", d.compute_major, d.compute_minor,
                        "; this build carries ", cuda::CompiledArchitectures(), " code only");
  }
  *out = {"cuda", index, absl::StrCat("cuda:", index, " (", d.name, ")")};
  return "";
#else
  (void)index;
  (void)out;
  return "this build has no CUDA backend (configure with the cuda preset)";
#endif
}

}  // namespace

absl::StatusOr<ResolvedDevice> ResolveDevice(const std::string& requested) {
  if (requested == "cpu") return Cpu();
  if (requested == "auto") {
    ResolvedDevice gpu;
    return CudaUnusableReason(0, &gpu).empty() ? gpu : Cpu();
  }
  int index = 0;
  if (requested != "cuda") {
    if (!absl::StartsWith(requested, "cuda:") || !absl::SimpleAtoi(requested.substr(5), &index) ||
        index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("device is '", requested, "'; use auto, cpu, cuda or cuda:N"));
    }
  }
  ResolvedDevice gpu;
  const std::string why = CudaUnusableReason(index, &gpu);
  if (!why.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", requested, "' cannot be used: ", why));
  }
  return gpu;
}

}  // namespace lychee
