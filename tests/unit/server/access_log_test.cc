// SPDX-License-Identifier: Apache-2.0
// The access log's lines (server/http/access_log.h): the JSON form parses as one object with
// every field, unknown counts are null, client-controlled text cannot break the line; the text
// form carries the token counts; gRPC calls get the same JSON shape.
#include "server/http/access_log.h"

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace lychee::http {
namespace {

using json = nlohmann::json;

std::chrono::system_clock::time_point At(int64_t unix_ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(unix_ms));
}

ResponseRecord Completion() {
  ResponseRecord r;
  r.method = "POST";
  r.path = "/v1/completions";
  r.status = 200;
  r.duration_seconds = 0.01234;
  r.request_id = "cmpl-abc";
  r.remote_address = "10.0.0.7:53122";
  r.request_body_bytes = 187;
  r.prompt_tokens = 9;
  r.completion_tokens = 16;
  return r;
}

TEST(AccessLogTest, JsonLineHasEveryField) {
  const std::string line = AccessLogJson(Completion(), At(1796588467123));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json j = json::parse(line);
  EXPECT_EQ(j["ts"], "2026-12-06T20:21:07.123Z");
  EXPECT_EQ(j["api"], "http");
  EXPECT_EQ(j["id"], "cmpl-abc");
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["route"], "/v1/completions");
  EXPECT_EQ(j["status"], 200);
  EXPECT_EQ(j["prompt_tokens"], 9);
  EXPECT_EQ(j["completion_tokens"], 16);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 12.3);
  EXPECT_EQ(j["peer"], "10.0.0.7:53122");
  EXPECT_EQ(j["request_bytes"], 187);
  EXPECT_EQ(j["complete"], true);
}

TEST(AccessLogTest, UnknownsAreNullAndClientTextIsEscaped) {
  ResponseRecord r;  // a request that did not parse: no method, path, id, peer or tokens
  r.status = 400;
  json j = json::parse(AccessLogJson(r, At(0)));
  EXPECT_EQ(j["ts"], "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(j["method"], "-");
  EXPECT_TRUE(j["id"].is_null());
  EXPECT_TRUE(j["peer"].is_null());
  EXPECT_TRUE(j["prompt_tokens"].is_null());
  EXPECT_TRUE(j["completion_tokens"].is_null());

  // A path with a newline, a quote and invalid UTF-8 stays one line of valid JSON.
  r.path = "/v1/x\n{\"api\":\"forged\"}\xff";
  r.request_id = "id\"\\";
  const std::string line = AccessLogJson(r, At(0));
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  j = json::parse(line);
  EXPECT_EQ(j["api"], "http");
  EXPECT_EQ(j["id"], "id\"\\");
  EXPECT_EQ(j["route"].get<std::string>().rfind("/v1/x\n{\"api\":\"forged\"}", 0), 0u);
}

TEST(AccessLogTest, TextLineCarriesTokensWhenKnown) {
  EXPECT_EQ(AccessLogText(Completion()),
            "http: POST /v1/completions 200 12.3ms id=cmpl-abc peer=10.0.0.7:53122 tokens=9+16");
  ResponseRecord cut = Completion();
  cut.complete = false;
  cut.completion_tokens = 3;
  EXPECT_EQ(AccessLogText(cut),
            "http: POST /v1/completions 200 12.3ms id=cmpl-abc peer=10.0.0.7:53122 tokens=9+3 "
            "(stream cut)");
  ResponseRecord probe;
  probe.method = "GET";
  probe.path = "/health";
  probe.status = 200;
  EXPECT_EQ(AccessLogText(probe), "http: GET /health 200 0.0ms id=- peer=-");
}

TEST(AccessLogTest, GrpcCallsHaveTheSameShape) {
  const json j = json::parse(
      GrpcAccessJson("/lychee.v1.LycheeService/Generate", 8, 0.5, "ipv4:127.0.0.1:5000", At(1000)));
  EXPECT_EQ(j["api"], "grpc");
  EXPECT_EQ(j["route"], "/lychee.v1.LycheeService/Generate");
  EXPECT_EQ(j["status"], 8);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 500);
  EXPECT_EQ(j["peer"], "ipv4:127.0.0.1:5000");
  for (const char* key : {"ts", "id", "method", "prompt_tokens", "completion_tokens"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(GrpcAccessText("/grpc.health.v1.Health/Check", 0, 0.0012, ""),
            "grpc: /grpc.health.v1.Health/Check 0 1.2ms peer=-");
}

}  // namespace
}  // namespace lychee::http
