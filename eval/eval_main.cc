// SPDX-License-Identifier: Apache-2.0
// lychee-eval: how much each sparse policy keeps of dense, measured through a running server
// over gRPC (what users get). Needle-in-a-haystack tasks (eval/needle.h) at each context length
// with the needle depth swept; each policy × budget runs the same prompts greedily after a dense
// reference and reports, per (length, policy, budget):
//   accuracy (the value appears in the output), greedy agreement with dense (the matching prefix
//   of the first --agreement-tokens tokens), KV read (policy_report.kv_read_fraction), the dropped
//   mass δ: certified bound (mean and max) and exact on audited steps (--audit-rate), and decode
//   tokens/s ((completion − 1) / (e2e − TTFT)). Deterministic under --seed. Prints a markdown
//   table; --json writes every request.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "eval/needle.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {
namespace {

namespace v1 = ::lychee::v1;

struct Flags {
  std::string address = "127.0.0.1:50051";
  std::string tokenizer_dir;
  std::string filler = "eval/data/filler-licenses.txt";
  std::vector<int64_t> lengths = {2048, 4096};
  int prompts = 8;
  std::vector<std::string> policies = {"dense", "streaming", "quest", "lychee", "prhs"};
  std::vector<int64_t> budgets = {1024};
  double audit_rate = 0.0;
  double max_dropped_mass = 1.0;
  int agreement_tokens = 8;
  uint64_t seed = 1;
  double timeout = 600;
  std::string json_path;
};

struct Outcome {
  bool ok = false;
  std::string error;
  std::vector<int32_t> tokens;
  std::string text;
  double ttft = 0, e2e = 0;
  bool has_report = false;
  v1::PolicyReport report;
};

Outcome Generate(v1::LycheeService::Stub& stub, const eval::NeedleTask& task,
                 const std::string& policy, int64_t budget, const Flags& f, int max_tokens) {
  v1::GenerateRequest req;
  req.mutable_token_ids()->mutable_ids()->Add(task.prompt.begin(), task.prompt.end());
  v1::SamplingParams* s = req.mutable_sampling_params();
  s->set_temperature(0.0f);
  s->set_max_tokens(max_tokens);
  s->set_ignore_eos(true);
  req.mutable_policy()->set_name(policy);
  if (policy != "dense") {
    req.mutable_policy()->set_budget_tokens(budget);
    req.mutable_policy()->set_audit_rate(f.audit_rate);
    req.mutable_policy()->set_max_dropped_mass(f.max_dropped_mass);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(f.timeout * 1000)));
  auto reader = stub.Generate(&context, req);
  Outcome out;
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      out.tokens.insert(out.tokens.end(), r.chunk().token_ids().begin(),
                        r.chunk().token_ids().end());
      out.text += r.chunk().text();
    } else if (r.has_complete()) {
      out.ttft = r.complete().ttft_seconds();
      out.e2e = r.complete().e2e_seconds();
      out.has_report = r.complete().has_policy_report();
      if (out.has_report) out.report = r.complete().policy_report();
    } else if (r.has_error()) {
      out.error = r.error().code() + ": " + r.error().message();
    }
  }
  const grpc::Status st = reader->Finish();
  if (!st.ok()) out.error = st.error_message();
  out.ok = out.error.empty();
  return out;
}

// One cell of the table: the aggregates over its prompts.
struct Cell {
  int n = 0, right = 0;
  double agreement = 0, kv_read = 0, bound_mean = 0, bound_max = -1, exact_max = -1;
  double decode_tokens = 0, decode_seconds = 0;
  int errors = 0;
  std::string first_error;
};

