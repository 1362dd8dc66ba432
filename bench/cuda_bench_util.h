// SPDX-License-Identifier: Apache-2.0
// Timing for the CUDA kernel benchmarks: CUDA events around each launch, L2 flushed before every
// sample unless warm (cold, the convention of KERNELS.md section 6.2), median of the samples.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"

namespace lychee::cuda {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `launch` (which enqueues work on `stream` and returns absl::Status) `iters` times after 3
// warm-up launches; returns the median in microseconds. `flush` (a buffer > 2x L2) is rewritten
// before each sample unless `warm`.
template <typename F>
absl::StatusOr<double> TimeLaunches(int iters, bool warm, cudaStream_t stream,
                                    DeviceBuffer<uint8_t>& flush, F&& launch) {
  cudaEvent_t start, stop;
  LY_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  LY_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> samples;
  absl::Status status;
  for (int i = 0; i < iters + 3 && status.ok(); ++i) {
    if (!warm)
      status = CudaStatus(cudaMemsetAsync(flush.get(), i & 0xff, flush.bytes(), stream),
                          "cudaMemsetAsync");
    if (status.ok()) status = CudaStatus(cudaEventRecord(start, stream), "cudaEventRecord");
    if (status.ok()) status = launch();
    if (status.ok()) status = CudaStatus(cudaEventRecord(stop, stream), "cudaEventRecord");
    if (status.ok()) status = CudaStatus(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    if (status.ok()) status = CudaStatus(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    if (status.ok() && i >= 3) samples.push_back(ms * 1000.0);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (!status.ok()) return status;
  return Median(samples);
}

// The end of every CUDA benchmark's main(): without a usable GPU it says so and exits 0 (CI builds
// them and runs them nowhere); otherwise runs `run(device, json)`, writes the JSON (also what a
// failed run measured before failing) and returns the exit code.
template <typename F>
int RunBenchmark(const char* name, const std::string& json_path, F&& run) {
  auto devices = ListDevices();
  if (!devices.ok()) {
    std::printf(
        "no GPU on this machine (%s); run %s on the GPU machine (scripts/gpu-check.sh prepare "
        "here, then there: LD_LIBRARY_PATH=.gpu/bundle/lib:/usr/local/cuda/lib64 "
        ".gpu/bundle/bin/%s)\n",
        std::string(devices.status().message()).c_str(), name, name);
    return 0;
  }
  nlohmann::json json;
  const absl::Status status = run(devices->front(), json);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << json.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "%s: cannot write %s\n", name, json_path.c_str());
      return 1;
    }
    std::printf("wrote %s\n", json_path.c_str());
  }
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, status.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace lychee::cuda
