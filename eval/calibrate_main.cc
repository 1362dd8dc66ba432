// SPDX-License-Identifier: Apache-2.0
// lychee-calibrate: LycheeDecode's head-role mask for a model, by the training-free,
// objective-matched calibration of ALGORITHMS.md §4.1(b) (sparsity/head_role_calibration.h).
//
//   lychee-calibrate --model DIR [--prompts FILE] --out FILE [--retrieval-fraction F] ...
//
// Builds seeded needle prompts (eval/needle.h) from the filler text FILE, prefills each densely
// on the CPU, then decodes the answer teacher-forced through InheritanceRecorder (dense
// attention that measures, per layer and kv head, the mass lost by inheriting each shallower
// layer's set), and chooses the mask with the least total loss for round(F × layers × kv heads)
// retrieval heads (at least layer 0). Writes lychee_head_roles.json with the settings and costs
// under "calibration"; prints the chosen mask and the cost of simple alternatives.
// `--from-costs FILE` re-chooses from the costs stored in such a file (no model run).
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "engine/cpu_model.h"
#include "eval/needle.h"
#include "model/tokenizer/tokenizer.h"
#include "sparsity/head_role_calibration.h"

namespace lychee {
namespace {

struct Flags {
  std::string model_dir;
  std::string prompts = "eval/data/filler-licenses.txt";
  std::string out;
  std::string from_costs;
  double retrieval_fraction = 0.25;
  int64_t context = 2048;
  int num_prompts = 8;
  int64_t budget_tokens = 256;
  std::string mode = "block";
  int64_t sink_tokens = 16, local_tokens = 64;
  uint64_t seed = 1;
  int threads = 0;
};

// Every `every`-th layer retrieval (layer 0 included): the uncalibrated TidalDecode-like rule.
sparsity::HeadRoles EveryKth(int64_t layers, int64_t heads, int64_t every) {
  sparsity::HeadRoles roles(layers, heads);
  for (int64_t l = every; l < layers; l += every) {
    for (int64_t h = 0; h < heads; ++h) roles.set_retrieval(l, h, true);
  }
  return roles;
}

// The measured costs and what produced them (the file's "calibration" object, less the
// choice-dependent fields).
struct Measured {
  sparsity::InheritanceCosts costs;
  nlohmann::ordered_json calibration;
};

absl::StatusOr<Measured> MeasureCosts(const Flags& f) {
  LY_ASSIGN_OR_RETURN(auto model, CpuModel::Load(f.model_dir, {.max_context = f.context + 64,
                                                               .prefill_chunk = 512}));
  if (f.threads > 0) openblas_set_num_threads(f.threads);
  LY_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromDirectory(f.model_dir));
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(f.prompts));
  LY_ASSIGN_OR_RETURN(const eval::Haystack haystack, eval::MakeHaystack(*tokenizer, text));
  const ModelConfig& config = model->config();
  LycheeKnobs knobs;
  knobs.mode = f.mode;
  knobs.sink_tokens = f.sink_tokens;
  knobs.local_tokens = f.local_tokens;
  sparsity::InheritanceRecorder recorder(config.num_layers, config.num_kv_heads, knobs,
                                         f.budget_tokens);
  std::mt19937_64 rng(f.seed);
  int found = 0;
  for (int i = 0; i < f.num_prompts; ++i) {
    eval::NeedleOptions options;
    options.context_tokens = f.context;
    options.depth = (i + 0.5) / f.num_prompts;  // depths swept evenly
    LY_ASSIGN_OR_RETURN(const eval::NeedleTask task,
                        eval::MakeNeedleTask(*tokenizer, haystack, options, rng));
    model->Reset();
    LY_ASSIGN_OR_RETURN(absl::Span<const float> logits,
                        model->Prefill(task.prompt, LogitsMode::kLast));
    // Teacher-forced answer; dense greedy agreement tells whether the model retrieves at all.
    bool correct = true;
    for (size_t t = 0; t < task.answer.size(); ++t) {
      const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
      correct = correct && best == task.answer[t];
      if (t + 1 == task.answer.size()) break;
      LY_ASSIGN_OR_RETURN(logits, model->Decode(task.answer[t], &recorder));
    }
    found += correct ? 1 : 0;
    std::fprintf(stderr, "prompt %d/%d: depth %.2f, needle %s, dense answer %s\n", i + 1,
                 f.num_prompts, options.depth, task.value.c_str(), correct ? "right" : "wrong");
  }
  Measured m;
  m.costs = recorder.MeanCosts();
  m.calibration = {
      {"method", "ALGORITHMS.md 4.1(b): attention mass lost by inheriting a shallower set"},
      {"tool", "lychee-calibrate"},
      {"filler", f.prompts},
      {"prompts", f.num_prompts},
      {"context_tokens", f.context},
      {"decode_steps", m.costs.steps},
      {"dense_answers_right", found},
      {"mode", f.mode},
      {"budget_tokens", f.budget_tokens},
      {"sink_tokens", f.sink_tokens},
      {"local_tokens", f.local_tokens},
      {"seed", f.seed}};
  return m;
}

