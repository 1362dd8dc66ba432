// SPDX-License-Identifier: Apache-2.0
// Block selection (block_select.h): scoring, then a per-(sequence, kv head) top-k select of the
// budget and an in-order compaction into sparse block-table rows.
// QuestBlockSelect and SparseBlockSelect share both kernels (Quest: every row kTopK).
//
// Scoring: CTA (block range, kv head, sequence) of 8 warps. Box bounds: a warp scores eight
// blocks per mma m16n8k16 (the group's heads x the blocks, q⁺·mx + q⁻·mn). Exact scores: a warp
// takes one block at a time, lane l holding dims [l * D/32, (l + 1) * D/32) of the group-mean
// query and of eight of its keys at a time, the eight partial sums reduced across the warp in
// one reduce-scatter (9 shuffles, not 40).
//
// Selection: CTA (kv head, sequence), 512 threads, the row's scores staged in shared memory. The
// take-th best candidate score is found by bisection over order-preserving uint32 images of the
// floats (counting rounds of one barrier each, each thread's images in registers for rows up to
// 8192 candidates, until at most 256 candidates remain undecided, which one warp then settles
// alone; histogram radix passes with shared atomics were 44 µs a row on the H100,
// latency-bound); candidates strictly above it are taken, and of those equal to it the earliest
// `remaining` ones (ties go to the earlier block). Per-warp counts in index order and ballots
// then give each taken block its output slot, so rows come out in ascending logical order
// without a sort. Slots receive block ids first; the page ids follow in one batched gather
// (GatherPages), as a block-table load per emitted block, waited for before the next, cost an
// L2 round trip each. With a bound wanted, the read blocks' staged scores are set to -inf as they
// are emitted and a block reduction gives ln Σ tokens · exp(score) over the rest. kPrhs rows
// (SelectPrhsRow) use the same two steps for their anchors' choice. The dropped-mass kernels
// are in dropped_mass.cu.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/select_search.cuh"

