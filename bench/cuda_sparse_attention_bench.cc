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
//   lychee     sparse attention where kv head 0 reads every token (a retrieval head: one in
//              eight, the LycheeDecode shape) and the other seven the budget;
//   all        sparse attention with every block selected (the overhead of the sparse path).
// Ratios: dense / (select + quest), dense / quest, dense / lychee, all / dense. Prints a table
// and writes JSON with --json PATH. Without a GPU it says so and exits 0.
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
  bool warm = false;
  std::string json_path;
};

struct Row {
  int64_t batch = 0, context = 0;
  double dense_us = 0, select_us = 0, quest_us = 0, lychee_us = 0, all_us = 0;
};

// One decode attention launch over per-(sequence, kv head) rows or the dense tables.
struct Attention {
  DecodeAttentionParams params;
  DecodeAttentionPlan plan;
};

absl::StatusOr<Attention> MakeAttention(const DecodeAttentionParams& base, int64_t width,
                                        int64_t max_len, int num_sms, int ctas_per_sm,
                                        DeviceBuffer<uint8_t>& workspace) {
  Attention a;
  a.params = base;
  a.params.shape.max_blocks_per_seq = width;
  a.params.shape.max_context_len = max_len;
  if (absl::Status st = CanImplementDecodeAttention(a.params.shape); !st.ok()) return st;
  DecodeAttentionPlanOptions options;
  options.ctas_per_sm = ctas_per_sm;
  a.plan = PlanDecodeAttention(a.params.shape, num_sms, options);
  const size_t ws = DecodeAttentionWorkspaceBytes(a.params.shape, a.plan);
  if (ws > workspace.bytes()) LY_CUDA_RETURN_IF_NOT_OK(workspace.Allocate(ws));
  a.params.workspace = workspace.get();
  return a;
}

