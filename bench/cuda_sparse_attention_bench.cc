// SPDX-License-Identifier: Apache-2.0
// cuda_sparse_attention_bench: sparse decode attention on the GPU against our dense decode
// attention, in the same run, on Llama-3-8B heads (32 q, 8 kv, d128, bf16, block 16, shuffled
// pages of random data).
//
// Per batch x context it times (CUDA events, cold L2 unless --warm, median of --iters):
//   dense      DecodeAttention over every token;
//   select     QuestBlockSelect: key-summary bounds of every block + per-(sequence, kv head)
//              top-k of --budget tokens (sink block and last block forced);
//   quest      the sparse attention over that selection (per_kv_head_tables);
//   lychee     the LycheeDecode shape as the CUDA runner serves it
//              (CudaModelRunner::Impl::Attention): kv head 0 reads every token (a
//              retrieval head: one in eight) and the other seven the budget, in TWO launches back
//              to back on one stream (one timed sample covers both): part 0 the rows that read
//              everything, planned alone for the full context, part 1 the budget-bound rows,
//              planned alone for the budget's tokens, each over its row list (workspace and
//              split counters indexed by list position), its splits capped by the decode
//              workspace the runner reserves (--runner-max-seqs);
//   lychee-1launch  the same rows in ONE launch planned as one batch for the full context (the
//              figure this column showed before the runner split its launches);
//   lychee-hybrid  the same rows in ONE launch as the runner's hybrid steps make it
//              (DecodeAttentionParams::full_block_tables): the retrieval rows flagged, over their
//              sequences' own tables, planned as part 0 alone, the budget rows listed after them
//              (a few splits of the same length each; the rest of their CTAs exit at once);
//   all        sparse attention with every block selected (the overhead of the sparse path).
// Ratios: dense / (select + quest), dense / quest, dense / lychee, dense / lychee-1launch,
// all / dense.
//
// With --prhs-cell (on by default) it also times issue 12's operator target ("PrHS's attention
// operator >= 9.9x vs dense at batch 16 x 2K context at 1/16 budget"): dense attention against
// sparse attention over a pre-chosen subset, a fixed random --prhs-budget tokens (8 blocks) per
// (sequence, kv head) including the last block, at --prhs-batch x --prhs-context. The selection
// is not timed (PrHS chooses the blocks before scoring); its own table and JSON "prhs_operator".
//
// Prints the tables and writes JSON with --json PATH ("results": one entry per cell with dense_us,
// select_us, quest_us, lychee_us (two launches; files without "lychee_launches": 2 hold the
// single-launch figure there), lychee_1launch_us, all_us and the plans' splits). Without a GPU it
// says so and exits 0.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/cuda_bench_util.h"
#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/runner_ops.h"

