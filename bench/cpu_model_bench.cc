// SPDX-License-Identifier: Apache-2.0
// cpu_model_bench: llama-bench's two tests on a model folder through CpuModel (the CPU path of
// lychee-generate), so that bench/llama_cpp/compare.sh can put us beside llama.cpp on the same
// weights and thread count:
//   pp N        prefill of N random token ids from an empty sequence (chunks of --chunk);
//               tokens/s = N / time
//   tg M @ d D  M decode steps, one token each, after an untimed prefill of D tokens (D = 0:
//               from an empty sequence); tokens/s = M / time
// Each test runs once untimed (warm-up) and then --reps times; the table and JSON report the
// mean and the standard deviation of tokens/s (as llama-bench does), per KV cache dtype.
// Usage: cpu_model_bench --model DIR [--threads 2] [--prompts 512,4096] [--decode 64]
//                        [--depths 0,4096] [--reps 3] [--kv-dtypes fp32,bf16] [--json out.json]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/cpu_model.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kvcache/kv_pool.h"

namespace lychee {
namespace {

struct Flags {
  std::string model_dir;
  int threads = 2;
  std::vector<int64_t> prompts = {512, 4096};
  int64_t decode = 64;
  std::vector<int64_t> depths = {0, 4096};
  int reps = 3;
  int64_t chunk = 512;
  std::vector<std::string> kv_dtypes = {"fp32"};
  std::string json_path;
};

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Result {
  std::string test;  // "pp512", "tg64@d4096"
  std::string kv_dtype;
  int64_t tokens = 0;
  int64_t depth = 0;
  std::vector<double> seconds;
  double mean_tps = 0, stddev_tps = 0;
};

void Summarize(Result* r) {
  std::vector<double> tps;
  for (double s : r->seconds) tps.push_back(static_cast<double>(r->tokens) / s);
  double sum = 0;
  for (double x : tps) sum += x;
  r->mean_tps = sum / static_cast<double>(tps.size());
  double var = 0;
  for (double x : tps) var += (x - r->mean_tps) * (x - r->mean_tps);
  r->stddev_tps = tps.size() > 1 ? std::sqrt(var / static_cast<double>(tps.size() - 1)) : 0.0;
}

std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> dist(3, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

absl::Status Run(const Flags& f) {
  cpu::SetNumThreads(f.threads);
  std::fprintf(stderr, "[cpu_model_bench] threads %d, isa %s, BLAS core %s\n", cpu::NumThreads(),
               cpu::IsaName(cpu::ActiveIsa()), cpu::BlasCoreName());
  int64_t context = 1;
  for (int64_t n : f.prompts) context = std::max(context, n);
  for (int64_t d : f.depths) context = std::max(context, d + f.decode);
  std::vector<Result> results;
  for (const std::string& dtype_name : f.kv_dtypes) {
    LY_ASSIGN_OR_RETURN(const KvDtype dtype, ParseKvDtype(dtype_name));
    const CpuModelOptions options{
        .max_context = context, .kv_cache_dtype = dtype, .prefill_chunk = f.chunk};
    LY_ASSIGN_OR_RETURN(std::unique_ptr<CpuModel> model, CpuModel::Load(f.model_dir, options));
    std::mt19937 rng(7);
    const int64_t vocab = model->vocab_size();
    for (int64_t n : f.prompts) {
      Result r;
      r.test = "pp" + std::to_string(n);
      r.kv_dtype = dtype_name;
      r.tokens = n;
      const std::vector<int32_t> ids = RandomIds(n, vocab, rng);
      for (int rep = -1; rep < f.reps; ++rep) {
        model->Reset();
        const auto t0 = Clock::now();
        LY_RETURN_IF_ERROR(model->Prefill(ids, LogitsMode::kLast).status());
        if (rep >= 0) r.seconds.push_back(Seconds(t0, Clock::now()));
      }
      Summarize(&r);
      std::fprintf(stderr, "[cpu_model_bench] %s %s: %.1f tok/s\n", dtype_name.c_str(),
                   r.test.c_str(), r.mean_tps);
      results.push_back(r);
    }
    for (int64_t depth : f.depths) {
      Result r;
      r.test = "tg" + std::to_string(f.decode) + "@d" + std::to_string(depth);
      r.kv_dtype = dtype_name;
      r.tokens = f.decode;
      r.depth = depth;
      const std::vector<int32_t> prefix = RandomIds(depth, vocab, rng);
      const std::vector<int32_t> steps = RandomIds(f.decode, vocab, rng);
      for (int rep = -1; rep < f.reps; ++rep) {
        model->Reset();
        if (depth > 0) LY_RETURN_IF_ERROR(model->Prefill(prefix, LogitsMode::kLast).status());
        const auto t0 = Clock::now();
        for (int32_t id : steps) LY_RETURN_IF_ERROR(model->Decode(id).status());
        if (rep >= 0) r.seconds.push_back(Seconds(t0, Clock::now()));
      }
      Summarize(&r);
      std::fprintf(stderr, "[cpu_model_bench] %s %s: %.1f tok/s\n", dtype_name.c_str(),
                   r.test.c_str(), r.mean_tps);
      results.push_back(r);
    }
  }

  std::printf("| kv cache | test | tokens/s | ± |\n| --- | --- | --- | --- |\n");
  nlohmann::json out = nlohmann::json::array();
  for (const Result& r : results) {
    std::printf("| %s | %s | %.2f | %.2f |\n", r.kv_dtype.c_str(), r.test.c_str(), r.mean_tps,
                r.stddev_tps);
    out.push_back({{"test", r.test},
                   {"kv_dtype", r.kv_dtype},
                   {"n_tokens", r.tokens},
                   {"n_depth", r.depth},
                   {"threads", f.threads},
                   {"seconds", r.seconds},
                   {"avg_ts", r.mean_tps},
                   {"stddev_ts", r.stddev_tps}});
  }
  if (!f.json_path.empty()) {
    std::ofstream(f.json_path) << out.dump(2) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Flags f;
  CLI::App app{"cpu_model_bench: llama-bench's pp/tg tests through CpuModel"};
  app.add_option("--model", f.model_dir, "model folder (config.json + safetensors)")->required();
  app.add_option("--threads", f.threads, "CPU threads");
  app.add_option("--prompts", f.prompts, "prefill tests: prompt lengths")->delimiter(',');
  app.add_option("--decode", f.decode, "decode test: tokens generated");
  app.add_option("--depths", f.depths, "decode test: context before it")->delimiter(',');
  app.add_option("--reps", f.reps, "timed repetitions per test");
  app.add_option("--chunk", f.chunk, "prefill chunk (tokens per forward pass)");
  app.add_option("--kv-dtypes", f.kv_dtypes, "KV cache dtypes to run (fp32, bf16)")->delimiter(',');
  app.add_option("--json", f.json_path, "write every result as JSON");
  CLI11_PARSE(app, argc, argv);
  const absl::Status s = lychee::Run(f);
  if (!s.ok()) {
    std::fprintf(stderr, "cpu_model_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