// The costs stored in an earlier output (--from-costs): choosing another fraction needs no model
// run.
absl::StatusOr<Measured> LoadCosts(const std::string& path) {
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  const auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("calibration") ||
      !j["calibration"].contains("cost_by_layer_head_ancestor")) {
    return absl::InvalidArgumentError(path + ": no calibration.cost_by_layer_head_ancestor");
  }
  Measured m;
  m.costs.num_layers = j.value("num_layers", int64_t{0});
  m.costs.num_kv_heads = j.value("num_kv_heads", int64_t{0});
  m.costs.steps = j["calibration"].value("decode_steps", int64_t{1});
  const auto& table = j["calibration"]["cost_by_layer_head_ancestor"];
  const int64_t layers = m.costs.num_layers, heads = m.costs.num_kv_heads;
  if (layers < 1 || heads < 1 || static_cast<int64_t>(table.size()) != layers * heads) {
    return absl::InvalidArgumentError(path + ": cost table does not match num_layers × heads");
  }
  m.costs.cost.assign(static_cast<size_t>(layers * heads * layers), 0.0);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const auto& row = table[static_cast<size_t>(l * heads + h)];
      if (static_cast<int64_t>(row.size()) != l) {
        return absl::InvalidArgumentError(path + ": cost row of the wrong length");
      }
      for (int64_t a = 0; a < l; ++a) {
        m.costs.cost[static_cast<size_t>((l * heads + h) * layers + a)] =
            row[static_cast<size_t>(a)].get<double>();
      }
    }
  }
  m.calibration = j["calibration"];
  m.calibration["costs_from"] = path;
  return m;
}

absl::Status Run(const Flags& f) {
  const auto start = std::chrono::steady_clock::now();
  LY_ASSIGN_OR_RETURN(Measured m, f.from_costs.empty() ? MeasureCosts(f) : LoadCosts(f.from_costs));
  const sparsity::InheritanceCosts& costs = m.costs;
  const int64_t layers = costs.num_layers, heads = costs.num_kv_heads;
  const int64_t target = std::llround(f.retrieval_fraction * static_cast<double>(layers * heads));
  const sparsity::HeadRoles roles = sparsity::ChooseHeadRoles(costs, target);
  const double chosen_cost = sparsity::TotalInheritanceCost(costs, roles);

  std::printf("layer  retrieval kv heads\n");
  for (int64_t l = 0; l < layers; ++l) {
    std::string row;
    for (int64_t h = 0; h < heads; ++h) row += roles.retrieval(l, h) ? " R" : " .";
    std::printf("%5lld %s\n", static_cast<long long>(l), row.c_str());
  }
  std::printf(
      "retrieval heads %lld of %lld; mean attention mass lost per step (summed over "
      "heads): calibrated %.4f",
      static_cast<long long>(roles.num_retrieval()), static_cast<long long>(layers * heads),
      chosen_cost);
  nlohmann::ordered_json alternatives = nlohmann::ordered_json::object();
  for (int64_t every : {2, 4, 8}) {
    if (every >= layers) continue;
    const sparsity::HeadRoles uniform = EveryKth(layers, heads, every);
    const double c = sparsity::TotalInheritanceCost(costs, uniform);
    alternatives["every_" + std::to_string(every) + "th_layer"] = {
        {"retrieval_heads", uniform.num_retrieval()}, {"cost", c}};
    std::printf("; every %lldth layer (%lld heads) %.4f", static_cast<long long>(every),
                static_cast<long long>(uniform.num_retrieval()), c);
  }
  std::printf("\n");

  nlohmann::ordered_json cost_table = nlohmann::ordered_json::array();
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      nlohmann::ordered_json row = nlohmann::ordered_json::array();
      for (int64_t a = 0; a < l; ++a) row.push_back(std::round(costs.Cost(l, h, a) * 1e5) / 1e5);
      cost_table.push_back(row);
    }
  }
  nlohmann::ordered_json calibration = m.calibration;
  calibration["retrieval_fraction"] = f.retrieval_fraction;
  calibration["total_cost"] = chosen_cost;
  calibration["alternatives"] = alternatives;
  calibration["cost_by_layer_head_ancestor"] = cost_table;
  std::ofstream out(f.out);
  out << roles.ToJson(calibration.dump());
  if (!out) return absl::InternalError("cannot write " + f.out);
  std::fprintf(stderr, "wrote %s in %.1f s\n", f.out.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Flags f;
  CLI::App app{"lychee-calibrate: LycheeDecode head-role mask (lychee_head_roles.json)"};
  app.add_option("--model", f.model_dir, "model folder (config.json, safetensors, tokenizer)");
  app.add_option("--from-costs", f.from_costs,
                 "choose from the costs stored in an earlier output instead of running the model "
                 "(another --retrieval-fraction without recalibrating)");
  app.add_option("--prompts", f.prompts, "filler text for the needle prompts");
  app.add_option("--out", f.out,
                 "output file (the server reads lychee_head_roles.json from the "
                 "model folder, or --head-roles FILE)")
      ->required();
  app.add_option("--retrieval-fraction", f.retrieval_fraction,
                 "fraction of (layer, kv head) slots that are retrieval heads")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--context", f.context, "prompt tokens")->check(CLI::Range(256, 1 << 20));
  app.add_option("--num-prompts", f.num_prompts, "needle prompts (depths swept)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--budget-tokens", f.budget_tokens, "the lychee budget the mask is for")
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--mode", f.mode, "block or token")->check(CLI::IsMember({"block", "token"}));
  app.add_option("--sink-tokens", f.sink_tokens, "lychee sink tokens");
  app.add_option("--local-tokens", f.local_tokens, "lychee local window");
  app.add_option("--seed", f.seed, "prompt seed");
  app.add_option("--threads", f.threads, "OpenBLAS threads (0: its default)");
  CLI11_PARSE(app, argc, argv);
  if (f.model_dir.empty() == f.from_costs.empty()) {
    std::fprintf(stderr, "lychee-calibrate: give exactly one of --model and --from-costs\n");
    return 2;
  }
  const absl::Status st = lychee::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "lychee-calibrate: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