namespace lychee::cuda {
namespace {

constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

struct Options {
  int iters = 30;
  int64_t budget_tokens = 2048;
  std::vector<int64_t> batches = {1, 8};
  std::vector<int64_t> contexts = {32768, 131072};
  // Sequences of the runner whose decode workspace caps the lychee launches' splits (0: the
  // cell's batch, a runner sized for the cell).
  int64_t runner_max_seqs = 0;
  bool prhs_cell = true;
  int64_t prhs_batch = 16, prhs_context = 2048, prhs_budget_tokens = 128;
  int budget_min_chunk = 0;  // min_chunk_tokens of budget-bound launches' plans (0: the runner's)
  bool warm = false;
  bool pdl = false;  // the second launch of each chain with programmatic dependent launch
  std::string json_path;
};

struct Row {
  int64_t batch = 0, context = 0;
  double dense_us = 0, select_us = 0, quest_us = 0, lychee_us = 0, lychee_1launch_us = 0,
         lychee_hybrid_us = 0, all_us = 0;
  double chain_us = 0;  // select, then quest's attention, in one sample (a layer's sparse work)
  int dense_splits = 0, lychee_splits[2] = {0, 0}, lychee_1launch_splits = 0,
      lychee_hybrid_splits = 0;
  // One more cold select with BlockSelectParams::maybe_phase_clocks: the mean over rows of each
  // phase's cycles (planned .. end after its predecessor), and the whole CTA's.
  double select_phase_cycles[kSelectPhases] = {};
  // The same selection under the other variants (BlockSelectParams::search and emit: the radix
  // search, the striped emission, each beside the default's other half), and whether their pages
  // and lengths equal the default's (bisect, walk).
  static constexpr int kVariants = 2;
  double variant_us[kVariants] = {};
  double variant_phase_cycles[kVariants][kSelectPhases] = {};
  bool variant_same_picks[kVariants] = {};
};

// The selection variants the bench times beside the default, in Row::variant_* order.
struct SelectVariant {
  const char* name;
  SelectSearch search;
  SelectEmit emit;
};
constexpr SelectVariant kSelectVariants[Row::kVariants] = {
    {"radix, walk", SelectSearch::kRadix, SelectEmit::kWalk},
    {"bisect, striped", SelectSearch::kBisect, SelectEmit::kStriped},
};

// Mean over rows of each phase's cycles since the row's previous recorded phase; [0]: entry to
// end. A phase a row skipped (0) is left out of its mean.
void MeanPhaseCycles(const std::vector<int64_t>& clocks, int64_t rows,
                     double (&out)[kSelectPhases]) {
  for (int i = 0; i < kSelectPhases; ++i) {
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t* c = clocks.data() + r * kSelectPhases;
      if (i == 0) {
        sum += static_cast<double>(c[kSelectEnd] - c[kSelectEntry]);
        ++count;
        continue;
      }
      if (c[i] == 0) continue;
      int prev = i - 1;
      while (prev > 0 && c[prev] == 0) --prev;
      sum += static_cast<double>(c[i] - c[prev]);
      ++count;
    }
    out[i] = count > 0 ? sum / static_cast<double>(count) : 0.0;
  }
}

struct PrhsRow {
  double dense_us = 0, sparse_us = 0;
  int dense_splits = 0, sparse_splits = 0;
};

// One decode attention launch over per-(sequence, kv head) rows or the dense tables.
struct Attention {
  DecodeAttentionParams params;
  DecodeAttentionPlan plan;
};

// The decode attention of `base` with tables `width` blocks wide, planned for `max_len` tokens.
// With a row list of plan_rows rows (or list_rows, more) the launch covers only those (sequence,
// kv head) rows, planned for the first plan_rows alone, its splits capped by `reserved` workspace
// bytes, as the CUDA runner launches each part of a sparse step
// (CudaModelRunner::Impl::AttendRowList). Grows `workspace` to what the plan needs (earlier
// Attentions' pointers then go stale).
absl::StatusOr<Attention> MakeAttention(const DecodeAttentionParams& base, int64_t width,
                                        int64_t max_len, int num_sms,
                                        const DecodeAttentionPlanOptions& plan_options,
                                        DeviceBuffer<uint8_t>& workspace, int64_t plan_rows = 0,
                                        size_t reserved = 0, const int32_t* row_list = nullptr,
                                        int64_t list_rows = 0) {
  // The row list's rows, if more than the plan is made for (LycheeDecode's hybrid launch: every
  // row, planned for the retrieval rows alone).
  const int64_t rows = std::max(list_rows, plan_rows);
  Attention a;
  a.params = base;
  a.params.shape.max_blocks_per_seq = width;
  a.params.shape.max_context_len = max_len;
  if (absl::Status st = CanImplementDecodeAttention(a.params.shape); !st.ok()) return st;
  DecodeAttentionPlanOptions options = plan_options;
  DecodeAttentionShape planned = a.params.shape;
  if (plan_rows > 0) {
    planned.batch = plan_rows;
    planned.num_kv_heads = 1;
    a.params.maybe_row_list = row_list;
    a.params.row_list_len = rows;
    const int64_t per_split =
        rows * (kHeads / kKvHeads) * (kHeadDim + 1) * static_cast<int64_t>(sizeof(float));
    options.max_splits = static_cast<int>(
        std::clamp<int64_t>(static_cast<int64_t>(reserved) / per_split, 1, options.max_splits));
  }
  a.plan = PlanDecodeAttention(planned, num_sms, options);
  const size_t ws = plan_rows > 0
                        ? DecodeAttentionWorkspaceBytesForRows(a.params.shape, a.plan, rows)
                        : DecodeAttentionWorkspaceBytes(a.params.shape, a.plan);
  if (ws > workspace.bytes()) LY_CUDA_RETURN_IF_NOT_OK(workspace.Allocate(ws));
  a.params.workspace = workspace.get();
  return a;
}

// The decode workspace the CUDA runner reserves (CudaModelRunner::Impl::Init): the most a dense
// batch of 1..max_seqs sequences, or a row list of 1..max_seqs * kv heads rows, needs at `ctx`
// tokens.
size_t RunnerDecodeWorkspace(int64_t max_seqs, int64_t ctx, int num_sms,
                             const DecodeAttentionPlanOptions& options) {
  const DecodeAttentionShape largest{max_seqs, kHeads,       kKvHeads, kHeadDim,
                                     kBlock,   ctx / kBlock, ctx};
  return DecodeAttentionMaxWorkspaceBytes(largest, num_sms, options, /*row_lists=*/true);
}

int64_t MaxOr0(const std::vector<int64_t>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

absl::Status Run(const Options& o, const DeviceInfo& dev, nlohmann::json& json) {
  for (const int64_t ctx : o.contexts) {
    if (ctx <= 0 || ctx % kBlock != 0) {
      return absl::InvalidArgumentError("--contexts: positive multiples of 16");
    }
  }
  if (o.prhs_cell && (o.prhs_context % kBlock != 0 || o.prhs_budget_tokens % kBlock != 0 ||
                      o.prhs_budget_tokens > o.prhs_context)) {
    return absl::InvalidArgumentError(
        "--prhs-context and --prhs-budget: multiples of 16, budget at most the context");
  }
  // Buffers fit the largest cell, the PrHS cell included.
  const int64_t max_batch = std::max(MaxOr0(o.batches), o.prhs_cell ? o.prhs_batch : 0);
  const int64_t max_blocks =
      std::max(MaxOr0(o.contexts), o.prhs_cell ? o.prhs_context : 0) / kBlock;
  const int64_t pool_blocks =
      std::max<int64_t>(1, std::max(MaxOr0(o.batches) * MaxOr0(o.contexts),
                                    o.prhs_cell ? o.prhs_batch * o.prhs_context : 0) /
                               kBlock);
  const int64_t budget_blocks = o.budget_tokens / kBlock;
  PagedKvBf16 cache{nullptr, nullptr, pool_blocks, kKvHeads, kBlock, kHeadDim};
  const int64_t pool_elems = pool_blocks * cache.block_stride();
  const int64_t summary_elems = pool_blocks * cache.summary_block_stride();
  const int64_t rows = std::max<int64_t>(1, max_batch * kKvHeads);
  const int64_t q_elems = std::max<int64_t>(1, max_batch) * kHeads * kHeadDim;

  DeviceBuffer<bf16> pool, summary, q, out;
  DeviceBuffer<int32_t> tables, lens, all_tables, all_lens, sel_tables, sel_lens, lychee_lens,
      part_lens[2], part_lists[2], hybrid_list, counters;
  DeviceBuffer<float> scores;
  DeviceBuffer<uint8_t> workspace, flush;
  LY_CUDA_RETURN_IF_NOT_OK(pool.Allocate(pool_elems));
  LY_CUDA_RETURN_IF_NOT_OK(summary.Allocate(summary_elems));
  LY_CUDA_RETURN_IF_NOT_OK(q.Allocate(q_elems));
  LY_CUDA_RETURN_IF_NOT_OK(out.Allocate(q_elems));
  LY_CUDA_RETURN_IF_NOT_OK(scores.Allocate(rows * std::max<int64_t>(1, max_blocks)));
  LY_CUDA_RETURN_IF_NOT_OK(sel_tables.Allocate(rows * budget_blocks));
  LY_CUDA_RETURN_IF_NOT_OK(sel_lens.Allocate(rows));
  LY_CUDA_RETURN_IF_NOT_OK(counters.Allocate(rows * kDecodeSplitCountersPerRow));
  LY_CUDA_RETURN_IF_NOT_OK(counters.FillBytes(0));
  LY_CUDA_RETURN_IF_NOT_OK(flush.Allocate(size_t{512} << 20));  // > 2x the 50 MB L2
  cudaStream_t stream;
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({pool.get(), pool_elems, 1}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({summary.get(), summary_elems, 2}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({q.get(), q_elems, 3}, stream));
  const DecodeAttentionPlanOptions runner_plan;  // the runner's defaults
  auto ctas = DecodeAttentionCtasPerSm(kHeadDim, runner_plan.stages, runner_plan.loader);
  if (!ctas.ok()) return ctas.status();
  auto two_stage_ctas = DecodeAttentionCtasPerSm(kHeadDim, 2, runner_plan.loader);
  if (!two_stage_ctas.ok()) return two_stage_ctas.status();
  DecodeAttentionPlanOptions plan_options = runner_plan;
  plan_options.ctas_per_sm = *ctas;
  plan_options.long_split_ctas_per_sm = *two_stage_ctas;
  // The launches of budget-bound rows (quest, lychee's second part, the PrHS cell).
  DecodeAttentionPlanOptions budget_plan_options = plan_options;
  if (o.budget_min_chunk > 0) budget_plan_options.min_chunk_tokens = o.budget_min_chunk;

  auto time = [&](auto&& launch) { return TimeLaunches(o.iters, o.warm, stream, flush, launch); };
  auto attend = [&](const Attention& a) {
    return [&a, stream] { return DecodeAttention(a.params, a.plan, stream); };
  };
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  DecodeAttentionParams common;
  common.q = q.get();
  common.cache = cache;
  common.cache.kv = pool.get();
  common.cache.key_summary = summary.get();
  common.out = out.get();
  common.split_counters = counters.get();
  common.scale = scale;

  std::mt19937_64 rng(12345);
  std::vector<Row> results;
  for (const int64_t batch : o.batches) {
    for (const int64_t ctx : o.contexts) {
      const int64_t pages = ctx / kBlock;
      std::vector<int32_t> perm(static_cast<size_t>(batch * pages));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      LY_CUDA_RETURN_IF_NOT_OK(tables.Upload(perm));  // [batch, pages]
      LY_CUDA_RETURN_IF_NOT_OK(lens.Upload(std::vector<int32_t>(batch, static_cast<int32_t>(ctx))));
      // Every block for every kv head ("all"), and LycheeDecode's shape: kv head 0 reads every
      // block, the others the first budget_blocks of theirs.
      std::vector<int32_t> all(static_cast<size_t>(batch * kKvHeads * pages));
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t g = 0; g < kKvHeads; ++g) {
          std::copy_n(perm.begin() + b * pages, pages, all.begin() + (b * kKvHeads + g) * pages);
        }
      }
      LY_CUDA_RETURN_IF_NOT_OK(all_tables.Upload(all));
      LY_CUDA_RETURN_IF_NOT_OK(
          all_lens.Upload(std::vector<int32_t>(batch * kKvHeads, static_cast<int32_t>(ctx))));
      // One launch: every row's length. Two launches (the runner's split lengths): part 0 the
      // retrieval rows (kv head 0), part 1 the budget rows, -1 where the row is the other part's.
      const int32_t full = static_cast<int32_t>(ctx);
      const int64_t budget_tokens = std::min(o.budget_tokens, ctx);
      const int32_t budget = static_cast<int32_t>(budget_tokens);
      std::vector<int32_t> one(static_cast<size_t>(batch * kKvHeads), budget);
      std::vector<int32_t> part0(one.size(), -1), part1(one.size(), budget);
      for (int64_t b = 0; b < batch; ++b) {
        const size_t r = static_cast<size_t>(b * kKvHeads);
        one[r] = full;
        part0[r] = full;
        part1[r] = -1;
      }
      LY_CUDA_RETURN_IF_NOT_OK(lychee_lens.Upload(one));
      LY_CUDA_RETURN_IF_NOT_OK(part_lens[0].Upload(part0));
      LY_CUDA_RETURN_IF_NOT_OK(part_lens[1].Upload(part1));
      // The runner's row lists: part 0 kv head 0 of every sequence, part 1 the rest.
      std::vector<int32_t> list0, list1;
      for (int64_t r = 0; r < batch * kKvHeads; ++r) {
        (r % kKvHeads == 0 ? list0 : list1).push_back(static_cast<int32_t>(r));
      }
      LY_CUDA_RETURN_IF_NOT_OK(part_lists[0].Upload(list0));
      LY_CUDA_RETURN_IF_NOT_OK(part_lists[1].Upload(list1));
      // The hybrid launch's list: the retrieval rows flagged, first.
      std::vector<int32_t> hybrid_rows;
      for (const int32_t r : list0) hybrid_rows.push_back(r | kDecodeRowReadsSequence);
      hybrid_rows.insert(hybrid_rows.end(), list1.begin(), list1.end());
      LY_CUDA_RETURN_IF_NOT_OK(hybrid_list.Upload(hybrid_rows));

      BlockSelectParams sp;
      sp.q = q.get();
      sp.cache = common.cache;
      sp.block_tables = tables.get();
      sp.context_lens = lens.get();
      sp.sel_tables = sel_tables.get();
      sp.sel_lens = sel_lens.get();
      sp.scores = scores.get();
      sp.shape = {batch, kHeads, kKvHeads, kHeadDim, kBlock, pages, budget_blocks, 1};
      sp.scale = scale;

      DecodeAttentionParams base = common;
      base.shape = {batch, kHeads, kKvHeads, kHeadDim, kBlock, pages, ctx};
      base.block_tables = tables.get();
      base.context_lens = lens.get();
      auto dense = MakeAttention(base, pages, ctx, dev.num_sms, plan_options, workspace);
      base.per_kv_head_tables = true;
      base.block_tables = sel_tables.get();
      base.context_lens = sel_lens.get();
      auto quest = MakeAttention(base, budget_blocks, o.budget_tokens, dev.num_sms,
                                 budget_plan_options, workspace);
      base.block_tables = all_tables.get();
      base.context_lens = all_lens.get();
      auto every = MakeAttention(base, pages, ctx, dev.num_sms, plan_options, workspace);
      // Lychee rows: the "all" tables (kv head 0 reads all of its row, the others the first
      // budget tokens of theirs: the same bytes as any budget-sized selection).
      base.context_lens = lychee_lens.get();
      auto lychee1 = MakeAttention(base, pages, ctx, dev.num_sms, plan_options, workspace);
      const size_t reserved = RunnerDecodeWorkspace(
          o.runner_max_seqs > 0 ? o.runner_max_seqs : batch, ctx, dev.num_sms, plan_options);
      base.context_lens = part_lens[0].get();
      auto lychee_full = MakeAttention(base, pages, ctx, dev.num_sms, plan_options, workspace,
                                       batch, reserved, part_lists[0].get());
      base.context_lens = part_lens[1].get();
      auto lychee_budget =
          MakeAttention(base, pages, budget_tokens, dev.num_sms, budget_plan_options, workspace,
                        batch * (kKvHeads - 1), reserved, part_lists[1].get());
      DecodeAttentionParams hybrid_base = base;  // the budget rows' tables and lengths
      hybrid_base.context_lens = part_lens[1].get();
      hybrid_base.full_block_tables = tables.get();
      hybrid_base.full_context_lens = lens.get();
      auto lychee_hybrid =
          MakeAttention(hybrid_base, pages, ctx, dev.num_sms, plan_options, workspace, batch,
                        reserved, hybrid_list.get(), batch * kKvHeads);
      for (auto* a :
           {&dense, &quest, &every, &lychee1, &lychee_full, &lychee_budget, &lychee_hybrid}) {
        if (!a->ok()) return a->status();
        (*a)->params.workspace = workspace.get();  // the largest allocation of them all
      }
      // The launches that follow another kernel of ours in a chain below.
      sp.programmatic_launch = o.pdl;
      quest->params.programmatic_launch = o.pdl;
      lychee_budget->params.programmatic_launch = o.pdl;

      Row r;
      r.batch = batch;
      r.context = ctx;
      auto t_dense = time(attend(*dense));
      BlockSelectParams variants[Row::kVariants];
      std::vector<int32_t> variant_tables[Row::kVariants], variant_lens[Row::kVariants];
      for (int v = 0; v < Row::kVariants; ++v) {
        variants[v] = sp;
        variants[v].search = kSelectVariants[v].search;
        variants[v].emit = kSelectVariants[v].emit;
        auto t = time([&] { return QuestBlockSelect(variants[v], stream); });
        if (!t.ok()) return t.status();
        r.variant_us[v] = *t;
        LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
        LY_CUDA_RETURN_IF_NOT_OK(sel_tables.Download(variant_tables[v]));
        LY_CUDA_RETURN_IF_NOT_OK(sel_lens.Download(variant_lens[v]));
      }
      auto t_select = time([&] { return QuestBlockSelect(sp, stream); });
      LY_CUDA_RETURN_IF_NOT_OK(QuestBlockSelect(sp, stream));  // the selection quest reads
      auto t_quest = time(attend(*quest));
      auto t_chain = time([&]() -> absl::Status {
        LY_CUDA_RETURN_IF_NOT_OK(QuestBlockSelect(sp, stream));
        return DecodeAttention(quest->params, quest->plan, stream);
      });
      // The runner's two launches, back to back on one stream, in one sample.
      auto t_lychee = time([&]() -> absl::Status {
        if (absl::Status st = DecodeAttention(lychee_full->params, lychee_full->plan, stream);
            !st.ok()) {
          return st;
        }
        return DecodeAttention(lychee_budget->params, lychee_budget->plan, stream);
      });
      auto t_lychee1 = time(attend(*lychee1));
      auto t_hybrid = time(attend(*lychee_hybrid));
      auto t_all = time(attend(*every));
      for (auto* t :
           {&t_dense, &t_select, &t_quest, &t_chain, &t_lychee, &t_lychee1, &t_hybrid, &t_all}) {
        if (!t->ok()) return t->status();
      }
      r.dense_us = *t_dense;
      r.select_us = *t_select;
      {
        std::vector<int32_t> tables_now, lens_now;
        LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
        LY_CUDA_RETURN_IF_NOT_OK(sel_tables.Download(tables_now));
        LY_CUDA_RETURN_IF_NOT_OK(sel_lens.Download(lens_now));
        for (int v = 0; v < Row::kVariants; ++v) {
          r.variant_same_picks[v] = variant_tables[v] == tables_now && variant_lens[v] == lens_now;
        }
      }
      r.quest_us = *t_quest;
      r.chain_us = *t_chain;
      r.lychee_us = *t_lychee;
      r.lychee_1launch_us = *t_lychee1;
      r.lychee_hybrid_us = *t_hybrid;
      r.all_us = *t_all;
      // One cold select with phase clocks, per search.
      auto profile = [&](const BlockSelectParams& params,
                         double(&cycles)[kSelectPhases]) -> absl::Status {
        DeviceBuffer<int64_t> phase_clocks;
        const int64_t select_rows = batch * kKvHeads;
        LY_CUDA_RETURN_IF_NOT_OK(phase_clocks.Allocate(select_rows * kSelectPhases));
        LY_CUDA_RETURN_IF_NOT_OK(phase_clocks.FillBytes(0));
        if (!o.warm) {
          LY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(flush.get(), 1, flush.bytes(), stream));
        }
        BlockSelectParams profiled = params;
        profiled.maybe_phase_clocks = phase_clocks.get();
        LY_CUDA_RETURN_IF_NOT_OK(QuestBlockSelect(profiled, stream));
        LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
        std::vector<int64_t> clocks;
        LY_CUDA_RETURN_IF_NOT_OK(phase_clocks.Download(clocks));
        MeanPhaseCycles(clocks, select_rows, cycles);
        return absl::OkStatus();
      };
      for (int v = 0; v < Row::kVariants; ++v) {
        LY_CUDA_RETURN_IF_NOT_OK(profile(variants[v], r.variant_phase_cycles[v]));
      }
      LY_CUDA_RETURN_IF_NOT_OK(profile(sp, r.select_phase_cycles));
      r.dense_splits = dense->plan.num_splits;
      r.lychee_splits[0] = lychee_full->plan.num_splits;
      r.lychee_splits[1] = lychee_budget->plan.num_splits;
      r.lychee_1launch_splits = lychee1->plan.num_splits;
      r.lychee_hybrid_splits = lychee_hybrid->plan.num_splits;
      results.push_back(r);
    }
  }

