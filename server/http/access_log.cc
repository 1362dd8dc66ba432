// SPDX-License-Identifier: Apache-2.0
// Access log lines (see access_log.h).
#include "server/http/access_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>

namespace lychee::http {
namespace {

using Json = nlohmann::ordered_json;

// 2026-12-06T20:31:07.123Z
std::string Timestamp(std::chrono::system_clock::time_point now) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, ms % 1000);
}

Json Count(int64_t n) { return n < 0 ? Json(nullptr) : Json(n); }
Json OrNull(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }
double Millis(double seconds) { return std::round(seconds * 1e4) / 10; }  // 0.1 ms

// Client-controlled text (path, method, id) may hold anything: invalid UTF-8 is replaced.
std::string Line(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace

std::string AccessLogText(const ResponseRecord& r) {
  std::string line = fmt::format(
      "http: {} {} {} {:.1f}ms id={} peer={}", r.method, r.path, r.status, r.duration_seconds * 1e3,
      r.request_id.empty() ? "-" : r.request_id, r.remote_address.empty() ? "-" : r.remote_address);
  if (r.prompt_tokens >= 0) {
    line +=
        fmt::format(" tokens={}+{}", r.prompt_tokens, std::max<int64_t>(r.completion_tokens, 0));
  }
  if (!r.complete) line += " (stream cut)";
  return line;
}

std::string AccessLogJson(const ResponseRecord& r, std::chrono::system_clock::time_point now) {
  Json j = Json::object();
  j["ts"] = Timestamp(now);
  j["api"] = "http";
  j["id"] = OrNull(r.request_id);
  j["method"] = r.method;
  j["route"] = r.path;
  j["status"] = r.status;
  j["prompt_tokens"] = Count(r.prompt_tokens);
  j["completion_tokens"] = Count(r.completion_tokens);
  j["duration_ms"] = Millis(r.duration_seconds);
  j["peer"] = OrNull(r.remote_address);
  j["request_bytes"] = r.request_body_bytes;
  j["complete"] = r.complete;
  return Line(j);
}

std::string GrpcAccessText(std::string_view method, int code, double duration_seconds,
                           std::string_view peer) {
  return fmt::format("grpc: {} {} {:.1f}ms peer={}", method, code, duration_seconds * 1e3,
                     peer.empty() ? "-" : peer);
}

std::string GrpcAccessJson(std::string_view method, int code, double duration_seconds,
                           std::string_view peer, std::chrono::system_clock::time_point now) {
  Json j = Json::object();
  j["ts"] = Timestamp(now);
  j["api"] = "grpc";
  j["id"] = nullptr;
  j["method"] = "POST";  // gRPC calls are HTTP/2 POSTs; the RPC is the route
  j["route"] = method;
  j["status"] = code;
  j["prompt_tokens"] = nullptr;
  j["completion_tokens"] = nullptr;
  j["duration_ms"] = Millis(duration_seconds);
  j["peer"] = OrNull(std::string(peer));
  return Line(j);
}

}  // namespace lychee::http
