// SPDX-License-Identifier: Apache-2.0
// The access log's line for one answered HTTP request (ResponseRecord), as text for people or as
// one JSON object per line for log collectors (`access_log_format: json`):
//
//   http: POST /v1/completions 200 12.3ms id=cmpl-x peer=10.0.0.7:53122 tokens=9+16
//   {"ts":"2026-12-06T20:31:07.123Z","api":"http","id":"cmpl-x","method":"POST",
//    "route":"/v1/completions","status":200,"prompt_tokens":9,"completion_tokens":16,
//    "duration_ms":12.3,"peer":"10.0.0.7:53122","request_bytes":187,"complete":true}
//
// Token counts are null (JSON) or left out (text) where unknown: refusals, routes without tokens.
// Client-controlled strings (method, path, X-Request-Id) are escaped in JSON, so a line cannot be
// forged. gRPC calls get the same shape from GrpcAccessJson ("api":"grpc", "route" the RPC's full
// name, "status" the gRPC code; no id or token counts).
//
// Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "server/http/http_server.h"

namespace lychee::http {

std::string AccessLogText(const ResponseRecord& record);
std::string AccessLogJson(const ResponseRecord& record, std::chrono::system_clock::time_point now);

// One finished gRPC call (server/grpc/call_log.h), for the same log: `method` is the full name
// ("/lychee.v1.LycheeService/Generate"), `code` the grpc::StatusCode, `peer` as gRPC writes it
// ("ipv4:127.0.0.1:53122").
std::string GrpcAccessText(std::string_view method, int code, double duration_seconds,
                           std::string_view peer);
std::string GrpcAccessJson(std::string_view method, int code, double duration_seconds,
                           std::string_view peer, std::chrono::system_clock::time_point now);

}  // namespace lychee::http
