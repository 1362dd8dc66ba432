// SPDX-License-Identifier: Apache-2.0
// RunSparseDecode: cpu::SparseDecodeAttention for one query over per-kv-head selections given as
// plain lists, for the kernel, bound and policy tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/sparse_attention.h"
#include "kvcache/paged_kv_view.h"

namespace lychee::testing {

// Runs the kernel for the query `q` ([num_heads, head_dim]) at `pos`, kv head g reading
// per_head[g] (ascending logical blocks, or positions when `token_level`), with the scale
// 1/sqrt(head_dim). `out` gets [num_heads, head_dim], `mass` the certified bound per query head.
inline void RunSparseDecode(const PagedKvView& cache, const std::vector<int32_t>& block_table,
                            const std::vector<float>& q, int64_t num_heads, int64_t pos,
                            const std::vector<std::vector<int32_t>>& per_head, bool token_level,
                            std::vector<float>* out, std::vector<float>* mass) {
  std::vector<int32_t> selected;
  std::vector<int64_t> offsets{0};
  for (const auto& ids : per_head) {
    selected.insert(selected.end(), ids.begin(), ids.end());
    offsets.push_back(static_cast<int64_t>(selected.size()));
  }
  std::vector<float> scratch(static_cast<size_t>(pos + 1));
  out->assign(static_cast<size_t>(num_heads * cache.head_dim), 0.0f);
  mass->assign(static_cast<size_t>(num_heads), -1.0f);
  cpu::SparseDecodeAttentionParams p;
  p.q = q.data();
  p.cache = cache;
  p.block_table = block_table.data();
  p.selected = selected.data();
  p.selected_offsets = offsets.data();
  p.out = out->data();
  p.dropped_mass = mass->data();
  p.scratch = scratch.data();
  p.num_heads = num_heads;
  p.num_table_blocks = static_cast<int64_t>(block_table.size());
  p.position = pos;
  p.scale = 1.0f / std::sqrt(static_cast<float>(cache.head_dim));
  p.token_level = token_level;
  cpu::SparseDecodeAttention(p);
}

}  // namespace lychee::testing
