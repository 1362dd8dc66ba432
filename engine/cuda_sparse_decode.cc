// SPDX-License-Identifier: Apache-2.0
#include "engine/cuda_sparse_decode.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/decode_attention.h"
#include "sparsity/head_roles.h"
#include "sparsity/prhs_policy.h"

namespace lychee {
namespace {

using Kind = sparsity::DeviceSelection::Kind;

int32_t CeilDiv(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

}  // namespace

absl::Status CudaSparsePolicySupport(const PolicySpec& spec, int64_t block_size) {
  if (spec.name.empty() || spec.name == "dense") return absl::OkStatus();
  if (spec.name != "quest" && spec.name != "streaming" && spec.name != "lychee" &&
      spec.name != "prhs") {
    return absl::InvalidArgumentError(
        absl::StrCat("policy: '", spec.name,
                     "' does not run on the CUDA backend (dense, quest, streaming, lychee and "
                     "prhs do); start the server with --device cpu for it"));
  }
  if (spec.name == "prhs" && spec.budget_tokens / block_size > cuda::kPrhsMaxAnchorBlocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy: prhs budget_tokens ", spec.budget_tokens,
                     " exceeds the CUDA backend's ", cuda::kPrhsMaxAnchorBlocks * block_size, " (",
                     cuda::kPrhsMaxAnchorBlocks, " blocks an anchor holds)"));
  }
  if (spec.name == "lychee" && spec.lychee.mode != "block") {
    return absl::InvalidArgumentError(
        "policy: lychee's token mode does not run on the CUDA backend yet (block mode does)");
  }
  return absl::OkStatus();
}

cuda::SelectSeqRule SeqRuleFor(const sparsity::DeviceSelection& d, int64_t budget_tokens,
                               int64_t block_size, double max_dropped_mass) {
  const int64_t bs = block_size;
  cuda::SelectSeqRule rule;
  // max_dropped_mass 0 cannot be certified short of reading everything (as the CPU runner).
  const int64_t tokens = max_dropped_mass <= 0.0 ? int64_t{1} << 30 : budget_tokens;
  rule.budget_tokens = static_cast<int32_t>(std::clamp<int64_t>(tokens, 1, int64_t{1} << 30));
  rule.budget_blocks = static_cast<int32_t>(std::clamp<int64_t>(tokens / bs, 1, 1 << 30));
  rule.sink_blocks = CeilDiv(d.sink_tokens, bs);
  switch (d.kind) {
    case Kind::kNone:
    case Kind::kQuest:
      rule.rule = cuda::SelectRule::kQuest;
      break;
    case Kind::kStreaming:
      rule.rule = cuda::SelectRule::kStreaming;
      break;
    case Kind::kLychee:
    case Kind::kPrhs:
      rule.rule = cuda::SelectRule::kTopK;
      // The query's own block plus enough whole blocks for the local window (LycheeTopSet).
      rule.local_blocks = 1 + CeilDiv(std::max<int64_t>(0, d.local_tokens - 1), bs);
      break;
  }
  return rule;
}

cuda::SelectRowMode RowModeFor(const sparsity::DeviceSelection& d, int64_t layer, int64_t kv_head) {
  switch (d.kind) {
    case Kind::kNone:
      return cuda::SelectRowMode::kAll;
    case Kind::kQuest:
    case Kind::kStreaming:
      return cuda::SelectRowMode::kTopK;
    case Kind::kLychee:
      // Layer 0 is all retrieval, so every kv-head index has a set before a sparse head reads it.
      return layer == 0 || d.roles == nullptr || d.roles->retrieval(layer, kv_head)
                 ? cuda::SelectRowMode::kExactTopK
                 : cuda::SelectRowMode::kInherit;
    case Kind::kPrhs:
      return cuda::SelectRowMode::kPrhs;
  }
  return cuda::SelectRowMode::kAll;
}

bool CudaSparseDecode::Wanted(absl::Span<sparsity::Policy* const> policies, int64_t num_decodes) {
  const int64_t n = std::min<int64_t>(num_decodes, static_cast<int64_t>(policies.size()));
  for (int64_t c = 0; c < n; ++c) {
    if (policies[static_cast<size_t>(c)] != nullptr) return true;
  }
  return false;
}

