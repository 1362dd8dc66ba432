// SPDX-License-Identifier: Apache-2.0
// Host side of decode attention (decode_attention.h): capability checks, the split plan and the
// workspace size. Plain C++ so CI without a GPU tests it.
#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/decode_attention.h"

namespace lychee::cuda {
namespace {

constexpr int64_t kMaxGrid = 65535;  // gridDim.y / gridDim.z limit
constexpr int64_t kMaxInt32 = 2147483647;
constexpr int kMaxSplits = 1000;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

absl::Status CanImplementDecodeAttention(const DecodeAttentionShape& s) {
  if (s.batch <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 || s.max_blocks_per_seq <= 0 ||
      s.max_context_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: sizes must be positive (batch ", s.batch, ", heads ",
                     s.num_heads, ", kv_heads ", s.num_kv_heads, ", max_blocks_per_seq ",
                     s.max_blocks_per_seq, ", max_context_len ", s.max_context_len, ")"));
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: unsupported head_dim: ", s.head_dim, " (64, 128)"));
  }
  if (s.block_size != 16 && s.block_size != 32 && s.block_size != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: unsupported block_size: ", s.block_size, " (16, 32, 64)"));
  }
  if (s.num_heads % s.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: num_heads ", s.num_heads,
                                                   " is not a multiple of num_kv_heads ",
                                                   s.num_kv_heads));
  }
  const int64_t group = s.num_heads / s.num_kv_heads;
  if (group > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: unsupported GQA group size: ", group, " (1..8)"));
  }
  if (s.batch > kMaxGrid || s.num_kv_heads > kMaxGrid) {
    return absl::InvalidArgumentError("decode attention: batch or kv_heads exceeds the grid");
  }
  if (s.max_blocks_per_seq * s.block_size > kMaxInt32 || s.batch * s.num_heads > kMaxInt32) {
    return absl::InvalidArgumentError("decode attention: sizes exceed int32 ranges");
  }
  if (s.max_context_len > s.max_blocks_per_seq * s.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention: max_context_len ", s.max_context_len, " exceeds the block table (",
        s.max_blocks_per_seq, " blocks of ", s.block_size, ")"));
  }
  return absl::OkStatus();
}

namespace {

// The plan with `stages` K/V tiles in the ring and `ctas_per_sm` CTAs resident per SM.
DecodeAttentionPlan PlanWithStages(const DecodeAttentionShape& s, int num_sms,
                                   const DecodeAttentionPlanOptions& options, int stages,
                                   int ctas_per_sm) {
  DecodeAttentionPlanOptions o = options;
  o.ctas_per_sm = ctas_per_sm;
  DecodeAttentionPlan plan;
  plan.stages = std::clamp(stages, 2, 4);
  plan.loader = o.loader;
  plan.merge_fan_in = o.merge_fan_in;
  const int64_t bs = std::max<int64_t>(1, s.block_size);
  const int64_t ctx = std::max<int64_t>(1, s.max_context_len);
  const int64_t min_chunk = CeilDiv(std::max(1, o.min_chunk_tokens), bs) * bs;
  const int64_t base_ctas = std::max<int64_t>(1, s.batch * s.num_kv_heads);
  const int64_t wave = std::max<int64_t>(1, int64_t{o.ctas_per_sm} * std::max(1, num_sms));
  int64_t splits = 1;
  {
    // Wave efficiency of n splits: the grid's CTAs over the slots of the waves it occupies. Every
    // CTA does the same work, so the time goes as waves / n; try up to two waves' worth (a batch
    // that fills two waves by itself is not split).
    auto efficiency = [&](int64_t n) {
      const int64_t ctas = base_ctas * n;
      return static_cast<double>(ctas) / static_cast<double>(CeilDiv(ctas, wave) * wave);
    };
    const int64_t limit =
        std::min({int64_t{std::max(1, o.max_splits)}, CeilDiv(2 * wave, base_ctas),
                  std::max<int64_t>(1, ctx / min_chunk)});
    double best = 0.0;
    for (int64_t n = 1; n <= limit; ++n) best = std::max(best, efficiency(n));
    while (efficiency(splits) < 0.95 * best) ++splits;
  }
  splits = std::clamp<int64_t>(splits, 1, std::max(1, o.max_splits));
  // Chunk: the even share of the longest context, whole pages, at least min_chunk tokens; then
  // drop the splits that would start past the longest context.
  int64_t chunk = CeilDiv(CeilDiv(ctx, splits), bs) * bs;
  chunk = std::max(chunk, std::min(min_chunk, CeilDiv(ctx, bs) * bs));
  splits = std::clamp<int64_t>(CeilDiv(ctx, chunk), 1, kMaxSplits);
  plan.num_splits = static_cast<int>(splits);
  plan.chunk_tokens = static_cast<int>(std::min<int64_t>(chunk, kMaxInt32));
  return plan;
}

}  // namespace

