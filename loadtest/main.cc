// SPDX-License-Identifier: Apache-2.0
// lychee-load: drives a running lychee-server (or any vLLM-compatible server over HTTP) with
// synthetic long-context traffic and reports TTFT, TPOT, ITL, e2e latency, throughput and
// goodput the way vLLM's benchmark_serving does.
//
//   lychee-load [--backend grpc|http] [--address HOST:PORT] [--model NAME]
//               [--num-prompts N] [--input-len L --input-len-range R] [--output-len O]
//               [--shared-prefix-fraction F] [--seed S] [--vocab-size V]
//               [--request-rate R|inf [--max-concurrency C] | --concurrency N] [--duration S]
//               [--policy NAME [--budget-tokens B]] [--baseline-policy NAME]
//               [--slo-ttft-ms MS] [--slo-tpot-ms MS] [--timeout S] [--json PATH]
//
// With --baseline-policy the same workload (same seed, same prompts) runs twice in this process,
// the baseline first, and a ratio table follows. Exit status: 0 when the run(s) completed (failed
// requests are reported, not fatal), 1 on bad flags or an unreachable server.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "loadtest/grpc_driver.h"
#include "loadtest/http_driver.h"
#include "loadtest/report.h"
#include "loadtest/runner.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace lychee::loadtest {
namespace {

struct Flags {
  std::string backend = "grpc";
  std::string address;  // default by backend
  std::string model;
  WorkloadOptions workload;
  std::string request_rate = "inf";
  int64_t concurrency = 0;
  int64_t max_concurrency = 0;
  double duration = 0;
  std::string policy;
  int64_t budget_tokens = 0;
  std::string baseline_policy;
  std::optional<double> slo_ttft_ms;
  std::optional<double> slo_tpot_ms;
  double timeout = 300;
  std::string json_path;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "lychee-load: %s\n", message.c_str());
  return 1;
}