CudaSparseDecode::~CudaSparseDecode() {
  if (stats_h_ != nullptr) cudaFreeHost(stats_h_);
}

absl::Status CudaSparseDecode::Allocate() {
  const Sizes& s = sizes_;
  const size_t rows = static_cast<size_t>(s.max_rows * s.num_kv_heads);
  const size_t cells = rows * static_cast<size_t>(s.max_blocks_per_seq);
  LY_RETURN_IF_ERROR(tables_.Allocate(cells));
  LY_RETURN_IF_ERROR(sets_.Allocate(cells));
  LY_RETURN_IF_ERROR(scores_.Allocate(cells));
  LY_RETURN_IF_ERROR(lens_.Allocate(rows));
  LY_RETURN_IF_ERROR(set_lens_.Allocate(rows));
  LY_RETURN_IF_ERROR(split_lens_.Allocate(2 * rows));
  LY_RETURN_IF_ERROR(set_sizes_.Allocate(rows));
  LY_RETURN_IF_ERROR(row_reused_.Allocate(rows));
  LY_RETURN_IF_ERROR(prhs_fallback_.Allocate(rows));
  LY_RETURN_IF_ERROR(row_budgets_.Allocate(rows));
  LY_RETURN_IF_ERROR(row_active_.Allocate(rows));
  LY_RETURN_IF_ERROR(log_unread_.Allocate(rows));
  LY_RETURN_IF_ERROR(lse_.Allocate(static_cast<size_t>(s.max_rows * s.num_heads)));
  LY_RETURN_IF_ERROR(dense_lse_.Allocate(static_cast<size_t>(s.max_rows * s.num_heads)));
  LY_RETURN_IF_ERROR(
      audit_out_.Allocate(static_cast<size_t>(s.max_rows * s.num_heads * s.head_dim)));
  LY_RETURN_IF_ERROR(stats_.Allocate(static_cast<size_t>(s.max_rows)));
  rules_offset_ = (static_cast<size_t>(s.num_layers) * rows + 15) / 16 * 16;
  mass_offset_ =
      (rules_offset_ + static_cast<size_t>(s.max_rows) * sizeof(cuda::SelectSeqRule) + 15) / 16 *
      16;
  lists_offset_ = (mass_offset_ + static_cast<size_t>(s.max_rows) * sizeof(float) + 15) / 16 * 16;
  LY_RETURN_IF_ERROR(inputs_.Allocate(lists_offset_ + kLists * static_cast<size_t>(s.num_layers) *
                                                          rows * sizeof(int32_t)));
  void* pinned = nullptr;
  LY_CUDA_RETURN_IF_ERROR(
      cudaMallocHost(&pinned, static_cast<size_t>(s.max_rows) * sizeof(cuda::SparseSeqStats)));
  stats_h_ = static_cast<cuda::SparseSeqStats*>(pinned);
  allocated_ = true;
  return absl::OkStatus();
}

