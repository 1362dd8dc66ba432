// SPDX-License-Identifier: Apache-2.0
// Per-request measurements and their aggregates, with the metric definitions of vLLM's
// benchmark_serving / genai-perf (docs: /work/shared/ANCHORS.md §7):
//   TTFT  first streamed chunk that carries a token − send
//   ITL   gaps between consecutive tokens; a chunk of k tokens after a gap g counts k gaps of
//         g/k (SGLang's rule), and the extra tokens of the first chunk count gaps of 0, so every
//         request that completes has exactly output_tokens − 1 ITL values
//   TPOT  (e2e − TTFT) / (output_tokens − 1), per request with at least two tokens
//   E2E   last byte − send
//   goodput  completed requests meeting every given SLO (TTFT and TPOT), per second
//   concurrency  Σ e2e / duration: the mean number of requests in flight (Little's law)
// Percentiles interpolate linearly between order statistics (numpy's default, as vLLM uses).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lychee::loadtest {

// The error codes of requests the client itself gave up (--cancel-fraction; gRPC and HTTP):
// counted as cancelled, not as failures of the server.
inline constexpr char kClientCancelled[] = "CLIENT_CANCELLED";
inline constexpr char kClientDisconnected[] = "CLIENT_DISCONNECTED";

struct RequestRecord {
  int64_t index = 0;
  int64_t input_len = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;   // prompt tokens the server served from its prefix cache
  double start_seconds = 0.0;  // send time since the start of the run
  double ttft_seconds = 0.0;
  double e2e_seconds = 0.0;
  std::vector<double> itl_seconds;
  bool ok = false;
  std::string error_code;  // "" when ok: gRPC code name, "HTTP 429", "DEADLINE_EXCEEDED", ...
  std::string error_message;

  // (e2e − TTFT) / (output − 1); nullopt below two tokens.
  std::optional<double> TpotSeconds() const;
};

// Linear interpolation between order statistics, p in [0, 100]; 0 for no values.
double Percentile(std::vector<double> values, double p);

struct Distribution {
  double mean = 0, median = 0, std = 0, p90 = 0, p99 = 0, min = 0, max = 0;
  int64_t count = 0;
};
Distribution Describe(const std::vector<double>& values);

struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  bool any() const { return ttft_ms.has_value() || tpot_ms.has_value(); }
};

// Whether a successful request meets every SLO given (a request of one token has no TPOT and
// meets a TPOT SLO trivially, as in vLLM).
bool MeetsSlo(const RequestRecord& r, const Slo& slo);

struct Summary {
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;  // by error_code
  // Ended by the client itself (--cancel-fraction): neither completed nor failed.
  int64_t cancelled = 0;
  double duration_seconds = 0.0;   // start of the run → last request done
  int64_t total_input_tokens = 0;  // of completed requests
  int64_t total_output_tokens = 0;
  int64_t total_cached_tokens = 0;
  double request_throughput = 0.0;  // completed / duration
  double output_throughput = 0.0;   // output tokens / duration
  double total_token_throughput = 0.0;
  std::optional<double> request_goodput;  // only when an SLO is given
  int64_t good_requests = 0;
  double concurrency = 0.0;
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
};

Summary Summarize(const std::vector<RequestRecord>& records, double duration_seconds,
                  const Slo& slo);

}  // namespace lychee::loadtest
