// SPDX-License-Identifier: Apache-2.0
// Host side of block selection (block_select.h): capability and parameter checks. Plain C++ so
// CI without a GPU tests it.
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/block_select.h"

namespace lychee::cuda {

absl::Status CanImplementBlockSelect(const BlockSelectShape& s) {
  if (s.batch <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 || s.block_size <= 0 ||
      s.max_blocks_per_seq <= 0 || s.sink_blocks < 0) {
    return absl::InvalidArgumentError("block select: sizes must be positive");
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("block select: unsupported head_dim: ", s.head_dim, " (64, 128)"));
  }
  if (s.num_heads % s.num_kv_heads != 0 || s.num_heads / s.num_kv_heads > kBlockSelectMaxGroup) {
    return absl::InvalidArgumentError(absl::StrCat("block select: unsupported GQA group (",
                                                   s.num_heads, " heads, ", s.num_kv_heads,
                                                   " kv heads; 1..8 per group)"));
  }
  if (s.budget_blocks <= s.sink_blocks || s.budget_blocks > s.max_blocks_per_seq) {
    return absl::InvalidArgumentError(
        absl::StrCat("block select: budget_blocks ", s.budget_blocks, " must exceed sink_blocks ",
                     s.sink_blocks, " and be at most max_blocks_per_seq ", s.max_blocks_per_seq));
  }
  if (s.max_blocks_per_seq > kBlockSelectMaxBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("block select: max_blocks_per_seq ",
                                                   s.max_blocks_per_seq, " exceeds ",
                                                   kBlockSelectMaxBlocks));
  }
  if (s.batch > 65535 || s.num_kv_heads > 65535) {
    return absl::InvalidArgumentError("block select: batch or kv_heads exceeds the grid");
  }
  return absl::OkStatus();
}

absl::Status CanRunBlockSelect(const BlockSelectParams& p) {
  if (absl::Status st = CanImplementBlockSelect(p.shape); !st.ok()) return st;
  const BlockSelectShape& s = p.shape;
  if (p.q == nullptr || p.cache.kv == nullptr || p.cache.key_summary == nullptr ||
      p.block_tables == nullptr || p.context_lens == nullptr || p.sel_tables == nullptr ||
      p.sel_lens == nullptr || p.scores == nullptr) {
    return absl::InvalidArgumentError(
        "block select: q, cache (with key_summary), block_tables, context_lens, sel_tables, "
        "sel_lens and scores must be set");
  }
  if (p.cache.head_dim != s.head_dim || p.cache.num_kv_heads != s.num_kv_heads ||
      p.cache.block_size != s.block_size) {
    return absl::InvalidArgumentError("block select: the cache does not match the shape");
  }
  if (p.q_row_stride != 0 && p.q_row_stride < s.num_heads * s.head_dim) {
    return absl::InvalidArgumentError("block select: q_row_stride below num_heads * head_dim");
  }
  // The scoring reads q and the summaries in 16-byte vectors.
  const auto aligned16 = [](const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
  };
  if (!aligned16(p.q) || !aligned16(p.cache.kv) || !aligned16(p.cache.key_summary) ||
      p.q_row_stride % 8 != 0) {
    return absl::InvalidArgumentError(
        "block select: q, cache.kv and cache.key_summary must be 16-byte aligned and "
        "q_row_stride a multiple of 8");
  }
  if (!(p.scale > 0.0f)) return absl::InvalidArgumentError("block select: scale must be > 0");
  return absl::OkStatus();
}

absl::Status CanRunSparseBlockSelect(const BlockSelectParams& p) {
  // budget_blocks and sink_blocks are per sequence here (seq_rules): check the rest. Key
  // summaries stay required: which rows score by them is known on the device only.
  BlockSelectParams q = p;
  q.shape.budget_blocks = q.shape.max_blocks_per_seq;
  q.shape.sink_blocks = 0;
  if (absl::Status st = CanRunBlockSelect(q); !st.ok()) return st;
  if (p.row_modes == nullptr || p.seq_rules == nullptr || p.maybe_sel_blocks == nullptr ||
      p.maybe_set_sizes == nullptr) {
    return absl::InvalidArgumentError(
        "sparse block select: row_modes, seq_rules, maybe_sel_blocks (the sets) and "
        "maybe_set_sizes must be set");
  }
  if (p.row_filter != SelectRowFilter::kAllRows && p.row_filter != SelectRowFilter::kReadsAllRows &&
      p.row_filter != SelectRowFilter::kBudgetRows) {
    return absl::InvalidArgumentError("sparse block select: invalid row_filter");
  }
  if (p.maybe_set_lens != nullptr && (p.maybe_row_active != nullptr || !p.exact_scores_given)) {
    return absl::InvalidArgumentError(
        "sparse block select: maybe_set_lens (a hybrid launch) follows the attention that wrote "
        "the exact scores (exact_scores_given), and is not a widening round");
  }
  if (p.maybe_widen_scores != nullptr && p.maybe_row_active == nullptr) {
    return absl::InvalidArgumentError(
        "sparse block select: maybe_widen_scores is for widening rounds (maybe_row_active)");
  }
  if (p.maybe_row_active != nullptr &&
      (p.maybe_row_budgets == nullptr || p.maybe_log_unread == nullptr ||
       p.maybe_split_lens == nullptr || p.prhs_seqs != nullptr)) {
    return absl::InvalidArgumentError(
        "sparse block select: a widening round (maybe_row_active) needs maybe_row_budgets, "
        "maybe_log_unread and maybe_split_lens, and widens no kPrhs rows");
  }
  return absl::OkStatus();
}

absl::Status CanRunWidenBudgets(const WidenBudgetsParams& p) {
  if (p.lse == nullptr || p.log_unread == nullptr || p.max_mass == nullptr ||
      p.row_budgets == nullptr || p.row_active == nullptr || p.part1_lens == nullptr ||
      p.stats == nullptr || (p.first_round && p.seq_rules == nullptr)) {
    return absl::InvalidArgumentError(
        "widen budgets: lse, log_unread, max_mass, row_budgets, row_active, part1_lens, stats "
        "and (first round) seq_rules must be set");
  }
  if (p.batch <= 0 || p.batch > 2147483647 || p.num_kv_heads <= 0 ||
      p.num_heads % p.num_kv_heads != 0 || p.block_size <= 0) {
    return absl::InvalidArgumentError(
        "widen budgets: sizes must be positive, heads a multiple of kv heads");
  }
  return absl::OkStatus();
}

}  // namespace lychee::cuda