absl::Status CudaSparseDecode::Prepare(const SchedulerOutput& step,
                                       absl::Span<sparsity::Policy* const> policies,
                                       int64_t num_decodes, int64_t width, cudaStream_t stream,
                                       bool for_graph) {
  const Sizes& s = sizes_;
  if (num_decodes > s.max_rows || width > s.max_blocks_per_seq) {
    return absl::InternalError(absl::StrCat("sparse decode: ", num_decodes, " rows of width ",
                                            width, " exceed ", s.max_rows, " x ",
                                            s.max_blocks_per_seq));
  }
  if (!allocated_) LY_RETURN_IF_ERROR(Allocate());
  rows_ = num_decodes;
  width_ = width;
  const int64_t kv = s.num_kv_heads, bs = s.block_size;
  // Modes per layer and row lists per (layer, part) are laid out for rows_ rows, so the upload
  // is exactly what this step uses.
  const size_t row_stride = static_cast<size_t>(rows_ * kv);
  mass_offset_ =
      (rules_offset_ + static_cast<size_t>(rows_) * sizeof(cuda::SelectSeqRule) + 15) / 16 * 16;
  lists_offset_ = (mass_offset_ + static_cast<size_t>(rows_) * sizeof(float) + 15) / 16 * 16;
  inputs_h_.assign(
      lists_offset_ + kLists * static_cast<size_t>(s.num_layers) * row_stride * sizeof(int32_t), 0);
  auto list_at = [&](int64_t layer, int list) {
    return reinterpret_cast<int32_t*>(inputs_h_.data() + lists_offset_) +
           static_cast<size_t>(kLists * layer + list) * row_stride;
  };
  sparse_rows_.assign(static_cast<size_t>(rows_), 0);
  audit_rows_.assign(static_cast<size_t>(rows_), 0);
  audited_ = false;
  part_rows_.assign(static_cast<size_t>(2 * s.num_layers), 0);
  max_sparse_tokens_ = 0;
  widening_rounds_ = 0;
  max_widening_ctx_ = 0;
  widen_exact_ = false;
  prhs_control_ = false;
  // One hybrid launch a layer while every policy row is LycheeDecode's (no row chooses before
  // the attention) and nothing widens (widening needs the part-1 launch on its own).
  hybrid_ = hybrid_launch_ && s.block_size == cuda::kBlockScoresBlockSize;
  bool any_lychee = false;
  ++step_;
  // Each row's policy as data (dense rows: kNone).
  selections_.assign(static_cast<size_t>(rows_), sparsity::DeviceSelection{});
  int64_t prhs_rows = 0;
  for (int64_t r = 0; r < rows_ && static_cast<size_t>(r) < policies.size(); ++r) {
    const sparsity::Policy* policy = policies[static_cast<size_t>(r)];
    if (policy == nullptr) continue;
    selections_[static_cast<size_t>(r)] = policy->device_selection();
    prhs_rows += selections_[static_cast<size_t>(r)].kind == Kind::kPrhs;
    const bool lychee = selections_[static_cast<size_t>(r)].kind == Kind::kLychee;
    any_lychee = any_lychee || lychee;
    hybrid_ = hybrid_ && lychee;
  }
  has_prhs_ = prhs_rows > 0;
  if (has_prhs_) {
    prhs_h_.assign(static_cast<size_t>(s.num_layers * rows_), cuda::PrhsSeqParams{});
    if (prhs_params_.size() == 0) {
      const size_t cells = static_cast<size_t>(s.max_rows * s.num_kv_heads * s.max_blocks_per_seq);
      LY_RETURN_IF_ERROR(prhs_params_.Allocate(static_cast<size_t>(s.num_layers * s.max_rows)));
      LY_RETURN_IF_ERROR(prhs_scores_.Allocate(cells));
    }
  }
  auto mode_at = [&](int64_t layer, int64_t row, int64_t g) -> int8_t& {
    return reinterpret_cast<int8_t&>(
        inputs_h_[static_cast<size_t>(layer) * row_stride + static_cast<size_t>(row * kv + g)]);
  };
  for (int64_t r = 0; r < rows_; ++r) {
    sparsity::Policy* policy =
        static_cast<size_t>(r) < policies.size() ? policies[static_cast<size_t>(r)] : nullptr;
    const sparsity::DeviceSelection& d = selections_[static_cast<size_t>(r)];
    const bool padding = static_cast<size_t>(r) >= step.chunks.size();  // a graph's spare row
    const int64_t ctx = padding ? 1 : step.chunks[static_cast<size_t>(r)].start_position + 1;
    if (policy != nullptr && d.kind == Kind::kNone) {
      return absl::InvalidArgumentError(absl::StrCat("policy '", std::string(policy->name()),
                                                     "' has no CUDA form (the engine should "
                                                     "have refused it)"));
    }
    const double max_mass = policy == nullptr ? 1.0 : policy->limits().max_dropped_mass;
    // PrHS controls in advance (GrowPrhsToBound): its rows never widen after the attention.
    const bool controls = max_mass < 1.0 && d.kind == Kind::kPrhs;
    const bool widens = max_mass < 1.0 && !controls;
    prhs_control_ = prhs_control_ || controls;
    const cuda::SelectSeqRule rule =
        SeqRuleFor(d, policy == nullptr ? 1 : policy->limits().budget_tokens, bs, max_mass);
    // LycheeDecode under max_dropped_mass 0 reads everything at every head (the CPU's widened
    // sparse heads then take every block): no sets needed.
    const bool reads_everything = d.kind == Kind::kLychee && max_mass <= 0.0;
    widen_exact_ = widen_exact_ || (widens && d.kind == Kind::kLychee && !reads_everything);
    for (int64_t l = 0; l < s.num_layers; ++l) {
      for (int64_t g = 0; g < kv; ++g) {
        const cuda::SelectRowMode m =
            reads_everything ? cuda::SelectRowMode::kAll : RowModeFor(d, l, g);
        mode_at(l, r, g) = static_cast<int8_t>(m);
        const bool reads_all =
            m == cuda::SelectRowMode::kAll || m == cuda::SelectRowMode::kExactTopK;
        const int part = reads_all ? 0 : 1;
        int64_t& count = part_rows_[static_cast<size_t>(2 * l + part)];
        list_at(l, part)[count++] = static_cast<int32_t>(r * kv + g);
      }
    }
    if (policy != nullptr) {
      // What a budget-bound row of this sequence reads at most: its rule's block count (prhs:
      // an anchor chosen when fewer blocks were forced can bring a few more).
      const int32_t n = static_cast<int32_t>((ctx + bs - 1) / bs);
      const cuda::SelectRange range = cuda::ResolveSelectRule(rule, n);
      int64_t count = range.first + range.take + (n - range.last_begin);
      if (d.kind == Kind::kPrhs) count = rule.budget_blocks + range.first + (n - range.last_begin);
      if (controls) count = n;  // grown sets, or everything where the bound gives up
      max_sparse_tokens_ = std::max(max_sparse_tokens_, std::min(ctx, count * bs));
      if (widens) {
        widening_rounds_ =
            std::max(widening_rounds_, cuda::WideningRounds(n, bs, rule.budget_tokens));
        max_widening_ctx_ = std::max(max_widening_ctx_, ctx);
      }
    }
    const float mass = widens ? static_cast<float>(max_mass) : 1.0f;  // WidenBudgets' input
    std::memcpy(inputs_h_.data() + mass_offset_ + static_cast<size_t>(r) * sizeof(float), &mass,
                sizeof(mass));
    if (d.kind == Kind::kPrhs) {
      LY_ASSIGN_OR_RETURN(const int32_t slot, PrhsSlot(policy->serial(), prhs_rows, stream));
      const PrhsKnobs& k = *d.prhs;
      for (int64_t l = 0; l < s.num_layers; ++l) {
        cuda::PrhsSeqParams& pp = prhs_h_[static_cast<size_t>(l * rows_ + r)];
        pp.dilate_fraction = k.dilate_fraction;
        pp.tau = k.tau;
        pp.dilation = static_cast<int32_t>(std::clamp<int64_t>(k.dilation, 0, 1 << 20));
        pp.window_first_block = static_cast<int32_t>(
            sparsity::PrhsPolicy::PsawWindowStart(k, l, s.num_layers, ctx) / bs);
        pp.anchor_row = static_cast<int32_t>((slot * s.num_layers + l) * kv);
        pp.budget_tokens = static_cast<int32_t>(
            std::clamp<int64_t>(policy->limits().budget_tokens, 1, int64_t{1} << 30));
        pp.max_dropped_mass = static_cast<float>(max_mass);
      }
    }
    std::memcpy(inputs_h_.data() + rules_offset_ + static_cast<size_t>(r) * sizeof(rule), &rule,
                sizeof(rule));
    sparse_rows_[static_cast<size_t>(r)] = policy != nullptr ? 1 : 0;
    const bool audit = policy != nullptr && !padding && step.chunks[static_cast<size_t>(r)].audit;
    audit_rows_[static_cast<size_t>(r)] = audit ? 1 : 0;
    audited_ = audited_ || audit;
  }
  hybrid_ = hybrid_ && any_lychee && widening_rounds_ == 0;
  if (hybrid_) {
    // The hybrid launch's list: the rows that read everything first (their sequences' own tables,
    // flagged), then the budget-bound ones, so the long rows' CTAs are placed first.
    for (int64_t l = 0; l < s.num_layers; ++l) {
      int32_t* hybrid = list_at(l, 2);
      const int64_t full = part_rows_[static_cast<size_t>(2 * l)];
      for (int64_t i = 0; i < full; ++i)
        hybrid[i] = list_at(l, 0)[i] | cuda::kDecodeRowReadsSequence;
      std::copy_n(list_at(l, 1), part_rows_[static_cast<size_t>(2 * l + 1)], hybrid + full);
    }
  }
  if (prhs_control_ && prhs_lower_.size() == 0) {
    LY_RETURN_IF_ERROR(
        prhs_lower_.Allocate(static_cast<size_t>(s.max_rows * s.num_heads * s.max_blocks_per_seq)));
  }
  if (widen_exact_ && widen_scores_.size() == 0) {
    LY_RETURN_IF_ERROR(widen_scores_.Allocate(
        static_cast<size_t>(s.max_rows * s.num_kv_heads * s.max_blocks_per_seq)));
  }
  if (for_graph) {
    // Plans are made for a cap, not the exact lengths: powers of two keep the key of the steps
    // that follow (the cap is an upper bound: a shorter row is attended all the same).
    const auto round_up = [cap = width * bs](int64_t tokens) {
      const uint64_t up = std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(1, tokens)));
      return std::min(cap, static_cast<int64_t>(up));
    };
    max_sparse_tokens_ = round_up(max_sparse_tokens_);
    max_widening_ctx_ = round_up(max_widening_ctx_);
  }
  // The layers' modes are laid out for rows_ rows: upload exactly what this step uses.
  LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(inputs_.get(), inputs_h_.data(), inputs_h_.size(),
                                          cudaMemcpyHostToDevice, stream));
  if (has_prhs_) {
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(prhs_params_.get(), prhs_h_.data(),
                                            prhs_h_.size() * sizeof(cuda::PrhsSeqParams),
                                            cudaMemcpyHostToDevice, stream));
  }
  LY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      stats_.get(), 0, static_cast<size_t>(rows_) * sizeof(cuda::SparseSeqStats), stream));
  return absl::OkStatus();
}

