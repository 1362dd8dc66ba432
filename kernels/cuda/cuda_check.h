// SPDX-License-Identifier: Apache-2.0
// CUDA error handling as absl::Status (STYLE habit 10), a small RAII device buffer for tests and
// benchmarks, and host-side bf16 conversions (round-to-nearest-even) for building test inputs.
//
// Host-only header: compiles in .cc files (C++20, g++) and in .cu files (C++17, nvcc). Launchers
// use LY_CUDA_RETURN_IF_ERROR after every runtime call; nothing here aborts or exits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/bf16.h"

namespace lychee::cuda {

using bf16 = __nv_bfloat16;

// Status of a CUDA runtime result: OK, or Internal naming the call and the runtime's reason.
inline absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

}  // namespace lychee::cuda

// Returns an Internal status from the enclosing function when a CUDA runtime call fails.
#define LY_CUDA_RETURN_IF_ERROR(call)                         \
  do {                                                        \
    const cudaError_t ly_cuda_err_ = (call);                  \
    if (ly_cuda_err_ != cudaSuccess) {                        \
      return ::lychee::cuda::CudaStatus(ly_cuda_err_, #call); \
    }                                                         \
  } while (0)

// Returns a non-OK absl::Status from the enclosing function (usable in .cu files, which are C++17
// and therefore cannot include common/status.h with its C++20 attributes).
#define LY_CUDA_RETURN_IF_NOT_OK(expr)                 \
  do {                                                 \
    const ::absl::Status ly_cuda_status_ = (expr);     \
    if (!ly_cuda_status_.ok()) return ly_cuda_status_; \
  } while (0)

namespace lychee::cuda {

// ---- bf16 on the host -------------------------------------------------------------------------

// The bits' conversions are common/bf16.h's (the CPU KV cache uses the same ones): ties to even,
// NaN stays a quiet NaN.
inline uint16_t FloatToBf16Bits(float f) { return ::lychee::FloatToBf16(f); }
inline float Bf16BitsToFloat(uint16_t b) { return ::lychee::Bf16ToFloat(b); }
using ::lychee::RoundToBf16;  // `f` rounded to the nearest bf16, as a float

inline bf16 FloatToBf16(float f) {
  __nv_bfloat16_raw raw;
  raw.x = FloatToBf16Bits(f);
  return bf16(raw);
}

inline float Bf16ToFloat(bf16 b) { return Bf16BitsToFloat(static_cast<__nv_bfloat16_raw>(b).x); }

inline std::vector<bf16> ToBf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16(v[i]);
  return out;
}

inline std::vector<float> ToFloat(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToFloat(v[i]);
  return out;
}

// Rounds every element through bf16 in place (so a CPU reference sees the GPU's inputs exactly).
inline void RoundToBf16InPlace(std::vector<float>& v) {
  for (float& x : v) x = RoundToBf16(x);
}

// ---- DeviceBuffer -----------------------------------------------------------------------------

// Owns `count` elements of T in device memory (cudaMalloc / cudaFree). For tests and benchmarks;
// kernels and launchers never allocate. Move-only. Allocation failure is a Status from Allocate.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }

  [[nodiscard]] absl::Status Allocate(size_t count) {
    Reset();
    if (count == 0) return absl::OkStatus();
    void* p = nullptr;
    LY_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, count * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    count_ = count;
    return absl::OkStatus();
  }

  // Allocates host.size() elements and copies them in (synchronous).
  [[nodiscard]] absl::Status Upload(const std::vector<T>& host) {
    LY_CUDA_RETURN_IF_NOT_OK(Allocate(host.size()));
    if (host.empty()) return absl::OkStatus();
    LY_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }

  // Copies host.size() == size() elements into the existing allocation (synchronous); the device
  // address stays the same, so a captured CUDA graph sees the new contents.
  [[nodiscard]] absl::Status Write(const std::vector<T>& host) {
    if (host.size() != count_) {
      return absl::InvalidArgumentError(
          absl::StrCat("DeviceBuffer::Write: ", host.size(), " elements into ", count_));
    }
    if (count_ == 0) return absl::OkStatus();
    LY_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }

  // Copies the whole buffer out (synchronous; waits for the device).
  [[nodiscard]] absl::Status Download(std::vector<T>& host) const {
    host.resize(count_);
    if (count_ == 0) return absl::OkStatus();
    LY_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    LY_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return absl::OkStatus();
  }

  // Fills every byte with `byte` (0xff makes float and bf16 buffers NaN: poisoning).
  [[nodiscard]] absl::Status FillBytes(int byte) {
    if (count_ == 0) return absl::OkStatus();
    LY_CUDA_RETURN_IF_ERROR(cudaMemset(ptr_, byte, count_ * sizeof(T)));
    return absl::OkStatus();
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void Reset() {
    if (ptr_ != nullptr) cudaFree(ptr_);  // errors here would only repeat an earlier one
    ptr_ = nullptr;
    count_ = 0;
  }

  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace lychee::cuda
