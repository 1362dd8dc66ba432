// SPDX-License-Identifier: Apache-2.0
#include <cuda_runtime.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_device.h"

namespace lychee::cuda {

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", cudaGetErrorString(err)));
  }
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (const cudaError_t err = cudaGetDeviceProperties(&prop, i); err != cudaSuccess) {
      return absl::UnavailableError(
          absl::StrCat("cudaGetDeviceProperties(", i, "): ", cudaGetErrorString(err)));
    }
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.num_sms = prop.multiProcessorCount;
    info.total_memory_bytes = prop.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
        info.free_memory_bytes = free_bytes;
      }
    }
    devices.push_back(std::move(info));
  }
  if (devices.empty()) return absl::UnavailableError("no CUDA device is visible");
  return devices;
}

std::string CompiledArchitectures() {
#ifdef LYCHEE_CUDA_ARCHS_STRING
  return LYCHEE_CUDA_ARCHS_STRING;
#else
  return "unknown";
#endif
}

}  // namespace lychee::cuda
