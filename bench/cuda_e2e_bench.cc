// SPDX-License-Identifier: Apache-2.0
// End-to-end speed of the CUDA model runner on a synthetic model (default synthetic:llama-3-8b,
// random bf16 weights at the real size), each figure beside its bound measured in the same run:
//   decode: tokens/s at batch × context (and, with --fit-batch, the largest batch whose KV fits
//     the pool at each context; steps of one token per sequence over a KV cache of that
//     length; replaying CUDA graphs, beside the same steps run eagerly), next to the byte bound =
//     batch / ((weight bytes + KV bytes read) / copy bandwidth);
//   prefill: tokens/s, achieved TFLOP/s and TTFT of one prompt in chunks of
//     max_num_batched_tokens, next to the FLOP bound from the measured bf16 GEMM peak.
// Decode steps read a KV cache that was never prefilled (zeros): attention reads the same bytes,
// so the time is that of a real step. Prints a table; --json writes the figures.
#include <nvtx3/nvToolsExt.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/cuda_bench_util.h"
#include "common/status.h"
#include "engine/cuda_model_runner.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/gemm.h"
#include "model/synthetic.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy_factory.h"

namespace lychee {
namespace {

using Clock = std::chrono::steady_clock;
using cuda::bf16;

struct Options {
  std::string model = "synthetic:llama-3-8b";
  std::vector<int64_t> batches = {1, 8, 32};
  std::vector<int64_t> contexts = {4096, 32768, 131072};
  std::vector<int64_t> prefill = {4096, 32768};
  int64_t chunk = 8192;  // prefill chunk (max_num_batched_tokens)
  int steps = 20;
  // Sparse decode per policy beside dense in the same cells (empty: none), at this budget; the
  // lychee mask makes kv head (layer mod kv_heads) of each layer a retrieval head.
  std::vector<std::string> policies = {"quest", "streaming", "lychee"};
  int64_t budget = 2048;
  // The sparse policies' max_dropped_mass (1: none; below 1 quest, streaming and lychee widen
  // their budgets to meet it, prhs grows its sets in advance; a policy the GPU cannot run so is
  // skipped with the reason).
  double max_dropped_mass = 1.0;
  double gpu_memory_utilization = 0.92;
  // Also time, per context, the largest batch whose KV fits the pool (at most fit_batch_limit
  // sequences): issue 12's "largest batch that fits" cell.
  bool fit_batch = false;
  int64_t fit_batch_limit = 32;
  CudaDecodeGemm decode_gemm = CudaDecodeGemm::kCublasLt;
  bool pdl = false;  // CudaModelRunnerOptions::programmatic_launch
  // Also time each sparse cell with its steps replayed from CUDA graphs
  // (CudaModelRunnerOptions::sparse_cuda_graphs), beside the eager steps.
  bool sparse_graphs = false;
  // Also time lychee with its hybrid launch (CudaModelRunnerOptions::lychee_hybrid_launch: one
  // attention launch a layer) beside the default two launches, in the same process.
  bool lychee_hybrid_too = false;
  std::string json_path;
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Read + write bytes per second of a large device-to-device copy (median of 10).
absl::StatusOr<double> CopyBandwidth() {
  const size_t bytes = size_t{2} << 30;
  cuda::DeviceBuffer<uint8_t> a, b;
  LY_RETURN_IF_ERROR(a.Allocate(bytes));
  LY_RETURN_IF_ERROR(b.Allocate(bytes));
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    const auto start = Clock::now();
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
    LY_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    if (i >= 2) t.push_back(Seconds(start, Clock::now()));
  }
  std::sort(t.begin(), t.end());
  return 2.0 * static_cast<double>(bytes) / t[t.size() / 2];
}

// bf16 GEMM TFLOP/s of cuBLASLt at 8192³ (median of 10): the compute ceiling.
absl::StatusOr<double> GemmPeak() {
  const int64_t n = 8192;
  cuda::DeviceBuffer<bf16> x, w, y;
  cuda::DeviceBuffer<uint8_t> ws;
  LY_RETURN_IF_ERROR(x.Allocate(static_cast<size_t>(n * n)));
  LY_RETURN_IF_ERROR(w.Allocate(static_cast<size_t>(n * n)));
  LY_RETURN_IF_ERROR(y.Allocate(static_cast<size_t>(n * n)));
  LY_RETURN_IF_ERROR(ws.Allocate(cuda::kGemmWorkspaceBytes));
  LY_RETURN_IF_ERROR(x.FillBytes(0));
  LY_RETURN_IF_ERROR(w.FillBytes(0));
  LY_ASSIGN_OR_RETURN(auto gemm, cuda::LtGemm::Create());
  cuda::GemmArgs a{.x = x.get(), .w = w.get(), .y = y.get(), .m = n, .n = n, .k = n};
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    const auto start = Clock::now();
    LY_RETURN_IF_ERROR(gemm->Run(a, ws.get(), ws.bytes(), nullptr));
    LY_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    if (i >= 2) t.push_back(Seconds(start, Clock::now()));
  }
  std::sort(t.begin(), t.end());
  return 2.0 * static_cast<double>(n) * n * n / t[t.size() / 2] / 1e12;
}

// Matmul FLOPs per token (weights, LM head excluded) and attention FLOPs of a causal prompt.
double WeightFlopsPerToken(const ModelConfig& c) {
  const double h = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double inter = static_cast<double>(c.intermediate_size);
  return 2.0 * static_cast<double>(c.num_layers) * (h * (q + 2 * kv) + q * h + 3 * h * inter);
}
double CausalAttentionFlops(const ModelConfig& c, double tokens) {
  return 4.0 * static_cast<double>(c.num_layers * c.num_heads * c.head_dim) * tokens * tokens / 2.0;
}

absl::Status Run(const Options& o, nlohmann::json& out) {
  LY_ASSIGN_OR_RETURN(const ModelConfig config, SyntheticModelConfig(o.model));
  LY_ASSIGN_OR_RETURN(const double copy_bw, CopyBandwidth());
  LY_ASSIGN_OR_RETURN(const double peak_tflops, GemmPeak());
  LY_ASSIGN_OR_RETURN(auto devices, cuda::ListDevices());
  std::printf("%s on %s: copy %.2f TB/s (read+write), bf16 GEMM %.0f TFLOP/s\n", o.model.c_str(),
              devices.front().name.c_str(), copy_bw / 1e12, peak_tflops);
  out["device"] = devices.front().name;
  out["model"] = o.model;
  out["decode_gemm"] = o.decode_gemm == CudaDecodeGemm::kSkinny ? "skinny" : "cublaslt";
  out["programmatic_launch"] = o.pdl;
  out["sparse_graphs"] = o.sparse_graphs;
  out["copy_bandwidth_bytes_per_s"] = copy_bw;
  out["bf16_gemm_tflops"] = peak_tflops;

  // Any list may be empty (no cells of that kind).
  auto max_of = [](const std::vector<int64_t>& v) {
    return v.empty() ? int64_t{0} : *std::max_element(v.begin(), v.end());
  };
  const int64_t max_ctx = std::max<int64_t>({max_of(o.contexts), max_of(o.prefill), 16});
  const int64_t max_batch = max_of(o.batches);
  CudaModelRunnerOptions ro;
  ro.block_size = 16;
  const int64_t max_seqs = std::max<int64_t>(o.fit_batch ? o.fit_batch_limit : 0, max_batch);
  ro.max_num_seqs = std::max<int64_t>(max_seqs, 1);
  ro.max_num_batched_tokens = std::max(o.chunk, max_seqs);
  ro.max_model_len = max_ctx + 1;
  ro.gpu_memory_utilization = o.gpu_memory_utilization;
  ro.decode_gemm = o.decode_gemm;
  ro.programmatic_launch = o.pdl;
  const auto load_start = Clock::now();
  LY_ASSIGN_OR_RETURN(auto runner, CudaModelRunner::Create(config, nullptr, ro));
  std::printf("weights %.2f GiB (filled in %.1f s), KV pool %lld blocks (%.1f GiB)\n",
              runner->weight_bytes() / 1073741824.0, Seconds(load_start, Clock::now()),
              static_cast<long long>(runner->num_kv_blocks()),
              runner->kv_cache_bytes() / 1073741824.0);
  const double kv_bytes_per_token =
      static_cast<double>(config.num_layers * 2 * config.num_kv_heads * config.head_dim * 2);
  const double weight_bytes = static_cast<double>(runner->weight_bytes());

  // ---- decode ----
  if (!o.batches.empty() && !o.contexts.empty()) {
    std::printf(
        "\n| batch | context | ms/step (graphs) | ms/step (eager) | graph gain | tokens/s | "
        "byte bound tok/s | %% of bound |\n");
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  }
  out["decode"] = nlohmann::json::array();
  std::string sparse_table;
  auto roles = std::make_shared<sparsity::HeadRoles>(config.num_layers, config.num_kv_heads);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    roles->set_retrieval(l, l % config.num_kv_heads, true);
  }
  sparsity::PolicyContext policy_context;
  policy_context.block_size = ro.block_size;
  policy_context.num_layers = config.num_layers;
  policy_context.num_kv_heads = config.num_kv_heads;
  policy_context.head_roles = roles;
  // The (batch, context) cells: the grid, then per context the largest batch that fits.
  std::vector<std::pair<int64_t, int64_t>> cells;
  for (int64_t batch : o.batches) {
    for (int64_t ctx : o.contexts) cells.emplace_back(batch, ctx);
  }
  for (int64_t ctx : o.contexts) {
    const int64_t fit = std::min(o.fit_batch_limit, runner->num_kv_blocks() / ((ctx + 15) / 16));
    const bool listed = std::find(o.batches.begin(), o.batches.end(), fit) != o.batches.end();
    if (o.fit_batch && fit > 0 && !listed) cells.emplace_back(fit, ctx);
  }
  for (const auto& [batch, ctx] : cells) {
    const int64_t blocks_per_seq = (ctx + 15) / 16;
    nlohmann::json cell = {{"batch", batch}, {"context", ctx}};
    if (batch * blocks_per_seq > runner->num_kv_blocks()) {
      cell["skipped"] = "KV cache does not fit";
      std::printf("| %lld | %lld | — | — | — | does not fit | | |\n", static_cast<long long>(batch),
                  static_cast<long long>(ctx));
      out["decode"].push_back(cell);
      continue;
    }
    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(batch));
    std::vector<int32_t> token(static_cast<size_t>(batch), 1000);
    for (int64_t b = 0; b < batch; ++b) {
      auto& t = tables[static_cast<size_t>(b)];
      t.resize(static_cast<size_t>(blocks_per_seq));
      std::iota(t.begin(), t.end(), static_cast<int32_t>(b * blocks_per_seq));
    }
    SchedulerOutput step;
    for (int64_t b = 0; b < batch; ++b) {
      ScheduledChunk ch;
      ch.seq_id = b;
      ch.token_ids = absl::MakeConstSpan(&token[static_cast<size_t>(b)], 1);
      ch.start_position = ctx - 1;
      ch.block_table = tables[static_cast<size_t>(b)];
      ch.needs_logits = true;
      step.chunks.push_back(ch);
    }
    step.num_batched_tokens = batch;
    // Seconds per step with decode graphs replayed, and eagerly (the first steps capture).
    auto time_steps = [&](bool graphs) -> absl::StatusOr<double> {
      runner->set_cuda_graphs(graphs);
      for (int i = 0; i < 3; ++i) LY_RETURN_IF_ERROR(runner->Execute(step).status());
      const auto start = Clock::now();
      for (int i = 0; i < o.steps; ++i) LY_RETURN_IF_ERROR(runner->Execute(step).status());
      return Seconds(start, Clock::now()) / o.steps;
    };
    LY_ASSIGN_OR_RETURN(const double eager_s, time_steps(false));
    LY_ASSIGN_OR_RETURN(const double step_s, time_steps(true));
    const double tok_s = static_cast<double>(batch) / step_s;
    const double bound_s =
        (weight_bytes + static_cast<double>(batch * ctx) * kv_bytes_per_token) / copy_bw;
    const double bound_tok_s = static_cast<double>(batch) / bound_s;
    cell["ms_per_step"] = step_s * 1e3;
    cell["eager_ms_per_step"] = eager_s * 1e3;
    cell["tokens_per_s"] = tok_s;
    cell["byte_bound_tokens_per_s"] = bound_tok_s;
    cell["fraction_of_bound"] = tok_s / bound_tok_s;
    std::printf("| %lld | %lld | %.2f | %.2f | %.2fx | %.1f | %.1f | %.0f%% |\n",
                static_cast<long long>(batch), static_cast<long long>(ctx), step_s * 1e3,
                eager_s * 1e3, eager_s / step_s, tok_s, bound_tok_s, 100.0 * tok_s / bound_tok_s);
    std::fflush(stdout);
    // The same cell under each sparse policy: eager steps, and with --sparse-graphs also replayed
    // from graphs.
    // Each policy, and lychee a second time with its hybrid launch when asked.
    std::vector<std::pair<std::string, bool>> policy_cells;  // (policy, hybrid launch)
    for (const std::string& name : o.policies) {
      policy_cells.emplace_back(name, false);
      if (name == "lychee" && o.lychee_hybrid_too) policy_cells.emplace_back(name, true);
    }
    for (const auto& [name, hybrid] : policy_cells) {
      runner->set_lychee_hybrid_launch(hybrid);
      const std::string label = hybrid ? name + " (hybrid)" : name;
      PolicySpec spec;
      spec.name = name;
      spec.budget_tokens = o.budget;
      spec.max_dropped_mass = o.max_dropped_mass;
      if (const absl::Status supported = runner->SupportsPolicy(spec); !supported.ok()) {
        std::printf("%s skipped: %s\n", name.c_str(), std::string(supported.message()).c_str());
        continue;
      }
      std::vector<std::unique_ptr<sparsity::Policy>> owned;
      std::vector<sparsity::Policy*> policies;
      for (int64_t b = 0; b < batch; ++b) {
        LY_ASSIGN_OR_RETURN(auto p, sparsity::MakePolicy(spec, policy_context));
        policies.push_back(p.get());
        owned.push_back(std::move(p));
      }
      runner->set_sparse_cuda_graphs(false);  // eager first: the NVTX profile's steps
      for (int i = 0; i < 3; ++i) {
        // The last warm-up step inside an NVTX range, "sparse-step:<policy>", for a per-kernel
        // profile of one step: ncu --nvtx --nvtx-include "sparse-step:quest/" --print-summary
        // per-kernel (scripts/gpu-check.sh perf).
        const std::string range = "sparse-step:" + name;
        if (i == 2) nvtxRangePushA(range.c_str());
        const auto executed = runner->Execute(step, policies);
        if (i == 2) nvtxRangePop();
        LY_RETURN_IF_ERROR(executed.status());
      }
      const SparseChunkStats st = runner->sparse_stats()[0];
      const double read = static_cast<double>(st.kv_tokens_read) /
                          static_cast<double>(std::max<int64_t>(1, st.kv_tokens_dense));
      const auto start = Clock::now();
      for (int i = 0; i < o.steps; ++i) {
        LY_RETURN_IF_ERROR(runner->Execute(step, policies).status());
      }
      const double sparse_s = Seconds(start, Clock::now()) / o.steps;
      double graphs_s = 0.0;
      if (o.sparse_graphs) {
        runner->set_sparse_cuda_graphs(true);
        const int64_t replays = runner->num_graph_replays();
        for (int i = 0; i < 3; ++i) LY_RETURN_IF_ERROR(runner->Execute(step, policies).status());
        const auto graphs_start = Clock::now();
        for (int i = 0; i < o.steps; ++i) {
          LY_RETURN_IF_ERROR(runner->Execute(step, policies).status());
        }
        graphs_s = Seconds(graphs_start, Clock::now()) / o.steps;
        if (runner->num_graph_replays() - replays < o.steps) {  // ran eagerly: no figure
          std::printf("%s: sparse steps did not replay graphs (over a graph limit)\n",
                      label.c_str());
          graphs_s = 0.0;
        }
      }
      const double sparse_bound_s =
          (weight_bytes + static_cast<double>(batch * ctx) * kv_bytes_per_token * read) / copy_bw;
      nlohmann::json sc = {{"policy", name},
                           {"hybrid_launch", hybrid},
                           {"budget_tokens", o.budget},
                           {"max_dropped_mass", o.max_dropped_mass},
                           {"widenings_per_step", st.widenings},
                           {"dense_fallbacks_per_step", st.device_dense_fallbacks},
                           {"ms_per_step", sparse_s * 1e3},
                           {"graphs_ms_per_step", graphs_s * 1e3},
                           {"tokens_per_s", static_cast<double>(batch) / sparse_s},
                           {"kv_read_fraction", read},
                           {"max_bound", st.max_bound},
                           {"speedup_vs_dense_graphs", step_s / sparse_s},
                           {"speedup_vs_dense_eager", eager_s / sparse_s},
                           {"byte_bound_speedup", bound_s / sparse_bound_s}};
      cell["sparse"].push_back(sc);
      const std::string graphs =
          graphs_s > 0.0 ? absl::StrFormat("%.2f (%.2fx)", graphs_s * 1e3, step_s / graphs_s)
                         : std::string("-");
      sparse_table += absl::StrFormat(
          "| %d | %d | %s | %.2f | %.1f | %.3f | %.2fx | %.2fx | %s | %.2fx |\n", batch, ctx, label,
          sparse_s * 1e3, static_cast<double>(batch) / sparse_s, read, step_s / sparse_s,
          eager_s / sparse_s, graphs, bound_s / sparse_bound_s);
    }
    out["decode"].push_back(cell);
  }
  if (!sparse_table.empty()) {
    std::printf(
        "\nsparse decode, budget %lld tokens (eager steps; last columns: replayed from graphs, vs "
        "dense with graphs):\n| batch | context | policy | ms/step | tokens/s | KV read | vs dense "
        "(graphs) | vs dense (eager) | graphs ms/step | byte-bound speedup |\n| --- | --- | --- "
        "| --- | --- | --- | --- | --- | --- | --- |\n%s",
        static_cast<long long>(o.budget), sparse_table.c_str());
  }

  // ---- prefill ----
  if (!o.prefill.empty()) {
    std::printf("\n| prompt | TTFT s | tokens/s | TFLOP/s | FLOP bound s | TTFT / bound |\n");
    std::printf("| --- | --- | --- | --- | --- | --- |\n");
  }
  out["prefill"] = nlohmann::json::array();
  for (int64_t len : o.prefill) {
    const int64_t blocks = (len + 15) / 16;
    nlohmann::json cell = {{"prompt_tokens", len}};
    if (blocks > runner->num_kv_blocks()) {
      cell["skipped"] = "KV cache does not fit";
      out["prefill"].push_back(cell);
      continue;
    }
    std::vector<int32_t> table(static_cast<size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::vector<int32_t> prompt(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) prompt[static_cast<size_t>(i)] = (i * 7919) % 120000;
    auto run_prompt = [&]() -> absl::Status {
      for (int64_t at = 0; at < len; at += o.chunk) {
        const int64_t n = std::min(o.chunk, len - at);
        SchedulerOutput step;
        ScheduledChunk ch;
        ch.token_ids =
            absl::MakeConstSpan(prompt).subspan(static_cast<size_t>(at), static_cast<size_t>(n));
        ch.start_position = at;
        ch.block_table = table;
        ch.needs_logits = at + n == len;
        step.chunks.push_back(ch);
        step.num_batched_tokens = n;
        LY_RETURN_IF_ERROR(runner->Execute(step).status());
      }
      return absl::OkStatus();
    };
    LY_RETURN_IF_ERROR(run_prompt());  // warm-up (GEMM plans, caches)
    const auto start = Clock::now();
    LY_RETURN_IF_ERROR(run_prompt());
    const double s = Seconds(start, Clock::now());
    const double flops = WeightFlopsPerToken(config) * static_cast<double>(len) +
                         CausalAttentionFlops(config, static_cast<double>(len));
    const double bound = flops / (peak_tflops * 1e12);
    cell["ttft_s"] = s;
    cell["tokens_per_s"] = static_cast<double>(len) / s;
    cell["tflops"] = flops / s / 1e12;
    cell["flop_bound_s"] = bound;
    std::printf("| %lld | %.3f | %.0f | %.0f | %.3f | %.2fx |\n", static_cast<long long>(len), s,
                static_cast<double>(len) / s, flops / s / 1e12, bound, s / bound);
    std::fflush(stdout);
    out["prefill"].push_back(cell);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Options o;
  CLI::App app{"End-to-end decode and prefill speed of the CUDA runner vs byte and FLOP bounds"};
  app.add_option("--model", o.model, "synthetic model name");
  app.add_option("--batches", o.batches, "decode batch sizes (empty: none)")->delimiter(',');
  app.add_option("--contexts", o.contexts, "decode context lengths (empty: none)")->delimiter(',');
  app.add_option("--prefill", o.prefill, "prefill prompt lengths (empty: none)")->delimiter(',');
  app.add_option("--chunk", o.chunk, "prefill chunk tokens (max_num_batched_tokens)");
  app.add_option("--steps", o.steps, "timed decode steps per cell");
  app.add_option("--policies", o.policies, "sparse policies to time beside dense (none: \"\")")
      ->delimiter(',');
  app.add_option("--budget", o.budget, "sparse policies' budget_tokens");
  app.add_option("--max-dropped-mass", o.max_dropped_mass,
                 "sparse policies' max_dropped_mass (below 1: quest, streaming, lychee widen)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--gpu-memory-utilization", o.gpu_memory_utilization, "fraction of the GPU");
  app.add_flag("--fit-batch", o.fit_batch,
               "also time, per context, the largest batch whose KV fits the pool");
  app.add_option("--fit-batch-limit", o.fit_batch_limit, "the most sequences --fit-batch tries");
  app.add_option("--decode-gemm", o.decode_gemm, "GEMMs of <= 16 rows: cublaslt or skinny")
      ->transform(CLI::CheckedTransformer(std::map<std::string, lychee::CudaDecodeGemm>{
          {"cublaslt", lychee::CudaDecodeGemm::kCublasLt},
          {"skinny", lychee::CudaDecodeGemm::kSkinny}}));
  app.add_flag("--lychee-hybrid-too", o.lychee_hybrid_too,
               "also time lychee with one hybrid attention launch a layer (lychee_hybrid_launch)");
  app.add_flag("--sparse-graphs", o.sparse_graphs,
               "also time sparse steps replayed from CUDA graphs (sparse_cuda_graphs)");
  app.add_flag("--pdl", o.pdl,
               "launch kernels that follow one of ours with programmatic dependent launch");
  app.add_option("--json", o.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);
  // CLI11 reads an empty list ("") as one empty string or one 0: drop those, leaving no cells.
  std::erase_if(o.batches, [](int64_t v) { return v <= 0; });
  std::erase_if(o.contexts, [](int64_t v) { return v <= 0; });
  std::erase_if(o.prefill, [](int64_t v) { return v <= 0; });
  std::erase_if(o.policies, [](const std::string& p) { return p.empty(); });
  return lychee::cuda::RunBenchmark("cuda_e2e_bench", o.json_path,
                                    [&o](const lychee::cuda::DeviceInfo& device,
                                         nlohmann::json& json) { return lychee::Run(o, json); });
}
