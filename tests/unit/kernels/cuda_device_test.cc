// SPDX-License-Identifier: Apache-2.0
// Device discovery never aborts: on a machine without a GPU (CI) it reports Unavailable and the
// GPU tests skip; on the GPU machine it describes the device this binary was built for.
#include "kernels/cuda/cuda_device.h"

#include <gtest/gtest.h>

#include <cstdio>

namespace lychee::cuda {
namespace {

TEST(CudaDeviceTest, ListsDevicesOrSaysWhyNot) {
  auto devices = ListDevices();
  if (!devices.ok()) {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(devices.status().message().empty());
    GTEST_SKIP() << "no GPU on this machine (" << devices.status().message()
                 << "); GPU tests run on the GPU machine via scripts/gpu-check.sh";
  }
  ASSERT_FALSE(devices->empty());
  for (const DeviceInfo& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.num_sms, 0);
    EXPECT_GT(d.total_memory_bytes, d.free_memory_bytes);
    std::printf("device %d: %s sm_%d%d, %d SMs, %.1f GiB (%.1f free), binary built for %s\n",
                d.index, d.name.c_str(), d.compute_major, d.compute_minor, d.num_sms,
                d.total_memory_bytes / 1073741824.0, d.free_memory_bytes / 1073741824.0,
                CompiledArchitectures().c_str());
  }
}

}  // namespace
}  // namespace lychee::cuda
