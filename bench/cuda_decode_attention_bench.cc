// SPDX-License-Identifier: Apache-2.0
// cuda_decode_attention_bench: the dense paged decode attention kernel against the bandwidth
// ceiling measured in the same run, a device-to-device cudaMemcpy of the same K/V bytes.
//
// Grid: batch {1, 8, 32} x context {4K, 32K, 128K} with Llama-3-8B attention heads (32 query
// heads, 8 kv heads, head_dim 128) by default (--batches, --contexts, --heads, --kv-heads,
// --head-dim change it), random bf16 pages of --block-size tokens in a shuffled block table; the
// split plan of the runner, or the one --ctas-per-sm / --min-chunk ask for.
// Timing: CUDA events around each launch, L2 flushed before every sample (cold, the convention of
// KERNELS.md section 6.2) unless --warm, median over --iters samples. Bandwidth of the attention
// = K/V bytes it must read / time; of the copy = bytes read + written / time (so both count what
// crosses the memory bus). Prints a table and writes JSON with --json PATH. Without a GPU it says
// so and exits 0.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/cuda_bench_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/runner_ops.h"

namespace lychee::cuda {
namespace {

struct Options {
  int iters = 30;
  int64_t block_size = 16;
  int64_t heads = 32, kv_heads = 8, head_dim = 128;  // Llama-3-8B
  std::vector<int64_t> batches = {1, 8, 32};
  std::vector<int64_t> contexts = {4096, 32768, 131072};
  DecodeAttentionPlanOptions plan;  // defaults of the runner unless overridden
  int ctas_per_sm = 0;              // 0: from the occupancy calculator
  bool warm = false;
  bool sequential_pages = false;  // block table in pool order instead of shuffled
  std::string json_path;
};

struct Row {
  int64_t batch = 0, context = 0;
  int splits = 0, chunk = 0, stages = 0;
  double kv_bytes = 0;
  double attn_us = 0, copy_us = 0;
  double attn_gbs = 0, copy_gbs = 0;
};

// Times `launch` with the options' sample count and L2 state (bench/cuda_bench_util.h).
template <typename F>
absl::StatusOr<double> TimeIt(const Options& o, cudaStream_t stream, DeviceBuffer<uint8_t>& flush,
                              F&& launch) {
  return TimeLaunches(o.iters, o.warm, stream, flush, std::forward<F>(launch));
}

absl::Status Run(const Options& o, const DeviceInfo& dev, nlohmann::json& json) {
  const std::vector<int64_t>& batches = o.batches;
  const std::vector<int64_t>& contexts = o.contexts;
  const int64_t kHeads = o.heads, kKvHeads = o.kv_heads, kHeadDim = o.head_dim;
  const int64_t bs = o.block_size;
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int64_t max_tokens = max_batch * *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = max_tokens / bs;
  PagedKvBf16 cache{nullptr, nullptr, max_blocks, kKvHeads, bs, kHeadDim};
  const size_t pool_elems = static_cast<size_t>(max_blocks * cache.block_stride());
  std::printf("pool: %.1f GiB of K/V for %lld tokens (+ the same again as the copy target)\n",
              pool_elems * 2.0 / (1 << 30), static_cast<long long>(max_tokens));

  DeviceBuffer<bf16> pool, copy_dst, q, out;
  DeviceBuffer<float> lse;
  DeviceBuffer<int32_t> tables, lens, counters;
  DeviceBuffer<uint8_t> workspace, flush;
  LY_CUDA_RETURN_IF_NOT_OK(pool.Allocate(pool_elems));
  LY_CUDA_RETURN_IF_NOT_OK(copy_dst.Allocate(pool_elems));
  LY_CUDA_RETURN_IF_NOT_OK(q.Allocate(max_batch * kHeads * kHeadDim));
  LY_CUDA_RETURN_IF_NOT_OK(out.Allocate(max_batch * kHeads * kHeadDim));
  LY_CUDA_RETURN_IF_NOT_OK(lse.Allocate(max_batch * kHeads));
  LY_CUDA_RETURN_IF_NOT_OK(counters.Allocate(max_batch * kKvHeads * kDecodeSplitCountersPerRow));
  LY_CUDA_RETURN_IF_NOT_OK(counters.FillBytes(0));
  DecodeAttentionPlanOptions plan_options = o.plan;
  if (o.ctas_per_sm == 0) {  // the occupancy calculator, as the runner does
    auto ctas = DecodeAttentionCtasPerSm(kHeadDim, plan_options.stages, plan_options.loader);
    if (!ctas.ok()) return ctas.status();
    plan_options.ctas_per_sm = *ctas;
    auto two = DecodeAttentionCtasPerSm(kHeadDim, 2, plan_options.loader);
    if (!two.ok()) return two.status();
    plan_options.long_split_ctas_per_sm = *two;
  } else {
    plan_options.ctas_per_sm = o.ctas_per_sm;
  }
  LY_CUDA_RETURN_IF_NOT_OK(flush.Allocate(size_t{512} << 20));  // > 2x the 50 MB L2

  cudaStream_t stream;
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  // Random data (uniform in [-1, 1)), not constants: the kernel's time must not depend on it, and
  // this shows if it does.
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({pool.get(), static_cast<int64_t>(pool_elems), 1}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({q.get(), max_batch * kHeads * kHeadDim, 2}, stream));
  std::mt19937_64 rng(12345);
  std::vector<Row> rows;
  for (const int64_t batch : batches) {
    for (const int64_t ctx : contexts) {
      // Shuffled pages: each sequence gets ctx / bs random blocks of the pool (or, with
      // --sequential-pages, consecutive ones: how much DRAM locality of the pages is worth).
      const int64_t pages = ctx / bs;
      std::vector<int32_t> perm(batch * pages);
      std::iota(perm.begin(), perm.end(), 0);
      if (!o.sequential_pages) std::shuffle(perm.begin(), perm.end(), rng);
      LY_CUDA_RETURN_IF_NOT_OK(tables.Upload(perm));  // [batch, pages] row-major
      LY_CUDA_RETURN_IF_NOT_OK(lens.Upload(std::vector<int32_t>(batch, static_cast<int32_t>(ctx))));

      DecodeAttentionShape shape;
      shape.batch = batch;
      shape.num_heads = kHeads;
      shape.num_kv_heads = kKvHeads;
      shape.head_dim = kHeadDim;
      shape.block_size = bs;
      shape.max_blocks_per_seq = pages;
      shape.max_context_len = ctx;
      LY_CUDA_RETURN_IF_NOT_OK(CanImplementDecodeAttention(shape));
      const DecodeAttentionPlan plan = PlanDecodeAttention(shape, dev.num_sms, plan_options);
      const size_t ws = DecodeAttentionWorkspaceBytes(shape, plan);
      if (ws > workspace.bytes()) LY_CUDA_RETURN_IF_NOT_OK(workspace.Allocate(ws));

      DecodeAttentionParams p;
      p.q = q.get();
      p.cache = cache;
      p.cache.kv = pool.get();
      p.block_tables = tables.get();
      p.context_lens = lens.get();
      p.out = out.get();
      p.maybe_lse = lse.get();
      p.workspace = ws > 0 ? workspace.get() : nullptr;
      p.split_counters = counters.get();
      p.shape = shape;
      p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

      Row row;
      row.batch = batch;
      row.context = ctx;
      row.splits = plan.num_splits;
      row.chunk = plan.chunk_tokens;
      row.stages = plan.stages;
      const size_t kv_bytes = static_cast<size_t>(batch * ctx) * kKvHeads * kHeadDim * 2 * 2;
      row.kv_bytes = static_cast<double>(kv_bytes);
      auto attn = TimeIt(o, stream, flush, [&] { return DecodeAttention(p, plan, stream); });
      if (!attn.ok()) return attn.status();
      auto copy = TimeIt(o, stream, flush, [&]() -> absl::Status {
        LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(copy_dst.get(), pool.get(), kv_bytes,
                                                cudaMemcpyDeviceToDevice, stream));
        return absl::OkStatus();
      });
      if (!copy.ok()) return copy.status();
      row.attn_us = *attn;
      row.copy_us = *copy;
      row.attn_gbs = row.kv_bytes / (row.attn_us * 1e3);
      row.copy_gbs = 2.0 * row.kv_bytes / (row.copy_us * 1e3);
      rows.push_back(row);
    }
  }
  LY_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  const char* loader_name = plan_options.loader == DecodeLoader::kTma ? "tma" : "cp-async";
  std::printf(
      "\n%s, %d SMs, block_size %lld, %s loader, %d stages at %d CTAs/SM (2 at %d for splits of "
      ">= %d tokens), %s L2, median of %d\n",
      dev.name.c_str(), dev.num_sms, static_cast<long long>(bs), loader_name, plan_options.stages,
      plan_options.ctas_per_sm, plan_options.long_split_ctas_per_sm, plan_options.long_split_tokens,
      o.warm ? "warm" : "cold", o.iters);
  std::printf("%6s %8s %7s %7s %6s %10s %10s %10s %10s %10s %8s\n", "batch", "context", "splits",
              "chunk", "stages", "KV MB", "attn us", "attn GB/s", "copy us", "copy GB/s", "% copy");
  nlohmann::json results = nlohmann::json::array();
  for (const Row& r : rows) {
    const double pct = 100.0 * r.attn_gbs / r.copy_gbs;
    std::printf("%6lld %8lld %7d %7d %6d %10.1f %10.1f %10.0f %10.1f %10.0f %7.1f%%\n",
                static_cast<long long>(r.batch), static_cast<long long>(r.context), r.splits,
                r.chunk, r.stages, r.kv_bytes / 1e6, r.attn_us, r.attn_gbs, r.copy_us, r.copy_gbs,
                pct);
    results.push_back({{"batch", r.batch},
                       {"context", r.context},
                       {"splits", r.splits},
                       {"chunk_tokens", r.chunk},
                       {"stages", r.stages},
                       {"kv_bytes", r.kv_bytes},
                       {"attention_us", r.attn_us},
                       {"attention_gb_per_s", r.attn_gbs},
                       {"copy_us", r.copy_us},
                       {"copy_gb_per_s", r.copy_gbs},
                       {"percent_of_copy", pct}});
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  json = {{"bench", "cuda_decode_attention"},
          {"device", dev.name},
          {"num_sms", dev.num_sms},
          {"cuda_driver", driver},
          {"cuda_runtime", runtime},
          {"heads", kHeads},
          {"kv_heads", kKvHeads},
          {"head_dim", kHeadDim},
          {"block_size", bs},
          {"ctas_per_sm", plan_options.ctas_per_sm},
          {"stages", plan_options.stages},
          {"loader", loader_name},
          {"min_chunk_tokens", o.plan.min_chunk_tokens},
          {"max_splits", o.plan.max_splits},
          {"merge_fan_in", o.plan.merge_fan_in},
          {"long_split_tokens", o.plan.long_split_tokens},
          {"long_split_ctas_per_sm", plan_options.long_split_ctas_per_sm},
          {"l2", o.warm ? "warm" : "cold"},
          {"iters", o.iters},
          {"results", results}};
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee::cuda

int main(int argc, char** argv) {
  lychee::cuda::Options o;
  CLI::App app{"Paged decode attention vs a device-to-device copy of the same bytes"};
  app.add_option("--iters", o.iters, "timed samples per point (median reported)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--block-size", o.block_size, "tokens per KV page")
      ->check(CLI::IsMember({16, 32, 64}));
  app.add_option("--batches", o.batches, "batch sizes")->delimiter(',');
  app.add_option("--contexts", o.contexts, "context lengths (tokens, multiples of the block size)")
      ->delimiter(',');
  app.add_option("--heads", o.heads, "query heads");
  app.add_option("--kv-heads", o.kv_heads, "kv heads");
  app.add_option("--head-dim", o.head_dim, "head dim")->check(CLI::IsMember({64, 128}));
  app.add_option("--ctas-per-sm", o.ctas_per_sm,
                 "plan: CTAs per SM (default: the occupancy calculator's, as the runner)");
  app.add_option("--loader", o.plan.loader, "plan: how K/V tiles reach shared memory")
      ->transform(CLI::CheckedTransformer(std::map<std::string, lychee::cuda::DecodeLoader>{
          {"cp-async", lychee::cuda::DecodeLoader::kCpAsync},
          {"tma", lychee::cuda::DecodeLoader::kTma}}));
  app.add_option("--stages", o.plan.stages, "plan: K/V tiles in the ring")->check(CLI::Range(2, 4));
  app.add_option("--min-chunk", o.plan.min_chunk_tokens, "plan: fewest tokens per split");
  app.add_option("--max-splits", o.plan.max_splits, "plan: most splits per (sequence, kv head)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--merge-fan-in", o.plan.merge_fan_in,
                 "plan: splits per first-level merge group (0: one level)");
  app.add_option("--long-split-tokens", o.plan.long_split_tokens,
                 "plan: splits at least this long (with 2 stages) use 2 stages (0: never)");
  app.add_flag("--warm", o.warm, "do not flush L2 between samples");
  app.add_flag("--sequential-pages", o.sequential_pages,
               "each sequence's pages consecutive in the pool (default: shuffled)");
  app.add_option("--json", o.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);

  return lychee::cuda::RunBenchmark(
      "cuda_decode_attention_bench", o.json_path,
      [&o](const lychee::cuda::DeviceInfo& device, nlohmann::json& json) {
        return lychee::cuda::Run(o, device, json);
      });
}
