// SPDX-License-Identifier: Apache-2.0
#include "loadtest/report.h"

#include <fmt/format.h>

#include <utility>

namespace lychee::loadtest {
namespace {

using Json = nlohmann::json;

void PutDistribution(Json& out, const std::string& name, const Distribution& d) {
  out["mean_" + name] = d.mean;
  out["median_" + name] = d.median;
  out["std_" + name] = d.std;
  out["p90_" + name] = d.p90;
  out["p99_" + name] = d.p99;
}

// The headline metrics compared between runs: key, label, accessor.
struct Headline {
  const char* key;
  const char* label;
  double (*get)(const Summary&);
};
constexpr Headline kHeadlines[] = {
    {"request_throughput", "Request throughput (req/s)",
     [](const Summary& s) { return s.request_throughput; }},
    {"output_throughput", "Output token throughput (tok/s)",
     [](const Summary& s) { return s.output_throughput; }},
    {"total_token_throughput", "Total token throughput (tok/s)",
     [](const Summary& s) { return s.total_token_throughput; }},
    {"mean_ttft_ms", "Mean TTFT (ms)", [](const Summary& s) { return s.ttft_ms.mean; }},
    {"p99_ttft_ms", "P99 TTFT (ms)", [](const Summary& s) { return s.ttft_ms.p99; }},
    {"mean_tpot_ms", "Mean TPOT (ms)", [](const Summary& s) { return s.tpot_ms.mean; }},
    {"p99_tpot_ms", "P99 TPOT (ms)", [](const Summary& s) { return s.tpot_ms.p99; }},
    {"mean_itl_ms", "Mean ITL (ms)", [](const Summary& s) { return s.itl_ms.mean; }},
    {"p99_itl_ms", "P99 ITL (ms)", [](const Summary& s) { return s.itl_ms.p99; }},
    {"mean_e2el_ms", "Mean E2E latency (ms)", [](const Summary& s) { return s.e2el_ms.mean; }},
};

Json RatioOrNull(double num, double den) { return den > 0.0 ? Json(num / den) : Json(nullptr); }

}  // namespace

Json SummaryJson(const Summary& s) {
  Json out = Json::object();
  out["completed"] = s.completed;
  out["failed"] = s.failed;
  out["cancelled"] = s.cancelled;
  out["errors"] = s.errors;
  out["duration"] = s.duration_seconds;
  out["total_input_tokens"] = s.total_input_tokens;
  out["total_output_tokens"] = s.total_output_tokens;
  out["total_cached_tokens"] = s.total_cached_tokens;
  out["request_throughput"] = s.request_throughput;
  out["output_throughput"] = s.output_throughput;
  out["total_token_throughput"] = s.total_token_throughput;
  out["request_goodput"] = s.request_goodput ? Json(*s.request_goodput) : Json(nullptr);
  out["good_requests"] = s.good_requests;
  out["concurrency"] = s.concurrency;
  PutDistribution(out, "ttft_ms", s.ttft_ms);
  PutDistribution(out, "tpot_ms", s.tpot_ms);
  PutDistribution(out, "itl_ms", s.itl_ms);
  PutDistribution(out, "e2el_ms", s.e2el_ms);
  return out;
}

Json RecordsJson(const std::vector<RequestRecord>& records) {
  Json out = Json::array();
  for (const RequestRecord& r : records) {
    Json itl = Json::array();
    for (double g : r.itl_seconds) itl.push_back(g * 1e3);
    const std::optional<double> tpot = r.TpotSeconds();
    out.push_back({{"index", r.index},
                   {"ok", r.ok},
                   {"error_code", r.error_code},
                   {"error", r.error_message},
                   {"input_len", r.input_len},
                   {"output_tokens", r.output_tokens},
                   {"cached_tokens", r.cached_tokens},
                   {"start_s", r.start_seconds},
                   {"ttft_ms", r.ttft_seconds * 1e3},
                   {"tpot_ms", tpot ? Json(*tpot * 1e3) : Json(nullptr)},
                   {"e2el_ms", r.e2e_seconds * 1e3},
                   {"itl_ms", std::move(itl)}});
  }
  return out;
}

void PrintSummary(std::FILE* out, const std::string& title, const Summary& s) {
  std::fprintf(out, "%s\n", fmt::format("{:=^64}", " " + title + " ").c_str());
  auto line = [&](const char* label, const std::string& value) {
    std::fprintf(out, "%-40s %23s\n", label, value.c_str());
  };
  line("Successful requests:", std::to_string(s.completed));
  line("Failed requests:", std::to_string(s.failed));
  if (s.cancelled > 0) line("Cancelled by the client:", std::to_string(s.cancelled));
  for (const auto& [code, count] : s.errors) {
    line(fmt::format("  {}:", code).c_str(), std::to_string(count));
  }
  line("Benchmark duration (s):", fmt::format("{:.2f}", s.duration_seconds));
  line("Total input tokens:", std::to_string(s.total_input_tokens));
  line("Total generated tokens:", std::to_string(s.total_output_tokens));
  line("Prefix-cached input tokens:", std::to_string(s.total_cached_tokens));
  line("Request throughput (req/s):", fmt::format("{:.2f}", s.request_throughput));
  if (s.request_goodput) {
    line("Request goodput (req/s):", fmt::format("{:.2f}", *s.request_goodput));
  }
  line("Output token throughput (tok/s):", fmt::format("{:.2f}", s.output_throughput));
  line("Total token throughput (tok/s):", fmt::format("{:.2f}", s.total_token_throughput));
  line("Concurrency (mean in flight):", fmt::format("{:.2f}", s.concurrency));
  std::fprintf(out, "%s\n",
               fmt::format("{:<12}{:>13}{:>13}{:>13}{:>13}", "(ms)", "mean", "median", "p90", "p99")
                   .c_str());
  auto row = [&](const char* name, const Distribution& d) {
    std::fprintf(out, "%s\n",
                 fmt::format("{:<12}{:>13.2f}{:>13.2f}{:>13.2f}{:>13.2f}", name, d.mean, d.median,
                             d.p90, d.p99)
                     .c_str());
  };
  row("TTFT", s.ttft_ms);
  row("TPOT", s.tpot_ms);
  row("ITL", s.itl_ms);
  row("E2E", s.e2el_ms);
  std::fprintf(out, "%s\n", std::string(64, '=').c_str());
}

Json Ratios(const Summary& baseline, const Summary& policy) {
  Json out = Json::object();
  for (const Headline& h : kHeadlines) out[h.key] = RatioOrNull(h.get(policy), h.get(baseline));
  return out;
}

void PrintComparison(std::FILE* out, const std::string& baseline_name,
                     const std::string& policy_name, const Summary& baseline,
                     const Summary& policy) {
  std::fprintf(out, "%s\n",
               fmt::format("{:<34}{:>10}{:>10}{:>10}", "metric", baseline_name.substr(0, 9),
                           policy_name.substr(0, 9), "ratio")
                   .c_str());
  for (const Headline& h : kHeadlines) {
    const double b = h.get(baseline), p = h.get(policy);
    const std::string ratio = b > 0.0 ? fmt::format("{:.3f}x", p / b) : std::string("-");
    std::fprintf(out, "%s\n",
                 fmt::format("{:<34}{:>10.2f}{:>10.2f}{:>10}", h.label, b, p, ratio).c_str());
  }
}

}  // namespace lychee::loadtest