cuda::BlockSelectParams CudaSparseDecode::SelectParams(
    int64_t layer, const cuda::bf16* q, int64_t q_row_stride, const cuda::PagedKvBf16& cache,
    const int32_t* block_tables, const int32_t* context_lens, float scale) const {
  const Sizes& s = sizes_;
  cuda::BlockSelectParams p;
  p.q = q;
  p.q_row_stride = q_row_stride;
  p.cache = cache;
  p.block_tables = block_tables;
  p.context_lens = context_lens;
  p.sel_tables = tables_.get();
  p.sel_lens = lens_.get();
  p.maybe_sel_blocks = sets_.get();
  p.maybe_set_sizes = set_sizes_.get();
  p.scores = scores_.get();
  p.maybe_log_unread = log_unread_.get();
  p.maybe_split_lens = split_lens_.get();
  p.maybe_row_reused = row_reused_.get();
  p.row_modes = reinterpret_cast<const int8_t*>(inputs_.get()) +
                static_cast<size_t>(layer * rows_ * s.num_kv_heads);
  p.seq_rules = reinterpret_cast<const cuda::SelectSeqRule*>(inputs_.get() + rules_offset_);
  p.shape.batch = rows_;
  p.shape.num_heads = s.num_heads;
  p.shape.num_kv_heads = s.num_kv_heads;
  p.shape.head_dim = s.head_dim;
  p.shape.block_size = s.block_size;
  p.shape.max_blocks_per_seq = width_;
  p.scale = scale;
  p.programmatic_launch = programmatic_launch_;
  return p;
}

