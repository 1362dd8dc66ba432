// SPDX-License-Identifier: Apache-2.0
// Text helpers for the Prometheus text exposition format 0.0.4: number spelling, escaping of
// label values and HELP text, and name validation. Pure functions, safe from any thread.
//
// Spec: https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
#pragma once

#include <string>
#include <string_view>

namespace lychee::metrics {

// Shortest text that parses back to the same double ("1", "0.25", "1e-06"); the special values
// are spelled as Prometheus (Go's ParseFloat) reads them: "NaN", "+Inf", "-Inf".
std::string FormatValue(double value);

// Label values escape backslash, double quote and newline (\\, \", \n); nothing else.
void AppendEscapedLabelValue(std::string_view value, std::string& out);

// HELP text escapes backslash and newline only (a quote stays a quote).
void AppendEscapedHelp(std::string_view help, std::string& out);

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, and not starting with "__" (reserved for Prometheus itself).
bool IsValidLabelName(std::string_view name);

}  // namespace lychee::metrics
