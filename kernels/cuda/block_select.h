// SPDX-License-Identifier: Apache-2.0
// Query-aware block selection on the GPU (Quest, arXiv 2406.10774): for one decode query per
// sequence, score every written block of the sequence by the upper bound of q·k over its keys
// from the pool's key summaries, then keep, per (sequence, kv head), the sink blocks, the query's
// own (last) block and the best-scoring others up to a block budget. The result is the input of
// sparse decode attention: DecodeAttention with per_kv_head_tables (decode_attention.h).
//
// Semantics are those of sparsity::QuestPolicy on the CPU, with the box bound only:
//   u_b,h = scale · Σ_e max(q_e · min_e, q_e · max_e)   (per query head h, block b),
//   a kv head ranks block b by max over its query heads of u_b,h; ties go to the earlier block;
//   blocks [0, sink_blocks) and the last block are always read (the sinks only when there is a
//   block after them); with budget_blocks >= the sequence's blocks every block is read.
// Selected blocks are written in ascending logical order as physical page ids, with the token
// count of the row (all pages full but the sequence's last, which is selected).
//
// Two launches, one for the whole batch and all kv heads (no host round trip): scoring (one warp
// per (sequence, kv head, block), the summaries read once per GQA group) and a per-(sequence,
// kv head) radix select of the budget over (score, -block) keys, then an in-order compaction.
// No host sync, no allocation: capturable in a CUDA graph.
//
// SparseBlockSelect generalises it to a batch mixing policies, row by row (the CUDA runner's
// sparse decode steps): each (sequence, kv head) row has a mode (read everything; choose by the
// key-summary bound; read everything and choose by the exact keys of the group-mean query, as a
// LycheeDecode retrieval head; or read the set an earlier launch chose at this row, as a
// LycheeDecode sparse head), each sequence a rule (AppendTopK's forced ranges and budget, Quest's,
// or StreamingLLM's sinks + window). It can also write each row's certified unread bound, and
// AccumulateDroppedMass turns it and the attention's LSE into per-sequence dropped-mass stats.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace lychee::cuda {

inline constexpr int64_t kBlockSelectMaxGroup = 8;
// A row's scores are staged in shared memory for the select (200 KiB).
inline constexpr int64_t kBlockSelectMaxBlocks = 51200;

struct BlockSelectShape {
  int64_t batch = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;            // 64 or 128
  int64_t block_size = 0;          // tokens per page
  int64_t max_blocks_per_seq = 0;  // block_tables row width
  int64_t budget_blocks = 0;       // blocks read per (sequence, kv head), >= 1
  int64_t sink_blocks = 1;         // leading blocks always read, >= 0
};

// What one (sequence, kv head) row of SparseBlockSelect reads.
enum class SelectRowMode : int8_t {
  kAll = 0,        // every block (a dense request); the set is left alone
  kTopK = 1,       // the sequence's rule over key-summary bounds (Quest, streaming); set = read
  kExactTopK = 2,  // every block, and a set chosen by the rule over max_t q̄·k_t per block (q̄ the
                   // GQA group's mean query, unscaled: sparsity::ExactBlockScores)
  kInherit = 3,  // the row's set as an earlier launch left it (a LycheeDecode sparse head)
  kPrhs = 4,     // PrHS's CIS (sparsity::PrhsPolicy): the anchor's set while cos(q̄, q̄_anchor) >
                 // tau, else exact scores of q̄ → top blocks with dilation, a new anchor; the
                 // sequence's rule must be kTopK, its PrhsSeqParams given (BlockSelectParams)
};

// Which rows a SparseBlockSelect launch handles (the others keep every output). LycheeDecode's
// hybrid steps split a layer's selection in two: the budget-bound rows' scoring and bounds on a
// second stream beside the attention, the rows that read everything (their top-k from the
// attention's block scores) after it.
enum class SelectRowFilter : int8_t {
  kAllRows = 0,
  kReadsAllRows = 1,  // kAll and kExactTopK rows only
  kBudgetRows = 2,    // every other row
};

