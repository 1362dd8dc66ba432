// SPDX-License-Identifier: Apache-2.0
// lychee-load against the real lychee-server (stories260K on loopback), as a subprocess: gRPC
// and HTTP, closed and open loop, a baseline comparison, and its clean failures (bad flags, no
// server). Checks counts and invariants from its JSON — every request succeeded, exactly
// num_prompts × output_len tokens, output_len − 1 ITLs per request, TTFT ≤ e2e, throughput > 0 —
// and never timing thresholds (the machine is shared and noisy).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/server_process.h"
#include "tests/integration/shared_server_test.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::ProgramResult;
using testing::RunProgram;
using testing::ServerProcess;

constexpr char kModel[] = "models/stories260K";
constexpr int kNumPrompts = 6;
constexpr int kOutputLen = 12;

class LoadtestTest : public testing::SharedServerTest<LoadtestTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() {
    return testing::LoopbackServerArgs(kModel, {"--max-num-seqs", "4"});
  }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_NE(server_->http_port(), 0) << "the server has no HTTP port";
  }

  static std::string GrpcAddress() { return server_->grpc_address(); }
  static std::string HttpAddress() { return "127.0.0.1:" + std::to_string(server_->http_port()); }

  // The workload every mode runs: a few short prompts (stories260K has a 512-token context).
  static std::vector<std::string> Workload(std::vector<std::string> more) {
    std::vector<std::string> args = {"--num-prompts",
                                     std::to_string(kNumPrompts),
                                     "--input-len",
                                     "96",
                                     "--input-len-range",
                                     "0.5",
                                     "--output-len",
                                     std::to_string(kOutputLen),
                                     "--seed",
                                     "3",
                                     "--timeout",
                                     "60"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }

  // Runs lychee-load with `args` plus --json; the parsed JSON, or null when it failed.
  static json RunLoad(std::vector<std::string> args) {
    const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                       ("lychee-loadtest-" + std::to_string(getpid()) + ".json");
    args.insert(args.end(), {"--json", path.string()});
    const ProgramResult r = RunProgram("lychee-load", args, absl::Seconds(120));
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    if (r.exit_code != 0) return json();
    EXPECT_NE(r.out.find("TTFT"), std::string::npos) << r.out;  // the table
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    std::filesystem::remove(path);
    return json::parse(text.str(), nullptr, false);
  }
};

// The invariants of one successful run (the JSON's top level, or its "baseline").
void ExpectCompleteRun(const json& run) {
  ASSERT_TRUE(run.is_object()) << run.dump();
  EXPECT_EQ(run["completed"], kNumPrompts) << run["errors"].dump();
  EXPECT_EQ(run["failed"], 0) << run["errors"].dump();
  EXPECT_EQ(run["total_output_tokens"], kNumPrompts * kOutputLen);
  EXPECT_GT(run["request_throughput"].get<double>(), 0.0);
  EXPECT_GT(run["output_throughput"].get<double>(), 0.0);
  EXPECT_GT(run["total_token_throughput"].get<double>(), 0.0);
  EXPECT_GT(run["concurrency"].get<double>(), 0.0);
  for (const char* key : {"mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                          "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms"}) {
    EXPECT_TRUE(run.contains(key)) << key;
  }
  ASSERT_EQ(run["requests"].size(), static_cast<size_t>(kNumPrompts));
  int64_t input_tokens = 0;
  for (const json& r : run["requests"]) {
    EXPECT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["output_tokens"], kOutputLen);
    EXPECT_EQ(r["itl_ms"].size(), static_cast<size_t>(kOutputLen - 1));
    EXPECT_LE(r["ttft_ms"].get<double>(), r["e2el_ms"].get<double>());
    EXPECT_GE(r["input_len"].get<int64_t>(), 48);
    EXPECT_LE(r["input_len"].get<int64_t>(), 144);
    input_tokens += r["input_len"].get<int64_t>();
  }
  EXPECT_EQ(run["total_input_tokens"], input_tokens);
}

TEST_F(LoadtestTest, GrpcClosedLoop) {
  const json out = RunLoad(Workload({"--address", GrpcAddress(), "--concurrency", "2"}));
  ExpectCompleteRun(out);
  EXPECT_EQ(out["config"]["backend"], "grpc");
  EXPECT_EQ(out["config"]["vocab_size"], 512);  // asked from GetModelInfo
}

