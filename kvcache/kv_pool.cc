// SPDX-License-Identifier: Apache-2.0
// KvPool storage and the block-size arithmetic behind the KV memory budget.
#include "kvcache/kv_pool.h"

#include <string>

#include "absl/status/status.h"
#include "common/host_memory.h"
#include "common/logging.h"

namespace lychee {

namespace {

int64_t KvElementBytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFp32:
      return 4;
    case KvDtype::kBf16:
      return 2;
  }
  return 4;
}

}  // namespace

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFp32:
      return "fp32";
    case KvDtype::kBf16:
      return "bf16";
  }
  return "?";
}

absl::StatusOr<KvDtype> ParseKvDtype(std::string_view name) {
  if (name == "fp32") return KvDtype::kFp32;
  if (name == "bf16") return KvDtype::kBf16;
  return absl::InvalidArgumentError("KV cache dtype must be fp32 or bf16, got '" +
                                    std::string(name) + "'");
}

int64_t KvBytesPerBlock(const KvCacheShape& s) {
  const int64_t kv_elements = 2 * s.num_kv_heads * s.block_size * s.head_dim;
  const int64_t summary_floats = s.num_kv_heads * 2 * s.head_dim;
  const int64_t ball_floats = s.num_kv_heads * (s.head_dim + 1);
  return s.num_layers * (kv_elements * KvElementBytes(s.dtype) +
                         (summary_floats + ball_floats) * static_cast<int64_t>(sizeof(float)));
}

int64_t KvBytesForTokens(const KvCacheShape& shape, int64_t num_tokens) {
  const int64_t blocks = (num_tokens + shape.block_size - 1) / shape.block_size;
  return blocks * KvBytesPerBlock(shape);
}

int64_t DefaultCpuKvCacheBytes() {
  return static_cast<int64_t>(kDefaultCpuKvMemoryFraction * static_cast<double>(HostMemoryBytes()));
}

absl::StatusOr<int64_t> NumKvBlocksForBudget(const KvCacheShape& shape, int64_t kv_cache_bytes) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_size <= 0) {
    return absl::InvalidArgumentError(
        "KV cache shape must have positive layers, kv heads, "
        "head_dim and block_size");
  }
  const int64_t per_block = KvBytesPerBlock(shape);
  const int64_t num_blocks = kv_cache_bytes / per_block;
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError("kv_cache_bytes " + std::to_string(kv_cache_bytes) +
                                      " holds no KV block of " + std::to_string(per_block) +
                                      " bytes");
  }
  return num_blocks;
}

KvPool::KvPool(const KvCacheShape& shape, int64_t num_blocks)
    : shape_(shape), num_blocks_(num_blocks) {
  LY_CHECK(num_blocks > 0 && shape.num_layers > 0 && shape.num_kv_heads > 0 && shape.head_dim > 0 &&
           shape.block_size > 0)
      << "degenerate KV pool";
  const int64_t kv_elements = shape.num_layers * LayerKvFloats();
  if (shape.dtype == KvDtype::kBf16) {
    kv_bf16_.reset(static_cast<uint16_t*>(ZeroedBytes(kv_elements * 2)));
  } else {
    kv_.reset(static_cast<float*>(ZeroedBytes(kv_elements * 4)));
  }
  key_summary_.reset(static_cast<float*>(ZeroedBytes(shape.num_layers * LayerSummaryFloats() * 4)));
  key_ball_.reset(static_cast<float*>(ZeroedBytes(shape.num_layers * LayerBallFloats() * 4)));
}

void* KvPool::ZeroedBytes(int64_t n) {
  void* p = std::calloc(static_cast<size_t>(n), 1);
  LY_CHECK(p != nullptr) << "KV pool: cannot allocate " << n << " bytes";
  return p;
}

int64_t KvPool::LayerKvFloats() const {
  return num_blocks_ * 2 * shape_.num_kv_heads * shape_.block_size * shape_.head_dim;
}

int64_t KvPool::LayerSummaryFloats() const {
  return num_blocks_ * shape_.num_kv_heads * 2 * shape_.head_dim;
}

int64_t KvPool::LayerBallFloats() const {
  return num_blocks_ * shape_.num_kv_heads * (shape_.head_dim + 1);
}

int64_t KvPool::bytes() const { return num_blocks_ * KvBytesPerBlock(shape_); }

PagedKvView KvPool::View(int64_t layer) {
  LY_CHECK(layer >= 0 && layer < shape_.num_layers) << "layer " << layer;
  PagedKvView v;
  if (shape_.dtype == KvDtype::kBf16) {
    v.kv_bf16 = kv_bf16_.get() + layer * LayerKvFloats();
  } else {
    v.kv = kv_.get() + layer * LayerKvFloats();
  }
  v.key_summary = key_summary_.get() + layer * LayerSummaryFloats();
  v.num_blocks = num_blocks_;
  v.num_kv_heads = shape_.num_kv_heads;
  v.block_size = shape_.block_size;
  v.head_dim = shape_.head_dim;
  v.key_ball = key_ball_.get() + layer * LayerBallFloats();
  return v;
}

}  // namespace lychee