// A kPrhs sequence at one layer: knobs and where its anchor state lives. The state of row
// (sequence, kv head) is row anchor_row + kv_head of the arenas in BlockSelectParams.
struct PrhsSeqParams {
  double dilate_fraction = 1.0 / 3.0;  // the top ceil(fraction · take) blocks bring neighbours
  double tau = 0.8;                    // reuse the anchor while cos(q̄, q̄_anchor) > tau
  int32_t dilation = 1;                // ±blocks
  int32_t window_first_block = 0;      // PSAW: candidates start here (sinks excepted)
  int32_t anchor_row = 0;              // first arena row of this sequence at this layer
  int32_t budget_tokens = 0;           // the request's budget: an anchor chosen under another
                                       // budget is not reused
  // Accuracy control in advance (GrowPrhsToBound, select_search.cuh) below 1: the set grows
  // until its pre-read bound meets it, or the row reads everything (needs prhs_lower).
  float max_dropped_mass = 1.0f;
  int32_t unused = 0;
};
static_assert(sizeof(PrhsSeqParams) == 40);
// Blocks an anchor may hold (its budget's top blocks); a larger budget is refused on the GPU.
inline constexpr int64_t kPrhsMaxAnchorBlocks = 2048;

// How a sequence's kTopK / kExactTopK rows choose among its n written blocks: blocks
// [0, first) and [last_begin, n) always, and the best `take` of [first, last_begin) (ties to the
// earlier block), as sparsity::AppendTopK.
enum class SelectRule : int32_t {
  kTopK = 0,       // AppendTopK(scores, sink_blocks, local_blocks, budget_blocks) (LycheeDecode)
  kQuest = 1,      // sparsity::QuestPolicy: the sinks only when a block follows them, the last
  kStreaming = 2,  // sparsity::StreamingPolicy: the sinks and the most recent blocks, no scoring
};
struct SelectSeqRule {
  int32_t budget_blocks = 1;
  int32_t sink_blocks = 0;
  int32_t local_blocks = 1;
  SelectRule rule = SelectRule::kTopK;
  // The budget in tokens, which widening rounds double (as the CPU runner, whose budgets are
  // tokens: max(1, tokens / block_size) blocks are read). 0: budget_blocks * block_size.
  int32_t budget_tokens = 0;
};
// Doublings of `budget_tokens` until max(1, tokens / block_size) covers `num_blocks` (then a
// row reads every block): the widening rounds (WidenBudgets) a sequence may need. Host logic.
inline int64_t WideningRounds(int64_t num_blocks, int64_t block_size, int64_t budget_tokens) {
  int64_t rounds = 0;
  for (int64_t t = budget_tokens < 1 ? 1 : budget_tokens;
       (t / block_size < 1 ? 1 : t / block_size) < num_blocks; t *= 2) {
    ++rounds;
  }
  return rounds;
}

struct SelectRange {
  int32_t first = 0, last_begin = 0, take = 0;
};

// The ranges of `rule` for a sequence of n blocks (host and device).
LY_HOST_DEVICE inline SelectRange ResolveSelectRule(const SelectSeqRule& r, int32_t n) {
  auto clamp = [](int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); };
  const int32_t budget = r.budget_blocks < 1 ? 1 : r.budget_blocks;
  SelectRange s;
  if (n <= 0) return s;
  if (r.rule == SelectRule::kStreaming) {
    s.first = clamp(r.sink_blocks, 0, n);
    if (s.first >= n) {
      s.last_begin = n;
      return s;
    }
    const int32_t window = budget - s.first < 1 ? 1 : budget - s.first;
    const int32_t recent = n - window > s.first ? n - window : s.first;
    s.last_begin = recent < n - 1 ? recent : n - 1;
    return s;
  }
  const bool quest = r.rule == SelectRule::kQuest;
  s.first = clamp(r.sink_blocks, 0, quest ? n - 1 : n);
  const int32_t local = clamp(quest ? 1 : r.local_blocks, 0, n);
  s.last_begin = n - local > s.first ? n - local : s.first;
  const int32_t forced = s.first + (n - s.last_begin);
  s.take = clamp(budget - forced, 0, s.last_begin - s.first);
  return s;
}