DecodeAttentionPlan PlanDecodeAttention(const DecodeAttentionShape& s, int num_sms,
                                        const DecodeAttentionPlanOptions& o) {
  if (o.long_split_tokens > 0 && o.long_split_ctas_per_sm > 0) {
    const DecodeAttentionPlan two = PlanWithStages(s, num_sms, o, 2, o.long_split_ctas_per_sm);
    if (two.chunk_tokens >= o.long_split_tokens) return two;
  }
  return PlanWithStages(s, num_sms, o, o.stages, o.ctas_per_sm);
}

size_t DecodeAttentionWorkspaceBytes(const DecodeAttentionShape& s,
                                     const DecodeAttentionPlan& plan) {
  return DecodeAttentionWorkspaceBytesForRows(s, plan, s.batch * s.num_kv_heads);
}

size_t DecodeAttentionWorkspaceBytesForRows(const DecodeAttentionShape& s,
                                            const DecodeAttentionPlan& plan, int64_t kv_rows) {
  if (plan.num_splits <= 1 || s.num_kv_heads <= 0) return 0;
  const size_t partials = static_cast<size_t>(kv_rows) *
                          static_cast<size_t>(s.num_heads / s.num_kv_heads) * plan.num_splits;
  // o: [batch, heads, splits, head_dim] fp32, then lse: [batch, heads, splits] fp32.
  return partials * static_cast<size_t>(s.head_dim) * sizeof(float) + partials * sizeof(float);
}

size_t DecodeAttentionMaxWorkspaceBytes(const DecodeAttentionShape& largest, int num_sms,
                                        const DecodeAttentionPlanOptions& options, bool row_lists) {
  size_t bytes = 0;
  for (int64_t b = 1; b <= largest.batch; ++b) {
    DecodeAttentionShape s = largest;
    s.batch = b;
    bytes =
        std::max(bytes, DecodeAttentionWorkspaceBytes(s, PlanDecodeAttention(s, num_sms, options)));
  }
  for (int64_t rows = 1; row_lists && rows <= largest.batch * largest.num_kv_heads; ++rows) {
    DecodeAttentionShape alone = largest;  // a list's rows planned as a batch of their own
    alone.batch = rows;
    alone.num_heads = largest.num_heads / largest.num_kv_heads;
    alone.num_kv_heads = 1;
    bytes = std::max(bytes, DecodeAttentionWorkspaceBytesForRows(
                                alone, PlanDecodeAttention(alone, num_sms, options), rows));
  }
  return bytes;
}