absl::Status CudaSparseDecode::Select(int64_t layer, const cuda::bf16* q, int64_t q_row_stride,
                                      const cuda::PagedKvBf16& cache, const int32_t* block_tables,
                                      const int32_t* context_lens, float scale,
                                      bool exact_scores_given, cudaStream_t stream,
                                      cuda::SelectRowFilter filter, bool programmatic_launch) {
  cuda::BlockSelectParams p =
      SelectParams(layer, q, q_row_stride, cache, block_tables, context_lens, scale);
  p.exact_scores_given = exact_scores_given;
  p.row_filter = filter;
  p.programmatic_launch = p.programmatic_launch && programmatic_launch;
  if (hybrid_) p.maybe_set_lens = set_lens_.get();
  if (has_prhs_) {
    p.prhs_seqs = prhs_params_.get() + layer * rows_;
    p.prhs_scores = prhs_scores_.get();
    p.prhs_anchor_q = anchor_q_.get();
    p.prhs_anchor_info = anchor_info_.get();
    p.prhs_anchor_blocks = anchor_blocks_.get();
    if (prhs_control_) p.prhs_lower = prhs_lower_.get();
  }
  p.prhs_row_fallback = prhs_fallback_.get();
  return cuda::SparseBlockSelect(p, stream);
}

