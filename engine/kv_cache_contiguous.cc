// SPDX-License-Identifier: Apache-2.0
// ContiguousKvCache: allocation only.
#include "engine/kv_cache_contiguous.h"

namespace lychee {

ContiguousKvCache::ContiguousKvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                                     int64_t capacity)
    : capacity_(capacity),
      row_floats_(num_kv_heads * head_dim),
      keys_(static_cast<size_t>(num_layers * capacity * num_kv_heads * head_dim)),
      values_(keys_.size()) {}

}  // namespace lychee
