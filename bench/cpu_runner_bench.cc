// SPDX-License-Identifier: Apache-2.0
// cpu_runner_bench: decode throughput of CpuModelRunner for a batch of sequences in one step
// (continuous batching) against the same sequences decoded one at a time (one single-chunk step
// each, which is what CpuModel::Decode runs), in the same process on the same weights, reported
// as tokens/s and their ratio. Models: the embedded stories260K and a random Llama-shaped model
// (hidden 512, 8 layers by default).
//
// Both modes decode the same tokens at the same positions (after a prefill of --context tokens
// per sequence, not timed), alternating mode per repetition; the median repetition is reported.
// Usage: cpu_runner_bench [--batch 16] [--context 128] [--steps 16] [--reps 5] [--json out.json]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/synthetic_llama.h"
#include "common/status.h"
#include "engine/cpu_model_runner.h"
#include "kvcache/kv_pool.h"
#include "model/safetensors.h"

namespace lychee {
namespace {

constexpr int64_t kBlockSize = 16;

struct Flags {
  int64_t batch = 16;
  int64_t context = 128;
  int64_t steps = 16;
  int reps = 5;
  int64_t synth_hidden = 512;
  int64_t synth_layers = 8;
  std::string stories_dir = "models/stories260K";
  std::string json_path;
};

struct Row {
  std::string model;
  int64_t params = 0;  // weights in the GEMMs and embeddings
  double batched_tps = 0.0;
  double sequential_tps = 0.0;
};

absl::StatusOr<std::pair<ModelConfig, ModelWeights>> LoadStories(const std::string& dir) {
  LY_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  LY_ASSIGN_OR_RETURN(SafetensorsArchive archive, SafetensorsArchive::Open(dir));
  LY_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(archive, config));
  return std::make_pair(std::move(config), std::move(weights));
}
std::pair<ModelConfig, ModelWeights> Synthetic(int64_t hidden, int64_t layers) {
  return bench::SyntheticLlama(hidden, layers, 4096);
}

int64_t CountParams(const ModelWeights& w) {
  int64_t n = static_cast<int64_t>(w.embed_tokens.size() + w.lm_head.size());
  for (const LayerWeights& l : w.layers) {
    n += static_cast<int64_t>(l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() +
                              l.w_gate.size() + l.w_up.size() + l.w_down.size());
  }
  return n;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::StatusOr<Row> BenchModel(const std::string& name, ModelConfig config, ModelWeights weights,
                               const Flags& f) {
  Row row;
  row.model = name;
  row.params = CountParams(weights);
  const int64_t seq_len = f.context + f.steps;
  const int64_t blocks_per_seq = (seq_len + kBlockSize - 1) / kBlockSize;
  KvPool pool(KvCacheShapeFor(config, kBlockSize), f.batch * blocks_per_seq);
  CpuModelRunnerOptions options;
  options.max_num_batched_tokens = std::max<int64_t>(256, f.batch);
  options.max_num_seqs = f.batch;
  LY_ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner,
                      CpuModelRunner::Create(config, std::move(weights), &pool, options));
  const int64_t vocab = config.vocab_size;

  // Sequence s owns blocks s, s + batch, s + 2·batch, ...: interleaved, as a busy pool would be.
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(f.batch));
  std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(f.batch));
  for (int64_t s = 0; s < f.batch; ++s) {
    for (int64_t b = 0; b < blocks_per_seq; ++b) {
      tables[s].push_back(static_cast<int32_t>(b * f.batch + s));
    }
    for (int64_t t = 0; t < seq_len; ++t) {
      tokens[s].push_back(static_cast<int32_t>((s * 7919 + t * 104729) % vocab));
    }
  }
  auto chunk = [&](int64_t s, int64_t start, int64_t n) {
    ScheduledChunk c;
    c.seq_id = s;
    c.token_ids =
        absl::MakeConstSpan(tokens[s]).subspan(static_cast<size_t>(start), static_cast<size_t>(n));
    c.start_position = start;
    c.block_table = tables[s];
    c.needs_logits = true;
    return c;
  };

  // Prefill every sequence (not timed), in chunks of the step budget.
  for (int64_t s = 0; s < f.batch; ++s) {
    for (int64_t start = 0; start < f.context; start += options.max_num_batched_tokens) {
      SchedulerOutput step;
      step.chunks.push_back(
          chunk(s, start, std::min(options.max_num_batched_tokens, f.context - start)));
      LY_RETURN_IF_ERROR(runner->Execute(step).status());
    }
  }

  // Steps prepared up front so the timed loops only run the model.
  std::vector<SchedulerOutput> batched(static_cast<size_t>(f.steps));
  std::vector<std::vector<SchedulerOutput>> single(static_cast<size_t>(f.steps));
  for (int64_t i = 0; i < f.steps; ++i) {
    for (int64_t s = 0; s < f.batch; ++s) {
      batched[i].chunks.push_back(chunk(s, f.context + i, 1));
      single[i].emplace_back();
      single[i].back().chunks.push_back(chunk(s, f.context + i, 1));
    }
  }
  using Clock = std::chrono::steady_clock;
  std::vector<double> batched_tps, sequential_tps;
  const double total_tokens = static_cast<double>(f.steps * f.batch);
  for (int rep = 0; rep < f.reps + 1; ++rep) {  // rep 0 warms up
    auto t0 = Clock::now();
    for (const SchedulerOutput& step : batched) LY_RETURN_IF_ERROR(runner->Execute(step).status());
    auto t1 = Clock::now();
    for (const auto& steps : single) {
      for (const SchedulerOutput& step : steps) {
        LY_RETURN_IF_ERROR(runner->Execute(step).status());
      }
    }
    auto t2 = Clock::now();
    if (rep == 0) continue;
    batched_tps.push_back(total_tokens / std::chrono::duration<double>(t1 - t0).count());
    sequential_tps.push_back(total_tokens / std::chrono::duration<double>(t2 - t1).count());
  }
  row.batched_tps = Median(batched_tps);
  row.sequential_tps = Median(sequential_tps);
  return row;
}

