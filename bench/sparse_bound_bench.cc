// SPDX-License-Identifier: Apache-2.0
// sparse_bound_bench: how tight the certified dropped-mass bound is on a real model's
// activations. Prefills a prompt (BOS + a window of eval/data/filler-licenses.txt, tokenized by
// the model's tokenizer), then decodes greedily through quest at --budget tokens; at every
// (step, layer, kv head) it certifies quest's selection twice, with the min/max box summary
// alone and with min(box, ball), and measures the exact dropped mass (float64 scores), then
// prints the means and quantiles of each and how often the ball was the smaller block bound.
//
//   sparse_bound_bench --model models/lc20m --context 2048 --steps 16 --budget 256
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "kernels/cpu/sparse_attention.h"
#include "model/tokenizer/tokenizer.h"
#include "sparsity/policy_factory.h"

namespace lychee {
namespace {

// Forwards to quest and, after each Select, certifies the selection with and without the ball.
class MeasuringPolicy final : public sparsity::Policy {
 public:
  explicit MeasuringPolicy(std::unique_ptr<sparsity::Policy> inner)
      : Policy(inner->limits()), inner_(std::move(inner)) {}
  std::string_view name() const override { return inner_->name(); }
  void Select(const sparsity::DecodeQuery& q, absl::Span<const int64_t> budgets,
              sparsity::Selection* selection) override {
    inner_->Select(q, budgets, selection);
    const int64_t d = q.cache.head_dim;
    std::vector<float> out(static_cast<size_t>(q.num_heads * d));
    std::vector<float> ball(static_cast<size_t>(q.num_heads)), box(ball.size());
    std::vector<double> exact(ball.size());
    std::vector<float> scratch(static_cast<size_t>(q.position + 1));
    cpu::SparseDecodeAttentionParams p;
    p.q = q.q;
    p.cache = q.cache;
    p.block_table = q.block_table.data();
    p.selected = selection->blocks.data();
    p.selected_offsets = selection->offsets.data();
    p.out = out.data();
    p.scratch = scratch.data();
    p.num_heads = q.num_heads;
    p.num_table_blocks = static_cast<int64_t>(q.block_table.size());
    p.position = q.position;
    p.scale = q.scale;
    p.token_level = selection->token_level;
    p.dropped_mass = ball.data();
    cpu::SparseDecodeAttention(p);
    cpu::ExactDroppedMass(p, exact.data());
    p.cache.key_ball = nullptr;
    p.dropped_mass = box.data();
    cpu::SparseDecodeAttention(p);
    for (size_t h = 0; h < ball.size(); ++h) {
      ball_bounds.push_back(ball[h]);
      box_bounds.push_back(box[h]);
      exact_masses.push_back(exact[h]);
    }
    // Per block: which summary gives the smaller upper bound.
    for (int64_t h = 0; h < q.num_heads; ++h) {
      const int64_t g = h / (q.num_heads / q.cache.num_kv_heads);
      for (int64_t b = 0; b < q.num_blocks(); ++b) {
        const int32_t block = q.block_table[static_cast<size_t>(b)];
        const float both = cpu::BlockScoreRangeOf(q.q + h * d, q.cache, block, g, q.scale).upper;
        const float box_only = cpu::BlockScoreBound(q.q + h * d, q.cache.KeyMin(block, g),
                                                    q.cache.KeyMax(block, g), d, q.scale);
        ++blocks;
        ball_smaller += both < box_only;
        gap_sum += box_only - both;
      }
    }
  }
  void AfterAttention(const sparsity::DecodeQuery& q, absl::Span<const float> m) override {
    inner_->AfterAttention(q, m);
  }

  std::vector<double> ball_bounds, box_bounds, exact_masses;
  int64_t blocks = 0, ball_smaller = 0;
  double gap_sum = 0.0;

 private:
  std::unique_ptr<sparsity::Policy> inner_;
};

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

int Run(int argc, char** argv) {
  CLI::App app{"certified dropped-mass bound: box vs min(box, ball) vs exact, on a real model"};
  std::string model = "models/lc20m";
  std::string text = "eval/data/filler-licenses.txt";
  int64_t context = 2048, steps = 16, budget = 256;
  app.add_option("--model", model, "model folder");
  app.add_option("--text", text, "prompt text");
  app.add_option("--context", context, "prompt tokens");
  app.add_option("--steps", steps, "decode steps");
  app.add_option("--budget", budget, "quest budget (tokens)");
  CLI11_PARSE(app, argc, argv);

  auto tokenizer = Tokenizer::FromDirectory(model);
  if (!tokenizer.ok())
    return std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str()), 1;
  std::ifstream in(text);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::vector<int32_t> prompt{1};
  for (int32_t t : (*tokenizer)->Encode(buffer.str(), false)) {
    if (static_cast<int64_t>(prompt.size()) >= context) break;
    prompt.push_back(t);
  }
  CpuModelOptions options;
  options.max_context = context + steps + 16;
  auto m = CpuModel::Load(model, options);
  if (!m.ok()) return std::fprintf(stderr, "%s\n", m.status().ToString().c_str()), 1;
  PolicySpec spec;
  spec.name = "quest";
  spec.budget_tokens = budget;
  sparsity::PolicyContext ctx;
  ctx.block_size = 16;
  ctx.num_layers = (*m)->config().num_layers;
  ctx.num_kv_heads = (*m)->config().num_kv_heads;
  auto quest = sparsity::MakePolicy(spec, ctx);
  if (!quest.ok()) return std::fprintf(stderr, "%s\n", quest.status().ToString().c_str()), 1;
  MeasuringPolicy policy(std::move(*quest));
  auto logits = (*m)->Prefill(prompt, LogitsMode::kLast);
  if (!logits.ok()) return std::fprintf(stderr, "%s\n", logits.status().ToString().c_str()), 1;
  for (int64_t s = 0; s < steps; ++s) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    logits = (*m)->Decode(next, &policy);
    if (!logits.ok()) return std::fprintf(stderr, "%s\n", logits.status().ToString().c_str()), 1;
  }
  std::printf(
      "%s, context %lld, quest budget %lld, %lld decode steps, %zu (step, layer, head) samples, "
      "head_dim %lld\n",
      model.c_str(), static_cast<long long>(prompt.size()), static_cast<long long>(budget),
      static_cast<long long>(steps), policy.exact_masses.size(),
      static_cast<long long>((*m)->config().head_dim));
  std::printf("%-16s %10s %10s %10s %10s\n", "", "mean", "p50", "p90", "max");
  auto row = [](const char* name, const std::vector<double>& v) {
    std::printf("%-16s %10.4f %10.4f %10.4f %10.4f\n", name, Mean(v), Quantile(v, 0.5),
                Quantile(v, 0.9), Quantile(v, 1.0));
  };
  row("exact delta", policy.exact_masses);
  row("bound box", policy.box_bounds);
  row("bound min(b,b)", policy.ball_bounds);
  std::printf("ball smaller on %.1f%% of blocks; mean (box - min) upper-bound gap %.3f (logits)\n",
              100.0 * static_cast<double>(policy.ball_smaller) / static_cast<double>(policy.blocks),
              policy.gap_sum / static_cast<double>(policy.blocks));
  return 0;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) { return lychee::Run(argc, argv); }