// "inf" or a positive number of requests per second.
std::optional<double> ParseRate(const std::string& text) {
  if (text == "inf" || text == "infinity") return std::numeric_limits<double>::infinity();
  try {
    size_t used = 0;
    const double rate = std::stod(text, &used);
    if (used != text.size() || !(rate > 0.0)) return std::nullopt;
    return rate;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Splits HOST:PORT (the port after the last colon, so [::1]:8000 works with the brackets gone).
bool SplitAddress(const std::string& address, std::string& host, std::string& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return port.find_first_not_of("0123456789") == std::string::npos;
}

nlohmann::json ConfigJson(const Flags& f, double rate) {
  const WorkloadOptions& w = f.workload;
  return {{"backend", f.backend},
          {"address", f.address},
          {"model", f.model},
          {"num_prompts", w.num_prompts},
          {"input_len", w.input_len},
          {"input_len_range", w.input_len_range},
          {"output_len", w.output_len},
          {"shared_prefix_fraction", w.shared_prefix_fraction},
          {"vocab_size", w.vocab_size},
          {"seed", w.seed},
          {"cancel_fraction", w.cancel_fraction},
          {"cancel_after_max_seconds", w.cancel_after_max_seconds},
          {"request_rate", f.concurrency > 0  ? nlohmann::json()  // closed loop: no rate
                           : std::isinf(rate) ? nlohmann::json("inf")
                                              : nlohmann::json(rate)},
          {"concurrency", f.concurrency},
          {"max_concurrency", f.max_concurrency},
          {"duration", f.duration},
          {"policy", f.policy},
          {"budget_tokens", f.budget_tokens},
          {"baseline_policy", f.baseline_policy},
          {"slo_ttft_ms", f.slo_ttft_ms ? nlohmann::json(*f.slo_ttft_ms) : nlohmann::json()},
          {"slo_tpot_ms", f.slo_tpot_ms ? nlohmann::json(*f.slo_tpot_ms) : nlohmann::json()},
          {"timeout", f.timeout}};
}

int Run(Flags& f) {
  const std::optional<double> rate = ParseRate(f.request_rate);
  if (!rate) return Fail("--request-rate must be a positive number or inf, got " + f.request_rate);
  if (f.backend != "grpc" && f.backend != "http") {
    return Fail("--backend must be grpc or http, got " + f.backend);
  }
  if (f.timeout <= 0) return Fail("--timeout must be positive");
  if (f.address.empty()) f.address = f.backend == "grpc" ? "localhost:50051" : "localhost:8000";
  std::string host, port;
  if (!SplitAddress(f.address, host, port)) {
    return Fail("--address must be HOST:PORT, got " + f.address);
  }
  f.workload.request_rate = f.concurrency > 0 ? 0.0 : *rate;
  // Bad flags fail before any network traffic (the vocabulary may still come from the server).
  WorkloadOptions check = f.workload;
  if (check.vocab_size == 0) check.vocab_size = std::numeric_limits<int32_t>::max();
  if (absl::Status st = ValidateWorkload(check); !st.ok()) return Fail(std::string(st.message()));

  // Reach the server before generating anything: a wrong address fails in seconds, not after
  // --num-prompts deadlines.
  // Bounded apart from --timeout, so a tiny per-request deadline still gets a fair probe.
  const double probe_timeout = std::clamp(f.timeout, 2.0, 10.0);
  std::unique_ptr<Driver> driver;
  if (f.backend == "grpc") {
    auto grpc = std::make_unique<GrpcDriver>(f.address);
    if (absl::Status st = grpc->Probe(probe_timeout); !st.ok()) return Fail(st.ToString());
    if (f.workload.vocab_size == 0) {
      absl::StatusOr<int64_t> vocab = grpc->VocabSize(probe_timeout);
      if (!vocab.ok()) return Fail(vocab.status().ToString());
      f.workload.vocab_size = *vocab;
    }
    driver = std::move(grpc);
  } else {
    if (f.workload.vocab_size == 0) {
      return Fail("--vocab-size is required with --backend http (prompts are token ids)");
    }
    driver = std::make_unique<HttpDriver>(host, port);
    if (absl::Status st = driver->Probe(probe_timeout); !st.ok()) return Fail(st.ToString());
  }
  absl::StatusOr<std::vector<PlannedRequest>> workload = BuildWorkload(f.workload);
  if (!workload.ok()) return Fail(std::string(workload.status().message()));

  RequestOptions request;
  request.model = f.model;
  request.budget_tokens = f.budget_tokens;
  request.timeout_seconds = f.timeout;
  request.seed = f.workload.seed;
  RunOptions run;
  run.concurrency = f.concurrency;
  run.max_concurrency = f.max_concurrency;
  run.duration_seconds = f.duration;
  Slo slo;
  slo.ttft_ms = f.slo_ttft_ms;
  slo.tpot_ms = f.slo_tpot_ms;

  const std::string mode = f.concurrency > 0
                               ? fmt::format("closed loop, concurrency {}", f.concurrency)
                               : fmt::format("open loop, {} req/s", f.request_rate);
  std::printf("lychee-load: %s %s, %lld prompts of %lld(±%.0f%%) tokens → %lld, %s\n",
              f.backend.c_str(), f.address.c_str(), static_cast<long long>(f.workload.num_prompts),
              static_cast<long long>(f.workload.input_len), f.workload.input_len_range * 100,
              static_cast<long long>(f.workload.output_len), mode.c_str());

  auto run_policy = [&](const std::string& policy) {
    request.policy = policy;
    RunResult result = RunWorkload(*driver, *workload, request, run);
    Summary summary = Summarize(result.records, result.duration_seconds, slo);
    PrintSummary(stdout, "policy " + (policy.empty() ? std::string("(default)") : policy), summary);
    return std::make_pair(std::move(result), summary);
  };

  nlohmann::json out = {{"config", ConfigJson(f, *rate)}};
  std::optional<std::pair<RunResult, Summary>> baseline;
  if (!f.baseline_policy.empty()) baseline = run_policy(f.baseline_policy);
  const auto [main_result, main_summary] = run_policy(f.policy);
  out.update(SummaryJson(main_summary));
  out["policy"] = f.policy;
  out["requests"] = RecordsJson(main_result.records);
  if (baseline) {
    PrintComparison(stdout, f.baseline_policy, f.policy.empty() ? "default" : f.policy,
                    baseline->second, main_summary);
    nlohmann::json b = SummaryJson(baseline->second);
    b["policy"] = f.baseline_policy;
    b["requests"] = RecordsJson(baseline->first.records);
    out["baseline"] = std::move(b);
    out["ratios"] = Ratios(baseline->second, main_summary);
  }
  if (!f.json_path.empty()) {
    std::ofstream file(f.json_path);
    file << out.dump(2) << "\n";
    if (!file) return Fail("cannot write " + f.json_path);
  }
  return 0;
}

}  // namespace
}  // namespace lychee::loadtest

