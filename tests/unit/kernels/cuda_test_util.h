// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the CUDA kernel tests: the GPU gate (skip with a clear message where there is
// no usable GPU), status assertions, and bf16-rounded random inputs.
//
// Every GPU test starts with LY_SKIP_WITHOUT_GPU(); tests of host logic (CanImplement*, plans)
// do not, so CI without a GPU still runs them.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "tests/util/numeric.h"

namespace lychee::cuda::testing {

// Empty when a device that can run sm_90a code is usable; otherwise why not.
inline std::string NoGpuReason() {
  auto devices = ListDevices();
  if (!devices.ok()) return std::string(devices.status().message());
  const DeviceInfo& d = devices->front();
  if (d.compute_major != 9) {
    return "device 0 is " + d.name + " (sm_" + std::to_string(d.compute_major) +
           std::to_string(d.compute_minor) + "), this binary carries " + CompiledArchitectures() +
           " code only";
  }
  return "";
}

inline int NumSms() {
  auto devices = ListDevices();
  return devices.ok() ? devices->front().num_sms : 0;
}

}  // namespace lychee::cuda::testing

#define LY_SKIP_WITHOUT_GPU()                                           \
  do {                                                                  \
    const std::string ly_why_ = ::lychee::cuda::testing::NoGpuReason(); \
    if (!ly_why_.empty()) {                                             \
      GTEST_SKIP() << "no GPU on this machine (" << ly_why_             \
                   << "); run scripts/gpu-check.sh on the GPU machine"; \
    }                                                                   \
  } while (0)

#define LY_ASSERT_OK(expr)                                    \
  do {                                                        \
    const ::absl::Status ly_assert_status_ = (expr);          \
    ASSERT_TRUE(ly_assert_status_.ok()) << ly_assert_status_; \
  } while (0)

#define LY_EXPECT_OK(expr)                                    \
  do {                                                        \
    const ::absl::Status ly_expect_status_ = (expr);          \
    EXPECT_TRUE(ly_expect_status_.ok()) << ly_expect_status_; \
  } while (0)

namespace lychee::cuda::testing {

// Uniform random values in [lo, hi) already rounded to bf16, so the CPU reference sees exactly
// the GPU's inputs and only the arithmetic differs.
inline std::vector<float> RandomBf16Values(std::mt19937_64& rng, size_t n, float lo = -1.0f,
                                           float hi = 1.0f) {
  std::vector<float> v = ::lychee::testing::RandomVector(rng, n, lo, hi);
  RoundToBf16InPlace(v);
  return v;
}

// Base fixture: a fresh seed per test (LYCHEE_TEST_SEED replays one), recorded and printed.
class CudaKernelTest : public ::testing::Test {
 protected:
  CudaKernelTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override {
    RecordProperty("seed", std::to_string(seed_));
    std::printf("seed %llu (replay: LYCHEE_TEST_SEED=%llu)\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_));
  }
  std::string SeedNote() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }

  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace lychee::cuda::testing
