// SPDX-License-Identifier: Apache-2.0
// CudaSparseDecode: the sparse policies of a decode step on the GPU (CudaModelRunner's helper).
//
// The CPU runner calls Policy::Select per request and layer; on the GPU that would be a host
// round trip per layer. Instead each request's policy is turned into data once per step
// (Policy::device_selection: a rule per sequence and a mode per layer and kv head, uploaded with
// the step) and every layer runs, for the whole batch of decode rows: the DecodeAttention of the
// rows that read everything (with 16-token blocks first, writing the retrieval heads' exact block
// scores into scores()), SparseBlockSelect (scoring and top-k into per-(sequence, kv head) block
// tables; dense requests read everything), the sparse DecodeAttention of the budget-bound rows
// with those tables and the LSE, and AccumulateDroppedMass (certified bound, tokens read).
// Audited rows also run dense attention for the exact dropped mass. The per-sequence totals come
// back with the step's results. A step whose policy rows are all LycheeDecode's (hybrid()) runs
// each layer's attention as ONE launch before the selection instead: the retrieval heads over
// every token, the sparse heads over the sets earlier layers left (ALGORITHMS.md 3.2's hybrid
// kernel; the sparse heads no longer wait for the retrieval heads' attention and selection),
// and the selection and the dropped mass on a second stream beside the rest of the layer
// (CudaModelRunner::Impl::HybridSparseAttention).
//
// max_dropped_mass < 1, quest, streaming and lychee: as the CPU
// runner, every kv head starts at the request's budget (every block at max_dropped_mass 0) and,
// while its certified bound misses max_dropped_mass and it does not read everything, its budget
// doubles and it is selected and attended again (a LycheeDecode sparse head: its inherited set
// plus its own choice by exact scores under the doubled budget). On the device: after a layer's
// sparse attention, widening_rounds() rounds of Widen (WidenBudgets, then SparseBlockSelect of the
// widened rows only) and the part-1 attention again (rows not widened have length -1 and are
// skipped). The host fixes the round count from the lengths and budgets (enough to reach every
// block), so a round with nothing left to widen costs three near-empty launches and no host round
// trip. prhs under max_dropped_mass < 1 controls in advance instead, as its CPU policy: the
// select kernel grows each row's set until the pre-read bound (box bounds of the unread blocks,
// each query head's lower bounds of the read ones) meets it, or reads everything past 4x the
// budget (GrowPrhsToBound); since that bound is never below the certified one, it never widens.
//
// Semantics per policy (as the CPU policies):
//   quest      every layer and kv head: Quest's rule over key-summary bounds
//   streaming  sinks + recent window (no scoring)
//   lychee     layer 0 and the mask's retrieval heads read everything and choose the set of their
//              kv-head index by exact scores; the other heads read the set last chosen there
//   prhs       every layer and kv head: CIS anchors on the device (an arena row per request
//              slot, layer and kv head, keyed by Policy::serial; a request whose slot was given
//              to another rescores), dilation, PSAW windows (per layer, computed here)
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model_runner.h"
#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "scheduler/scheduler.h"
#include "sparsity/policy.h"

namespace lychee {

// Whether the CUDA backend can run `spec` with pages of `block_size` tokens (OK, or
// InvalidArgument saying why not).
absl::Status CudaSparsePolicySupport(const PolicySpec& spec, int64_t block_size = 16);

// The selection rule a policy gives its sequence (budget and sinks in blocks), and the mode of kv
// head `kv_head` at `layer`: pure host logic, checked against the CPU policies without a GPU
// (cuda_sparse_rules_test). kNone (a dense request): kAll everywhere. max_dropped_mass <= 0 reads
// every block from the start (as the CPU runner): the budget is then unbounded.
cuda::SelectSeqRule SeqRuleFor(const sparsity::DeviceSelection& d, int64_t budget_tokens,
                               int64_t block_size, double max_dropped_mass = 1.0);
cuda::SelectRowMode RowModeFor(const sparsity::DeviceSelection& d, int64_t layer, int64_t kv_head);

class CudaSparseDecode {
 public:
  struct Sizes {
    int64_t num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, block_size = 0;
    int64_t max_rows = 0;            // decode rows a step may have (max_num_seqs)
    int64_t max_blocks_per_seq = 0;  // block-table width at most
  };
  // programmatic_launch: the selection and dropped-mass kernels are launched with programmatic
  // dependent launch (CudaModelRunnerOptions::programmatic_launch). hybrid_launch: steps whose
  // policy rows are all LycheeDecode's attend in one launch a layer (hybrid(); with 16-token
  // blocks, not while widening).
  CudaSparseDecode(const Sizes& sizes, bool programmatic_launch, bool hybrid_launch = false)
      : sizes_(sizes), programmatic_launch_(programmatic_launch), hybrid_launch_(hybrid_launch) {}
  ~CudaSparseDecode();
  CudaSparseDecode(const CudaSparseDecode&) = delete;
  CudaSparseDecode& operator=(const CudaSparseDecode&) = delete;

  // From the next Prepare (benchmarks compare both in one process).
  void set_hybrid_launch(bool enabled) { hybrid_launch_ = enabled; }

