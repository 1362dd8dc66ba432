// SPDX-License-Identifier: Apache-2.0
// Thread count and ISA selection of kernels/cpu (cpu_runtime.h).
#include "kernels/cpu/cpu_runtime.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace lychee::cpu {
namespace {

std::atomic<int> g_isa_override{-1};
std::atomic<int> g_threads{0};  // 0: not resolved yet

int DefaultThreads() {
  if (const char* env = std::getenv("OPENBLAS_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

const char* BlasCoreName() { return openblas_get_corename(); }

VectorIsa DetectedIsa() {
  static const VectorIsa isa = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!avx2) return VectorIsa::kScalar;
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    return avx512 ? VectorIsa::kAvx512 : VectorIsa::kAvx2;
  }();
  return isa;
}

VectorIsa ActiveIsa() {
  const int forced = g_isa_override.load(std::memory_order_relaxed);
  const VectorIsa detected = DetectedIsa();
  if (forced < 0) return detected;
  return static_cast<int>(detected) < forced ? detected : static_cast<VectorIsa>(forced);
}

void SetIsaOverride(std::optional<VectorIsa> isa) {
  g_isa_override.store(isa ? static_cast<int>(*isa) : -1, std::memory_order_relaxed);
}

const char* IsaName(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::kScalar:
      return "scalar";
    case VectorIsa::kAvx2:
      return "avx2+fma";
    case VectorIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

void EnsureBlasSingleThreaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  // A caller that still sizes OpenBLAS's pool (openblas_set_num_threads(n)) meant n threads:
  // they become the team's, and OpenBLAS goes back to one (calling it with n threads from inside
  // the team would oversubscribe the cores).
  const int blas_threads = openblas_get_num_threads();
  if (blas_threads != 1) {
    g_threads.store(std::max(1, blas_threads), std::memory_order_relaxed);
    openblas_set_num_threads(1);
  }
}

int NumThreads() {
  EnsureBlasSingleThreaded();
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = DefaultThreads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void SetNumThreads(int num_threads) {
  EnsureBlasSingleThreaded();
  g_threads.store(num_threads > 0 ? num_threads : DefaultThreads(), std::memory_order_relaxed);
}

}  // namespace lychee::cpu