  // PrHS's operator: dense vs sparse attention over a pre-chosen subset (a fixed random set of
  // blocks per (sequence, kv head), the last block included), the choice not timed.
  PrhsRow prhs;
  if (o.prhs_cell) {
    const int64_t batch = o.prhs_batch, ctx = o.prhs_context, pages = ctx / kBlock;
    const int64_t keep = o.prhs_budget_tokens / kBlock;
    std::vector<int32_t> perm(static_cast<size_t>(batch * pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> subset(static_cast<size_t>(batch * kKvHeads * keep));
    std::vector<int32_t> logical(static_cast<size_t>(pages - 1));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t g = 0; g < kKvHeads; ++g) {
        std::iota(logical.begin(), logical.end(), 0);
        std::shuffle(logical.begin(), logical.end(), rng);
        std::vector<int32_t> chosen(logical.begin(), logical.begin() + (keep - 1));
        chosen.push_back(static_cast<int32_t>(pages - 1));  // the query's own block
        std::sort(chosen.begin(), chosen.end());
        for (int64_t k = 0; k < keep; ++k) {
          subset[static_cast<size_t>((b * kKvHeads + g) * keep + k)] =
              perm[static_cast<size_t>(b * pages + chosen[static_cast<size_t>(k)])];
        }
      }
    }
    DeviceBuffer<int32_t> prhs_tables, prhs_lens, sub_tables, sub_lens;
    LY_CUDA_RETURN_IF_NOT_OK(prhs_tables.Upload(perm));
    LY_CUDA_RETURN_IF_NOT_OK(
        prhs_lens.Upload(std::vector<int32_t>(batch, static_cast<int32_t>(ctx))));
    LY_CUDA_RETURN_IF_NOT_OK(sub_tables.Upload(subset));
    LY_CUDA_RETURN_IF_NOT_OK(sub_lens.Upload(
        std::vector<int32_t>(batch * kKvHeads, static_cast<int32_t>(o.prhs_budget_tokens))));
    DecodeAttentionParams base = common;
    base.shape = {batch, kHeads, kKvHeads, kHeadDim, kBlock, pages, ctx};
    base.block_tables = prhs_tables.get();
    base.context_lens = prhs_lens.get();
    auto dense = MakeAttention(base, pages, ctx, dev.num_sms, plan_options, workspace);
    // Every row budget-bound: the runner's part 1 alone.
    base.per_kv_head_tables = true;
    base.block_tables = sub_tables.get();
    base.context_lens = sub_lens.get();
    const size_t reserved = RunnerDecodeWorkspace(o.runner_max_seqs > 0 ? o.runner_max_seqs : batch,
                                                  ctx, dev.num_sms, plan_options);
    auto sparse = MakeAttention(base, keep, o.prhs_budget_tokens, dev.num_sms, budget_plan_options,
                                workspace, batch * kKvHeads, reserved);
    for (auto* a : {&dense, &sparse}) {
      if (!a->ok()) return a->status();
      (*a)->params.workspace = workspace.get();
    }
    auto t_dense = time(attend(*dense));
    auto t_sparse = time(attend(*sparse));
    for (auto* t : {&t_dense, &t_sparse}) {
      if (!t->ok()) return t->status();
    }
    prhs.dense_us = *t_dense;
    prhs.sparse_us = *t_sparse;
    prhs.dense_splits = dense->plan.num_splits;
    prhs.sparse_splits = sparse->plan.num_splits;
  }
  LY_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  std::printf("\n%s, %d SMs, Llama-3-8B heads, block 16, budget %lld tokens, %s L2, median of %d\n",
              dev.name.c_str(), dev.num_sms, static_cast<long long>(o.budget_tokens),
              o.warm ? "warm" : "cold", o.iters);
  std::printf(
      "lychee: two launches as the CUDA runner (full rows, then budget rows); lychee-1launch: the "
      "same rows in one launch; lychee-hybrid: one launch planned as the full rows alone\n");
  std::printf("select -> quest: the selection and quest's attention in one sample (%s)\n",
              o.pdl ? "the attention launched programmatically (PDL)" : "plain launches");
  std::printf(
      "| batch x context | dense us | select us | quest us | select -> quest us | lychee us | "
      "lychee-1launch us | lychee-hybrid us | all us | dense / (select + quest) | "
      "dense / (select -> quest) | dense / quest | dense / lychee | dense / lychee-1launch | "
      "dense / lychee-hybrid | all / dense |\n");
  std::printf(
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
      "--- |\n");
  nlohmann::json rows_json = nlohmann::json::array();
  for (const Row& r : results) {
    std::printf(
        "| %lld x %lldK | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | "
        "%.2fx | %.2fx | %.2fx | %.2fx | %.2fx |\n",
        static_cast<long long>(r.batch), static_cast<long long>(r.context / 1024), r.dense_us,
        r.select_us, r.quest_us, r.chain_us, r.lychee_us, r.lychee_1launch_us, r.lychee_hybrid_us,
        r.all_us, r.dense_us / (r.select_us + r.quest_us), r.dense_us / r.chain_us,
        r.dense_us / r.quest_us, r.dense_us / r.lychee_us, r.dense_us / r.lychee_1launch_us,
        r.dense_us / r.lychee_hybrid_us, r.all_us / r.dense_us);
    rows_json.push_back(
        {{"batch", r.batch},
         {"context", r.context},
         {"dense_us", r.dense_us},
         {"select_us", r.select_us},
         {"quest_us", r.quest_us},
         {"select_then_quest_us", r.chain_us},
         {"lychee_us", r.lychee_us},
         {"lychee_1launch_us", r.lychee_1launch_us},
         {"all_us", r.all_us},
         {"dense_splits", r.dense_splits},
         {"lychee_splits", {r.lychee_splits[0], r.lychee_splits[1]}},
         {"lychee_1launch_splits", r.lychee_1launch_splits},
         {"lychee_hybrid_us", r.lychee_hybrid_us},
         {"lychee_hybrid_splits", r.lychee_hybrid_splits},
         {"select_phase_cycles",
          std::vector<double>(std::begin(r.select_phase_cycles), std::end(r.select_phase_cycles))},
         {"select_variants", [&r] {
            nlohmann::json variants = nlohmann::json::array();
            for (int v = 0; v < Row::kVariants; ++v) {
              variants.push_back(
                  {{"variant", kSelectVariants[v].name},
                   {"select_us", r.variant_us[v]},
                   {"same_picks", r.variant_same_picks[v]},
                   {"phase_cycles", std::vector<double>(std::begin(r.variant_phase_cycles[v]),
                                                        std::end(r.variant_phase_cycles[v]))}});
            }
            return variants;
          }()}});
  }
  // Where a select's time goes: cycles of the SM clock (clock64), at the peak clock in µs.
  int clock_khz = 0;
  LY_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev.index));
  std::printf(
      "\nselect kernel phases (one cold launch, mean over rows, us at the %.0f MHz peak clock): "
      "plan, stage, search, emit, gather, bound; the whole CTA; and the selection event-timed, per "
      "variant (search, emission: BlockSelectParams::search and emit; bisect, walk is the default; "
      "same picks as it?)\n",
      clock_khz / 1e3);
  std::printf(
      "| batch x context | variant | plan | stage | search | emit | gather | bound | CTA | select "
      "us | same picks |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Row& r : results) {
    for (int v = -1; v < Row::kVariants; ++v) {  // -1: the default
      const double* cycles = v < 0 ? r.select_phase_cycles : r.variant_phase_cycles[v];
      const auto us = [&](int i) { return cycles[i] * 1e3 / clock_khz; };
      std::printf(
          "| %lld x %lldK | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %s |\n",
          static_cast<long long>(r.batch), static_cast<long long>(r.context / 1024),
          v < 0 ? "bisect, walk" : kSelectVariants[v].name, us(kSelectPlanned), us(kSelectStaged),
          us(kSelectBisected), us(kSelectEmitted), us(kSelectGathered), us(kSelectEnd), us(0),
          v < 0 ? r.select_us : r.variant_us[v],
          v < 0 ? "-" : (r.variant_same_picks[v] ? "yes" : "NO"));
    }
  }
  json = {{"bench", "cuda_sparse_attention"},
          {"device", dev.name},
          {"num_sms", dev.num_sms},
          {"budget_tokens", o.budget_tokens},
          {"block_size", kBlock},
          {"l2", o.warm ? "warm" : "cold"},
          {"iters", o.iters},
          {"programmatic_launch", o.pdl},
          {"lychee_launches", 2},
          {"runner_max_seqs", o.runner_max_seqs},
          {"budget_min_chunk_tokens", budget_plan_options.min_chunk_tokens},
          {"select_phases_clock_khz", clock_khz},
          {"results", rows_json}};

  if (o.prhs_cell) {
    constexpr double kTarget = 9.9;
    const double speedup = prhs.dense_us / prhs.sparse_us;
    std::printf(
        "\nPrHS attention operator (issue 12 target: >= %.1fx vs dense): sparse attention over a "
        "pre-chosen fixed random subset of %lld blocks per (sequence, kv head), the last block "
        "included; selection NOT timed (PrHS chooses before scoring)\n",
        kTarget, static_cast<long long>(o.prhs_budget_tokens / kBlock));
    std::printf(
        "| batch x context | budget tokens | dense us | sparse us | dense / sparse | target |\n");
    std::printf("| --- | --- | --- | --- | --- | --- |\n");
    std::printf("| %lld x %lld | %lld (1/%lld) | %.1f | %.1f | %.2fx | %.1fx %s |\n",
                static_cast<long long>(o.prhs_batch), static_cast<long long>(o.prhs_context),
                static_cast<long long>(o.prhs_budget_tokens),
                static_cast<long long>(o.prhs_context / o.prhs_budget_tokens), prhs.dense_us,
                prhs.sparse_us, speedup, kTarget, speedup >= kTarget ? "met" : "not met");
    json["prhs_operator"] = {
        {"batch", o.prhs_batch},
        {"context", o.prhs_context},
        {"budget_tokens", o.prhs_budget_tokens},
        {"kv_read_fraction",
         static_cast<double>(o.prhs_budget_tokens) / static_cast<double>(o.prhs_context)},
        {"subset", "fixed random blocks per (sequence, kv head), last block included"},
        {"selection_timed", false},
        {"dense_us", prhs.dense_us},
        {"sparse_us", prhs.sparse_us},
        {"speedup", speedup},
        {"target_speedup", kTarget},
        {"target_met", speedup >= kTarget},
        {"dense_splits", prhs.dense_splits},
        {"sparse_splits", prhs.sparse_splits}};
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee::cuda

int main(int argc, char** argv) {
  lychee::cuda::Options o;
  CLI::App app{"Sparse decode attention (Quest selection, LycheeDecode shape, PrHS) vs dense"};
  app.add_option("--iters", o.iters, "timed samples per point (median reported)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--budget", o.budget_tokens, "tokens read per sparse kv head (multiple of 16)")
      ->check(CLI::Range(64, 65536));
  app.add_option("--batches", o.batches, "batch sizes (empty: none)")->delimiter(',');
  app.add_option("--contexts", o.contexts, "context lengths (multiples of 16; empty: none)")
      ->delimiter(',');
  app.add_option("--runner-max-seqs", o.runner_max_seqs,
                 "max_num_seqs of the runner whose decode workspace caps the lychee launches' "
                 "splits (0: the cell's batch)")
      ->check(CLI::Range(int64_t{0}, int64_t{4096}));
  app.add_flag("--prhs-cell,!--no-prhs-cell", o.prhs_cell,
               "time the PrHS operator cell (issue 12: batch 16 x 2K, 1/16 budget; default on)");
  app.add_option("--prhs-batch", o.prhs_batch, "PrHS cell batch")->check(CLI::Range(1, 4096));
  app.add_option("--prhs-context", o.prhs_context, "PrHS cell context (multiple of 16)")
      ->check(CLI::Range(32, 1 << 20));
  app.add_option("--prhs-budget", o.prhs_budget_tokens,
                 "PrHS cell tokens per kv head (multiple of 16)")
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--budget-min-chunk", o.budget_min_chunk,
                 "plan: fewest tokens per split of budget-bound launches (default: the runner's)");
  app.add_flag("--warm", o.warm, "do not flush L2 between samples");
  app.add_flag("--pdl", o.pdl,
               "launch the second kernel of each chain (select -> quest, lychee's second launch) "
               "with programmatic dependent launch");
  app.add_option("--json", o.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);
  // CLI11 reads an empty list ("") as one 0: drop it, leaving no cells (the PrHS cell only).
  std::erase_if(o.batches, [](int64_t v) { return v <= 0; });
  std::erase_if(o.contexts, [](int64_t v) { return v <= 0; });
  return lychee::cuda::RunBenchmark(
      "cuda_sparse_attention_bench", o.json_path,
      [&o](const lychee::cuda::DeviceInfo& device, nlohmann::json& json) {
        return lychee::cuda::Run(o, device, json);
      });
}