TEST_F(LoadtestTest, GrpcOpenLoopWithSharedPrefixAndSlo) {
  const json out = RunLoad(
      Workload({"--address", GrpcAddress(), "--request-rate", "20", "--shared-prefix-fraction",
                "0.5", "--slo-ttft-ms", "100000", "--slo-tpot-ms", "100000"}));
  ExpectCompleteRun(out);
  // Generous SLOs: every request is good, so goodput equals request throughput.
  EXPECT_EQ(out["good_requests"], kNumPrompts);
  EXPECT_DOUBLE_EQ(out["request_goodput"].get<double>(), out["request_throughput"].get<double>());
  // Every prompt starts with the same 48 tokens (three full 16-token blocks): the prefix cache
  // serves some of them for the requests after the first.
  EXPECT_GT(out["total_cached_tokens"].get<int64_t>(), 0);
}

TEST_F(LoadtestTest, HttpClosedLoop) {
  const json out = RunLoad(Workload({"--backend", "http", "--address", HttpAddress(),
                                     "--vocab-size", "512", "--concurrency", "3"}));
  ExpectCompleteRun(out);
  EXPECT_EQ(out["config"]["backend"], "http");
}

TEST_F(LoadtestTest, HttpOpenLoopAllAtOnce) {
  const json out =
      RunLoad(Workload({"--backend", "http", "--address", HttpAddress(), "--vocab-size", "512",
                        "--request-rate", "inf", "--model", "stories260K"}));
  ExpectCompleteRun(out);
  EXPECT_EQ(out["requests"][0]["start_s"].is_number(), true);
}

TEST_F(LoadtestTest, BaselineInTheSameRun) {
  const json out = RunLoad(Workload({"--address", GrpcAddress(), "--concurrency", "2", "--policy",
                                     "dense", "--baseline-policy", "dense"}));
  ExpectCompleteRun(out);
  ExpectCompleteRun(out["baseline"]);
  EXPECT_EQ(out["baseline"]["policy"], "dense");
  EXPECT_GT(out["ratios"]["output_throughput"].get<double>(), 0.0);
  // The same seeded workload both times.
  for (int i = 0; i < kNumPrompts; ++i) {
    EXPECT_EQ(out["requests"][i]["input_len"], out["baseline"]["requests"][i]["input_len"]);
  }
}

TEST_F(LoadtestTest, RejectedRequestsAreCountedByStatus) {
  // The server knows only "dense": every request fails with INVALID_ARGUMENT, the run still
  // reports.
  const json out = RunLoad(Workload({"--address", GrpcAddress(), "--policy", "no-such-policy"}));
  ASSERT_TRUE(out.is_object());
  EXPECT_EQ(out["completed"], 0);
  EXPECT_EQ(out["failed"], kNumPrompts);
  EXPECT_EQ(out["errors"]["INVALID_ARGUMENT"], kNumPrompts);
  const json http = RunLoad(Workload({"--backend", "http", "--address", HttpAddress(),
                                      "--vocab-size", "512", "--policy", "no-such-policy"}));
  ASSERT_TRUE(http.is_object());
  EXPECT_EQ(http["errors"]["HTTP 400"], kNumPrompts);
}

TEST_F(LoadtestTest, PerRequestDeadline) {
  // A deadline no request can meet: each ends as DEADLINE_EXCEEDED instead of hanging the run.
  std::vector<std::string> args = Workload({"--address", GrpcAddress()});
  *(std::find(args.begin(), args.end(), "--timeout") + 1) = "0.0005";
  const json out = RunLoad(args);
  ASSERT_TRUE(out.is_object());
  EXPECT_EQ(out["failed"], kNumPrompts);
  EXPECT_EQ(out["errors"]["DEADLINE_EXCEEDED"], kNumPrompts);
}

TEST(LoadtestErrors, BadFlagsAndNoServer) {
  ProgramResult r = RunProgram("lychee-load", {"--num-prompts", "0"}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  r = RunProgram("lychee-load", {"--no-such-flag"}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  r = RunProgram("lychee-load", {"--request-rate", "fast"}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--request-rate"), std::string::npos) << r.err;
  r = RunProgram("lychee-load", {"--concurrency", "2", "--request-rate", "3"}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // Nothing listens on port 1: a clean message within the probe's bound, not a hang.
  r = RunProgram("lychee-load", {"--address", "127.0.0.1:1", "--timeout", "3"}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << r.err;
  r = RunProgram(
      "lychee-load",
      {"--backend", "http", "--address", "127.0.0.1:1", "--vocab-size", "512", "--timeout", "3"},
      absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lychee