namespace lychee::cuda {
namespace {

constexpr int kScoreWarps = 8;
constexpr int kScoreBlocksPerWarp = 8;  // blocks a warp scores, so q is loaded once per 8
static_assert(kScoreBlocksPerWarp % 8 == 0, "box scores take eight blocks an mma");
// RadixTop's tallies: 8 bits a thread, 16 bits a block.
static_assert(kBlockSelectMaxBlocks / kSelectThreads < 255, "a thread's tally fits 8 bits");
static_assert(kBlockSelectMaxBlocks < 65536, "the block's tally fits 16 bits");
constexpr int kMaxGroup = kBlockSelectMaxGroup;
static_assert(kMaxGroup == 8, "the score kernel reduces eight heads in one reduce-scatter");

__device__ __forceinline__ int64_t NumBlocks(const BlockSelectParams& p, int seq, int64_t* ctx) {
  const BlockSelectShape& s = p.shape;
  const int64_t max_tokens = s.max_blocks_per_seq * s.block_size;
  int64_t c = p.context_lens[seq];
  c = c < 0 ? 0 : (c > max_tokens ? max_tokens : c);
  *ctx = c;
  return (c + s.block_size - 1) / s.block_size;
}

// What a row does in this launch (QuestBlockSelect: every row kTopK under Quest's rule).
struct RowPlan {
  SelectRowMode mode = SelectRowMode::kTopK;
  SelectRange range;
  int32_t n = 0;
  int64_t ctx = 0;
  int32_t budget_blocks = 1;
  int32_t window_first = 0;   // kPrhs: first candidate block (PSAW)
  bool box_scores = false;    // the score kernel writes key-summary bounds for it
  bool exact_scores = false;  // ... or the exact scores of the group-mean query (kPrhs: unless
                              // the row reuses its anchor, which only a warp can tell)
  bool prhs_control = false;  // kPrhs under max_dropped_mass < 1: the set grows to its bound
                              // (box bounds and each query head's lower bounds wanted)
};

// kWidening: the launch may be a widening round (maybe_row_budgets replaces the rule's budget);
// only SelectKernel without kPrhs rows can be one (the score kernel never runs in a round).
template <bool kWidening>
__device__ __forceinline__ RowPlan PlanRow(const BlockSelectParams& p, int seq, int kv_head) {
  const BlockSelectShape& s = p.shape;
  RowPlan r;
  r.n = static_cast<int32_t>(NumBlocks(p, seq, &r.ctx));
  SelectSeqRule rule;
  if (p.row_modes == nullptr) {
    rule.budget_blocks = static_cast<int32_t>(s.budget_blocks);
    rule.sink_blocks = static_cast<int32_t>(s.sink_blocks);
    rule.rule = SelectRule::kQuest;
  } else {
    r.mode = static_cast<SelectRowMode>(
        p.row_modes[static_cast<int64_t>(seq) * s.num_kv_heads + kv_head]);
    rule = p.seq_rules[seq];
    if (kWidening && p.maybe_row_active != nullptr) {  // a widening round: the doubled budget
      const int32_t tokens =
          p.maybe_row_budgets[static_cast<int64_t>(seq) * s.num_kv_heads + kv_head];
      rule.budget_blocks = static_cast<int32_t>(tokens / s.block_size);
    }
  }
  r.budget_blocks = rule.budget_blocks < 1 ? 1 : rule.budget_blocks;
  const bool bound = p.maybe_log_unread != nullptr;
  if (r.mode == SelectRowMode::kTopK || r.mode == SelectRowMode::kExactTopK) {
    r.range = ResolveSelectRule(rule, r.n);
    const int32_t cands = r.range.last_begin - r.range.first;
    const bool ranks = r.range.take > 0 && r.range.take < cands;
    r.box_scores = r.mode == SelectRowMode::kTopK && (ranks || (bound && r.range.take < cands));
    r.exact_scores = r.mode == SelectRowMode::kExactTopK && ranks;
  } else if (r.mode == SelectRowMode::kInherit) {
    r.box_scores = bound;
    // Widened (a round reselects only widened rows): its own choice under the doubled budget.
    if (kWidening && p.maybe_row_active != nullptr) r.range = ResolveSelectRule(rule, r.n);
  } else if (r.mode == SelectRowMode::kPrhs) {
    // As PrhsPolicy::Select: a budget covering every block reads everything; otherwise the
    // candidates are [max(sinks, PSAW window), local window), `take` of them chosen.
    r.range = ResolveSelectRule(rule, r.n);
    const int32_t wf = p.prhs_seqs[seq].window_first_block;
    r.window_first = min(r.range.last_begin, max(r.range.first, wf));
    const int32_t forced = r.range.first + (r.n - r.range.last_begin);
    const int32_t take = r.budget_blocks - forced;
    const bool all = r.budget_blocks >= r.n;
    r.prhs_control = !all && p.prhs_lower != nullptr && p.prhs_seqs[seq].max_dropped_mass < 1.0f;
    r.box_scores = (bound || r.prhs_control) && !all;
    r.exact_scores = !all && take > 0 && take < r.range.last_begin - r.window_first;
  }
  return r;
}

// Whether a launch with `filter` handles a row of mode `mode` (BlockSelectParams::row_filter).
__device__ __forceinline__ bool RowInFilter(SelectRowFilter filter, SelectRowMode mode) {
  const bool reads_all = mode == SelectRowMode::kAll || mode == SelectRowMode::kExactTopK;
  return filter == SelectRowFilter::kAllRows ||
         (filter == SelectRowFilter::kReadsAllRows) == reads_all;
}

// The GQA group's mean query (summed in head order, then scaled, as the CPU's GroupMeanQuery),
// lane l's dims [l * kPer, (l + 1) * kPer).
template <int D>
__device__ __forceinline__ void LaneGroupMeanQuery(const BlockSelectParams& p, int seq, int kv_head,
                                                   int lane, float (&qbar)[D / 32]) {
  constexpr int kPer = D / 32;
  const BlockSelectShape& s = p.shape;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
#pragma unroll
  for (int e = 0; e < kPer; ++e) qbar[e] = 0.0f;
  for (int h = 0; h < group; ++h) {
    float q[kPer];
    LoadBf16Floats<kPer>(
        p.q + seq * q_stride + (static_cast<int64_t>(kv_head) * group + h) * D + lane * kPer, q);
#pragma unroll
    for (int e = 0; e < kPer; ++e) qbar[e] += q[e];
  }
#pragma unroll
  for (int e = 0; e < kPer; ++e) qbar[e] *= 1.0f / static_cast<float>(group);
}

// kPrhs, by a whole warp: whether the row reuses its anchor (one chosen under the same budget,
// cos(q̄, q̄_anchor) > tau in double, as the CPU's Cosine). Every warp that asks gets the same
// answer: the same lanes sum in the same order.
template <int D>
__device__ __forceinline__ bool PrhsReusesAnchor(const BlockSelectParams& p, int seq, int kv_head,
                                                 int lane, const float (&qbar)[D / 32]) {
  constexpr int kPer = D / 32;
  const PrhsSeqParams& sp = p.prhs_seqs[seq];
  const int64_t arow = static_cast<int64_t>(sp.anchor_row) + kv_head;
  if (sp.budget_tokens <= 0 || p.prhs_anchor_info[2 * arow] != sp.budget_tokens) return false;
  const float* a = p.prhs_anchor_q + arow * D + lane * kPer;
  double ab = 0.0, aa = 0.0, bb = 0.0;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const double x = qbar[e], y = a[e];
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    ab += __shfl_xor_sync(0xffffffffu, ab, offset);
    aa += __shfl_xor_sync(0xffffffffu, aa, offset);
    bb += __shfl_xor_sync(0xffffffffu, bb, offset);
  }
  const float cosine = aa == 0.0 || bb == 0.0 ? 0.0f : static_cast<float>(ab / sqrt(aa * bb));
  return static_cast<double>(cosine) > sp.tau;
}

// c += q⁺·pos + q⁻·neg over the dims (the score kernel's layout below: s_q holds the q⁺ and q⁻
// fragments by lane, pos and neg this lane's summary words): the upper box bound with (mx, mn),
// the lower with (mn, mx).
template <int kChunks>
__device__ __forceinline__ void BoxProducts(float (&c)[4], const uint32_t (&s_q)[2][kChunks][4][32],
                                            int lane, const uint4 (&pos)[kChunks],
                                            const uint4 (&neg)[kChunks]) {
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const uint32_t pw[4] = {pos[j].x, pos[j].y, pos[j].z, pos[j].w};
    const uint32_t nw[4] = {neg[j].x, neg[j].y, neg[j].z, neg[j].w};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t ap[4] = {s_q[0][j][2 * h][lane], 0u, s_q[0][j][2 * h + 1][lane], 0u};
      const uint32_t an[4] = {s_q[1][j][2 * h][lane], 0u, s_q[1][j][2 * h + 1][lane], 0u};
      Mma16816(c, ap, pw[2 * h], pw[2 * h + 1]);
      Mma16816(c, an, nw[2 * h], nw[2 * h + 1]);
    }
  }
}