absl::Status CanRunDecodeAttention(const DecodeAttentionParams& p,
                                   const DecodeAttentionPlan& plan) {
  const DecodeAttentionShape& s = p.shape;
  if (absl::Status st = CanImplementDecodeAttention(s); !st.ok()) return st;
  if (p.q == nullptr || p.cache.kv == nullptr || p.block_tables == nullptr ||
      p.context_lens == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError(
        "decode attention: q, cache.kv, block_tables, context_lens and out must be set");
  }
  if (!Aligned16(p.q) || !Aligned16(p.cache.kv) || !Aligned16(p.out)) {
    return absl::InvalidArgumentError(
        "decode attention: q, cache.kv and out must be 16-byte aligned");
  }
  if (p.q_row_stride != 0 &&
      (p.q_row_stride % 2 != 0 || p.q_row_stride < s.num_heads * s.head_dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention: q_row_stride ", p.q_row_stride,
        " must be even and at least num_heads * head_dim (", s.num_heads * s.head_dim, "), or 0"));
  }
  if (p.cache.head_dim != s.head_dim || p.cache.block_size != s.block_size ||
      p.cache.num_kv_heads != s.num_kv_heads || p.cache.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: cache (kv_heads ", p.cache.num_kv_heads, ", block_size ",
                     p.cache.block_size, ", head_dim ", p.cache.head_dim, ", blocks ",
                     p.cache.num_blocks, ") does not match the shape"));
  }
  // The last split stages every split's LSE for its GQA group in the smallest ring the kernel
  // has (32 KiB), with their max and sum: at most kMaxSplits splits.
  if (plan.num_splits < 1 || plan.chunk_tokens <= 0 || plan.chunk_tokens % s.block_size != 0 ||
      plan.num_splits > kMaxSplits) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: invalid plan (splits ",
                                                   plan.num_splits, ", chunk ", plan.chunk_tokens,
                                                   ")"));
  }
  if (plan.num_splits > 1 && (p.workspace == nullptr || !Aligned16(p.workspace))) {
    return absl::InvalidArgumentError(
        "decode attention: a split plan needs a 16-byte aligned workspace");
  }
  if (p.maybe_row_list != nullptr &&
      (p.row_list_len <= 0 || p.row_list_len > s.batch * s.num_kv_heads ||
       p.row_list_len > kMaxGrid)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention: row_list_len ", p.row_list_len, " is not in [1, batch * kv_heads ",
        s.batch * s.num_kv_heads, "] (and <= 65535)"));
  }
  if (plan.num_splits > 1 && p.split_counters == nullptr) {
    return absl::InvalidArgumentError(
        "decode attention: a split plan needs split_counters (batch * num_kv_heads * "
        "kDecodeSplitCountersPerRow int32, zeroed)");
  }
  if (plan.merge_fan_in != 0 &&
      (plan.merge_fan_in < kMinMergeFanIn ||
       CeilDiv(plan.num_splits, plan.merge_fan_in) + 1 > kDecodeSplitCountersPerRow)) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: invalid plan merge_fan_in ",
                                                   plan.merge_fan_in, " (0, or >= ", kMinMergeFanIn,
                                                   " with at most ", kDecodeSplitCountersPerRow - 1,
                                                   " groups of ", plan.num_splits, " splits)"));
  }
  if (plan.stages < 2 || plan.stages > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: invalid plan stages ", plan.stages, " (2..4)"));
  }
  if (plan.loader != DecodeLoader::kCpAsync && plan.loader != DecodeLoader::kTma) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: invalid plan loader ", static_cast<int>(plan.loader)));
  }
  const bool hybrid = p.full_block_tables != nullptr || p.full_context_lens != nullptr;
  if (hybrid && (p.full_block_tables == nullptr || p.full_context_lens == nullptr ||
                 !p.per_kv_head_tables || p.maybe_row_list == nullptr)) {
    return absl::InvalidArgumentError(
        "decode attention: a hybrid launch needs full_block_tables and full_context_lens, "
        "per_kv_head_tables and a row list");
  }
  if (p.maybe_block_scores != nullptr &&
      (s.block_size != kBlockScoresBlockSize || (p.per_kv_head_tables && !hybrid) ||
       p.block_scores_row_stride < s.max_blocks_per_seq)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention: block scores need block_size ", kBlockScoresBlockSize,
        " (one warp's 16 keys), the sequences' own tables (not per-kv-head ones, but for a hybrid "
        "launch's flagged rows) and a row stride "
        ">= max_blocks_per_seq (block_size ",
        s.block_size, ", per_kv_head_tables ", p.per_kv_head_tables, ", row stride ",
        p.block_scores_row_stride, ", max_blocks_per_seq ", s.max_blocks_per_seq, ")"));
  }
  if (!(p.scale > 0.0f)) return absl::InvalidArgumentError("decode attention: scale must be > 0");
  return absl::OkStatus();
}

}  // namespace lychee::cuda
