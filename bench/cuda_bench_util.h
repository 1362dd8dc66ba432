// SPDX-License-Identifier: Apache-2.0
// Timing for the CUDA kernel benchmarks: CUDA events around each launch, L2 flushed before every
// sample unless warm (cold, the convention of KERNELS.md section 6.2), median of the samples.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"

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

}  // namespace lychee::cuda