// Scoring: CTA (block range, kv head, sequence); a warp scores kScoreBlocksPerWarp blocks, lane l
// holding dims [l * D/32, (l + 1) * D/32). Box rows: the max over the group of the key-summary
// bound (scaled); exact rows: the max over the block's keys of the group-mean query's dot
// product (unscaled, as the CPU's ExactBlockScores). A kPrhs row can want both: box bounds for
// its certified bound (into scores) and exact scores for a new anchor (into prhs_scores).
template <int D>
__global__ void __launch_bounds__(kScoreWarps * 32)
    ScoreKernel(const __grid_constant__ BlockSelectParams p) {
  AllowDependentGrids();
  WaitForPriorGrids();  // (launch.cuh: before any global access)

  constexpr int kPer = D / 32;  // dims per lane
  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  RowPlan plan = PlanRow<false>(p, seq, kv_head);
  if (!RowInFilter(p.row_filter, plan.mode)) return;  // CTA-uniform, before any barrier
  if (p.exact_scores_given && plan.mode == SelectRowMode::kExactTopK) plan.exact_scores = false;
  // A widening round scores only its widened LycheeDecode sparse heads: exactly, for their own
  // choice (the bounds in `scores` stay for the unread bound).
  const bool widening = p.maybe_row_active != nullptr;
  if (widening) {
    const int64_t r = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
    if (p.maybe_row_active[r] == 0 || plan.mode != SelectRowMode::kInherit) return;
    plan.exact_scores = true;
    plan.box_scores = false;
  }
  if (!plan.box_scores && !plan.exact_scores) return;
  const int64_t n = plan.n;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kScoreWarps * kScoreBlocksPerWarp;
  if (first >= n) return;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  const float kNegInf = -__int_as_float(0x7f800000);
  // After WarpReduceScatter8, lanes 4r..4r+3 hold row r's sum (a query head, or a key of the
  // block).
  const int lane_row = lane / 4;
  if (plan.exact_scores) {
    float qbar[kPer];
    LaneGroupMeanQuery<D>(p, seq, kv_head, lane, qbar);
    const bool prhs = plan.mode == SelectRowMode::kPrhs;
    if (!prhs || !PrhsReusesAnchor<D>(p, seq, kv_head, lane, qbar)) {
      float* out = (widening ? p.maybe_widen_scores
                    : prhs   ? p.prhs_scores
                             : p.scores) +
                   row * s.max_blocks_per_seq;
      for (int i = 0; i < kScoreBlocksPerWarp; ++i) {
        const int64_t b = first + static_cast<int64_t>(warp) * kScoreBlocksPerWarp + i;
        if (b >= n) break;  // uniform over the warp
        const bf16* keys = p.cache.kv + table[b] * p.cache.block_stride() +
                           kv_head * p.cache.head_stride() + lane * kPer;
        const int rows_in_block =
            static_cast<int>(b == n - 1 ? plan.ctx - (n - 1) * s.block_size : s.block_size);
        // Eight keys at a time: per-lane partial dots, then one reduce-scatter for all eight.
        float best = kNegInf;
        for (int r0 = 0; r0 < rows_in_block; r0 += 8) {
          float part[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            part[j] = 0.0f;
            if (r0 + j < rows_in_block) {  // uniform over the warp
              float k[kPer];
              LoadBf16Floats<kPer>(keys + static_cast<int64_t>(r0 + j) * D, k);
#pragma unroll
              for (int e = 0; e < kPer; ++e) part[j] += qbar[e] * k[e];
            }
          }
          const float dot = WarpReduceScatter8(part);
          if (r0 + lane_row < rows_in_block) best = fmaxf(best, dot);
        }
        best = WarpMaxOverRows8(best);
        if (lane == 0) out[b] = best;
      }
    }
  }
  if (!plan.box_scores) return;

  // Box bounds on tensor cores: u_b,h = Σ_e max(q_e mn_e, q_e mx_e) = q⁺·mx + q⁻·mn (q⁺ = max(q,
  // 0), q⁻ = min(q, 0): mx >= mn), a product of the group's heads (rows of mma m16n8k16, padded to
  // 16 with zeros) and eight blocks' summary rows (columns). The 16-dim k steps take the dims in
  // an order of our choosing, the same for both operands: lane (g, t) holds dims [32j + 8t, 32j +
  // 8t + 8) of head g's query and of block g's summaries, one 16-byte load each, and k step 2j + h
  // reads 4h..4h+3 of them. The bound then is the max over the heads (lanes with the same t).
  // The scalar form (one block a warp, 4 ops a dim and head) was 34 µs at 1 x 128K, SM-bound.
  constexpr int kChunks = D / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
  // The CTA's warps share one (sequence, kv head): warp 0 splits q into q⁺ and q⁻ fragments once,
  // in shared memory by lane (conflict-free); kept in registers they were 32 of the kernel's 66,
  // which held it to 3 CTAs an SM.
  __shared__ uint32_t s_q[2][kChunks][4][32];  // [q⁺, q⁻][chunk][word][lane]
  // This warp's eight blocks (lane (g, t): block b0 + g): the page id, then the summaries, loaded
  // before the CTA waits for warp 0's q fragments, so the round trips overlap (they were three in
  // a row: q, the block table, the summaries).
  static_assert(kScoreBlocksPerWarp == 8, "a warp scores one n tile of blocks");
  const int64_t b0 = first + static_cast<int64_t>(warp) * kScoreBlocksPerWarp;
  const int64_t b = b0 + g;
  const int64_t summary_stride = p.cache.summary_block_stride();
  uint4 mn[kChunks], mx[kChunks];
  if (b < n) {
    const uint4* summary = reinterpret_cast<const uint4*>(
        p.cache.key_summary + table[b] * summary_stride + kv_head * 2 * D + 8 * t);
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      mn[j] = __ldg(summary + 4 * j);
      mx[j] = __ldg(summary + D / 8 + 4 * j);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) mn[j] = mx[j] = make_uint4(0u, 0u, 0u, 0u);
  }
  if (warp == 0) {
    const __nv_bfloat162 zero = __float2bfloat162_rn(0.0f);
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      uint4 raw = make_uint4(0u, 0u, 0u, 0u);
      if (g < group) {
        raw = __ldg(reinterpret_cast<const uint4*>(p.q + seq * q_stride +
                                                   (static_cast<int64_t>(kv_head) * group + g) * D +
                                                   32 * j + 8 * t));
      }
      const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(&words[w]);
        const __nv_bfloat162 hi = __hmax2(v, zero), lo = __hmin2(v, zero);
        s_q[0][j][w][lane] = *reinterpret_cast<const uint32_t*>(&hi);
        s_q[1][j][w][lane] = *reinterpret_cast<const uint32_t*>(&lo);
      }
    }
  }
  __syncthreads();      // every warp of the CTA reaches it: the returns above are CTA-uniform
  if (b0 >= n) return;  // uniform over the warp; no barrier follows
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  BoxProducts<kChunks>(c, s_q, lane, mx, mn);
  if (plan.prhs_control) {
    // Each head's lower bound l_b,h = q⁺·mn + q⁻·mx, for PrHS's control in advance.
    float lo[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    BoxProducts<kChunks>(lo, s_q, lane, mn, mx);
    if (g < group) {
      float* out = p.prhs_lower + (static_cast<int64_t>(seq) * s.num_heads + kv_head * group + g) *
                                      s.max_blocks_per_seq;
      if (b0 + 2 * t < n) out[b0 + 2 * t] = lo[0] * p.scale;
      if (b0 + 2 * t + 1 < n) out[b0 + 2 * t + 1] = lo[1] * p.scale;
    }
  }
  // c[0], c[1]: head g's bounds of blocks b0 + 2t, b0 + 2t + 1; the max over the group.
  float v0 = g < group ? c[0] : kNegInf, v1 = g < group ? c[1] : kNegInf;
  v0 = WarpMaxOverRows8(v0);
  v1 = WarpMaxOverRows8(v1);
  if (g == 0) {
    float* out = p.scores + row * s.max_blocks_per_seq;
    if (b0 + 2 * t < n) out[b0 + 2 * t] = v0 * p.scale;
    if (b0 + 2 * t + 1 < n) out[b0 + 2 * t + 1] = v1 * p.scale;
  }
}