absl::Status Run(const Options& o, const DeviceInfo& dev, nlohmann::json& json) {
  const int64_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const int64_t max_ctx = *std::max_element(o.contexts.begin(), o.contexts.end());
  const int64_t max_blocks = max_ctx / kBlock;
  const int64_t pool_blocks = max_batch * max_blocks;
  const int64_t budget_blocks = o.budget_tokens / kBlock;
  PagedKvBf16 cache{nullptr, nullptr, pool_blocks, kKvHeads, kBlock, kHeadDim};
  const int64_t pool_elems = pool_blocks * cache.block_stride();
  const int64_t summary_elems = pool_blocks * cache.summary_block_stride();
  const int64_t rows = max_batch * kKvHeads;

  DeviceBuffer<bf16> pool, summary, q, out;
  DeviceBuffer<int32_t> tables, lens, all_tables, all_lens, sel_tables, sel_lens, lychee_tables,
      lychee_lens, counters;
  DeviceBuffer<float> scores;
  DeviceBuffer<uint8_t> workspace, flush;
  LY_CUDA_RETURN_IF_NOT_OK(pool.Allocate(pool_elems));
  LY_CUDA_RETURN_IF_NOT_OK(summary.Allocate(summary_elems));
  LY_CUDA_RETURN_IF_NOT_OK(q.Allocate(max_batch * kHeads * kHeadDim));
  LY_CUDA_RETURN_IF_NOT_OK(out.Allocate(max_batch * kHeads * kHeadDim));
  LY_CUDA_RETURN_IF_NOT_OK(scores.Allocate(rows * max_blocks));
  LY_CUDA_RETURN_IF_NOT_OK(sel_tables.Allocate(rows * budget_blocks));
  LY_CUDA_RETURN_IF_NOT_OK(sel_lens.Allocate(rows));
  LY_CUDA_RETURN_IF_NOT_OK(counters.Allocate(rows));
  LY_CUDA_RETURN_IF_NOT_OK(counters.FillBytes(0));
  LY_CUDA_RETURN_IF_NOT_OK(flush.Allocate(size_t{512} << 20));  // > 2x the 50 MB L2
  cudaStream_t stream;
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({pool.get(), pool_elems, 1}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({summary.get(), summary_elems, 2}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({q.get(), max_batch * kHeads * kHeadDim, 3}, stream));
  auto ctas = DecodeAttentionCtasPerSm(kHeadDim, DecodeAttentionPlanOptions{}.stages);
  if (!ctas.ok()) return ctas.status();

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
      // block, the others the first budget_blocks of the Quest selection.
      std::vector<int32_t> all(static_cast<size_t>(batch * kKvHeads * pages));
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t g = 0; g < kKvHeads; ++g) {
          std::copy_n(perm.begin() + b * pages, pages, all.begin() + (b * kKvHeads + g) * pages);
        }
      }
      LY_CUDA_RETURN_IF_NOT_OK(all_tables.Upload(all));
      LY_CUDA_RETURN_IF_NOT_OK(
          all_lens.Upload(std::vector<int32_t>(batch * kKvHeads, static_cast<int32_t>(ctx))));
      std::vector<int32_t> lychee_len(static_cast<size_t>(batch * kKvHeads),
                                      static_cast<int32_t>(o.budget_tokens));
      for (int64_t b = 0; b < batch; ++b) lychee_len[b * kKvHeads] = static_cast<int32_t>(ctx);
      LY_CUDA_RETURN_IF_NOT_OK(lychee_lens.Upload(lychee_len));

      BlockSelectParams sp;
      sp.q = q.get();
      sp.cache = cache;
      sp.cache.kv = pool.get();
      sp.cache.key_summary = summary.get();
      sp.block_tables = tables.get();
      sp.context_lens = lens.get();
      sp.sel_tables = sel_tables.get();
      sp.sel_lens = sel_lens.get();
      sp.scores = scores.get();
      sp.shape = {batch, kHeads, kKvHeads, kHeadDim, kBlock, pages, budget_blocks, 1};
      sp.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

      DecodeAttentionParams base;
      base.q = q.get();
      base.cache = sp.cache;
      base.out = out.get();
      base.split_counters = counters.get();
      base.shape = {batch, kHeads, kKvHeads, kHeadDim, kBlock, pages, ctx};
      base.scale = sp.scale;
      base.block_tables = tables.get();
      base.context_lens = lens.get();
      auto dense = MakeAttention(base, pages, ctx, dev.num_sms, *ctas, workspace);
      base.per_kv_head_tables = true;
      base.block_tables = sel_tables.get();
      base.context_lens = sel_lens.get();
      auto quest =
          MakeAttention(base, budget_blocks, o.budget_tokens, dev.num_sms, *ctas, workspace);
      base.block_tables = all_tables.get();
      base.context_lens = all_lens.get();
      auto every = MakeAttention(base, pages, ctx, dev.num_sms, *ctas, workspace);
      // Lychee rows: the "all" tables (kv head 0 reads all of its row, the others the first
      // budget tokens of theirs: the same bytes as any budget-sized selection).
      base.context_lens = lychee_lens.get();
      auto lychee = MakeAttention(base, pages, ctx, dev.num_sms, *ctas, workspace);
      for (auto* a : {&dense, &quest, &every, &lychee}) {
        if (!a->ok()) return a->status();
        (*a)->params.workspace = workspace.get();  // the largest allocation of the four
      }

      Row r;
      r.batch = batch;
      r.context = ctx;
      auto time = [&](auto&& launch) {
        return TimeLaunches(o.iters, o.warm, stream, flush, launch);
      };
      auto attend = [&](const Attention& a) {
        return [&a, stream] { return DecodeAttention(a.params, a.plan, stream); };
      };
      auto t_dense = time(attend(*dense));
      auto t_select = time([&] { return QuestBlockSelect(sp, stream); });
      LY_CUDA_RETURN_IF_NOT_OK(QuestBlockSelect(sp, stream));  // the selection quest reads
      auto t_quest = time(attend(*quest));
      auto t_lychee = time(attend(*lychee));
      auto t_all = time(attend(*every));
      for (auto* t : {&t_dense, &t_select, &t_quest, &t_lychee, &t_all}) {
        if (!t->ok()) return t->status();
      }
      r.dense_us = *t_dense;
      r.select_us = *t_select;
      r.quest_us = *t_quest;
      r.lychee_us = *t_lychee;
      r.all_us = *t_all;
      results.push_back(r);
    }
  }
  LY_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  std::printf("\n%s, %d SMs, Llama-3-8B heads, block 16, budget %lld tokens, %s L2, median of %d\n",
              dev.name.c_str(), dev.num_sms, static_cast<long long>(o.budget_tokens),
              o.warm ? "warm" : "cold", o.iters);
  std::printf(
      "| batch x context | dense us | select us | quest us | lychee us | all us | "
      "dense / (select + quest) | dense / quest | dense / lychee | all / dense |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  nlohmann::json rows_json = nlohmann::json::array();
  for (const Row& r : results) {
    std::printf(
        "| %lld x %lldK | %.1f | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %.2fx | %.2fx |\n",
        static_cast<long long>(r.batch), static_cast<long long>(r.context / 1024), r.dense_us,
        r.select_us, r.quest_us, r.lychee_us, r.all_us, r.dense_us / (r.select_us + r.quest_us),
        r.dense_us / r.quest_us, r.dense_us / r.lychee_us, r.all_us / r.dense_us);
    rows_json.push_back({{"batch", r.batch},
                         {"context", r.context},
                         {"dense_us", r.dense_us},
                         {"select_us", r.select_us},
                         {"quest_us", r.quest_us},
                         {"lychee_us", r.lychee_us},
                         {"all_us", r.all_us}});
  }
  json = {{"bench", "cuda_sparse_attention"},
          {"device", dev.name},
          {"num_sms", dev.num_sms},
          {"budget_tokens", o.budget_tokens},
          {"block_size", kBlock},
          {"l2", o.warm ? "warm" : "cold"},
          {"iters", o.iters},
          {"results", rows_json}};
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee::cuda

int main(int argc, char** argv) {
  lychee::cuda::Options o;
  CLI::App app{"Sparse decode attention (Quest selection, LycheeDecode shape) vs dense"};
  app.add_option("--iters", o.iters, "timed samples per point (median reported)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--budget", o.budget_tokens, "tokens read per sparse kv head (multiple of 16)")
      ->check(CLI::Range(64, 65536));
  app.add_option("--batches", o.batches, "batch sizes")->delimiter(',');
  app.add_option("--contexts", o.contexts, "context lengths (multiples of 16)")->delimiter(',');
  app.add_flag("--warm", o.warm, "do not flush L2 between samples");
  app.add_option("--json", o.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);
  return lychee::cuda::RunBenchmark(
      "cuda_sparse_attention_bench", o.json_path,
      [&o](const lychee::cuda::DeviceInfo& device, nlohmann::json& json) {
        return lychee::cuda::Run(o, device, json);
      });
}
