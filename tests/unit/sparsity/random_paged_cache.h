// SPDX-License-Identifier: Apache-2.0
// A one-layer paged KV cache filled with random keys/values through WritePagedKv (so the key
// summaries are the kernel's own), with a shuffled block table, for the sparse kernel and
// policy tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/paged_kv.h"
#include "kvcache/paged_kv_view.h"
#include "tests/util/numeric.h"

namespace lychee::testing {

struct RandomPagedCache {
  std::vector<float> kv, summary, ball;
  std::vector<int32_t> table;
  std::vector<float> k, v;  // [tokens, kv_heads, head_dim] as written
  PagedKvView view;

  // `tokens` keys at positions 0 .. tokens - 1; the pool has one spare block so the table is a
  // strict subset of it.
  RandomPagedCache(std::mt19937_64& rng, int64_t tokens, int64_t kv_heads, int64_t block_size,
                   int64_t head_dim, float key_range = 1.0f) {
    const int64_t blocks = (tokens + block_size - 1) / block_size;
    view.num_blocks = blocks + 1;
    view.num_kv_heads = kv_heads;
    view.block_size = block_size;
    view.head_dim = head_dim;
    kv.assign(static_cast<size_t>(view.num_blocks * view.block_stride()), 0.0f);
    summary.assign(static_cast<size_t>(view.num_blocks * view.summary_block_stride()), 0.0f);
    view.kv = kv.data();
    view.key_summary = summary.data();
    // The key ball (centroid + radius) as KvPool keeps it, so bounds are min(box, ball).
    ball.assign(static_cast<size_t>(view.num_blocks * view.ball_block_stride()), 0.0f);
    view.key_ball = ball.data();
    std::vector<int32_t> pool(static_cast<size_t>(view.num_blocks));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    table.assign(pool.begin(), pool.begin() + blocks);
    k = RandomVector(rng, static_cast<size_t>(tokens * kv_heads * head_dim), -key_range, key_range);
    v = RandomVector(rng, static_cast<size_t>(tokens * kv_heads * head_dim));
  }

  // Writes the keys/values (call after editing k/v).
  void Write(int64_t tokens) {
    cpu::WritePagedKvParams p;
    p.cache = view;
    p.k = k.data();
    p.v = v.data();
    p.block_table = table.data();
    p.num_tokens = tokens;
    p.num_table_blocks = static_cast<int64_t>(table.size());
    cpu::WritePagedKv(p);
  }
};

}  // namespace lychee::testing
