// SPDX-License-Identifier: Apache-2.0
// KvPool storage and the block-size arithmetic behind the KV memory budget.
#include "kvcache/kv_pool.h"

#include <string>

#include "absl/status/status.h"
#include "common/logging.h"

namespace lychee {

int64_t KvBytesPerBlock(const KvCacheShape& s) {
  const int64_t kv_floats = 2 * s.num_kv_heads * s.block_size * s.head_dim;
  const int64_t summary_floats = s.num_kv_heads * 2 * s.head_dim;
  const int64_t ball_floats = s.num_kv_heads * (s.head_dim + 1);
  return s.num_layers * (kv_floats + summary_floats + ball_floats) *
         static_cast<int64_t>(sizeof(float));
}

int64_t KvBytesForTokens(const KvCacheShape& shape, int64_t num_tokens) {
  const int64_t blocks = (num_tokens + shape.block_size - 1) / shape.block_size;
  return blocks * KvBytesPerBlock(shape);
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
  kv_.assign(static_cast<size_t>(shape.num_layers * LayerKvFloats()), 0.0f);
  key_summary_.assign(static_cast<size_t>(shape.num_layers * LayerSummaryFloats()), 0.0f);
  key_ball_.assign(static_cast<size_t>(shape.num_layers * LayerBallFloats()), 0.0f);
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

int64_t KvPool::bytes() const {
  return static_cast<int64_t>((kv_.size() + key_summary_.size() + key_ball_.size()) *
                              sizeof(float));
}

PagedKvView KvPool::View(int64_t layer) {
  LY_CHECK(layer >= 0 && layer < shape_.num_layers) << "layer " << layer;
  PagedKvView v;
  v.kv = kv_.data() + layer * LayerKvFloats();
  v.key_summary = key_summary_.data() + layer * LayerSummaryFloats();
  v.num_blocks = num_blocks_;
  v.num_kv_heads = shape_.num_kv_heads;
  v.block_size = shape_.block_size;
  v.head_dim = shape_.head_dim;
  v.key_ball = key_ball_.data() + layer * LayerBallFloats();
  return v;
}

}  // namespace lychee