// How the selection kernel finds a row's top-k threshold (the same pick either way).
enum class SelectSearch : int8_t {
  kBisect = 0,  // a bit a round, from the top bit (measured: the default)
  kRadix = 1,   // four bits a round from the scores' common prefix (measured 1.7-2.5 µs slower)
};

// How the selection kernel gives the chosen blocks their slots in index order (the same slots
// either way; kTopK rows).
enum class SelectEmit : int8_t {
  kWalk = 0,     // each warp walks its contiguous range twice, counting then emitting (measured)
  kStriped = 1,  // one ballot pass over register-strided chunks and one scan (measured 2-5 µs
                 // slower on the H100)
};

struct BlockSelectParams {
  // Pointers.
  const bf16* q = nullptr;                // [batch, q_row_stride] ([num_heads, head_dim] used)
  PagedKvBf16 cache;                      // one layer; key_summary required
  const int32_t* block_tables = nullptr;  // [batch, max_blocks_per_seq]
  const int32_t* context_lens = nullptr;  // [batch] keys of the sequence, incl. the query's own
  int32_t* sel_tables = nullptr;          // out [batch * num_kv_heads, budget_blocks] page ids
  int32_t* sel_lens = nullptr;            // out [batch * num_kv_heads] tokens of each row
  int32_t* maybe_sel_blocks = nullptr;    // out, optional: the logical blocks, same layout
  float* scores = nullptr;  // [batch * num_kv_heads, max_blocks_per_seq] workspace; after the
                            // call, each row's scores of its blocks (in log units, unscaled by
                            // log2 e: the bound of scale · q·k)
  // SparseBlockSelect only (QuestBlockSelect: every row kTopK under Quest's rule with
  // shape.budget_blocks and shape.sink_blocks, tables of width budget_blocks). With these,
  // sel_tables, maybe_sel_blocks (the rows' sets, required) and scores are
  // [batch * num_kv_heads, max_blocks_per_seq] and budget_blocks is unused.
  const int8_t* row_modes = nullptr;         // [batch * num_kv_heads] SelectRowMode
  const SelectSeqRule* seq_rules = nullptr;  // [batch]
  int32_t* maybe_set_sizes = nullptr;        // [batch * num_kv_heads] blocks in each row's set
  // Optional out [batch * num_kv_heads]: ln Σ over the blocks the row does not read of
  // tokens · exp(bound), the bound being the kv head's key-summary score (an upper bound of every
  // query head's scaled score); -inf when the row reads everything. Needs key summaries.
  float* maybe_log_unread = nullptr;
  // Optional out [2][batch * num_kv_heads]: sel_lens split for two decode launches, [0] the rows
  // that read everything (kAll, kExactTopK) and [1] the others, -1 where the row is the other's.
  int32_t* maybe_split_lens = nullptr;
  // Optional out [batch * num_kv_heads]: 1 where the row read an earlier set without scoring
  // (kInherit, a kPrhs row that reused its anchor), else 0.
  int32_t* maybe_row_reused = nullptr;
  // SparseBlockSelect: kExactTopK rows' exact scores are already in `scores` (the decode attention
  // of the rows that read everything wrote them: DecodeAttentionParams::maybe_block_scores), so
  // the score kernel leaves those rows alone and the top-k ranks what it finds there.
  bool exact_scores_given = false;
  // SparseBlockSelect, optional out [batch * num_kv_heads]: LycheeDecode's hybrid launch
  // (DecodeAttentionParams::full_block_tables). The layer's attention ran before the selection, its
  // kExactTopK rows over their sequences' own tables, so those rows' sel_tables rows are free:
  // each gets the pages of its new set (instead of every page) and its token count here. A
  // kInherit row of a later layer reads that set, so the next hybrid launches attend it from
  // sel_tables over these lengths without a selection before them; its own selection then
  // writes no pages (the attention may be reading them), only its length, reuse flag and bound.
  // sel_lens keeps what each row read (the sequence's length for kExactTopK).
  int32_t* maybe_set_lens = nullptr;
  // SparseBlockSelect: the rows this launch handles. With kReadsAllRows and exact_scores_given
  // no scoring kernel runs (none of those rows scores).
  SelectRowFilter row_filter = SelectRowFilter::kAllRows;
  // kPrhs rows only: [batch] per-sequence params, and the anchor arenas (rows as
  // PrhsSeqParams::anchor_row says): q̄ [rows, head_dim] fp32, info [rows, 2] (the budget the
  // anchor was chosen under, 0 = none; its block count), blocks [rows, kPrhsMaxAnchorBlocks].
  // The select kernel writes a new anchor where a row rescored.
  const PrhsSeqParams* prhs_seqs = nullptr;
  float* prhs_scores = nullptr;  // [batch * num_kv_heads, max_blocks_per_seq] workspace: exact
                                 // scores of rescoring kPrhs rows (scores keeps their bounds)
  float* prhs_anchor_q = nullptr;
  int32_t* prhs_anchor_info = nullptr;
  int32_t* prhs_anchor_blocks = nullptr;
  // kPrhs rows under max_dropped_mass < 1: [batch, num_heads, max_blocks_per_seq] workspace, each
  // query head's key-summary lower bound of scale · q·k per block (the score kernel's, for the
  // select's GrowPrhsToBound), and out [batch * num_kv_heads]: 1 where a row's set could not meet
  // the bound within 4x its budget and it read everything (a dense fallback), else 0.
  float* prhs_lower = nullptr;
  int32_t* prhs_row_fallback = nullptr;
  // Widening rounds (max_dropped_mass < 1; SparseBlockSelect only), both [batch *
  // num_kv_heads], from WidenBudgets: a launch with maybe_row_active only reselects the rows
  // marked 1 there, with max(1, maybe_row_budgets / block_size) blocks in place of their rule's
  // budget, from the bounds an earlier launch left in `scores`; other rows keep every output.
  // kTopK rows choose again by their rule; a kInherit row (a LycheeDecode sparse head) reads its
  // inherited set plus its own choice under the rule (kTopK) by the exact scores of its
  // group-mean query, which the round's score kernel writes to maybe_widen_scores ([batch *
  // num_kv_heads, max_blocks_per_seq]; without it no scoring kernel runs), and its set stays the
  // inherited one. No kPrhs rows.
  const int32_t* maybe_row_budgets = nullptr;
  const int32_t* maybe_row_active = nullptr;
  float* maybe_widen_scores = nullptr;
  // Bench/debug, optional: [batch * num_kv_heads, kSelectPhases] the SM's clock64 when the
  // selection kernel's CTA for the row finished each phase (SelectPhase; 0 where a row's mode
  // skips one), so a one-launch profile splits its time without Nsight.
  int64_t* maybe_phase_clocks = nullptr;
  // Sizes.
  BlockSelectShape shape;
  int64_t q_row_stride = 0;  // 0 = num_heads * head_dim
  // Scalars.
  float scale = 1.0f;
  // Both kernels (scoring, selection) with programmatic dependent launch (launch.cuh).
  bool programmatic_launch = false;
  // The selection's top-k search (launches with kPrhs inputs always bisect) and emission.
  SelectSearch search = SelectSearch::kBisect;
  SelectEmit emit = SelectEmit::kWalk;
};

