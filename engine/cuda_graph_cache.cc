// SPDX-License-Identifier: Apache-2.0
#include "engine/cuda_graph_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace lychee {

int64_t DecodeBatchBucket(int64_t batch) {
  if (batch <= 1) return 1;
  if (batch <= 2) return 2;
  if (batch <= 4) return 4;
  return (batch + 7) / 8 * 8;
}

int64_t DecodeContextBucket(int64_t max_context, int64_t cap) {
  int64_t bucket = 1024;
  while (bucket < max_context) bucket *= 2;
  return std::min(bucket, cap);
}

CudaGraphCache::~CudaGraphCache() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
}

absl::Status CudaGraphCache::Launch(const Key& key, cudaStream_t stream,
                                    const std::function<absl::Status()>& enqueue) {
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    if (graphs_.size() >= max_graphs_) {
      return absl::ResourceExhaustedError(absl::StrCat("more than ", max_graphs_, " CUDA graphs"));
    }
    LY_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = enqueue();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);  // ends it even on error
    if (!enqueued.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return enqueued;
    }
    LY_CUDA_RETURN_IF_ERROR(ended);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    LY_CUDA_RETURN_IF_ERROR(instantiated);
    it = graphs_.emplace(key, exec).first;
  }
  LY_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream));
  ++replays_;
  return absl::OkStatus();
}

}  // namespace lychee
