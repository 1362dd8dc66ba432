// SPDX-License-Identifier: Apache-2.0
// A thread-per-lane emulation of the CUDA primitives that kernels/cuda/select_search.cuh uses, so
// that its device code runs unchanged on the CPU (select_search_host_test): one std::thread per
// CUDA thread of one block, __syncthreads a block-wide std::barrier, each warp primitive an
// exchange through the warp's table between two warp-wide barriers. Every lane of a warp must
// call a warp primitive (the code under test only calls them warp-uniformly; anything else would
// hang, which the test's ctest timeout turns into a failure). Shared memory is whatever object the
// test hands the block; atomicAdd and atomicOr are std::atomic_ref operations. Slow (512 threads a
// block) but exact. Include it before the device code, in a test only: it defines CUDA's names.
#pragma once

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __device__
#define __forceinline__ inline

struct SimtThreadIndex {
  unsigned x = 0;
};
inline thread_local SimtThreadIndex threadIdx;

namespace simt {

struct Warp {
  std::barrier<> barrier{32};
  uint64_t lanes[32] = {};
};

struct Block {
  explicit Block(int threads) : barrier(threads), warps(static_cast<size_t>(threads / 32)) {}
  std::barrier<> barrier;
  std::vector<Warp> warps;
};

inline thread_local Block* current_block = nullptr;

// Runs `body` as one block of `threads` (a multiple of 32) CUDA threads.
inline void RunBlock(int threads, const std::function<void()>& body) {
  Block block(threads);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&block, &body, t] {
      threadIdx.x = static_cast<unsigned>(t);
      current_block = &block;
      body();
    });
  }
  for (std::thread& t : pool) t.join();
}

template <typename T>
T FromBits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// Every lane of the caller's warp publishes `value`; each gets read(lanes, its lane).
template <typename T, typename Read>
auto Exchange(T value, Read read) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  Warp& warp = current_block->warps[threadIdx.x / 32];
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const int lane = static_cast<int>(threadIdx.x % 32);
  warp.lanes[lane] = bits;
  warp.barrier.arrive_and_wait();
  const auto result = read(warp.lanes, lane);
  warp.barrier.arrive_and_wait();  // the table is read before the next exchange writes it
  return result;
}

template <typename T, typename Op>
T Reduce(T value, Op op) {
  return Exchange(value, [op](const uint64_t* lanes, int) {
    T acc = FromBits<T>(lanes[0]);
    for (int l = 1; l < 32; ++l) acc = op(acc, FromBits<T>(lanes[l]));
    return acc;
  });
}

}  // namespace simt

inline void __syncthreads() { simt::current_block->barrier.arrive_and_wait(); }

inline unsigned __ballot_sync(unsigned, bool predicate) {
  return simt::Exchange(static_cast<uint32_t>(predicate), [](const uint64_t* lanes, int) {
    unsigned mask = 0;
    for (int l = 0; l < 32; ++l) mask |= static_cast<unsigned>(lanes[l] & 1u) << l;
    return mask;
  });
}
template <typename T>
T __shfl_sync(unsigned, T value, int source) {
  return simt::Exchange(value, [source](const uint64_t* lanes, int) {
    return simt::FromBits<T>(lanes[source & 31]);
  });
}
template <typename T>
T __shfl_up_sync(unsigned, T value, unsigned delta) {
  return simt::Exchange(value, [delta, value](const uint64_t* lanes, int lane) {
    return lane >= static_cast<int>(delta)
               ? simt::FromBits<T>(lanes[lane - static_cast<int>(delta)])
               : value;
  });
}
template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask) {
  return simt::Exchange(value, [mask](const uint64_t* lanes, int lane) {
    return simt::FromBits<T>(lanes[(lane ^ mask) & 31]);
  });
}
inline unsigned __reduce_add_sync(unsigned, unsigned value) {
  return simt::Reduce(value, [](unsigned a, unsigned b) { return a + b; });
}
inline int __reduce_add_sync(unsigned, int value) {
  return simt::Reduce(value, [](int a, int b) { return a + b; });
}
inline unsigned __reduce_max_sync(unsigned, unsigned value) {
  return simt::Reduce(value, [](unsigned a, unsigned b) { return a > b ? a : b; });
}
inline unsigned __reduce_min_sync(unsigned, unsigned value) {
  return simt::Reduce(value, [](unsigned a, unsigned b) { return a < b ? a : b; });
}
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int atomicAdd(int* address, int value) {
  return std::atomic_ref<int>(*address).fetch_add(value);
}
inline unsigned atomicOr(unsigned* address, unsigned value) {
  return std::atomic_ref<unsigned>(*address).fetch_or(value);
}
// CUDA's device min/max overloads, for the types the code under test mixes.
template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
T max(T a, T b) {
  return a < b ? b : a;
}
