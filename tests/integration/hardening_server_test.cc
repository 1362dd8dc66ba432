// SPDX-License-Identifier: Apache-2.0
// The last points of issue 15 against the real lychee-server (stories260K on loopback):
//   - the JSON access log: one JSON object per line for every HTTP request and gRPC call, with
//     id, method, route, status, token counts, duration and peer (the lines are parsed);
//   - a cross-origin "simple request" (a text/plain POST, as a web page may send without a CORS
//     preflight) is refused with 415 and never runs, also without API keys;
//   - memory comes back after a spike of huge prompts (RSS, not time, is asserted; skipped under
//     the sanitizers, whose allocators keep freed memory in quarantine by design).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "tests/integration/server_process.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::LoopbackServerArgs;
using testing::ServerProcess;

constexpr char kModel[] = "models/stories260K";

// The JSON objects among the server's output lines (the access log's, in JSON mode).
std::vector<json> JsonLines(const std::string& output) {
  std::vector<json> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() != '{') continue;
    json parsed = json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(parsed.is_discarded()) << "not JSON: " << line;
    if (!parsed.is_discarded()) lines.push_back(std::move(parsed));
  }
  return lines;
}

// The first access-log object with this api, route and status, or null.
json FindAccess(const std::vector<json>& lines, const std::string& api, const std::string& route,
                int status) {
  for (const json& line : lines) {
    if (line.value("api", "") == api && line.value("route", "") == route &&
        line.value("status", -1) == status) {
      return line;
    }
  }
  return nullptr;
}

// A POST with the given Content-Type ("": none) on a connection of its own; the raw response.
std::string PostRaw(uint16_t port, const std::string& path, const std::string& content_type,
                    const std::string& body, const std::string& extra_headers = "") {
  std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!content_type.empty()) request += "Content-Type: " + content_type + "\r\n";
  request += extra_headers;
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  absl::StatusOr<std::string> response = testing::RawExchange(port, request);
  return response.ok() ? *response : response.status().ToString();
}