int main(int argc, char** argv) {
  lychee::loadtest::Flags f;
  CLI::App app{
      "lychee-load: open/closed-loop load over gRPC or OpenAI HTTP; TTFT/TPOT/ITL/goodput"};
  app.add_option("--backend", f.backend, "grpc (lychee.v1 Generate) or http (/v1/completions)")
      ->capture_default_str();
  app.add_option("--address", f.address,
                 "server HOST:PORT (default localhost:50051 for grpc, localhost:8000 for http)");
  app.add_option("--model", f.model, "model name sent over HTTP (default: the served model)");
  app.add_option("--num-prompts", f.workload.num_prompts, "requests to send")
      ->capture_default_str();
  app.add_option("--input-len", f.workload.input_len, "prompt tokens per request")
      ->capture_default_str();
  app.add_option("--input-len-range", f.workload.input_len_range,
                 "prompt lengths uniform in input-len × [1-R, 1+R]")
      ->capture_default_str();
  app.add_option("--output-len", f.workload.output_len, "tokens generated per request (ignore_eos)")
      ->capture_default_str();
  app.add_option("--shared-prefix-fraction", f.workload.shared_prefix_fraction,
                 "leading fraction of input-len common to all prompts (prefix cache)")
      ->capture_default_str();
  app.add_option("--vocab-size", f.workload.vocab_size,
                 "token ids are drawn below this (default over grpc: the model's)");
  app.add_option("--seed", f.workload.seed, "seeds prompts, lengths and arrivals")
      ->capture_default_str();
  CLI::Option* rate =
      app.add_option("--request-rate", f.request_rate, "open loop: Poisson arrivals (req/s) or inf")
          ->capture_default_str();
  app.add_option("--concurrency", f.concurrency, "closed loop with N requests in flight")
      ->check(CLI::PositiveNumber)
      ->excludes(rate);
  app.add_option("--max-concurrency", f.max_concurrency, "open loop: cap on requests in flight")
      ->check(CLI::PositiveNumber);
  app.add_option("--duration", f.duration, "stop issuing requests after this many seconds")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--policy", f.policy, "sparsity policy name sent with every request");
  app.add_option("--budget-tokens", f.budget_tokens, "policy budget: KV tokens per head and step")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--baseline-policy", f.baseline_policy,
                 "run the same workload with this policy first and print ratios");
  app.add_option("--slo-ttft-ms", f.slo_ttft_ms, "goodput SLO on TTFT (ms)")
      ->check(CLI::PositiveNumber);
  app.add_option("--slo-tpot-ms", f.slo_tpot_ms, "goodput SLO on TPOT (ms)")
      ->check(CLI::PositiveNumber);
  app.add_option("--cancel-fraction", f.workload.cancel_fraction,
                 "share of requests the client cancels (gRPC) or disconnects (HTTP) mid-way")
      ->capture_default_str();
  app.add_option("--cancel-after-max", f.workload.cancel_after_max_seconds,
                 "a cancelled request gives up after a delay uniform in [0, this] seconds")
      ->capture_default_str();
  app.add_option("--timeout", f.timeout, "per-request deadline (s)")->capture_default_str();
  app.add_option("--json", f.json_path, "write config, aggregates and per-request records here");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }
  return lychee::loadtest::Run(f);
}
