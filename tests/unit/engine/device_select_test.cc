// SPDX-License-Identifier: Apache-2.0
// --device resolution: cpu always works; auto picks the GPU exactly when one is usable; cuda
// without a usable GPU (CI) is a FailedPrecondition naming the device and the reason; unknown
// names are InvalidArgument.
#include "engine/device_select.h"

#include <gtest/gtest.h>

#include <string>

namespace lychee {
namespace {

TEST(DeviceSelectTest, CpuAndAutoAlwaysResolve) {
  auto cpu = ResolveDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cpu->backend, "cpu");
  auto automatic = ResolveDevice("auto");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  auto cuda = ResolveDevice("cuda");
  // auto takes the GPU exactly when an explicit cuda request would succeed.
  EXPECT_EQ(automatic->backend, cuda.ok() ? "cuda" : "cpu");
  if (cuda.ok()) {
    EXPECT_EQ(cuda->index, 0);
    EXPECT_NE(cuda->description.find("cuda:0"), std::string::npos) << cuda->description;
  } else {
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(cuda.status().message().find("device 'cuda'"), std::string::npos) << cuda.status();
  }
}

TEST(DeviceSelectTest, MissingGpuIndexIsNamed) {
  auto far = ResolveDevice("cuda:63");
  ASSERT_FALSE(far.ok());
  EXPECT_EQ(far.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(far.status().message().find("cuda:63"), std::string::npos) << far.status();
}

TEST(DeviceSelectTest, UnknownNamesAreInvalid) {
  for (const char* bad : {"tpu", "cuda:", "cuda:-1", "cuda:x", "", "CPU"}) {
    auto d = ResolveDevice(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace lychee
