// SPDX-License-Identifier: Apache-2.0
// KvPool: the storage of the paged KV cache (every layer's K/V blocks and key summaries: the
// min/max box and the centroid/radius ball of paged_kv_view.h), and the arithmetic that sizes
// it from a memory budget.
//
// Ownership: the engine creates one KvPool next to the KvCacheManager (which only does the block
// bookkeeping) and lends views of it to the model runner. Contents are written and read only on
// the engine thread, by kernels through PagedKvView; the pool itself never changes its size or
// moves its buffers after construction, so views stay valid for its lifetime.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "kvcache/paged_kv_view.h"

namespace lychee {

// Model-side shape of the cache: what one block stores.
struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 16;         // tokens per block
  KvDtype dtype = KvDtype::kFp32;  // K/V pages (summaries stay fp32)
};

// "fp32" / "bf16", and back (InvalidArgument for any other name).
const char* KvDtypeName(KvDtype dtype);
[[nodiscard]] absl::StatusOr<KvDtype> ParseKvDtype(std::string_view name);

// Bytes one block takes across all layers: K and V (2 × kv_heads × block_size × head_dim fp32,
// or bf16) plus the key summaries (box: kv_heads × 2 × head_dim fp32; ball: kv_heads × (head_dim +
// 1) fp32), times the layers.
int64_t KvBytesPerBlock(const KvCacheShape& shape);

// Bytes of the blocks that hold `num_tokens` tokens (rounded up to whole blocks): the budget
// for, e.g., max_num_seqs full contexts when no kv_cache_bytes is configured.
int64_t KvBytesForTokens(const KvCacheShape& shape, int64_t num_tokens);

// The KV budget on the CPU when none is configured: kDefaultCpuKvMemoryFraction of the RAM this
// process may use (HostMemoryBytes). Pools allocate lazily zeroed memory, so a budget that is
// never filled costs address space, not RAM.
inline constexpr double kDefaultCpuKvMemoryFraction = 0.25;
int64_t DefaultCpuKvCacheBytes();

// The CPU KV page dtype when none is configured ("auto"): bf16 for contexts beyond
// kLongCpuContext tokens (half the bytes each decode step reads, half the memory; every policy
// runs on it), fp32 (the reference) up to it.
inline constexpr int64_t kLongCpuContext = 8192;
inline KvDtype DefaultCpuKvDtype(int64_t context_tokens) {
  return context_tokens > kLongCpuContext ? KvDtype::kBf16 : KvDtype::kFp32;
}

// How many blocks `kv_cache_bytes` holds: floor(kv_cache_bytes / KvBytesPerBlock(shape)).
// InvalidArgument when the shape is degenerate or the budget holds no block at all.
[[nodiscard]] absl::StatusOr<int64_t> NumKvBlocksForBudget(const KvCacheShape& shape,
                                                           int64_t kv_cache_bytes);

class KvPool {
 public:
  // Allocates every layer up front, zeroed (calloc: large pools get fresh zero pages from the
  // kernel, so untouched blocks take no RAM): nothing is allocated afterwards.
  KvPool(const KvCacheShape& shape, int64_t num_blocks);

  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_layers() const { return shape_.num_layers; }
  int64_t bytes() const;

  // The POD view of `layer` that kernels take.
  PagedKvView View(int64_t layer);

  // Convenience accessors (same as View(layer).K(...)): [block_size][head_dim] runs; K/V of an
  // fp32 pool only.
  float* KPtr(int64_t layer, int64_t block, int64_t kv_head) {
    return View(layer).K(block, kv_head);
  }
  float* VPtr(int64_t layer, int64_t block, int64_t kv_head) {
    return View(layer).V(block, kv_head);
  }
  float* KeyMinPtr(int64_t layer, int64_t block, int64_t kv_head) {
    return View(layer).KeyMin(block, kv_head);
  }
  float* KeyMaxPtr(int64_t layer, int64_t block, int64_t kv_head) {
    return View(layer).KeyMax(block, kv_head);
  }

 private:
  int64_t LayerKvFloats() const;
  int64_t LayerSummaryFloats() const;
  int64_t LayerBallFloats() const;

  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<float[], FreeDeleter>;
  static void* ZeroedBytes(int64_t n);

  KvCacheShape shape_;
  int64_t num_blocks_ = 0;
  Buffer kv_;                                         // [num_layers] × layer kv (fp32 pools)
  std::unique_ptr<uint16_t[], FreeDeleter> kv_bf16_;  // [num_layers] × layer kv (bf16 pools)
  Buffer key_summary_;                                // [num_layers] × layer summaries (min/max)
  Buffer key_ball_;  // [num_layers] × layer balls (centroid, radius)
};

}  // namespace lychee
