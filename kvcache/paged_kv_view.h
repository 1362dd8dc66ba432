// SPDX-License-Identifier: Apache-2.0
// PagedKvView: the plain view of one layer's paged KV pool that kernels read and write.
//
// Header-only and dependency-free on purpose: kernels (kernels/cpu, later kernels/cuda) include
// it without linking kvcache/, so they see base pointers and sizes, never the KvPool or the
// KvCacheManager (STYLE habit 7). A view is trivially copyable and does not own memory; it stays
// valid as long as the KvPool that produced it.
//
// Layout of one layer (fp32 or bf16 on CPU; bf16 on GPU):
//   kv           [num_blocks][2 (K, V)][num_kv_heads][block_size][head_dim]   (fp32: kv; bf16:
//                                                                              kv_bf16, kv null)
//   key_summary  [num_blocks][num_kv_heads][2 (min, max)][head_dim]
//   key_ball     [num_blocks][num_kv_heads][head_dim + 1 (centroid, radius)]   (may be null)
// One head's block of keys (or values) is one contiguous run of block_size * head_dim floats,
// so a sparse head gathers a selected block with one copy. The key summary holds the
// element-wise min and max over the keys written into the block so far (Quest-style box
// bounds). The key ball, when the pool keeps one (KvPool does; views built by hand may leave it
// null), holds the mean c of the block's keys and a radius r >= max ‖k − c‖ over them: a second
// bound q·k <= q·c + ‖q‖·r that is much tighter than the box at large head_dim. Both are
// written by cpu::WritePagedKv. The CUDA runner keeps neither (its sparse policies run on the
// CPU path only); kernels/cuda's RopeKvWrite maintains the min/max box when given a summary.
// A bf16 view (kv_bf16 set, common/bf16.h bits) stores K/V rounded to bf16 and keeps the
// summaries in fp32, computed from the rounded keys; kernels that take one say so.
#pragma once

#include <cstdint>

namespace lychee {

// Element type of the K/V pages (summaries are always fp32).
enum class KvDtype : int32_t {
  kFp32,  // the reference
  kBf16,  // half the bytes; values rounded to nearest even
};

struct PagedKvView {
  // Pointers.
  float* kv = nullptr;           // [num_blocks][2][num_kv_heads][block_size][head_dim]
  float* key_summary = nullptr;  // [num_blocks][num_kv_heads][2][head_dim]
  // Sizes.
  int64_t num_blocks = 0;
  int64_t num_kv_heads = 0;
  int64_t block_size = 0;  // tokens per block
  int64_t head_dim = 0;
  // Last, so that positional initialisers of the fields above stay valid.
  float* key_ball = nullptr;  // [num_blocks][num_kv_heads][head_dim + 1]; may be null
  // bf16 pages instead of kv (which is then null): same layout and strides, in elements.
  uint16_t* kv_bf16 = nullptr;  // [num_blocks][2][num_kv_heads][block_size][head_dim]

  bool is_bf16() const { return kv_bf16 != nullptr; }

  // Strides in elements (floats, or bf16 values of a bf16 view).
  int64_t head_stride() const { return block_size * head_dim; }       // one head's block
  int64_t kv_stride() const { return num_kv_heads * head_stride(); }  // K half → V half
  int64_t block_stride() const { return 2 * kv_stride(); }
  int64_t summary_block_stride() const { return num_kv_heads * 2 * head_dim; }

  // [block_size][head_dim] keys / values of (block, kv_head).
  float* K(int64_t block, int64_t kv_head) const {
    return kv + block * block_stride() + kv_head * head_stride();
  }
  float* V(int64_t block, int64_t kv_head) const { return K(block, kv_head) + kv_stride(); }
  // The same runs of a bf16 view.
  uint16_t* KBf16(int64_t block, int64_t kv_head) const {
    return kv_bf16 + block * block_stride() + kv_head * head_stride();
  }
  uint16_t* VBf16(int64_t block, int64_t kv_head) const {
    return KBf16(block, kv_head) + kv_stride();
  }
  // [head_dim] element-wise min / max of the keys written into (block, kv_head).
  float* KeyMin(int64_t block, int64_t kv_head) const {
    return key_summary + block * summary_block_stride() + kv_head * 2 * head_dim;
  }
  float* KeyMax(int64_t block, int64_t kv_head) const { return KeyMin(block, kv_head) + head_dim; }
  // [head_dim] centroid of the keys of (block, kv_head), followed by their radius (one float).
  // Only when key_ball is set.
  int64_t ball_block_stride() const { return num_kv_heads * (head_dim + 1); }
  float* KeyCentroid(int64_t block, int64_t kv_head) const {
    return key_ball + block * ball_block_stride() + kv_head * (head_dim + 1);
  }
  float KeyRadius(int64_t block, int64_t kv_head) const {
    return KeyCentroid(block, kv_head)[head_dim];
  }
};

}  // namespace lychee
