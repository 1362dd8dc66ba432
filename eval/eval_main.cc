// SPDX-License-Identifier: Apache-2.0
// lychee-eval: how much each sparse policy keeps of dense, measured through a running server
// over gRPC (what users get). RULER-style tasks (eval/tasks.h: needle, multikey, multivalue, vt,
// cwe) built from a filler text and the model's tokenizer, at each context length with the fact
// depth swept; each policy × budget runs the same prompts greedily after a dense reference and
// reports, per (task, length, policy, budget):
//   accuracy (fraction of the answers in the output), greedy agreement with dense (the matching
//   prefix of the first --agreement-tokens tokens, and the fraction of prompts where all of them
//   match), KV read (policy_report.kv_read_fraction), the dropped mass δ: certified bound (mean
//   and max) and exact on audited steps (--audit-rate), and decode tokens/s
//   ((completion − 1) / (e2e − TTFT)). Deterministic under --seed. Prints a markdown table;
//   --json writes every cell and every request. --dry-run prints the prompts' ends instead.
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
#include "eval/tasks.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {
namespace {

namespace v1 = ::lychee::v1;

struct Flags {
  std::string address = "127.0.0.1:50051";
  std::string tokenizer_dir;
  std::string filler = "eval/data/filler-web-bible.txt";
  std::vector<std::string> tasks = {"needle"};
  eval::TaskOptions task_options;
  std::vector<int64_t> lengths = {2048, 4096};
  int prompts = 8;
  std::vector<std::string> policies = {"dense", "streaming", "quest", "lychee", "prhs"};
  std::vector<int64_t> budgets = {1024};
  double audit_rate = 0.0;
  std::string lychee_mode;  // empty: the server's default
  double max_dropped_mass = 1.0;
  int agreement_tokens = 8;
  uint64_t seed = 1;
  double timeout = 600;
  std::string json_path;
  bool dry_run = false;
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

Outcome Generate(v1::LycheeService::Stub& stub, const eval::Task& task, const std::string& policy,
                 int64_t budget, const Flags& f, int max_tokens) {
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
    if (policy == "lychee" && !f.lychee_mode.empty()) {
      req.mutable_policy()->mutable_lychee()->set_mode(f.lychee_mode);
    }
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
  int n = 0, identical = 0, audited = 0;
  double score = 0, agreement = 0, kv_read = 0, bound_mean = 0, bound_max = -1, exact_max = -1;
  double exact_sum = 0;  // of the per-request max exact δ, over requests with audited steps
  double decode_tokens = 0, decode_seconds = 0;
  int errors = 0;
  std::string first_error;
};

using CellKey = std::tuple<std::string, int64_t, std::string, int64_t>;  // task, length, ...

absl::Status Run(const Flags& f) {
  LY_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromDirectory(f.tokenizer_dir));
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(f.filler));
  LY_ASSIGN_OR_RETURN(const eval::Haystack haystack, eval::MakeHaystack(*tokenizer, text));
  std::vector<eval::TaskKind> kinds;
  for (const std::string& name : f.tasks) {
    LY_ASSIGN_OR_RETURN(const eval::TaskKind kind, eval::ParseTaskKind(name));
    kinds.push_back(kind);
  }
  auto channel = grpc::CreateChannel(f.address, grpc::InsecureChannelCredentials());
  auto stub = v1::LycheeService::NewStub(channel);
  nlohmann::ordered_json requests = nlohmann::ordered_json::array();
  // Keyed by (task, length, policy, budget) in the order run.
  std::vector<CellKey> order;
  std::map<CellKey, Cell> cells;
  for (const eval::TaskKind kind : kinds) {
    const std::string task_name(eval::TaskName(kind));
    // The needle's stream is the one lychee-eval always used (seed × 1000003 + length).
    const uint64_t task_salt = 7919 * static_cast<uint64_t>(kind);
    for (int64_t length : f.lengths) {
      std::mt19937_64 rng(f.seed * 1000003 + static_cast<uint64_t>(length) + task_salt);
      for (int i = 0; i < f.prompts; ++i) {
        eval::TaskOptions options = f.task_options;
        options.context_tokens = length;
        options.depth = (i + 0.5) / f.prompts;
        LY_ASSIGN_OR_RETURN(const eval::Task task,
                            eval::MakeTask(kind, *tokenizer, haystack, options, rng));
        if (f.dry_run) {
          const size_t tail = std::min<size_t>(task.prompt.size(), 80);
          std::printf("%s %lld depth %.2f: …%s\n  reference:%s\n  answers:", task_name.c_str(),
                      static_cast<long long>(length), options.depth,
                      tokenizer
                          ->Decode(std::vector<int32_t>(task.prompt.end() - static_cast<long>(tail),
                                                        task.prompt.end()),
                                   true)
                          .c_str(),
                      tokenizer->Decode(task.reference, true).c_str());
          for (const std::string& a : task.answers) std::printf(" %s", a.c_str());
          std::printf("\n  statements:");
          for (const eval::Evidence& e : task.evidence) {
            if (kind == eval::TaskKind::kCommonWords) break;
            std::printf("\n    @%lld%s%s", static_cast<long long>(e.position),
                        e.asked ? " (asked)" : "", e.text.c_str());
          }
          std::printf("\n");
          continue;
        }
        const int max_tokens = std::max(f.agreement_tokens, task.max_new_tokens);
        const Outcome dense = Generate(*stub, task, "dense", 0, f, max_tokens);
        for (const std::string& policy : f.policies) {
          for (int64_t budget : f.budgets) {
            if (policy == "dense" && budget != f.budgets.front()) continue;
            const CellKey key{task_name, length, policy, policy == "dense" ? 0 : budget};
            if (!cells.count(key)) order.push_back(key);
            Cell& cell = cells[key];
            const Outcome o =
                policy == "dense" ? dense : Generate(*stub, task, policy, budget, f, max_tokens);
            ++cell.n;
            nlohmann::ordered_json rec = {{"task", task_name},          {"length", length},
                                          {"depth", options.depth},     {"policy", policy},
                                          {"budget", std::get<3>(key)}, {"answers", task.answers}};
            if (!o.ok) {
              ++cell.errors;
              if (cell.first_error.empty()) cell.first_error = o.error;
              rec["error"] = o.error;
              requests.push_back(rec);
              continue;
            }
            const double score = eval::Score(task, o.text);
            cell.score += score;
            size_t same = 0;
            const size_t upto = std::min<size_t>(static_cast<size_t>(f.agreement_tokens),
                                                 std::min(o.tokens.size(), dense.tokens.size()));
            while (same < upto && o.tokens[same] == dense.tokens[same]) ++same;
            const double agreement =
                static_cast<double>(same) / static_cast<double>(f.agreement_tokens);
            cell.agreement += agreement;
            cell.identical += same == static_cast<size_t>(f.agreement_tokens) ? 1 : 0;
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
              if (o.report.audited_steps() > 0 && o.report.max_exact() >= 0) {
                ++cell.audited;
                cell.exact_sum += o.report.max_exact();
              }
              rec["policy_report"] = {{"max_bound", o.report.max_bound()},
                                      {"mean_bound", o.report.mean_bound()},
                                      {"max_exact", o.report.max_exact()},
                                      {"audited_steps", o.report.audited_steps()},
                                      {"kv_read_fraction", o.report.kv_read_fraction()},
                                      {"reused", o.report.reused()},
                                      {"head_selections", o.report.head_selections()}};
            }
            cell.kv_read += kv_read;
            rec["score"] = score;
            rec["agreement"] = agreement;
            rec["output"] = o.text;
            rec["ttft_s"] = o.ttft;
            rec["e2e_s"] = o.e2e;
            requests.push_back(rec);
          }
        }
        std::fprintf(stderr, "%s %lld prompt %d/%d done\n", task_name.c_str(),
                     static_cast<long long>(length), i + 1, f.prompts);
      }
    }
  }
  if (f.dry_run) return absl::OkStatus();
  std::printf(
      "| task | context | policy | budget | prompts | accuracy | vs dense | agreement | "
      "identical | KV read | δ bound mean | δ bound max | δ exact mean / max (audited) | "
      "decode tok/s | errors |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
      "|\n");
  nlohmann::ordered_json table = nlohmann::ordered_json::array();
  for (const auto& key : order) {
    const auto& [task_name, length, policy, budget] = key;
    const Cell& c = cells[key];
    const Cell& dense = cells[CellKey{task_name, length, "dense", 0}];
    const int ok = c.n - c.errors;
    const double acc = ok > 0 ? c.score / ok : 0.0;
    const double dense_acc =
        dense.n - dense.errors > 0 ? dense.score / (dense.n - dense.errors) : 0.0;
    const double tok_s = c.decode_seconds > 0 ? c.decode_tokens / c.decode_seconds : 0.0;
    const double exact_mean = c.audited > 0 ? c.exact_sum / c.audited : -1.0;
    auto fmt = [](double v) { return v < 0 ? std::string("—") : std::to_string(v).substr(0, 5); };
    const bool is_dense = policy == "dense";
    std::printf(
        "| %s | %lld | %s | %s | %d | %.2f | %s | %.2f | %.2f | %.3f | %s | %s | %s / %s | %.1f "
        "| %d |\n",
        task_name.c_str(), static_cast<long long>(length), policy.c_str(),
        is_dense ? "—" : std::to_string(budget).c_str(), c.n, acc,
        dense_acc > 0 ? fmt(acc / dense_acc).c_str() : "—", ok > 0 ? c.agreement / ok : 0.0,
        ok > 0 ? static_cast<double>(c.identical) / ok : 0.0, ok > 0 ? c.kv_read / ok : 0.0,
        is_dense ? "—" : fmt(ok > 0 ? c.bound_mean / ok : -1).c_str(), fmt(c.bound_max).c_str(),
        fmt(exact_mean).c_str(), fmt(c.exact_max).c_str(), tok_s, c.errors);
    table.push_back({{"task", task_name},
                     {"context", length},
                     {"policy", policy},
                     {"budget", budget},
                     {"prompts", c.n},
                     {"errors", c.errors},
                     {"first_error", c.first_error},
                     {"accuracy", acc},
                     {"accuracy_vs_dense", dense_acc > 0 ? acc / dense_acc : -1.0},
                     {"agreement", ok > 0 ? c.agreement / ok : 0.0},
                     {"identical_fraction", ok > 0 ? static_cast<double>(c.identical) / ok : 0.0},
                     {"kv_read_fraction", ok > 0 ? c.kv_read / ok : 0.0},
                     {"dropped_mass_bound_mean", ok > 0 ? c.bound_mean / ok : -1.0},
                     {"dropped_mass_bound_max", c.bound_max},
                     {"dropped_mass_exact_mean", exact_mean},
                     {"dropped_mass_exact_max", c.exact_max},
                     {"decode_tokens_per_s", tok_s}});
  }
  if (!f.json_path.empty()) {
    nlohmann::ordered_json doc = {{"address", f.address},
                                  {"filler", f.filler},
                                  {"tasks", f.tasks},
                                  {"seed", f.seed},
                                  {"audit_rate", f.audit_rate},
                                  {"agreement_tokens", f.agreement_tokens},
                                  {"table", table},
                                  {"requests", requests}};
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
  CLI::App app{"lychee-eval: fidelity of sparse policies vs dense on RULER-style tasks, over gRPC"};
  app.add_option("--address", f.address, "lychee-server gRPC address");
  app.add_option("--tokenizer", f.tokenizer_dir, "tokenizer folder (the served model's)")
      ->required();
  app.add_option("--filler", f.filler, "haystack text (UTF-8)");
  app.add_option("--tasks", f.tasks, "tasks: needle, multikey, multivalue, vt, cwe")
      ->delimiter(',');
  app.add_option("--lengths", f.lengths, "prompt lengths in tokens (2K-32K)")->delimiter(',');
  app.add_option("--prompts", f.prompts, "prompts per task and length (fact depths swept)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--policies", f.policies, "policies (dense is always run as the reference)")
      ->delimiter(',');
  app.add_option("--budgets", f.budgets, "budget_tokens of the sparse policies")->delimiter(',');
  app.add_option("--lychee-mode", f.lychee_mode, "policy.lychee.mode (block or token)");
  app.add_option("--audit-rate", f.audit_rate, "policy.audit_rate (exact δ on audited steps)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-dropped-mass", f.max_dropped_mass, "policy.max_dropped_mass")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--agreement-tokens", f.agreement_tokens, "tokens compared with dense")
      ->check(CLI::Range(1, 4096));
  app.add_option("--seed", f.seed, "prompt seed");
  app.add_option("--timeout", f.timeout, "per-request deadline, seconds");
  app.add_option("--json", f.json_path, "write the table and every request");
  app.add_option("--multikey-keys", f.task_options.num_keys, "multikey: facts (one asked)")
      ->check(CLI::Range(1, 100));
  app.add_option("--multivalue-values", f.task_options.num_values, "multivalue: values asked")
      ->check(CLI::Range(1, 100));
  app.add_option("--vt-hops", f.task_options.num_hops, "vt: statements per chain")
      ->check(CLI::Range(1, 100));
  app.add_option("--vt-chains", f.task_options.num_chains, "vt: chains (one asked)")
      ->check(CLI::Range(1, 100));
  app.add_option("--cwe-words", f.task_options.num_common, "cwe: common words asked")
      ->check(CLI::Range(1, 100));
  app.add_flag("--dry-run", f.dry_run, "print each prompt's end and answers; no server");
  CLI11_PARSE(app, argc, argv);
  const absl::Status st = lychee::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "lychee-eval: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