absl::Status Run(const Flags& f) {
  LY_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromDirectory(f.tokenizer_dir));
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(f.filler));
  LY_ASSIGN_OR_RETURN(const eval::Haystack haystack, eval::MakeHaystack(*tokenizer, text));
  auto channel = grpc::CreateChannel(f.address, grpc::InsecureChannelCredentials());
  auto stub = v1::LycheeService::NewStub(channel);
  nlohmann::ordered_json requests = nlohmann::ordered_json::array();
  // Keyed by (length, policy, budget) in the order run.
  std::vector<std::tuple<int64_t, std::string, int64_t>> order;
  std::map<std::tuple<int64_t, std::string, int64_t>, Cell> cells;
  for (int64_t length : f.lengths) {
    std::mt19937_64 rng(f.seed * 1000003 + static_cast<uint64_t>(length));
    for (int i = 0; i < f.prompts; ++i) {
      eval::NeedleOptions options;
      options.context_tokens = length;
      options.depth = (i + 0.5) / f.prompts;
      LY_ASSIGN_OR_RETURN(const eval::NeedleTask task,
                          eval::MakeNeedleTask(*tokenizer, haystack, options, rng));
      const int max_tokens =
          std::max<int>(f.agreement_tokens, static_cast<int>(task.answer.size()) + 2);
      const Outcome dense = Generate(*stub, task, "dense", 0, f, max_tokens);
      for (const std::string& policy : f.policies) {
        for (int64_t budget : f.budgets) {
          if (policy == "dense" && budget != f.budgets.front()) continue;
          const auto key = std::make_tuple(length, policy, policy == "dense" ? 0 : budget);
          if (!cells.count(key)) order.push_back(key);
          Cell& cell = cells[key];
          const Outcome o =
              policy == "dense" ? dense : Generate(*stub, task, policy, budget, f, max_tokens);
          ++cell.n;
          nlohmann::ordered_json rec = {{"length", length},
                                        {"depth", options.depth},
                                        {"policy", policy},
                                        {"budget", std::get<2>(key)},
                                        {"value", task.value}};
          if (!o.ok) {
            ++cell.errors;
            if (cell.first_error.empty()) cell.first_error = o.error;
            rec["error"] = o.error;
            requests.push_back(rec);
            continue;
          }
          const bool right = o.text.find(task.value) != std::string::npos;
          cell.right += right ? 1 : 0;
          size_t same = 0;
          const size_t upto = std::min<size_t>(static_cast<size_t>(f.agreement_tokens),
                                               std::min(o.tokens.size(), dense.tokens.size()));
          while (same < upto && o.tokens[same] == dense.tokens[same]) ++same;
          const double agreement =
              static_cast<double>(same) / static_cast<double>(f.agreement_tokens);
          cell.agreement += agreement;
          if (o.tokens.size() > 1 && o.e2e > o.ttft) {
            cell.decode_tokens += static_cast<double>(o.tokens.size() - 1);
            cell.decode_seconds += o.e2e - o.ttft;
          }
          double kv_read = 1.0;
          if (o.has_report) {
            kv_read = o.report.kv_read_fraction();
            cell.bound_mean += std::max(0.0, o.report.mean_bound());
            cell.bound_max = std::max(cell.bound_max, o.report.max_bound());
            cell.exact_max = std::max(cell.exact_max, o.report.max_exact());
            rec["policy_report"] = {{"max_bound", o.report.max_bound()},
                                    {"mean_bound", o.report.mean_bound()},
                                    {"max_exact", o.report.max_exact()},
                                    {"audited_steps", o.report.audited_steps()},
                                    {"kv_read_fraction", o.report.kv_read_fraction()},
                                    {"reused", o.report.reused()},
                                    {"head_selections", o.report.head_selections()}};
          }
          cell.kv_read += kv_read;
          rec["right"] = right;
          rec["agreement"] = agreement;
          rec["output"] = o.text;
          rec["ttft_s"] = o.ttft;
          rec["e2e_s"] = o.e2e;
          requests.push_back(rec);
        }
      }
      std::fprintf(stderr, "length %lld prompt %d/%d done\n", static_cast<long long>(length), i + 1,
                   f.prompts);
    }
  }
  std::printf(
      "| context | policy | budget | accuracy | vs dense | agreement | KV read | δ bound mean | "
      "δ bound max | δ exact max (audited) | decode tok/s | errors |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  nlohmann::ordered_json table = nlohmann::ordered_json::array();
  for (const auto& key : order) {
    const Cell& c = cells[key];
    const Cell& dense = cells[std::make_tuple(std::get<0>(key), std::string("dense"), 0)];
    const int ok = c.n - c.errors;
    const double acc = ok > 0 ? static_cast<double>(c.right) / ok : 0.0;
    const double dense_acc = dense.n - dense.errors > 0
                                 ? static_cast<double>(dense.right) / (dense.n - dense.errors)
                                 : 0.0;
    const double tok_s = c.decode_seconds > 0 ? c.decode_tokens / c.decode_seconds : 0.0;
    auto fmt = [](double v) { return v < 0 ? std::string("—") : std::to_string(v).substr(0, 6); };
    std::printf("| %lld | %s | %s | %.2f | %s | %.2f | %.3f | %s | %s | %s | %.1f | %d |\n",
                static_cast<long long>(std::get<0>(key)), std::get<1>(key).c_str(),
                std::get<1>(key) == "dense" ? "—" : std::to_string(std::get<2>(key)).c_str(), acc,
                dense_acc > 0 ? fmt(acc / dense_acc).c_str() : "—", ok > 0 ? c.agreement / ok : 0.0,
                ok > 0 ? c.kv_read / ok : 0.0,
                std::get<1>(key) == "dense" ? "—" : fmt(ok > 0 ? c.bound_mean / ok : -1).c_str(),
                fmt(c.bound_max).c_str(), fmt(c.exact_max).c_str(), tok_s, c.errors);
    table.push_back({{"context", std::get<0>(key)},
                     {"policy", std::get<1>(key)},
                     {"budget", std::get<2>(key)},
                     {"prompts", c.n},
                     {"errors", c.errors},
                     {"first_error", c.first_error},
                     {"accuracy", acc},
                     {"accuracy_vs_dense", dense_acc > 0 ? acc / dense_acc : -1.0},
                     {"agreement", ok > 0 ? c.agreement / ok : 0.0},
                     {"kv_read_fraction", ok > 0 ? c.kv_read / ok : 0.0},
                     {"dropped_mass_bound_mean", ok > 0 ? c.bound_mean / ok : -1.0},
                     {"dropped_mass_bound_max", c.bound_max},
                     {"dropped_mass_exact_max", c.exact_max},
                     {"decode_tokens_per_s", tok_s}});
  }
  if (!f.json_path.empty()) {
    nlohmann::ordered_json doc = {{"address", f.address}, {"filler", f.filler},
                                  {"seed", f.seed},       {"audit_rate", f.audit_rate},
                                  {"table", table},       {"requests", requests}};
    std::ofstream(f.json_path) << doc.dump(2) << "\n";
  }
  for (const auto& key : order) {
    if (cells[key].errors > 0) {
      return absl::UnknownError("some requests failed: " + cells[key].first_error);
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  lychee::Flags f;
  CLI::App app{"lychee-eval: needle-in-a-haystack fidelity of sparse policies vs dense, over gRPC"};
  app.add_option("--address", f.address, "lychee-server gRPC address");
  app.add_option("--tokenizer", f.tokenizer_dir, "tokenizer folder (the served model's)")
      ->required();
  app.add_option("--filler", f.filler, "haystack text (UTF-8)");
  app.add_option("--lengths", f.lengths, "prompt lengths in tokens")->delimiter(',');
  app.add_option("--prompts", f.prompts, "prompts per length (needle depths swept)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--policies", f.policies, "policies (dense is always run as the reference)")
      ->delimiter(',');
  app.add_option("--budgets", f.budgets, "budget_tokens of the sparse policies")->delimiter(',');
  app.add_option("--audit-rate", f.audit_rate, "policy.audit_rate (exact δ on audited steps)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-dropped-mass", f.max_dropped_mass, "policy.max_dropped_mass")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--agreement-tokens", f.agreement_tokens, "tokens compared with dense")
      ->check(CLI::Range(1, 4096));
  app.add_option("--seed", f.seed, "prompt seed");
  app.add_option("--timeout", f.timeout, "per-request deadline, seconds");
  app.add_option("--json", f.json_path, "write the table and every request");
  CLI11_PARSE(app, argc, argv);
  const absl::Status st = lychee::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "lychee-eval: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