absl::Status CudaSparseDecode::Widen(int64_t layer, int64_t round, const cuda::bf16* q,
                                     int64_t q_row_stride, const cuda::PagedKvBf16& cache,
                                     const int32_t* block_tables, const int32_t* context_lens,
                                     float scale, cudaStream_t stream) {
  cuda::WidenBudgetsParams w;
  w.lse = lse_.get();
  w.log_unread = log_unread_.get();
  w.max_mass = reinterpret_cast<const float*>(inputs_.get() + mass_offset_);
  w.row_budgets = row_budgets_.get();
  w.seq_rules = reinterpret_cast<const cuda::SelectSeqRule*>(inputs_.get() + rules_offset_);
  w.first_round = round == 1;
  w.block_size = sizes_.block_size;
  w.row_active = row_active_.get();
  w.part1_lens = split_lens_.get() + rows_ * sizes_.num_kv_heads;
  w.stats = stats_.get();
  w.batch = rows_;
  w.num_heads = sizes_.num_heads;
  w.num_kv_heads = sizes_.num_kv_heads;
  w.programmatic_launch = programmatic_launch_;
  LY_RETURN_IF_ERROR(cuda::WidenBudgets(w, stream));
  // PrHS rows never widen: no kPrhs inputs. LycheeDecode's widened sparse heads score exactly.
  cuda::BlockSelectParams p =
      SelectParams(layer, q, q_row_stride, cache, block_tables, context_lens, scale);
  if (widen_exact_) p.maybe_widen_scores = widen_scores_.get();
  p.maybe_row_budgets = row_budgets_.get();
  p.maybe_row_active = row_active_.get();
  return cuda::SparseBlockSelect(p, stream);
}

int64_t CudaSparseDecode::widened_tokens(int64_t round) const {
  const int64_t shift = std::min<int64_t>(round, 40);
  return std::min(max_widening_ctx_, max_sparse_tokens_ << shift);
}

absl::StatusOr<int32_t> CudaSparseDecode::PrhsSlot(uint64_t serial, int64_t prhs_rows,
                                                   cudaStream_t stream) {
  if (auto it = slot_of_.find(serial); it != slot_of_.end()) {
    slot_step_[static_cast<size_t>(it->second)] = step_;
    return it->second;
  }
  // A free slot, else the one least recently used by a request not in this step.
  int32_t slot = -1;
  for (int64_t i = 0; i < prhs_slots_; ++i) {
    const size_t si = static_cast<size_t>(i);
    if (slot_owner_[si] == 0) {
      slot = static_cast<int32_t>(i);
      break;
    }
    if (slot_step_[si] < step_ && (slot < 0 || slot_step_[si] < slot_step_[slot])) {
      slot = static_cast<int32_t>(i);
    }
  }
  if (slot < 0) {
    slot = static_cast<int32_t>(prhs_slots_);
    LY_RETURN_IF_ERROR(GrowPrhsArenas(
        std::clamp<int64_t>(std::max(2 * prhs_slots_, prhs_rows), 1, sizes_.max_rows), stream));
  }
  const size_t si = static_cast<size_t>(slot);
  if (slot_owner_[si] != 0) slot_of_.erase(slot_owner_[si]);
  slot_owner_[si] = serial;
  slot_step_[si] = step_;
  slot_of_[serial] = slot;
  // No anchors yet: info (budget 0) for every layer and kv head of the slot.
  const int64_t rows_per_slot = sizes_.num_layers * sizes_.num_kv_heads;
  LY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(anchor_info_.get() + 2 * slot * rows_per_slot, 0,
                                          2 * rows_per_slot * sizeof(int32_t), stream));
  return slot;
}

