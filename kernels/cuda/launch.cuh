// SPDX-License-Identifier: Apache-2.0
// Kernel launches with programmatic dependent launch (PDL, sm_90+). A kernel launched with
// `programmatic` set may start while the kernel before it in the stream is still running: its
// CTAs are placed once every CTA of that kernel has called AllowDependentGrids() (or exited), and
// wait in WaitForPriorGrids() until it has finished and its writes are visible. Between two of
// our kernels in a decode step that hides the second one's launch and CTA placement behind the
// first one's last wave (a few µs each at batch 1, where the selection chain is latency-bound).
//
// The contract every kernel launched this way keeps: each CTA calls WaitForPriorGrids() before
// it touches global memory that an earlier kernel of the stream writes or reads (the only reads
// allowed before it are of data the host uploaded before the step), and before it exits. So a
// kernel that has finished implies every kernel before it has finished, and dependences on
// kernels further back hold. Both calls are no-ops when the kernel was launched without the
// attribute. Device-side helpers; include from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace lychee::cuda {

// Blocks until the kernels this one depends on have finished and their writes are visible.
__device__ __forceinline__ void WaitForPriorGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next kernel of the stream (when launched programmatically) be placed: called early by
// every CTA, it is placed during this kernel's last wave.
__device__ __forceinline__ void AllowDependentGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when `programmatic`.
// Legal during stream capture (the graph gets a programmatic edge).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchKernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, bool programmatic, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1] = {};
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = programmatic ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace lychee::cuda