// The selection kernel's phases, as BlockSelectParams::maybe_phase_clocks records their ends.
enum SelectPhase : int {
  kSelectEntry = 0,     // the CTA started
  kSelectPlanned = 1,   // the row's plan (its length, mode and rule) is known
  kSelectStaged = 2,    // its scores are in shared memory
  kSelectBisected = 3,  // the top-k threshold is found
  kSelectEmitted = 4,   // the chosen blocks have their slots
  kSelectGathered = 5,  // their page ids and the row's length are written
  kSelectEnd = 6,       // done (after the unread bound, when wanted)
  kSelectPhases = 7,
};

// Per-sequence totals of a sparse decode step, accumulated over layers by AccumulateDroppedMass
// (zero-fill before the first layer; max_bound starts at 0).
struct SparseSeqStats {
  float max_bound = 0.0f;       // largest certified dropped-mass bound over layers and kv heads
  float exact_max = 0.0f;       // largest exact dropped mass (launches given the dense LSE)
  double sum_bound = 0.0;       // sum of the per-(layer, kv head) bounds
  int64_t heads = 0;            // (layer, kv head) rows
  int64_t tokens_read = 0;      // KV tokens the attention read, over layers and kv heads
  int64_t reused = 0;           // rows that read an earlier set without scoring (kInherit, a kPrhs
                                // anchor reused)
  int64_t widenings = 0;        // row budgets doubled by WidenBudgets (over rounds and layers)
  int64_t dense_fallbacks = 0;  // kPrhs rows that read everything to meet max_dropped_mass
};
static_assert(sizeof(SparseSeqStats) == 56);