absl::Status CudaSparseDecode::GrowPrhsArenas(int64_t slots, cudaStream_t stream) {
  if (slots <= prhs_slots_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sparse decode: more prhs requests in a step than ", prhs_slots_, " anchor slots"));
  }
  const size_t rows = static_cast<size_t>(slots * sizes_.num_layers * sizes_.num_kv_heads);
  const size_t old_rows =
      static_cast<size_t>(prhs_slots_ * sizes_.num_layers * sizes_.num_kv_heads);
  cuda::DeviceBuffer<float> q;
  cuda::DeviceBuffer<int32_t> info, blocks;
  LY_RETURN_IF_ERROR(q.Allocate(rows * static_cast<size_t>(sizes_.head_dim)));
  LY_RETURN_IF_ERROR(info.Allocate(2 * rows));
  LY_RETURN_IF_ERROR(blocks.Allocate(rows * static_cast<size_t>(cuda::kPrhsMaxAnchorBlocks)));
  if (old_rows > 0) {
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.get(), anchor_q_.get(), anchor_q_.bytes(),
                                            cudaMemcpyDeviceToDevice, stream));
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(info.get(), anchor_info_.get(), anchor_info_.bytes(),
                                            cudaMemcpyDeviceToDevice, stream));
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(blocks.get(), anchor_blocks_.get(),
                                            anchor_blocks_.bytes(), cudaMemcpyDeviceToDevice,
                                            stream));
    // The old arenas are freed below (cudaFree waits for the copies).
  }
  anchor_q_ = std::move(q);
  anchor_info_ = std::move(info);
  anchor_blocks_ = std::move(blocks);
  slot_owner_.resize(static_cast<size_t>(slots), 0);
  slot_step_.resize(static_cast<size_t>(slots), 0);
  prhs_slots_ = slots;
  return absl::OkStatus();
}

std::vector<int64_t> CudaSparseDecode::GraphKey() const {
  std::vector<int64_t> key = {rows_,
                              width_,
                              max_sparse_tokens_,
                              widening_rounds_,
                              max_widening_ctx_,
                              audited_ ? 1 : 0,
                              widen_exact_ ? 1 : 0,
                              prhs_control_ ? 1 : 0,
                              hybrid_ ? 1 : 0,
                              has_prhs_ ? prhs_slots_ + 1 : 0};  // the arenas' pointers
  key.insert(key.end(), part_rows_.begin(), part_rows_.end());
  return key;
}

absl::Status CudaSparseDecode::Accumulate(const float* maybe_dense_lse, cudaStream_t stream,
                                          bool programmatic_launch) {
  cuda::DroppedMassParams p;
  p.lse = lse_.get();
  p.maybe_dense_lse = maybe_dense_lse;
  p.log_unread = log_unread_.get();
  p.sel_lens = lens_.get();
  p.maybe_row_reused = row_reused_.get();
  p.maybe_row_fallback = prhs_fallback_.get();
  p.stats = stats_.get();
  p.batch = rows_;
  p.num_heads = sizes_.num_heads;
  p.num_kv_heads = sizes_.num_kv_heads;
  p.programmatic_launch = programmatic_launch_ && programmatic_launch;
  return cuda::AccumulateDroppedMass(p, stream);
}

absl::Status CudaSparseDecode::EnqueueStatsCopy(cudaStream_t stream) {
  LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(stats_h_, stats_.get(),
                                          static_cast<size_t>(rows_) * sizeof(cuda::SparseSeqStats),
                                          cudaMemcpyDeviceToHost, stream));
  return absl::OkStatus();
}

void CudaSparseDecode::CollectStats(const SchedulerOutput& step,
                                    std::vector<SparseChunkStats>* stats) const {
  for (int64_t r = 0; r < rows_ && static_cast<size_t>(r) < stats->size(); ++r) {
    if (sparse_rows_[static_cast<size_t>(r)] == 0) continue;
    const cuda::SparseSeqStats& got = stats_h_[r];
    SparseChunkStats& st = (*stats)[static_cast<size_t>(r)];
    st.max_bound = got.max_bound;
    st.sum_bound = got.sum_bound;
    st.heads = got.heads;
    st.kv_tokens_read = got.tokens_read;
    st.device_selections = got.heads;
    st.device_reused = got.reused;
    st.widenings = got.widenings;
    st.device_dense_fallbacks = got.dense_fallbacks;
    st.kv_tokens_dense = sizes_.num_layers * sizes_.num_kv_heads *
                         (step.chunks[static_cast<size_t>(r)].start_position + 1);
    if (audit_rows_[static_cast<size_t>(r)] != 0) st.exact_max = got.exact_max;
  }
}

}  // namespace lychee
