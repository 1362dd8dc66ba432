// SPDX-License-Identifier: Apache-2.0
// cpu_attention_bench: the CPU attention kernels old vs new in the same run, on the same data and
// thread count, as ratios.
//
//   kernel  PagedAttention (the single-threaded reference) vs FlashAttention (tiled, AVX-512,
//           AVX2 or scalar, on --threads threads): a causal prefill of N tokens in one call, and
//           one decode query at --depth, on a random Llama's attention shape (12 heads, 3 kv heads,
//           head_dim 64, blocks of 16, block table shuffled).
//   runner  CpuModelRunner on a random Llama (hidden 768, 12 layers: ~125M params, fp32):
//           prefill of N tokens in chunks of --chunk (prompt tok/s) and --decode-steps decode
//           steps at --depth (tok/s), with reference_attention on (old) and off (new).
//   The kernel rows also time the new kernel over a bf16 copy of the cache (new-bf16kv) and, on
//   an AVX-512 CPU, the new kernel forced to its AVX2 tiles (new-avx2).
//
// Times are the median of --reps repetitions (the reference and the scalar tiles run --ref-reps
// times: they are slow).
// Usage: cpu_attention_bench [--threads 2] [--prompts 512,2048,4096] [--depth 4096]
//                            [--chunk 512] [--reps 3] [--ref-reps 1] [--json out.json]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/synthetic_llama.h"
#include "common/bf16.h"
#include "common/status.h"
#include "engine/cpu_model_runner.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/paged_kv.h"
#include "kvcache/kv_pool.h"

