// SPDX-License-Identifier: Apache-2.0
#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lychee::loadtest {

std::optional<double> RequestRecord::TpotSeconds() const {
  if (output_tokens < 2) return std::nullopt;
  return (e2e_seconds - ttft_seconds) / static_cast<double>(output_tokens - 1);
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Distribution Describe(const std::vector<double>& values) {
  Distribution d;
  d.count = static_cast<int64_t>(values.size());
  if (values.empty()) return d;
  const double n = static_cast<double>(values.size());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double sq = 0.0;
  for (double v : values) sq += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(sq / n);  // population std, as numpy's default (vLLM)
  d.median = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  d.min = *lo;
  d.max = *hi;
  return d;
}

bool MeetsSlo(const RequestRecord& r, const Slo& slo) {
  if (!r.ok) return false;
  if (slo.ttft_ms && r.ttft_seconds * 1e3 > *slo.ttft_ms) return false;
  if (slo.tpot_ms) {
    const std::optional<double> tpot = r.TpotSeconds();
    if (tpot && *tpot * 1e3 > *slo.tpot_ms) return false;
  }
  return true;
}

Summary Summarize(const std::vector<RequestRecord>& records, double duration_seconds,
                  const Slo& slo) {
  Summary s;
  s.duration_seconds = duration_seconds;
  std::vector<double> ttft, tpot, itl, e2el;
  double busy = 0.0;
  for (const RequestRecord& r : records) {
    if (!r.ok && (r.error_code == kClientCancelled || r.error_code == kClientDisconnected)) {
      ++s.cancelled;
      continue;
    }
    if (!r.ok) {
      ++s.failed;
      ++s.errors[r.error_code.empty() ? "UNKNOWN" : r.error_code];
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.input_len;
    s.total_output_tokens += r.output_tokens;
    s.total_cached_tokens += r.cached_tokens;
    ttft.push_back(r.ttft_seconds * 1e3);
    e2el.push_back(r.e2e_seconds * 1e3);
    if (std::optional<double> t = r.TpotSeconds()) tpot.push_back(*t * 1e3);
    for (double g : r.itl_seconds) itl.push_back(g * 1e3);
    busy += r.e2e_seconds;
    if (slo.any() && MeetsSlo(r, slo)) ++s.good_requests;
  }
  if (duration_seconds > 0.0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_seconds;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_seconds;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_seconds;
    s.concurrency = busy / duration_seconds;
    if (slo.any()) s.request_goodput = static_cast<double>(s.good_requests) / duration_seconds;
  } else if (slo.any()) {
    s.request_goodput = 0.0;
  }
  s.ttft_ms = Describe(ttft);
  s.tpot_ms = Describe(tpot);
  s.itl_ms = Describe(itl);
  s.e2el_ms = Describe(e2el);
  return s;
}

}  // namespace lychee::loadtest
