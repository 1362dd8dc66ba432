// SPDX-License-Identifier: Apache-2.0
// The CPU kernels' two process-wide settings: how many threads they run on and which vector
// instructions they use.
//
// Threads: kernels/cpu runs its parallel loops (attention tiles, GEMM partitions) on one team of
// NumThreads() threads (ParallelFor, thread_pool.h), and calls OpenBLAS single-threaded inside
// them: OpenBLAS's own pool is set to one thread on first use, so two pools never compete for the
// cores (nor spin between each other's regions), and idle team threads sleep.
//
// Vector ISA: one binary for every x86-64 CPU. The vector code is compiled for AVX2+FMA and for
// AVX-512 (F, VL) through function target attributes, never -march, and runs only when the CPU
// reports those features (__builtin_cpu_supports); otherwise the portable scalar code runs. Tests
// may force a lower ISA to cover each path on a machine that has the higher ones.
#pragma once

#include <optional>

namespace lychee::cpu {

// Ordered: a forced ISA is clamped to the detected one by this order.
enum class VectorIsa { kScalar, kAvx2, kAvx512 };

// The best ISA this CPU supports (cpuid, read once).
VectorIsa DetectedIsa();
// The ISA kernels use now: DetectedIsa() unless overridden.
VectorIsa ActiveIsa();
// Forces an ISA (clamped to DetectedIsa()); nullopt restores detection. For tests and benchmarks;
// not to be called while kernels run.
void SetIsaOverride(std::optional<VectorIsa> isa);
const char* IsaName(VectorIsa isa);

// Threads of the kernels' parallel loops. The default is OPENBLAS_NUM_THREADS when set (the knob
// this backend always had), else every core. Values < 1
// restore the default. Also sets OpenBLAS to one thread. Not to be called while kernels run.
int NumThreads();
void SetNumThreads(int num_threads);

// The OpenBLAS kernel set in use ("Cooperlake", "Haswell", ...): OpenBLAS picks it from the CPU
// at load time unless OPENBLAS_CORETYPE names one. Benchmarks print it (the GEMMs' speed depends
// on it: 1.45x between Haswell's and Cooperlake's kernels on a Zen 5 prefill).
const char* BlasCoreName();

// Keeps OpenBLAS's own pool at one thread (NumThreads and SetNumThreads call it). A count set
// since through openblas_set_num_threads(n > 1), as older callers do, is adopted as the team's
// NumThreads() and OpenBLAS set back to one.
void EnsureBlasSingleThreaded();

}  // namespace lychee::cpu