  // Whether any of the first `num_decodes` chunks has a policy (the step then runs here).
  static bool Wanted(absl::Span<sparsity::Policy* const> policies, int64_t num_decodes);

  // The step's rules and modes from the policies of its first `num_decodes` chunks (dense where
  // null), uploaded on `stream`; the stats zeroed. Allocates its buffers on first use. for_graph:
  // the step is replayed from a CUDA graph: decode rows past the step's chunks are padding (dense,
  // one token), and the part-1 length caps are rounded up to powers of two so that the next steps
  // of the same requests share GraphKey().
  absl::Status Prepare(const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies,
                       int64_t num_decodes, int64_t width, cudaStream_t stream,
                       bool for_graph = false);
  // What the step's launches take from the host besides device buffers: two steps with the same
  // key (and the same batch and context buckets) enqueue the same kernels with the same
  // parameters, so one captured graph serves both (CudaGraphCache::Key::sparse).
  std::vector<int64_t> GraphKey() const;

  // One layer: selection into tables()/lens() for q (decode rows, q_row_stride elements apart;
  // 0: contiguous) over `cache`. exact_scores_given: the layer's kExactTopK rows already have
  // their exact block scores in scores() (see there). In a hybrid step it leaves each
  // kExactTopK row's new set in tables() and set_lens() for the next layers' launches
  // (BlockSelectParams::maybe_set_lens), in two launches a layer: `filter` kBudgetRows (the
  // sparse heads' bounds, beside the attention on a second stream; without programmatic launch)
  // and kReadsAllRows (the retrieval heads' top-k, after it).
  absl::Status Select(int64_t layer, const cuda::bf16* q, int64_t q_row_stride,
                      const cuda::PagedKvBf16& cache, const int32_t* block_tables,
                      const int32_t* context_lens, float scale, bool exact_scores_given,
                      cudaStream_t stream,
                      cuda::SelectRowFilter filter = cuda::SelectRowFilter::kAllRows,
                      bool programmatic_launch = true);
  // Widening rounds a layer runs this step (0 without a sequence under max_dropped_mass < 1),
  // and round `round` (1 ..): WidenBudgets over lse() and the bounds, then SparseBlockSelect of
  // the widened rows (inputs as Select's). Afterwards split_lens(1) holds the widened rows'
  // lengths and -1 elsewhere: the part-1 attention runs again over row_list(layer, 1), planned
  // for at most widened_tokens(round) tokens a row.
  int64_t widening_rounds() const { return widening_rounds_; }
  absl::Status Widen(int64_t layer, int64_t round, const cuda::bf16* q, int64_t q_row_stride,
                     const cuda::PagedKvBf16& cache, const int32_t* block_tables,
                     const int32_t* context_lens, float scale, cudaStream_t stream);
  int64_t widened_tokens(int64_t round) const;
  // After the sparse attention wrote lse(): the layer's bounds (and, when dense_lse is given,
  // the exact dropped mass) into the per-sequence stats.
  absl::Status Accumulate(const float* maybe_dense_lse, cudaStream_t stream,
                          bool programmatic_launch = true);
  // Copies the stats to pinned memory on `stream` (after the last layer).
  absl::Status EnqueueStatsCopy(cudaStream_t stream);
  // After the stream was synchronised: the step's per-chunk stats (dense chunks untouched).
  void CollectStats(const SchedulerOutput& step, std::vector<SparseChunkStats>* stats) const;

  const int32_t* tables() const { return tables_.get(); }  // [rows * kv_heads, width]
  // [rows * kv_heads, width]: the rows' block scores (Select's workspace); a decode attention of
  // the rows that read everything may write the retrieval heads' exact scores here first (Select
  // with exact_scores_given).
  float* scores() { return scores_.get(); }
  int64_t width() const { return width_; }
  const int32_t* lens() const { return lens_.get(); }  // [rows * kv_heads]
  // A hybrid step (LycheeDecode's rows only, 16-token blocks, no widening): each layer attends in
  // ONE launch over hybrid_row_list(layer), planned for its part-0 rows, before Select: the rows
  // that read everything (flagged kDecodeRowReadsSequence: their sequences' own tables, writing
  // their exact block scores into scores()) and the sparse heads, whose sets an earlier layer's
  // retrieval rows chose and left in tables() with their lengths in set_lens()
  // (DecodeAttentionParams::full_block_tables). Layer 0 is all retrieval, so every set exists
  // before a sparse head reads it.
  bool hybrid() const { return hybrid_; }
  const int32_t* set_lens() const { return set_lens_.get(); }  // [rows * kv_heads]
  const int32_t* hybrid_row_list(int64_t layer) const {
    return reinterpret_cast<const int32_t*>(inputs_.get() + lists_offset_) +
           (kLists * layer + 2) * rows_ * sizes_.num_kv_heads;
  }
  // The lengths split for two attention launches (part 0: rows that read everything, part 1 the
  // budget-bound rest; -1 for the other part's rows), and how many rows each part has at `layer`.
  const int32_t* split_lens(int part) const {
    return split_lens_.get() + part * rows_ * sizes_.num_kv_heads;
  }
  int64_t part_rows(int64_t layer, int part) const {
    return part_rows_[static_cast<size_t>(2 * layer + part)];
  }
  // The part's (sequence, kv head) rows at `layer`, as row * num_kv_heads + kv_head
  // (DecodeAttentionParams::maybe_row_list), part_rows(layer, part) of them.
  const int32_t* row_list(int64_t layer, int part) const {
    return reinterpret_cast<const int32_t*>(inputs_.get() + lists_offset_) +
           (kLists * layer + part) * rows_ * sizes_.num_kv_heads;
  }
  // An upper bound of the tokens a part-1 row reads this step.
  int64_t max_sparse_tokens() const { return max_sparse_tokens_; }
  float* lse() { return lse_.get(); }                   // [rows, num_heads]
  float* dense_lse() { return dense_lse_.get(); }       // [rows, num_heads] (audits)
  cuda::bf16* audit_out() { return audit_out_.get(); }  // [rows, num_heads * head_dim]
  int64_t rows() const { return rows_; }
  bool audited() const { return audited_; }