namespace lychee {
namespace {

constexpr int64_t kBlockSize = 16;

struct Flags {
  int threads = 2;
  std::vector<int64_t> prompts = {512, 2048, 4096};
  int64_t depth = 4096;
  int64_t chunk = 512;
  int64_t decode_steps = 16;
  int reps = 3;
  int ref_reps = 1;
  int64_t hidden = 768;
  int64_t layers = 12;
  bool skip_runner = false;
  std::string json_path;
};

using Clock = std::chrono::steady_clock;

double Seconds(const std::function<void()>& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double MedianSeconds(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < std::max(1, reps); ++i) t.push_back(Seconds(f));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
std::pair<ModelConfig, ModelWeights> Synthetic(int64_t hidden, int64_t layers, int64_t context) {
  return bench::SyntheticLlama(hidden, layers, context);
}

struct Result {
  std::string section, what;
  int64_t tokens = 0;
  double old_s = 0.0, new_s = 0.0, scalar_s = 0.0;  // scalar_s: kernel rows only
  double bf16_s = 0.0;  // kernel rows: the new kernel over a bf16 copy of the cache
  double avx2_s = 0.0;  // kernel rows on an AVX-512 CPU: the new kernel forced to AVX2 tiles
  double Speedup() const { return old_s / new_s; }
};

// ---- kernel ----

std::vector<Result> BenchKernels(const Flags& f) {
  const int64_t heads = f.hidden / 64, kv_heads = std::max<int64_t>(1, heads / 4), d = 64;
  int64_t max_len = f.depth + 1;
  for (int64_t n : f.prompts) max_len = std::max(max_len, n);
  const int64_t blocks = (max_len + kBlockSize - 1) / kBlockSize;
  KvPool pool({.num_layers = 1, .num_kv_heads = kv_heads, .head_dim = d, .block_size = kBlockSize},
              blocks);
  const PagedKvView view = pool.View(0);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::fill(view.kv, view.kv + blocks * view.block_stride(), 0.0f);
  for (int64_t i = 0; i < blocks * view.block_stride(); ++i) view.kv[i] = dist(rng);
  // The same cache in bf16 (half the bytes the kernel reads).
  KvPool pool16({.num_layers = 1,
                 .num_kv_heads = kv_heads,
                 .head_dim = d,
                 .block_size = kBlockSize,
                 .dtype = KvDtype::kBf16},
                blocks);
  const PagedKvView view16 = pool16.View(0);
  for (int64_t i = 0; i < blocks * view.block_stride(); ++i) {
    view16.kv_bf16[i] = FloatToBf16(view.kv[i]);
  }
  bool use_bf16 = false;  // FlashAttention reads view16
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<float> q(static_cast<size_t>(max_len * heads * d));
  for (float& x : q) x = dist(rng);
  std::vector<float> out(q.size()), scratch(static_cast<size_t>(max_len));
  std::vector<float> workspace(
      static_cast<size_t>(cpu::FlashAttentionWorkspaceFloats(heads, kv_heads, d, f.threads)));

  auto run = [&](int64_t num_queries, int64_t query_start, bool reference) {
    if (reference) {
      cpu::PagedAttentionParams p;
      p.q = q.data();
      p.cache = view;
      p.block_table = table.data();
      p.out = out.data();
      p.scratch = scratch.data();
      p.num_queries = num_queries;
      p.num_heads = heads;
      p.num_table_blocks = blocks;
      p.query_start = query_start;
      p.scale = 0.125f;
      cpu::PagedAttention(p);
      return;
    }
    cpu::FlashAttentionParams p;
    p.q = q.data();
    p.cache = use_bf16 ? view16 : view;
    p.block_table = table.data();
    p.out = out.data();
    p.workspace = workspace.data();
    p.workspace_floats = static_cast<int64_t>(workspace.size());
    p.num_queries = num_queries;
    p.num_heads = heads;
    p.num_table_blocks = blocks;
    p.query_start = query_start;
    p.scale = 0.125f;
    cpu::FlashAttention(p);
  };
  // Each sample runs `calls` calls (a decode call is too short to time alone); seconds per call.
  auto measure = [&](Result r, int64_t num_queries, int64_t query_start, int reps, int calls) {
    auto seconds = [&](int samples, bool reference) {
      return MedianSeconds(samples,
                           [&] {
                             for (int i = 0; i < calls; ++i) {
                               run(num_queries, query_start, reference);
                             }
                           }) /
             calls;
    };
    r.old_s = seconds(f.ref_reps, true);
    cpu::SetIsaOverride(cpu::VectorIsa::kScalar);
    r.scalar_s = seconds(f.ref_reps, false);
    if (cpu::DetectedIsa() == cpu::VectorIsa::kAvx512) {
      cpu::SetIsaOverride(cpu::VectorIsa::kAvx2);
      run(num_queries, query_start, false);  // warm
      r.avx2_s = seconds(reps, false);
    }
    cpu::SetIsaOverride(std::nullopt);
    run(num_queries, query_start, false);  // warm
    r.new_s = seconds(reps, false);
    use_bf16 = true;
    run(num_queries, query_start, false);
    r.bf16_s = seconds(reps, false);
    use_bf16 = false;
    return r;
  };
  std::vector<Result> rows;
  for (int64_t n : f.prompts) {
    rows.push_back(measure({"kernel", "prefill (one layer)", n}, n, 0, f.reps, 1));
  }
  rows.push_back(
      measure({"kernel", "decode 1 query at depth (one layer)", f.depth}, 1, f.depth, f.reps, 20));
  return rows;
}

// ---- runner ----

absl::StatusOr<std::vector<Result>> BenchRunner(const Flags& f) {
  int64_t max_len = f.depth + f.decode_steps;
  for (int64_t n : f.prompts) max_len = std::max(max_len, n);
  auto [config, weights] = Synthetic(f.hidden, f.layers, max_len);
  const int64_t blocks = (max_len + kBlockSize - 1) / kBlockSize;
  KvPool pool(KvCacheShapeFor(config, kBlockSize), blocks);
  std::unique_ptr<CpuModelRunner> runners[2];
  for (int i = 0; i < 2; ++i) {
    CpuModelRunnerOptions options;
    options.max_num_batched_tokens = f.chunk;
    options.max_num_seqs = 1;
    options.reference_attention = i == 0;
    LY_ASSIGN_OR_RETURN(runners[i], CpuModelRunner::Create(config, weights, &pool, options));
  }
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  std::iota(table.begin(), table.end(), 0);
  std::vector<int32_t> tokens(static_cast<size_t>(max_len));
  for (int64_t t = 0; t < max_len; ++t) tokens[t] = static_cast<int32_t>((t * 104729) % 32000);
  auto step = [&](int64_t start, int64_t n) {
    SchedulerOutput s;
    ScheduledChunk c;
    c.seq_id = 0;
    c.token_ids =
        absl::MakeConstSpan(tokens).subspan(static_cast<size_t>(start), static_cast<size_t>(n));
    c.start_position = start;
    c.block_table = table;
    c.needs_logits = start + n == max_len || n == 1;
    c.is_decode = n == 1;
    s.chunks.push_back(c);
    return s;
  };
  absl::Status status;
  auto prefill = [&](CpuModelRunner& r, int64_t n) {
    for (int64_t start = 0; start < n && status.ok(); start += f.chunk) {
      status = r.Execute(step(start, std::min(f.chunk, n - start))).status();
    }
  };
  std::vector<Result> rows;
  for (int64_t n : f.prompts) {
    Result r = {"runner", "prefill (tokens/s = tokens / s)", n};
    r.old_s = MedianSeconds(f.ref_reps, [&] { prefill(*runners[0], n); });
    r.new_s = MedianSeconds(f.reps, [&] { prefill(*runners[1], n); });
    LY_RETURN_IF_ERROR(status);
    rows.push_back(r);
  }
  // Decode at depth: the cache holds `depth` tokens (written by the new runner), then each
  // runner decodes the same decode_steps positions (rewriting the same slots).
  prefill(*runners[1], f.depth);
  LY_RETURN_IF_ERROR(status);
  Result r = {"runner", "decode step at depth (per token)", f.depth};
  auto decode = [&](CpuModelRunner& runner) {
    for (int64_t i = 0; i < f.decode_steps && status.ok(); ++i) {
      status = runner.Execute(step(f.depth + i, 1)).status();
    }
  };
  r.old_s =
      MedianSeconds(f.ref_reps, [&] { decode(*runners[0]); }) / static_cast<double>(f.decode_steps);
  r.new_s =
      MedianSeconds(f.reps, [&] { decode(*runners[1]); }) / static_cast<double>(f.decode_steps);
  LY_RETURN_IF_ERROR(status);
  rows.push_back(r);
  return rows;
}

int Run(const Flags& f) {
  cpu::SetNumThreads(f.threads);
  std::vector<Result> rows = BenchKernels(f);
  if (!f.skip_runner) {
    auto runner_rows = BenchRunner(f);
    if (!runner_rows.ok()) {
      std::fprintf(stderr, "runner: %s\n", runner_rows.status().ToString().c_str());
      return 1;
    }
    rows.insert(rows.end(), runner_rows->begin(), runner_rows->end());
  }
  std::printf("threads %d, isa %s, BLAS core %s, median of %d reps (reference: %d)\n", f.threads,
              cpu::IsaName(cpu::ActiveIsa()), cpu::BlasCoreName(), f.reps, f.ref_reps);
  std::printf("%-7s %-38s %7s %12s %12s %12s %8s %12s %12s\n", "section", "what", "tokens", "old s",
              "new s", "new-scalar s", "speedup", "new-bf16kv s", "new-avx2 s");
  nlohmann::json out;
  out["bench"] = "cpu_attention";
  out["threads"] = f.threads;
  out["isa"] = cpu::IsaName(cpu::ActiveIsa());
  out["blas_core"] = cpu::BlasCoreName();
  out["reps"] = f.reps;
  out["ref_reps"] = f.ref_reps;
  out["hidden"] = f.hidden;
  out["layers"] = f.layers;
  out["chunk"] = f.chunk;
  out["results"] = nlohmann::json::array();
  for (const Result& r : rows) {
    std::printf("%-7s %-38s %7lld %12.5f %12.5f %12.5f %7.2fx %12.5f %12.5f\n", r.section.c_str(),
                r.what.c_str(), static_cast<long long>(r.tokens), r.old_s, r.new_s, r.scalar_s,
                r.Speedup(), r.bf16_s, r.avx2_s);
    out["results"].push_back({{"section", r.section},
                              {"what", r.what},
                              {"tokens", r.tokens},
                              {"old_seconds", r.old_s},
                              {"new_seconds", r.new_s},
                              {"new_scalar_seconds", r.scalar_s},
                              {"new_bf16_kv_seconds", r.bf16_s},
                              {"new_avx2_seconds", r.avx2_s},
                              {"speedup", r.Speedup()}});
  }
  if (!f.json_path.empty()) std::ofstream(f.json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Flags f;
  CLI::App app{"CPU attention: PagedAttention (reference) vs FlashAttention, kernel and runner"};
  app.add_option("--threads", f.threads, "Threads of the kernels' team")
      ->check(CLI::PositiveNumber);
  app.add_option("--prompts", f.prompts, "Prefill lengths")->delimiter(',');
  app.add_option("--depth", f.depth, "Context depth of the decode measurements");
  app.add_option("--chunk", f.chunk, "Runner prefill chunk (max_num_batched_tokens)");
  app.add_option("--decode-steps", f.decode_steps, "Runner decode steps per sample");
  app.add_option("--reps", f.reps, "Samples of the new kernel (median)");
  app.add_option("--ref-reps", f.ref_reps, "Samples of the reference (median)");
  app.add_option("--hidden", f.hidden, "Random Llama hidden size (head_dim 64)");
  app.add_option("--layers", f.layers, "Random Llama layers");
  app.add_flag("--skip-runner", f.skip_runner, "Kernel section only");
  app.add_option("--json", f.json_path, "Write the results as JSON");
  CLI11_PARSE(app, argc, argv);
  return lychee::Run(f);
}