// The certified dropped mass of one query head (an upper bound of the softmax mass of the keys
// it did not read): 1 / (1 + exp(lse - log_unread)), lse the natural-log mass it read and
// log_unread SparseBlockSelect's bound of the unread mass; 0 when it read everything.
LY_HOST_DEVICE inline float CertifiedDroppedMass(float lse, float log_unread) {
  if (log_unread == -INFINITY) return 0.0f;
  return 1.0f / (1.0f + expf(lse - log_unread));
}
// A kv head's certified dropped mass: the worst of its `group` query heads, lse[0, group).
LY_HOST_DEVICE inline float KvHeadBound(const float* lse, int64_t group, float log_unread) {
  float bound = 0.0f;
  for (int64_t h = 0; h < group; ++h) {
    bound = fmaxf(bound, CertifiedDroppedMass(lse[h], log_unread));
  }
  return bound;
}
// One row's widening decision (WidenBudgets, as the CPU runner's): it widens when its bound
// misses max_mass and it does not read everything yet (log_unread -inf), and then its budget
// (tokens) doubles, up to 2^30.
LY_HOST_DEVICE inline bool WidenRow(float max_mass, const float* lse, int64_t group,
                                    float log_unread, int64_t* tokens) {
  const bool widen =
      max_mass < 1.0f && log_unread != -INFINITY && KvHeadBound(lse, group, log_unread) > max_mass;
  if (widen) *tokens = *tokens * 2 < (int64_t{1} << 30) ? *tokens * 2 : int64_t{1} << 30;
  return widen;
}

struct DroppedMassParams {
  const float* lse = nullptr;  // [batch, num_heads]: the sparse attention's maybe_lse
  // Optional [batch, num_heads]: dense attention's LSE of the same queries (an audit); the exact
  // dropped mass 1 - exp(lse - dense_lse) then goes into exact_max.
  const float* maybe_dense_lse = nullptr;
  const float* log_unread = nullptr;            // [batch * num_kv_heads]: SparseBlockSelect's
  const int32_t* sel_lens = nullptr;            // [batch * num_kv_heads]: tokens each row read
  const int32_t* maybe_row_reused = nullptr;    // [batch * num_kv_heads]: SparseBlockSelect's
  const int32_t* maybe_row_fallback = nullptr;  // [batch * num_kv_heads]: its prhs_row_fallback
  SparseSeqStats* stats = nullptr;              // [batch], accumulated
  int64_t batch = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  // Launch with programmatic dependent launch (kernels/cuda/launch.cuh): the kernel may be
  // placed during the previous kernel of the stream and waits for it before it reads anything.
  bool programmatic_launch = false;
};