int Run(const Flags& f) {
  std::vector<Row> rows;
  auto stories = LoadStories(f.stories_dir);
  if (!stories.ok()) {
    std::fprintf(stderr, "stories260K: %s\n", stories.status().ToString().c_str());
    return 1;
  }
  std::vector<std::pair<std::string, std::pair<ModelConfig, ModelWeights>>> models;
  models.emplace_back("stories260K", *std::move(stories));
  models.emplace_back("llama-h" + std::to_string(f.synth_hidden) + "-l" +
                          std::to_string(f.synth_layers) + " (random)",
                      Synthetic(f.synth_hidden, f.synth_layers));
  for (auto& [name, model] : models) {
    auto row = BenchModel(name, std::move(model.first), std::move(model.second), f);
    if (!row.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), row.status().ToString().c_str());
      return 1;
    }
    rows.push_back(*row);
  }

  const char* threads = std::getenv("OPENBLAS_NUM_THREADS");
  std::printf(
      "decode: batch %lld, context %lld, %lld steps, median of %d reps, OPENBLAS_NUM_THREADS=%s\n",
      static_cast<long long>(f.batch), static_cast<long long>(f.context),
      static_cast<long long>(f.steps), f.reps, threads ? threads : "(unset)");
  std::printf("%-28s %8s %16s %16s %8s\n", "model", "params", "batched tok/s", "sequential tok/s",
              "ratio");
  nlohmann::json out;
  out["bench"] = "cpu_runner_decode";
  out["batch"] = f.batch;
  out["context"] = f.context;
  out["steps"] = f.steps;
  out["reps"] = f.reps;
  out["openblas_num_threads"] = threads ? threads : "";
  out["results"] = nlohmann::json::array();
  for (const Row& r : rows) {
    const double ratio = r.batched_tps / r.sequential_tps;
    std::printf("%-28s %7.2fM %16.1f %16.1f %7.2fx\n", r.model.c_str(),
                static_cast<double>(r.params) / 1e6, r.batched_tps, r.sequential_tps, ratio);
    out["results"].push_back({{"model", r.model},
                              {"params", r.params},
                              {"batched_tokens_per_s", r.batched_tps},
                              {"sequential_tokens_per_s", r.sequential_tps},
                              {"batched_over_sequential", ratio}});
  }
  if (!f.json_path.empty()) {
    std::ofstream file(f.json_path);
    file << out.dump(2) << "\n";
    if (!file) {
      std::fprintf(stderr, "cannot write %s\n", f.json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Flags f;
  CLI::App app{"CpuModelRunner decode throughput: one batched step vs sequential single steps"};
  app.add_option("--batch", f.batch, "sequences decoded together")->check(CLI::PositiveNumber);
  app.add_option("--context", f.context, "tokens per sequence before decoding")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", f.steps, "decode steps timed per repetition")
      ->check(CLI::PositiveNumber);
  app.add_option("--reps", f.reps, "timed repetitions (median reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--synth-hidden", f.synth_hidden, "hidden size of the random model (×64)")
      ->check(CLI::PositiveNumber);
  app.add_option("--synth-layers", f.synth_layers, "layers of the random model")
      ->check(CLI::PositiveNumber);
  app.add_option("--stories-dir", f.stories_dir, "stories260K model folder");
  app.add_option("--json", f.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);
  return lychee::Run(f);
}