using SelectReduce = cub::BlockReduce<float, kSelectThreads>;
using SelectReduceInt = cub::BlockReduce<int, kSelectThreads>;

// The select kernel's shared scalars and scratch (the scores and bit sets are dynamic).
struct SelectShared {
  union {
    typename SelectReduce::TempStorage reduce;
    typename SelectReduceInt::TempStorage reduce_int;
  } storage;
  int last_read;  // the sequence's last (partial) block is read
  float max;
  int total;
  int flag;
  int warp_above[kSelectWarps], warp_equal[kSelectWarps];
  int round_counts[2][kSelectWarps];
  uint32_t digit_counts[2][kSelectWarps][8];  // RadixTop's rounds: 16-bit digit tallies
  // ForEachTakenStriped: each warp's ballots (above, equal) per chunk, rows padded against bank
  // conflicts.
  uint32_t emit_masks[2][kSelectCached][kSelectWarps + 1];
  // BisectTop's last rounds: the candidates still undecided, and the warp's answer.
  uint32_t survivors[kSelectSurvivors];
  int num_survivors;
  uint32_t survivors_prefix;
  int survivors_above;
  float qbar[128];                  // kPrhs: the group-mean query, for a new anchor
  float warp_values[kSelectWarps];  // BlockSum, BlockMax
};

// The search a launch asked for (BlockSelectParams::search).
template <SelectSearch kSearch, typename Image>
__device__ __forceinline__ TopPick FindTop(int k, int lo, int hi, Image image, SelectShared& sh) {
  if constexpr (kSearch == SelectSearch::kRadix) {
    return RadixTop(k, lo, hi, image, sh);
  } else {
    return BisectTop(k, lo, hi, image, sh);
  }
}

// dst[b] = src[b] for b in [lo, hi), eight loads in flight per thread (one at a time, each
// waiting for L2, was most of a row's staging time).
__device__ __forceinline__ void StageScores(float* dst, const float* src, int lo, int hi) {
  constexpr int kBatch = 8;
  for (int base = lo + static_cast<int>(threadIdx.x); base < hi; base += kBatch * kSelectThreads) {
    float v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int b = base + j * kSelectThreads;
      v[j] = b < hi ? __ldcg(src + b) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int b = base + j * kSelectThreads;
      if (b < hi) dst[b] = v[j];
    }
  }
}