// One widening round of max_dropped_mass (the CPU runner's rule, on the device): a row whose
// certified bound (the worst of its kv head's query heads, after the sparse attention of its
// current set) exceeds its sequence's max_dropped_mass and that does not read everything yet gets
// its budget doubled and is marked active; every other row is marked inactive and its part-1
// length (SparseBlockSelect's maybe_split_lens[1]) set to -1, so the next SparseBlockSelect
// (maybe_row_active) and sparse attention redo only the widened rows.
struct WidenBudgetsParams {
  const float* lse = nullptr;         // [batch, num_heads]: the sparse attention's maybe_lse
  const float* log_unread = nullptr;  // [batch * num_kv_heads]: SparseBlockSelect's
  const float* max_mass = nullptr;    // [batch]: each sequence's max_dropped_mass (>= 1: never)
  // [batch * num_kv_heads] tokens, doubled where widened: out (from the rules) in a layer's first
  // round, in/out after it.
  int32_t* row_budgets = nullptr;
  const SelectSeqRule* seq_rules = nullptr;  // [batch]: the first round's budgets
  bool first_round = true;
  int64_t block_size = 0;           // the rules' (budget_tokens 0: budget_blocks * block_size)
  int32_t* row_active = nullptr;    // [batch * num_kv_heads] out: 1 where widened
  int32_t* part1_lens = nullptr;    // [batch * num_kv_heads]: -1 written where not widened
  SparseSeqStats* stats = nullptr;  // [batch]: widenings added
  int64_t batch = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  bool programmatic_launch = false;  // as DroppedMassParams
};

// Supported: head_dim 64/128, GQA group 1..8, budget_blocks in (sink_blocks, max_blocks_per_seq],
// max_blocks_per_seq <= kBlockSelectMaxBlocks, the cache's key summaries present. Host logic.
absl::Status CanImplementBlockSelect(const BlockSelectShape& shape);
absl::Status CanRunBlockSelect(const BlockSelectParams& params);

// Enqueues scoring and selection on `stream`. Context lengths are read on the device (clamped to
// the block table); a length of 0 gives an empty row.
[[nodiscard]] absl::Status QuestBlockSelect(const BlockSelectParams& params, cudaStream_t stream);

// Checks for SparseBlockSelect: the per-row pointers and sets present (budget_blocks unused); a
// widening round (maybe_row_active) also needs maybe_row_budgets, maybe_log_unread and
// maybe_split_lens, and no kPrhs inputs.
absl::Status CanRunSparseBlockSelect(const BlockSelectParams& params);

// Enqueues scoring (rows that need it) and the per-row selection on `stream`; no host sync.
[[nodiscard]] absl::Status SparseBlockSelect(const BlockSelectParams& params, cudaStream_t stream);

// Checks for WidenBudgets: every pointer set, sizes positive, heads a multiple of kv heads.
absl::Status CanRunWidenBudgets(const WidenBudgetsParams& params);

// Enqueues one widening round (WidenBudgetsParams) on `stream`; no host sync.
[[nodiscard]] absl::Status WidenBudgets(const WidenBudgetsParams& params, cudaStream_t stream);

// Per kv head, the bound is the max over its query heads of 1 / (1 + exp(lse_h - log_unread)),
// the certified dropped mass (an upper bound of the unread softmax mass given the read mass
// exp(lse_h)); added to stats with the tokens read. One launch, no host sync.
[[nodiscard]] absl::Status AccumulateDroppedMass(const DroppedMassParams& params,
                                                 cudaStream_t stream);

}  // namespace lychee::cuda