 private:
  absl::Status Allocate();
  // SparseBlockSelect's params for `layer` (Select's and Widen's inputs).
  cuda::BlockSelectParams SelectParams(int64_t layer, const cuda::bf16* q, int64_t q_row_stride,
                                       const cuda::PagedKvBf16& cache, const int32_t* block_tables,
                                       const int32_t* context_lens, float scale) const;
  // kPrhs: the arena slot of a policy (by serial) for this step, growing the arenas when every
  // slot is held by a request of this step; a slot new to its policy starts without anchors.
  absl::StatusOr<int32_t> PrhsSlot(uint64_t serial, int64_t prhs_rows, cudaStream_t stream);
  absl::Status GrowPrhsArenas(int64_t slots, cudaStream_t stream);

  // Row lists per layer: part 0, part 1, the hybrid launch's.
  static constexpr int64_t kLists = 3;

  Sizes sizes_;
  bool programmatic_launch_ = false;
  bool hybrid_launch_ = false;
  bool hybrid_ = false;  // this step (hybrid())
  bool allocated_ = false;
  int64_t rows_ = 0, width_ = 0;
  bool audited_ = false;
  std::vector<uint8_t> sparse_rows_;                   // per decode row: has a policy
  std::vector<uint8_t> audit_rows_;                    // per decode row: audited
  std::vector<sparsity::DeviceSelection> selections_;  // per decode row (this step's policies)
  std::vector<int64_t> part_rows_;                     // [layers][2]
  int64_t max_sparse_tokens_ = 0;
  int64_t widening_rounds_ = 0;
  int64_t max_widening_ctx_ = 0;  // the longest sequence under max_dropped_mass < 1
  // Device: the inputs (modes [layers][rows][kv_heads] int8, then rules), the sets and outputs.
  cuda::DeviceBuffer<uint8_t> inputs_;
  cuda::DeviceBuffer<int32_t> tables_, lens_, split_lens_, sets_, set_sizes_, row_reused_,
      set_lens_;
  cuda::DeviceBuffer<int32_t> row_budgets_, row_active_;  // widening rounds
  // LycheeDecode sequences widen this step: their widened sparse heads' exact scores.
  bool widen_exact_ = false;
  cuda::DeviceBuffer<float> widen_scores_;
  cuda::DeviceBuffer<float> scores_, log_unread_, lse_, dense_lse_;
  cuda::DeviceBuffer<cuda::bf16> audit_out_;
  cuda::DeviceBuffer<cuda::SparseSeqStats> stats_;
  std::vector<uint8_t> inputs_h_;
  cuda::SparseSeqStats* stats_h_ = nullptr;  // pinned
  size_t rules_offset_ = 0;
  size_t mass_offset_ = 0;   // [rows_] float: each sequence's max_dropped_mass (1: none)
  size_t lists_offset_ = 0;  // [layers][kLists][rows_ * kv heads] int32 row lists
  // kPrhs: per (layer, row) params, the exact-score workspace and the anchor arenas
  // ([slot][layer][kv head] rows), allocated on first use.
  bool has_prhs_ = false;
  std::vector<cuda::PrhsSeqParams> prhs_h_;
  cuda::DeviceBuffer<cuda::PrhsSeqParams> prhs_params_;
  cuda::DeviceBuffer<float> prhs_scores_, anchor_q_;
  cuda::DeviceBuffer<int32_t> anchor_info_, anchor_blocks_;
  // kPrhs under max_dropped_mass < 1 this step: each query head's lower bounds (allocated on
  // first use) and the rows' dense fallbacks.
  bool prhs_control_ = false;
  cuda::DeviceBuffer<float> prhs_lower_;
  cuda::DeviceBuffer<int32_t> prhs_fallback_;
  int64_t prhs_slots_ = 0;
  int64_t step_ = 0;
  std::unordered_map<uint64_t, int32_t> slot_of_;  // policy serial -> slot
  std::vector<uint64_t> slot_owner_;               // 0: free
  std::vector<int64_t> slot_step_;                 // the last step that used it
};

}  // namespace lychee