TEST(HardeningServerTest, JsonAccessLogHasOneObjectPerRequestAndCall) {
  auto server = ServerProcess::Start(
      LoopbackServerArgs(kModel, {"--access-log", "true", "--access-log-format", "json"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const auto port = static_cast<uint16_t>((*server)->http_port());
  for (bool stream : {false, true}) {
    const json body = {{"prompt", "Once upon a time"},
                       {"max_tokens", 5},
                       {"ignore_eos", true},
                       {"stream", stream}};
    auto r = testing::Fetch("127.0.0.1", port, "POST", "/v1/completions", body.dump(),
                            std::chrono::seconds(60));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(PostRaw(port, "/v1/completions", "text/plain", R"({"prompt": "x"})").substr(0, 13),
            "HTTP/1.1 415 ");
  auto stub = v1::LycheeService::NewStub(
      grpc::CreateChannel((*server)->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub->GetServerInfo(&context, {}, &info).ok());
  ASSERT_TRUE((*server)->WaitForOutput("GetServerInfo", absl::Seconds(10))) << (*server)->output();

  const std::vector<json> lines = JsonLines((*server)->output());
  int num_completions = 0;
  for (const json& line : lines) {
    if (line.value("route", "") != "/v1/completions" || line.value("status", 0) != 200) continue;
    ++num_completions;
    EXPECT_EQ(line["api"], "http");
    EXPECT_EQ(line["method"], "POST");
    EXPECT_EQ(line["id"].get<std::string>().rfind("cmpl-", 0), 0u) << line;
    EXPECT_GT(line["prompt_tokens"].get<int64_t>(), 1) << line;
    EXPECT_EQ(line["completion_tokens"], 5) << line;
    EXPECT_GE(line["duration_ms"].get<double>(), 0) << line;
    EXPECT_EQ(line["peer"].get<std::string>().rfind("127.0.0.1:", 0), 0u) << line;
    EXPECT_EQ(line["complete"], true);
    EXPECT_TRUE(line["ts"].is_string());
  }
  EXPECT_EQ(num_completions, 2) << (*server)->output();
  const json refused = FindAccess(lines, "http", "/v1/completions", 415);
  ASSERT_TRUE(refused.is_object()) << (*server)->output();
  EXPECT_TRUE(refused["prompt_tokens"].is_null());  // never tokenized
  const json call = FindAccess(lines, "grpc", "/lychee.v1.LycheeService/GetServerInfo", 0);
  ASSERT_TRUE(call.is_object()) << (*server)->output();
  EXPECT_EQ(call["peer"].get<std::string>().find("127.0.0.1"), 5u) << call;  // ipv4:127.0.0.1:N
}

TEST(HardeningServerTest, TextAccessLogCarriesTokenCounts) {
  auto server = ServerProcess::Start(LoopbackServerArgs(kModel, {"--access-log", "true"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 4}, {"ignore_eos", true}};
  auto r = testing::Fetch("127.0.0.1", static_cast<uint16_t>((*server)->http_port()), "POST",
                          "/v1/completions", body.dump(), std::chrono::seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE((*server)->WaitForOutput("+4\n", absl::Seconds(10))) << (*server)->output();
  EXPECT_NE((*server)->output().find("http: POST /v1/completions 200 "), std::string::npos);
  EXPECT_TRUE(JsonLines((*server)->output()).empty());
}

// Without API keys any page a user visits could otherwise make their browser run requests here:
// fetch() with a text/plain body needs no CORS preflight. Refused with 415; never generated.
TEST(HardeningServerTest, CrossOriginSimplePostIsRefusedWithoutKeys) {
  auto server = ServerProcess::Start(LoopbackServerArgs(kModel));
  ASSERT_TRUE(server.ok()) << server.status();
  const auto port = static_cast<uint16_t>((*server)->http_port());
  const std::string body = R"({"prompt": "Once upon a time", "max_tokens": 3,
                               "messages": [{"role": "user", "content": "hi"}]})";
  const std::string origin = "Origin: https://evil.example\r\n";
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    for (const char* type : {"text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                             "multipart/form-data", ""}) {
      const std::string response = PostRaw(port, path, type, body, origin);
      EXPECT_EQ(response.substr(0, 13), "HTTP/1.1 415 ") << path << " " << type << response;
      EXPECT_NE(response.find("\"code\":\"unsupported_media_type\""), std::string::npos)
          << response;
      EXPECT_EQ(response.find("Access-Control-Allow-Origin"), std::string::npos) << response;
    }
  }
  auto metrics = testing::Fetch("127.0.0.1", port, "GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("lychee_request_rejected_total{model=\"stories260K\",api=\"http\","
                               "reason=\"unsupported_media_type\"} 8"),
            std::string::npos)
      << metrics->body.substr(0, 3000);
  // Nothing reached the engine.
  EXPECT_NE(metrics->body.find("lychee_prompt_tokens_total{model=\"stories260K\"} 0"),
            std::string::npos);
  // The same body declared JSON is served.
  EXPECT_EQ(PostRaw(port, "/v1/completions", "application/json", body).substr(0, 13),
            "HTTP/1.1 200 ");
}

// VmRSS or VmHWM (the peak) of process `pid` in bytes, 0 when unknown.
int64_t ProcMemory(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

// Issue 15: four huge prompts at once (tokenized in full, then refused for the context) used to
// leave the process hundreds of MB larger for good. The server now gives the memory back once
// the spike is over.
TEST(HardeningServerTest, MemoryComesBackAfterASpikeOfHugePrompts) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers' allocators keep freed memory (quarantine)";
#endif
  auto server = ServerProcess::Start(
      LoopbackServerArgs(kModel, {"--max-prompt-bytes", "4000000", "--log-level", "debug"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const pid_t pid = (*server)->pid();
  const auto port = static_cast<uint16_t>((*server)->http_port());
  // Warm up (the first request's one-time allocations are not a spike), then the baseline.
  auto warm = testing::Fetch("127.0.0.1", port, "POST", "/v1/completions",
                             json{{"prompt", "Once upon a time"}, {"max_tokens", 4}}.dump(),
                             std::chrono::seconds(60));
  ASSERT_TRUE(warm.ok() && warm->status == 200);
  absl::SleepFor(absl::Seconds(3));
  const int64_t baseline = ProcMemory(pid, "VmRSS");
  ASSERT_GT(baseline, 0);

  // ~3.5 MB of words each: below max_prompt_bytes, so each is tokenized in full (about 900K
  // tokens) before the context check refuses it.
  std::string words;
  for (int i = 0; words.size() < 3'500'000; ++i) {
    words += (i % 7 == 0 ? "Lily and Tom went to the park " : "once upon a time there was ");
    words += std::to_string(i) + " ";
  }
  const std::string body = json{{"prompt", words}, {"max_tokens", 1}}.dump();
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      auto r = testing::Fetch("127.0.0.1", port, "POST", "/v1/completions", body,
                              std::chrono::seconds(240));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->status, 400) << r->body.substr(0, 300);
    });
  }
  for (std::thread& t : clients) t.join();
  const int64_t peak = ProcMemory(pid, "VmHWM");
  const int64_t spike = peak - baseline;
  ASSERT_GT(spike, int64_t{100} << 20)
      << "no spike to come back from: baseline " << baseline << ", peak " << peak;

  // The memory comes back: to within a quarter of the spike. The trims give a part of it back
  // (the server logs each trim with the RSS before and after it, measured there; a trim that
  // finds nothing to return changes it by a page or so); the allocator alone keeps it: measured
  // on 2 cores, 179 MiB before, peak 581, 279 after and staying there with malloc_trim made a
  // no-op; with the trims 221 MiB. Under a loaded machine the allocator sometimes returns most of
  // it by itself first (RSS back to 194 MiB with the trims logging only 20 MiB), so the trims
  // must have given back a sixteenth of the spike unless RSS came within an eighth of it without
  // them: a no-op trim (279 MiB) still fails. The wait only bounds the test; memory is the
  // assertion. Every trim's line (info when large, else debug) carries the RSS around it.
  const std::regex trim_line(R"(memory: [^\n]*RSS ([0-9.]+) -> ([0-9.]+) MiB)");
  // What the trims gave back in all (one under load during the spike may take a part).
  auto given_back = [&] {
    const std::string output = (*server)->output();
    double mib = 0;
    for (auto it = std::sregex_iterator(output.begin(), output.end(), trim_line);
         it != std::sregex_iterator(); ++it) {
      mib += std::stod((*it)[1].str()) - std::stod((*it)[2].str());
    }
    return static_cast<int64_t>(mib * (1 << 20));
  };
  auto rss = [&] { return ProcMemory(pid, "VmRSS"); };
  auto trims_did_their_part = [&] {
    return given_back() >= spike / 16 || rss() <= baseline + spike / 8;
  };
  for (int i = 0; i < 60 && !(trims_did_their_part() && rss() <= baseline + spike / 4); ++i) {
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_TRUE(trims_did_their_part())
      << "trims gave back " << (given_back() >> 20) << " MiB; baseline " << (baseline >> 20)
      << " MiB, peak " << (peak >> 20) << " MiB, now " << (rss() >> 20) << " MiB; "
      << (*server)->output().substr(0, 4000);
  EXPECT_LE(rss(), baseline + spike / 4)
      << "baseline " << (baseline >> 20) << " MiB, peak " << (peak >> 20) << " MiB, after "
      << (rss() >> 20) << " MiB";
  // Still serving.
  auto after = testing::Fetch("127.0.0.1", port, "POST", "/v1/completions",
                              json{{"prompt", "Once upon a time"}, {"max_tokens", 2}}.dump(),
                              std::chrono::seconds(60));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
}

}  // namespace
}  // namespace lychee