// out[i] = table[blocks[i]] (table[i] when blocks is null) for i in [0, count), eight loads in
// flight per thread; visit(block) sees each block id. A plain loop of load -> store pairs waits
// an L2 round trip per element (the compiler may not move a load above a store that could alias
// it). out may be blocks: a thread reads and writes only its own i. Every thread calls it after
// a barrier that publishes blocks[0, count).
template <typename Visit>
__device__ __forceinline__ void GatherPages(int32_t* out, const int32_t* blocks,
                                            const int32_t* table, int count, Visit visit) {
  constexpr int kBatch = 8;
  for (int base = static_cast<int>(threadIdx.x); base < count; base += kBatch * kSelectThreads) {
    int32_t v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = base + j * kSelectThreads;
      v[j] = i >= count ? 0 : (blocks == nullptr ? i : blocks[i]);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (base + j * kSelectThreads < count) {
        visit(v[j]);
        v[j] = __ldg(table + v[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = base + j * kSelectThreads;
      if (i < count) out[i] = v[j];
    }
  }
}

// A widened LycheeDecode sparse head (LycheePolicy::Select under a widened budget; the members
// by MarkWidenedInherit, select_search.cuh): its blocks as ids in ascending order into `out`
// (the row's pages: GatherPages follows a barrier). The row's set stays as it is: deeper sparse
// heads inherit the retrieval head's choice, as on the CPU. With a bound wanted, s_scores ends
// with the key-summary bounds of the unread blocks and -inf at the read ones. Returns the count.
// Every thread of the block calls it.
template <SelectSearch kSearch>
__device__ int SelectWidenedInheritRow(const BlockSelectParams& p, const RowPlan& plan, int64_t row,
                                       const int32_t* set, float* s_scores, uint32_t* member,
                                       int32_t* out, SelectShared& sh) {
  const int n = plan.n;
  const float* exact = p.maybe_widen_scores + row * p.shape.max_blocks_per_seq;
  MarkWidenedInherit(
      n, plan.range.first, plan.range.last_begin, plan.range.take, set, p.maybe_set_sizes[row],
      [&](int lo, int hi) { StageScores(s_scores, exact, lo, hi); },
      [&](int b) { return OrderedBits(s_scores[b]); },
      [&](int k, int lo, int hi, auto image) { return FindTop<kSearch>(k, lo, hi, image, sh); },
      member, sh);
  const int count = EmitBits(
      0, n, member, 0, [&](int slot, int b) { out[slot] = b; }, sh);
  if (threadIdx.x == 0) sh.last_read = TestBit(member, n - 1) ? 1 : 0;
  if (p.maybe_log_unread != nullptr) {
    const float* scores = p.scores + row * p.shape.max_blocks_per_seq;
    for (int b = threadIdx.x; b < n; b += kSelectThreads) {
      s_scores[b] = TestBit(member, b) ? -__int_as_float(0x7f800000) : scores[b];
    }
  }
  return count;
}

// A kPrhs row (PrhsPolicy::Select and Rescore on the GPU): fills `member` with the chosen
// candidate blocks of [plan.window_first, plan.range.last_begin) and returns whether the row
// reused its anchor. s_scores holds nothing on entry; `extra` is scratch. Blocks a rescore adds,
// in the CPU's order: the candidates by exact score (ties to the earlier block), each of the top
// W = ceil(dilate_fraction · take) bringing its candidate neighbours ±1..±dilation along, until
// `take` blocks are in. Without truncation (|top W ∪ their neighbours| <= take) that is those
// plus the best of the rest; otherwise the `take` earliest arrivals, ranked by (rank of the
// block that brought it, order of the additions).
template <int D>
__device__ bool SelectPrhsRow(const BlockSelectParams& p, const RowPlan& plan, int seq, int kv_head,
                              float* s_scores, uint32_t* member, uint32_t* extra,
                              int32_t* scratch_a, int32_t* scratch_b, SelectShared& sh) {
  constexpr int kPer = D / 32;
  const BlockSelectShape& s = p.shape;
  const PrhsSeqParams& sp = p.prhs_seqs[seq];
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  const int64_t arow = static_cast<int64_t>(sp.anchor_row) + kv_head;
  const int wf = plan.window_first, cand_end = plan.range.last_begin;
  const int cands = cand_end - wf;
  const int forced = plan.range.first + (plan.n - cand_end);
  const int take = plan.budget_blocks - forced;
  const int lane = threadIdx.x % 32;
  if (threadIdx.x < 32) {
    float qbar[kPer];
    LaneGroupMeanQuery<D>(p, seq, kv_head, lane, qbar);
    const bool reuse = PrhsReusesAnchor<D>(p, seq, kv_head, lane, qbar);
#pragma unroll
    for (int e = 0; e < kPer; ++e) sh.qbar[lane * kPer + e] = qbar[e];
    if (lane == 0) sh.flag = reuse ? 1 : 0;
  }
  __syncthreads();
  const bool reuse = sh.flag != 0;
  if (reuse) {
    const int count = p.prhs_anchor_info[2 * arow + 1];
    const int32_t* blocks = p.prhs_anchor_blocks + arow * kPrhsMaxAnchorBlocks;
    for (int i = threadIdx.x; i < count; i += kSelectThreads) {
      const int b = blocks[i];
      if (b >= wf && b < cand_end) SetBit(member, b);
    }
    __syncthreads();
    return true;
  }
  if (take > 0 && take >= cands) {
    for (int b = wf + threadIdx.x; b < cand_end; b += kSelectThreads) SetBit(member, b);
  } else if (take > 0) {
    StageScores(s_scores, p.prhs_scores + row * s.max_blocks_per_seq, wf, cand_end);
    __syncthreads();
    const auto score = [&](int b) { return OrderedBits(s_scores[b]); };
    const double widened_d = ceil(sp.dilate_fraction * static_cast<double>(take));
    const int widened =
        widened_d < 0.0 ? 0 : (widened_d > take ? take : static_cast<int>(widened_d));
    const int r_max = sp.dilation < 0 ? 0 : sp.dilation;
    int brought = 0;  // |top W ∪ their neighbours|
    if (widened > 0) {
      const TopPick top = BisectTop(widened, wf, cand_end, score, sh);
      ForEachTaken(
          wf, cand_end, top, score, 0, [&](int, int b) { SetBit(member, b); }, sh);
      for (int b = wf + threadIdx.x; b < cand_end; b += kSelectThreads) {
        if (!TestBit(member, b)) continue;
        for (int r = 1; r <= r_max; ++r) {
          if (b - r >= wf && !TestBit(member, b - r)) SetBit(extra, b - r);
          if (b + r < cand_end && !TestBit(member, b + r)) SetBit(extra, b + r);
        }
      }
      __syncthreads();
      int c = 0;
      for (int b = wf + threadIdx.x; b < cand_end; b += kSelectThreads) {
        c += TestBit(member, b) || TestBit(extra, b);
      }
      c = SelectReduceInt(sh.storage.reduce_int).Sum(c);
      if (threadIdx.x == 0) sh.total = c;
      __syncthreads();
      brought = sh.total;
    }
    if (brought <= take) {
      // All of them, then the best of the rest by score.
      for (int b = wf + threadIdx.x; b < cand_end; b += kSelectThreads) {
        if (TestBit(extra, b)) SetBit(member, b);
      }
      __syncthreads();
      const int words_lo = wf >> 5, words_hi = (cand_end + 31) >> 5;
      for (int w = words_lo + threadIdx.x; w < words_hi; w += kSelectThreads) extra[w] = 0u;
      __syncthreads();
      if (take > brought) {
        const auto rest = [&](int b) { return TestBit(member, b) ? 0u : OrderedBits(s_scores[b]); };
        const TopPick pick = BisectTop(take - brought, wf, cand_end, rest, sh);
        ForEachTaken(
            wf, cand_end, pick, rest, 0, [&](int, int b) { SetBit(extra, b); }, sh);
        for (int b = wf + threadIdx.x; b < cand_end; b += kSelectThreads) {
          if (TestBit(extra, b)) SetBit(member, b);
        }
      }
    } else {
      // Truncation inside the dilated top: rank the top W (scratch_a: the blocks in index
      // order, then each one's rank by score into scratch_b at its block), key every brought
      // block by its earliest arrival, and keep the `take` earliest.
      EmitBits(
          wf, cand_end, member, 0, [&](int slot, int b) { scratch_a[slot] = b; }, sh);
      for (int i = threadIdx.x; i < widened; i += kSelectThreads) {
        const int b = scratch_a[i];
        const uint32_t u = score(b);
        int rank = 0;
        for (int j = 0; j < widened; ++j) {
          const int c = scratch_a[j];
          const uint32_t v = score(c);
          rank += v > u || (v == u && c < b);
        }
        scratch_b[b] = rank;
      }
      __syncthreads();
      const uint32_t stride = 2u * static_cast<uint32_t>(r_max) + 1u;
      const auto arrival = [&](int b) -> uint32_t {
        if (!TestBit(member, b) && !TestBit(extra, b)) return 0u;
        uint32_t key =
            TestBit(member, b) ? static_cast<uint32_t>(scratch_b[b]) * stride : 0xffffffffu;
        for (int r = 1; r <= r_max; ++r) {
          // Block a adds a - r (order 2r - 1) then a + r (order 2r).
          if (b + r < cand_end && TestBit(member, b + r)) {
            key = min(key, static_cast<uint32_t>(scratch_b[b + r]) * stride + 2u * r - 1u);
          }
          if (b - r >= wf && TestBit(member, b - r)) {
            key = min(key, static_cast<uint32_t>(scratch_b[b - r]) * stride + 2u * r);
          }
        }
        return 0xffffffffu - key;  // the earliest arrival is the largest image
      };
      const TopPick pick = BisectTop(take, wf, cand_end, arrival, sh);
      ForEachTaken(
          wf, cand_end, pick, arrival, 0, [&](int slot, int b) { scratch_a[slot] = b; }, sh);
      const int words_lo = wf >> 5, words_hi = (cand_end + 31) >> 5;
      for (int w = words_lo + threadIdx.x; w < words_hi; w += kSelectThreads) {
        member[w] = 0u;
        extra[w] = 0u;
      }
      __syncthreads();
      for (int i = threadIdx.x; i < take; i += kSelectThreads) SetBit(member, scratch_a[i]);
    }
  }
  __syncthreads();
  // The new anchor: q̄, the budget, the chosen blocks (written by the caller's emission).
  float* aq = p.prhs_anchor_q + arow * D;
  for (int e = threadIdx.x; e < D; e += kSelectThreads) aq[e] = sh.qbar[e];
  return false;
}

// A kPrhs row under max_dropped_mass < 1, after SelectPrhsRow chose its candidates (`member`):
// the new anchor's blocks (the chosen candidates alone, as the CPU's; `chosen` of them, when the
// row rescored), then the row's set (sinks, chosen, local window) grown by GrowPrhsToBound, or
// every block where that gives up (prhs_row_fallback). Emits the set in block order; returns its
// size. `extra` is scratch; s_scores holds the row's box bounds on return.
// Not inlined: its registers would otherwise add to the PrHS select kernel's spills (188 B out
// of line, 538 B inlined; 124 B before the control existed).
template <typename Emit>
__device__ __noinline__ int GrowPrhsRow(const BlockSelectParams& p, const RowPlan& plan, int seq,
                                        int kv_head, bool reused, float* s_scores, uint32_t* member,
                                        uint32_t* extra, int32_t* anchor_blocks, int* chosen,
                                        Emit emit, SelectShared& sh) {
  const BlockSelectShape& s = p.shape;
  const int n = plan.n, first = plan.range.first, cand_end = plan.range.last_begin;
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  if (!reused) {
    *chosen = EmitBits(
        plan.window_first, cand_end, member, 0,
        [&](int slot, int block) { anchor_blocks[slot] = block; }, sh);
  }
  const int words = (n + 31) / 32;
  for (int w = threadIdx.x; w < words; w += kSelectThreads) extra[w] = 0u;
  for (int b = threadIdx.x; b < first; b += kSelectThreads) SetBit(member, b);
  for (int b = cand_end + threadIdx.x; b < n; b += kSelectThreads) SetBit(member, b);
  StageScores(s_scores, p.scores + row * s.max_blocks_per_seq, 0, n);
  __syncthreads();
  int members = 0;
  for (int w = threadIdx.x; w < words; w += kSelectThreads) members += __popc(member[w]);
  members = SelectReduceInt(sh.storage.reduce_int).Sum(members);
  if (threadIdx.x == 0) sh.total = members;
  __syncthreads();
  members = sh.total;
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const float* lower = p.prhs_lower + (static_cast<int64_t>(seq) * s.num_heads +
                                       static_cast<int64_t>(kv_head) * group) *
                                          s.max_blocks_per_seq;
  const float last_tokens =
      static_cast<float>(plan.ctx - static_cast<int64_t>(n - 1) * s.block_size);
  const int grown = GrowPrhsToBound(
      n, group, p.prhs_seqs[seq].max_dropped_mass, 4 * plan.budget_blocks,
      [&](int b) { return s_scores[b]; },
      [&](int h, int b) { return lower[static_cast<int64_t>(h) * s.max_blocks_per_seq + b]; },
      [&](int b) { return b == n - 1 ? last_tokens : static_cast<float>(s.block_size); }, member,
      extra, members, sh);
  if (grown < 0) {
    for (int b = threadIdx.x; b < n; b += kSelectThreads) SetBit(member, b);
    __syncthreads();
  }
  if (p.prhs_row_fallback != nullptr && threadIdx.x == 0) p.prhs_row_fallback[row] = grown < 0;
  return EmitBits(0, n, member, 0, emit, sh);
}

// Selection: CTA (kv head, sequence). See the file comment for the top-k select. kWithPrhs: the
// launch has kPrhs rows (a separate instantiation keeps their registers out of the others'). Two
// CTAs an SM (64 registers): a batch of 32 x 8 kv heads selects in one wave.
// kSearch, kEmit: BlockSelectParams::search and emit (kPrhs launches bisect and walk; as template
// parameters, each variant gets its own registers: a runtime choice spilled).
template <int D, bool kWithPrhs, SelectSearch kSearch, SelectEmit kEmit>
__global__ void __launch_bounds__(kSelectThreads, 2)
    SelectKernel(const __grid_constant__ BlockSelectParams p) {
  __shared__ SelectShared sh;
  extern __shared__ float s_scores[];  // [max_blocks_per_seq], then two bit sets
  AllowDependentGrids();
  WaitForPriorGrids();  // (launch.cuh: before any global access)

  const BlockSelectShape& s = p.shape;
  const int kv_head = blockIdx.x;
  const int seq = blockIdx.y;
  const int64_t row = static_cast<int64_t>(seq) * s.num_kv_heads + kv_head;
  // A widening round leaves every row it does not widen as it is (never a kPrhs launch).
  if constexpr (!kWithPrhs) {
    if (p.maybe_row_active != nullptr && p.maybe_row_active[row] == 0) return;
  }
  auto mark = [&](SelectPhase phase) {  // thread 0's clock; after a barrier, the CTA's
    if (p.maybe_phase_clocks != nullptr && threadIdx.x == 0) {
      p.maybe_phase_clocks[row * kSelectPhases + phase] = clock64();
    }
  };
  mark(kSelectEntry);
  const RowPlan plan = PlanRow<!kWithPrhs>(p, seq, kv_head);
  if (!RowInFilter(p.row_filter, plan.mode)) return;  // another launch's row
  mark(kSelectPlanned);
  const int n = plan.n;
  const int64_t width = p.row_modes == nullptr ? s.budget_blocks : s.max_blocks_per_seq;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * s.max_blocks_per_seq;
  int32_t* out_pages = p.sel_tables + row * width;
  int32_t* set = p.maybe_sel_blocks == nullptr ? nullptr : p.maybe_sel_blocks + row * width;
  const float* scores = p.scores + row * s.max_blocks_per_seq;
  const bool bound = p.maybe_log_unread != nullptr;
  const bool reads_all = plan.mode == SelectRowMode::kAll || plan.mode == SelectRowMode::kExactTopK;
  if (threadIdx.x == 0) sh.last_read = 0;
  if (p.maybe_row_reused != nullptr && threadIdx.x == 0) {
    p.maybe_row_reused[row] = plan.mode == SelectRowMode::kInherit ? 1 : 0;  // kPrhs: below
  }
  if (p.prhs_row_fallback != nullptr && threadIdx.x == 0) p.prhs_row_fallback[row] = 0;  // below

  // A hybrid launch's kExactTopK row: its table row receives its new set below instead.
  const bool set_pages = p.maybe_set_lens != nullptr && plan.mode == SelectRowMode::kExactTopK;
  if (reads_all) {
    if (!set_pages) GatherPages(out_pages, nullptr, table, n, [](int) {});
    if (threadIdx.x == 0) {
      p.sel_lens[row] = static_cast<int32_t>(plan.ctx);
      if (bound) p.maybe_log_unread[row] = -__int_as_float(0x7f800000);
      if (p.maybe_split_lens != nullptr) {
        p.maybe_split_lens[row] = static_cast<int32_t>(plan.ctx);
        p.maybe_split_lens[s.batch * s.num_kv_heads + row] = -1;
      }
    }
    if (plan.mode == SelectRowMode::kAll) return;
  }
  // Marks a read block when the bound is wanted: its score leaves the unread sum.
  auto mark_read = [&](int block) {
    if (bound) s_scores[block] = -__int_as_float(0x7f800000);
    if (block == n - 1) sh.last_read = 1;
  };
  int count = 0;  // blocks in the row's set (read, for kTopK, kInherit and kPrhs)
  if (!kWithPrhs && plan.mode == SelectRowMode::kInherit && p.maybe_row_active != nullptr) {
    uint32_t* member = reinterpret_cast<uint32_t*>(s_scores + s.max_blocks_per_seq);
    count = SelectWidenedInheritRow<kSearch>(p, plan, row, set, s_scores, member, out_pages, sh);
    if (p.maybe_row_reused != nullptr && threadIdx.x == 0) p.maybe_row_reused[row] = 0;
    __syncthreads();  // every slot's block is in out_pages
    GatherPages(out_pages, out_pages, table, count, [](int) {});
  } else if (plan.mode == SelectRowMode::kInherit) {
    count = p.maybe_set_sizes[row];
    if (bound) StageScores(s_scores, scores, 0, n);
    __syncthreads();
    if (p.maybe_set_lens != nullptr) {
      // A hybrid step: the set's pages are in out_pages already (its retrieval row put them
      // there), and the attention may be reading them right now; only mark what is read.
      for (int i = threadIdx.x; i < count; i += kSelectThreads) mark_read(set[i]);
    } else {
      GatherPages(out_pages, set, table, count, mark_read);
    }
  } else if (kWithPrhs && plan.mode == SelectRowMode::kPrhs) {
    auto emit = [&](int slot, int block) {  // pages: GatherPages below
      set[slot] = block;
      if (block == n - 1) sh.last_read = 1;
    };
    if (plan.budget_blocks >= n) {
      count = n;
      __syncthreads();  // last_read is reset
      for (int b = threadIdx.x; b < n; b += kSelectThreads) {
        emit(b, b);
        if (bound) s_scores[b] = -__int_as_float(0x7f800000);
      }
    } else {
      const int words = static_cast<int>((s.max_blocks_per_seq + 31) / 32);
      uint32_t* member = reinterpret_cast<uint32_t*>(s_scores + s.max_blocks_per_seq);
      uint32_t* extra = member + words;
      for (int w = threadIdx.x; w < words; w += kSelectThreads) member[w] = extra[w] = 0u;
      __syncthreads();
      // The row's output rows are free until the emission below: scratch for a truncation.
      const bool reused =
          SelectPrhsRow<D>(p, plan, seq, kv_head, s_scores, member, extra, set, out_pages, sh);
      if (p.maybe_row_reused != nullptr && threadIdx.x == 0) p.maybe_row_reused[row] = reused;
      const int first = plan.range.first, cand_end = plan.range.last_begin;
      const int64_t arow = static_cast<int64_t>(p.prhs_seqs[seq].anchor_row) + kv_head;
      int32_t* anchor_blocks = p.prhs_anchor_blocks + arow * kPrhsMaxAnchorBlocks;
      int chosen = 0;
      if (!plan.prhs_control) {
        for (int b = threadIdx.x; b < first; b += kSelectThreads) emit(b, b);
        chosen = EmitBits(
            plan.window_first, cand_end, member, first,
            [&](int slot, int block) {
              emit(slot, block);
              if (!reused) anchor_blocks[slot - first] = block;
            },
            sh);
        for (int b = cand_end + threadIdx.x; b < n; b += kSelectThreads) {
          emit(first + chosen + (b - cand_end), b);
        }
        count = first + chosen + (n - cand_end);
      } else {
        count = GrowPrhsRow(p, plan, seq, kv_head, reused, s_scores, member, extra, anchor_blocks,
                            &chosen, emit, sh);
      }
      if (!reused && threadIdx.x == 0) {
        p.prhs_anchor_info[2 * arow] = p.prhs_seqs[seq].budget_tokens;
        p.prhs_anchor_info[2 * arow + 1] = chosen;
      }
      if (bound) {
        // The unread blocks keep their key-summary bounds (a grown set has every read block,
        // forced ones included, in member).
        for (int b = threadIdx.x; b < n; b += kSelectThreads) {
          const bool read = b < first || b >= cand_end || TestBit(member, b);
          s_scores[b] = read ? -__int_as_float(0x7f800000) : scores[b];
        }
      }
    }
    if (threadIdx.x == 0) p.maybe_set_sizes[row] = count;
    __syncthreads();  // every slot's block is in `set`
    GatherPages(out_pages, set, table, count, [](int) {});
  } else {
    // kTopK / kExactTopK: the forced ranges and the best `take` candidates, in block order.
    const bool write_pages = plan.mode == SelectRowMode::kTopK;
    const bool stage_all = write_pages && bound;
    auto emit = [&](int slot, int block) {
      if (write_pages) out_pages[slot] = block;  // the page: GatherPages below
      if (set != nullptr) set[slot] = block;
      if (write_pages) mark_read(block);
    };
    const int first = plan.range.first, cand_end = plan.range.last_begin;
    const int cands = cand_end - first;
    const int take = plan.range.take;
    if (take >= cands) {  // everything is chosen
      count = n;
      __syncthreads();  // last_read is reset
      for (int b = threadIdx.x; b < n; b += kSelectThreads) emit(b, b);
    } else {
      count = first + take + (n - cand_end);
      if (plan.box_scores || plan.exact_scores) {
        StageScores(s_scores, scores, stage_all ? 0 : first, stage_all ? n : cand_end);
      }
      __syncthreads();
      mark(kSelectStaged);
      if (take > 0) {
        // Marking (-inf) happens only in the second pass, each lane at its own block, after
        // every count of the first pass is in.
        const auto score = [&](int b) { return OrderedBits(s_scores[b]); };
        const TopPick pick = FindTop<kSearch>(take, first, cand_end, score, sh);
        mark(kSelectBisected);
        if (kEmit == SelectEmit::kStriped && cands <= kSelectCached * kSelectThreads) {
          ForEachTakenStriped(first, cand_end, pick, score, first, emit, sh);
        } else {
          ForEachTaken(first, cand_end, pick, score, first, emit, sh);
        }
      }
      for (int b = threadIdx.x; b < first; b += kSelectThreads) emit(b, b);
      for (int b = cand_end + threadIdx.x; b < n; b += kSelectThreads) {
        emit(first + take + (b - cand_end), b);
      }
    }
    if (p.maybe_set_sizes != nullptr && threadIdx.x == 0) p.maybe_set_sizes[row] = count;
    if (set_pages) {
      // The set's pages for the kInherit rows of the next layers, and its tokens (every page
      // full but the sequence's last), as a kInherit row's own selection would write them.
      __syncthreads();  // every slot's block is in `set`; last_read is reset
      GatherPages(out_pages, set, table, count, [&](int block) {
        if (block == n - 1) sh.last_read = 1;
      });
      __syncthreads();
      if (threadIdx.x == 0) {
        p.maybe_set_lens[row] = static_cast<int32_t>(
            static_cast<int64_t>(count) * s.block_size -
            (sh.last_read != 0 ? static_cast<int64_t>(n) * s.block_size - plan.ctx : 0));
      }
    }
    if (!write_pages) return;  // kExactTopK: reads everything (written above)
    __syncthreads();           // every slot's block is in out_pages
    mark(kSelectEmitted);
    GatherPages(out_pages, out_pages, table, count, [](int) {});
  }
  __syncthreads();
  mark(kSelectGathered);
  if (threadIdx.x == 0) {
    // Every read page is full except the sequence's last one.
    p.sel_lens[row] =
        count == 0
            ? 0
            : static_cast<int32_t>(
                  static_cast<int64_t>(count) * s.block_size -
                  (sh.last_read != 0 ? static_cast<int64_t>(n) * s.block_size - plan.ctx : 0));
    if (p.maybe_split_lens != nullptr) {
      p.maybe_split_lens[row] = -1;
      p.maybe_split_lens[s.batch * s.num_kv_heads + row] = p.sel_lens[row];
    }
  }
  if (!bound) {
    mark(kSelectEnd);
    return;
  }
  // ln Σ over unread blocks of tokens · exp(score), shifted by the largest unread score.
  float m = -__int_as_float(0x7f800000);
  for (int b = threadIdx.x; b < n; b += kSelectThreads) m = fmaxf(m, s_scores[b]);
  m = SelectReduce(sh.storage.reduce).Reduce(m, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) sh.max = m;
  __syncthreads();
  m = sh.max;
  float sum = 0.0f;
  if (m != -__int_as_float(0x7f800000)) {
    for (int b = threadIdx.x; b < n; b += kSelectThreads) {
      const float tokens =
          b == n - 1 ? static_cast<float>(plan.ctx - static_cast<int64_t>(n - 1) * s.block_size)
                     : static_cast<float>(s.block_size);
      sum += tokens * __expf(s_scores[b] - m);
    }
  }
  sum = SelectReduce(sh.storage.reduce).Sum(sum);
  if (threadIdx.x == 0) {
    p.maybe_log_unread[row] = m == -__int_as_float(0x7f800000) ? m : m + __logf(sum);
  }
  mark(kSelectEnd);
}

template <int D>
absl::Status Launch(const BlockSelectParams& p, cudaStream_t stream) {
  const BlockSelectShape& s = p.shape;
  const int64_t per_cta = kScoreWarps * kScoreBlocksPerWarp;
  const dim3 score_grid(static_cast<unsigned>((s.max_blocks_per_seq + per_cta - 1) / per_cta),
                        static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  // A widening round reuses the scores, but widened LycheeDecode sparse heads need exact ones;
  // the rows that read everything score nothing when their exact scores are given.
  const bool scores_nothing =
      p.row_filter == SelectRowFilter::kReadsAllRows && p.exact_scores_given;
  if ((p.maybe_row_active == nullptr || p.maybe_widen_scores != nullptr) && !scores_nothing) {
    LY_CUDA_RETURN_IF_ERROR(LaunchKernel(ScoreKernel<D>, score_grid, dim3(kScoreWarps * 32), 0,
                                         stream, p.programmatic_launch, p));
  }
  // The scores, then two bit sets over the blocks (kPrhs rows).
  const int smem = static_cast<int>(s.max_blocks_per_seq * sizeof(float) +
                                    2 * ((s.max_blocks_per_seq + 31) / 32) * sizeof(uint32_t));
  // A host-side attribute (no stream op): legal during graph capture.
  using Kernel = void (*)(BlockSelectParams);
  Kernel select = SelectKernel<D, true, SelectSearch::kBisect, SelectEmit::kWalk>;
  if (p.prhs_seqs == nullptr) {
    const bool radix = p.search == SelectSearch::kRadix;
    select = p.emit == SelectEmit::kStriped
                 ? (radix ? SelectKernel<D, false, SelectSearch::kRadix, SelectEmit::kStriped>
                          : SelectKernel<D, false, SelectSearch::kBisect, SelectEmit::kStriped>)
                 : (radix ? SelectKernel<D, false, SelectSearch::kRadix, SelectEmit::kWalk>
                          : SelectKernel<D, false, SelectSearch::kBisect, SelectEmit::kWalk>);
  }
  LY_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(select, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 select_grid(static_cast<unsigned>(s.num_kv_heads), static_cast<unsigned>(s.batch));
  LY_CUDA_RETURN_IF_ERROR(LaunchKernel(select, select_grid, dim3(kSelectThreads), smem, stream,
                                       p.programmatic_launch, p));
  return absl::OkStatus();
}

}  // namespace

absl::Status QuestBlockSelect(const BlockSelectParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunBlockSelect(p));
  if (p.row_modes != nullptr || p.seq_rules != nullptr || p.maybe_log_unread != nullptr ||
      p.maybe_row_budgets != nullptr || p.maybe_row_active != nullptr ||
      p.maybe_set_lens != nullptr || p.row_filter != SelectRowFilter::kAllRows) {
    return absl::InvalidArgumentError(
        "QuestBlockSelect: row_modes, seq_rules, maybe_log_unread, maybe_set_lens, row_filter and "
        "the widening rows are SparseBlockSelect's");
  }
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

absl::Status SparseBlockSelect(const BlockSelectParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunSparseBlockSelect(p));
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

}  // namespace lychee::cuda
