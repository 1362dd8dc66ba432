// SPDX-License-Identifier: Apache-2.0
// One sequence's KV cache as one contiguous buffer per layer: the simplest layout the CPU
// forward pass needs until the paged cache (kvcache/) replaces it.
//
// Owned by a CpuModel and used from the thread that runs its forward pass. Each layer holds keys
// and values as [capacity, num_kv_heads, head_dim], so the rows of consecutive tokens are one
// contiguous run: a prefill chunk writes its K/V with one copy per row and RoPE runs in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lychee {

class ContiguousKvCache {
 public:
  ContiguousKvCache() = default;
  // Allocates every layer up front: no allocation after construction.
  ContiguousKvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  // Tokens whose keys and values are stored (positions [0, size)).
  int64_t size() const { return size_; }
  int64_t free_slots() const { return capacity_ - size_; }
  // Floats per token row: num_kv_heads * head_dim.
  int64_t row_floats() const { return row_floats_; }

  // [capacity, num_kv_heads, head_dim] for `layer`.
  float* keys(int64_t layer) { return keys_.data() + layer * layer_floats(); }
  float* values(int64_t layer) { return values_.data() + layer * layer_floats(); }
  const float* keys(int64_t layer) const { return keys_.data() + layer * layer_floats(); }
  const float* values(int64_t layer) const { return values_.data() + layer * layer_floats(); }

  // Marks `n` more positions as filled (after every layer wrote them); n <= free_slots().
  void Commit(int64_t n) { size_ += n; }
  // Forgets every token (buffers are kept).
  void Clear() { size_ = 0; }

 private:
  int64_t layer_floats() const { return capacity_ * row_floats_; }

  int64_t capacity_ = 0;
  int64_t row_floats_ = 0;
  int64_t size_ = 0;
  std::vector<float> keys_;    // [num_layers, capacity, num_kv_heads, head_dim]
  std::vector<float> values_;  // same
};

}  // namespace lychee
