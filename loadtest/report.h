// SPDX-License-Identifier: Apache-2.0
// lychee-load's output: a table on stdout (vLLM benchmark_serving's layout, per run, plus a
// policy-vs-baseline ratio table when a baseline ran) and the JSON file, whose aggregate field
// names are vLLM's (mean_ttft_ms, p99_itl_ms, request_throughput, request_goodput, ...) so that
// results drop into dashboards built for it. Pure formatting; main.cc decides what to write where.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loadtest/stats.h"

namespace lychee::loadtest {

// Aggregates under vLLM's names (flat), plus errors by code and p90s.
nlohmann::json SummaryJson(const Summary& summary);
// One object per request: timings in ms, the ITL list, the error if any.
nlohmann::json RecordsJson(const std::vector<RequestRecord>& records);

void PrintSummary(std::FILE* out, const std::string& title, const Summary& summary);

// Policy ÷ baseline for the headline metrics (throughputs: higher is better; latencies: lower).
nlohmann::json Ratios(const Summary& baseline, const Summary& policy);
void PrintComparison(std::FILE* out, const std::string& baseline_name,
                     const std::string& policy_name, const Summary& baseline,
                     const Summary& policy);

}  // namespace lychee::loadtest
