// SPDX-License-Identifier: Apache-2.0
// Sparse-attention policies through the real lychee-server on loopback (stories260K, CPU), over
// gRPC and OpenAI HTTP: every request with a sparse policy gets its policy report (gRPC
// GenerateComplete.policy_report, OpenAI usage.policy_report) with 0 <= max_exact <= max_bound
// <= 1 when audited and a fraction of KV read in (0, 1]; dense requests get none; unset knobs take
// the server's default_policy (from a config file here); range errors name the field as the
// client spelled it; GetServerInfo lists the policies and the defaults; /metrics then carries
// the sparse series, and promtool finds nothing wrong with the scrape.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "lychee/v1/generate.grpc.pb.h"
#include "tests/integration/server_process.h"
#include "tests/integration/shared_server_test.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::LoopbackServerArgs;

constexpr char kModel[] = "models/stories260K";

// A prompt of about 350 tokens: long enough that a 32-token budget reads a small part of the
// KV cache (stories260K's context is 512).
std::string LongPrompt() {
  std::string prompt = "Once upon a time, there was a little girl named Lily.";
  for (int i = 0; i < 12; ++i) {
    prompt += " She liked to play in the park with her friend Tom, and they ran and laughed.";
  }
  return prompt;
}

// The server's defaults for unset policy fields: a small budget and every step audited, so a
// request that names only its policy is sparse and reported.
std::string WriteConfig() {
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("lychee_sparse_policy_" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "default_policy:\n"
                         "  budget_tokens: 32\n"
                         "  audit_rate: 1.0\n"
                         "  prhs:\n"
                         "    tau: 0.5\n"
                         "    local_tokens: 16\n";
  return path.string();
}

// What both front ends report, read from either wire form.
struct Report {
  std::string policy;
  double max_bound = -2, mean_bound = -2, max_exact = -2, kv_read_fraction = -2;
  int64_t audited_steps = -1, head_selections = -1, reused = -1, widenings = -1;
};

Report FromProto(const v1::PolicyReport& r) {
  return {.policy = r.policy(),
          .max_bound = r.max_bound(),
          .mean_bound = r.mean_bound(),
          .max_exact = r.max_exact(),
          .kv_read_fraction = r.kv_read_fraction(),
          .audited_steps = r.audited_steps(),
          .head_selections = r.head_selections(),
          .reused = r.reused(),
          .widenings = r.widenings()};
}

Report FromJson(const json& r) {
  return {.policy = r.at("policy"),
          .max_bound = r.at("max_bound"),
          .mean_bound = r.at("mean_bound"),
          .max_exact = r.at("max_exact"),
          .kv_read_fraction = r.at("kv_read_fraction"),
          .audited_steps = r.at("audited_steps"),
          .head_selections = r.at("head_selections"),
          .reused = r.at("reused"),
          .widenings = r.at("widenings")};
}

// An audited sparse request's report: the bounds hold and it read part of the KV cache.
void ExpectAuditedReport(const Report& r, const std::string& policy) {
  EXPECT_EQ(r.policy, policy);
  EXPECT_GT(r.audited_steps, 0);
  EXPECT_GE(r.max_exact, 0.0);
  EXPECT_LE(r.max_exact, r.max_bound);
  EXPECT_LE(r.max_bound, 1.0);
  EXPECT_GE(r.mean_bound, 0.0);
  EXPECT_LE(r.mean_bound, r.max_bound);
  EXPECT_GT(r.kv_read_fraction, 0.0);
  EXPECT_LE(r.kv_read_fraction, 1.0);
  EXPECT_GE(r.widenings, 0);
  EXPECT_GE(r.reused, 0);
  EXPECT_LE(r.reused, r.head_selections);
}

struct HttpReply {
  int status = 0;
  json body;                 // non-streaming
  std::vector<json> events;  // streaming: the SSE data lines before [DONE]
};

HttpReply Post(uint16_t port, const std::string& path, const json& request) {
  HttpReply reply;
  auto response =
      testing::Fetch("127.0.0.1", port, "POST", path, request.dump(), std::chrono::seconds(120));
  if (!response.ok()) {
    ADD_FAILURE() << response.status();
    return reply;
  }
  reply.status = response->status;
  if (response->Header("content-type").find("text/event-stream") == std::string::npos) {
    reply.body = json::parse(response->body, nullptr, false);
    return reply;
  }
  static const std::regex kData(R"(data: (\{.*\})\n)");
  for (std::sregex_iterator it(response->body.begin(), response->body.end(), kData), end; it != end;
       ++it) {
    reply.events.push_back(json::parse((*it)[1].str()));
  }
  return reply;
}

class SparsePolicyServerTest : public testing::SharedServerTest<SparsePolicyServerTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() {
    return LoopbackServerArgs(kModel, {"--device", "cpu", "--config", WriteConfig()});
  }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    port_ = static_cast<uint16_t>(server_->http_port());
    ASSERT_NE(port_, 0) << server_->output();
    stub_ = v1::LycheeService::NewStub(
        grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  static v1::GenerateRequest Greedy(int max_tokens) {
    v1::GenerateRequest r;
    r.set_text(LongPrompt());
    r.mutable_sampling_params()->set_temperature(0);
    r.mutable_sampling_params()->set_max_tokens(max_tokens);
    return r;
  }

  // Runs a Generate stream to its end; the complete message, or a failed status.
  grpc::Status Generate(const v1::GenerateRequest& request, v1::GenerateComplete* complete) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_complete()) *complete = response.complete();
    }
    return reader->Finish();
  }

  static json Completion(json policy) {
    return {{"prompt", LongPrompt()}, {"max_tokens", 12}, {"temperature", 0}, {"policy", policy}};
  }

  uint16_t port_ = 0;
  std::unique_ptr<v1::LycheeService::Stub> stub_;
};

TEST_F(SparsePolicyServerTest, GrpcReportsTheSparsePolicy) {
  for (const std::string policy : {"quest", "prhs"}) {
    SCOPED_TRACE(policy);
    v1::GenerateRequest request = Greedy(12);
    request.mutable_policy()->set_name(policy);
    request.mutable_policy()->set_budget_tokens(32);
    request.mutable_policy()->set_audit_rate(1.0);
    v1::GenerateComplete complete;
    const grpc::Status status = Generate(request, &complete);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(complete.completion_tokens(), 12);
    ASSERT_TRUE(complete.has_policy_report());
    ExpectAuditedReport(FromProto(complete.policy_report()), policy);
    // About 32 of some 200 tokens per head and step (more where a bound widened the budget).
    EXPECT_LT(complete.policy_report().kv_read_fraction(), 1.0);
  }
  // PrHS selects per (step, layer, KV head) and reuses an anchor's set while queries stay alike.
  v1::GenerateRequest request = Greedy(12);
  request.mutable_policy()->set_name("prhs");
  v1::GenerateComplete complete;
  ASSERT_TRUE(Generate(request, &complete).ok());
  EXPECT_GT(complete.policy_report().head_selections(), 0);

  // Dense requests carry no report.
  v1::GenerateRequest dense = Greedy(4);
  dense.mutable_policy()->set_name("dense");
  ASSERT_TRUE(Generate(dense, &complete).ok());
  EXPECT_FALSE(complete.has_policy_report());
}

TEST_F(SparsePolicyServerTest, UnsetKnobsTakeTheServerDefaults) {
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
  const std::vector<std::string> policies(info.policies().begin(), info.policies().end());
  // No head-role mask here: lychee would be refused, so it is not listed (LycheeServerTest has it).
  EXPECT_EQ(policies, (std::vector<std::string>{"dense", "streaming", "quest", "prhs"}));
  const v1::SparsityPolicy& defaults = info.default_policy();
  EXPECT_EQ(defaults.name(), "dense");
  EXPECT_EQ(defaults.budget_tokens(), 32);
  EXPECT_DOUBLE_EQ(defaults.audit_rate(), 1.0);
  EXPECT_DOUBLE_EQ(defaults.max_dropped_mass(), 1.0);
  EXPECT_DOUBLE_EQ(defaults.prhs().tau(), 0.5);
  EXPECT_EQ(defaults.prhs().local_tokens(), 16);
  EXPECT_EQ(defaults.prhs().sink_tokens(), 16);
  EXPECT_EQ(defaults.lychee().mode(), "block");

  // Naming only the policy: the server's budget (32) and audit rate (1) apply, so the request is
  // sparse and every decode step is audited.
  v1::GenerateRequest request = Greedy(8);
  request.mutable_policy()->set_name("prhs");
  v1::GenerateComplete complete;
  ASSERT_TRUE(Generate(request, &complete).ok());
  ASSERT_TRUE(complete.has_policy_report());
  ExpectAuditedReport(FromProto(complete.policy_report()), "prhs");
  EXPECT_LT(complete.policy_report().kv_read_fraction(), 1.0);

  const HttpReply reply = Post(port_, "/v1/completions", Completion({{"name", "quest"}}));
  ASSERT_EQ(reply.status, 200) << reply.body.dump();
  ExpectAuditedReport(FromJson(reply.body["usage"]["policy_report"]), "quest");
}

TEST_F(SparsePolicyServerTest, MaxDroppedMassZeroReadsEverything) {
  // 0 asks for exact attention: accepted by both front ends; no head may skip any mass.
  v1::GenerateRequest request = Greedy(6);
  request.mutable_policy()->set_name("quest");
  request.mutable_policy()->set_max_dropped_mass(0);
  v1::GenerateComplete complete;
  const grpc::Status status = Generate(request, &complete);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(complete.has_policy_report());
  EXPECT_EQ(complete.policy_report().max_bound(), 0.0);
  EXPECT_EQ(complete.policy_report().max_exact(), 0.0);

  const HttpReply reply =
      Post(port_, "/v1/completions", Completion({{"name", "prhs"}, {"max_dropped_mass", 0}}));
  ASSERT_EQ(reply.status, 200) << reply.body.dump();
  EXPECT_EQ(reply.body["usage"]["policy_report"]["max_bound"], 0.0);
}

TEST_F(SparsePolicyServerTest, OpenAiReportsTheSparsePolicy) {
  const json policy = {{"name", "prhs"},
                       {"budget_tokens", 32},
                       {"audit_rate", 1},
                       {"prhs", {{"tau", 0.8}, {"dilation", 1}}}};
  // Completions, whole.
  HttpReply reply = Post(port_, "/v1/completions", Completion(policy));
  ASSERT_EQ(reply.status, 200) << reply.body.dump();
  ExpectAuditedReport(FromJson(reply.body["usage"]["policy_report"]), "prhs");

  // Chat, streamed: the report rides on the final usage chunk only.
  const json chat = {{"messages", {{{"role", "user"}, {"content", LongPrompt()}}}},
                     {"max_tokens", 8},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}},
                     {"policy", policy}};
  reply = Post(port_, "/v1/chat/completions", chat);
  ASSERT_EQ(reply.status, 200);
  ASSERT_GE(reply.events.size(), 2u);
  for (size_t i = 0; i + 1 < reply.events.size(); ++i) {
    EXPECT_FALSE(reply.events[i].contains("usage")) << reply.events[i].dump();
  }
  const json& last = reply.events.back();
  ASSERT_TRUE(last["choices"].empty()) << last.dump();
  ExpectAuditedReport(FromJson(last["usage"]["policy_report"]), "prhs");

  // Dense: plain OpenAI usage.
  reply = Post(port_, "/v1/completions", Completion({{"name", "dense"}}));
  ASSERT_EQ(reply.status, 200);
  EXPECT_FALSE(reply.body["usage"].contains("policy_report")) << reply.body.dump();
}

TEST_F(SparsePolicyServerTest, RangeErrorsNameTheField) {
  struct Case {
    json policy;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"name", "prhs"}, {"prhs", {{"tau", 2}}}}, "policy.prhs.tau"},
      {{{"name", "prhs"}, {"prhs", {{"psaw_phi", 0}}}}, "policy.prhs.psaw_phi"},
      {{{"name", "lychee"}, {"lychee", {{"mode", "page"}}}}, "policy.lychee.mode"},
      {{{"audit_rate", -1}}, "policy.audit_rate"},
      {{{"max_dropped_mass", 1.5}}, "policy.max_dropped_mass"},
      // The engine's checks (it knows the block size and the policies), still named.
      {{{"name", "quest"}, {"budget_tokens", 4}}, "policy.budget_tokens"},
      {{{"name", "magic"}}, "policy.name"},
  };
  for (const Case& c : cases) {
    const HttpReply reply = Post(port_, "/v1/completions", Completion(c.policy));
    EXPECT_EQ(reply.status, 400) << c.policy.dump();
    EXPECT_EQ(reply.body["error"]["param"], c.param) << reply.body.dump();
    EXPECT_NE(reply.body["error"]["message"].get<std::string>().find(c.param), std::string::npos)
        << reply.body.dump();
  }
  v1::GenerateRequest request = Greedy(4);
  request.mutable_policy()->set_name("prhs");
  request.mutable_policy()->mutable_prhs()->set_dilate_fraction(3);
  v1::GenerateComplete complete;
  const grpc::Status status = Generate(request, &complete);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("policy.prhs.dilate_fraction"), std::string::npos)
      << status.error_message();
}

// The value of the first series of `family` whose labels contain `labels`, or -1.
double Sample(const std::string& text, const std::string& family, const std::string& labels) {
  const std::regex line("(?:^|\n)" + family + R"(\{([^}]*)\} (\S+))");
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) {
    if ((*it)[1].str().find(labels) != std::string::npos) return std::stod((*it)[2].str());
  }
  return -1;
}

TEST_F(SparsePolicyServerTest, MetricsCarryTheSparseSeries) {
  v1::GenerateRequest request = Greedy(8);
  request.mutable_policy()->set_name("prhs");
  request.mutable_policy()->set_audit_rate(1.0);
  v1::GenerateComplete complete;
  ASSERT_TRUE(Generate(request, &complete).ok());

  auto scrape = testing::Fetch("127.0.0.1", port_, "GET", "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  ASSERT_EQ(scrape->status, 200);
  const std::string& text = scrape->body;
  const std::string prhs = R"(model="stories260K",policy="prhs")";
  EXPECT_GT(Sample(text, "lychee_dropped_mass_bound_count", prhs), 0) << text;
  EXPECT_GT(Sample(text, "lychee_dropped_mass_exact_count", prhs), 0);
  EXPECT_GT(Sample(text, "lychee_dropped_mass_count", prhs), 0);  // the older name, kept
  const double read = Sample(text, "lychee_kv_tokens_read_total", prhs);
  const double dense = Sample(text, "lychee_kv_tokens_dense_total", prhs);
  EXPECT_GT(read, 0);
  EXPECT_LT(read, dense);
  EXPECT_GT(Sample(text, "lychee_policy_selections_total", prhs), 0);
  EXPECT_GE(Sample(text, "lychee_policy_reused_selections_total", prhs), 0);
  EXPECT_GE(Sample(text, "lychee_policy_widenings_total", prhs), 0);
  EXPECT_GE(Sample(text, "lychee_policy_dense_fallbacks_total", prhs), 0);
  EXPECT_GT(Sample(text, "lychee_policy_selection_seconds_total", prhs), 0);
  EXPECT_GE(Sample(text, "lychee_cache_corrections_total", prhs), 0);

  const char* promtool = "/usr/bin/promtool";
  if (access(promtool, X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed (scripts/install-deps.sh installs Debian's prometheus)";
  }
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("lychee_sparse_scrape_" + std::to_string(getpid()) + ".prom");
  std::ofstream(path, std::ios::binary) << text;
  FILE* pipe =
      popen((std::string(promtool) + " check metrics < " + path.string() + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  std::filesystem::remove(path);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_EQ(output, "") << output;  // promtool prints lint problems; nothing means clean
}

TEST_F(SparsePolicyServerTest, LycheeClientPrintsTheReport) {
  const testing::ProgramResult result = testing::RunProgram(
      "lychee-client", {"--address", server_->grpc_address(), "generate", "--prompt", LongPrompt(),
                        "--max-tokens", "6", "--temperature", "0", "--policy", "prhs",
                        "--budget-tokens", "32", "--audit-rate", "1"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("[policy prhs: max_bound="), std::string::npos) << result.err;
  EXPECT_NE(result.err.find(" audited_steps=5 "), std::string::npos) << result.err;
}

// The same server without a head-role mask refuses `lychee`, naming what is missing.
TEST_F(SparsePolicyServerTest, LycheeWithoutHeadRolesIsRefused) {
  v1::GenerateRequest request = Greedy(4);
  request.mutable_policy()->set_name("lychee");
  v1::GenerateComplete complete;
  const grpc::Status status = Generate(request, &complete);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("--head-roles"), std::string::npos)
      << status.error_message();
  const HttpReply reply = Post(port_, "/v1/completions", Completion({{"name", "lychee"}}));
  EXPECT_EQ(reply.status, 400) << reply.body.dump();
  EXPECT_EQ(reply.body["error"]["param"], "policy.name") << reply.body.dump();
  EXPECT_NE(reply.body["error"]["message"].get<std::string>().find("head-role mask"),
            std::string::npos)
      << reply.body.dump();
}

// A LycheeDecode head-role mask for stories260K (5 layers, 4 KV heads): layer 0 all retrieval
// (as every mask), layer 2 one retrieval head, the rest sparse.
std::string WriteHeadRoles() {
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("lychee_head_roles_" + std::to_string(getpid()) + ".json");
  std::ofstream(path) << R"({"format": "lychee-head-roles/1", "num_layers": 5, "num_kv_heads": 4,
      "retrieval": [[0, 1, 2, 3], [], [1], [], []]})";
  return path.string();
}

// lychee through the server with --head-roles: reports (sparse heads reuse the retrieval heads'
// sets), cache corrections, and their metric.
class LycheeServerTest : public testing::SharedServerTest<LycheeServerTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() {
    return LoopbackServerArgs(kModel, {"--device", "cpu", "--head-roles", WriteHeadRoles()});
  }
};

TEST_F(LycheeServerTest, ReportsOverBothFrontEndsAndCountsCorrections) {
  const uint16_t port = static_cast<uint16_t>(server_->http_port());
  auto stub = v1::LycheeService::NewStub(
      grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(stub->GetServerInfo(&context, {}, &info).ok());
    const std::vector<std::string> policies(info.policies().begin(), info.policies().end());
    EXPECT_EQ(policies,
              (std::vector<std::string>{"dense", "streaming", "quest", "lychee", "prhs"}));
  }
  for (const std::string mode : {"block", "token"}) {
    SCOPED_TRACE(mode);
    v1::GenerateRequest request;
    request.set_text(LongPrompt());
    request.mutable_sampling_params()->set_temperature(0);
    request.mutable_sampling_params()->set_max_tokens(12);
    v1::SparsityPolicy* policy = request.mutable_policy();
    policy->set_name("lychee");
    policy->set_budget_tokens(64);
    policy->set_audit_rate(1);
    policy->mutable_lychee()->set_mode(mode);
    policy->mutable_lychee()->set_sink_tokens(4);
    policy->mutable_lychee()->set_local_tokens(16);
    policy->mutable_lychee()->set_correction_interval(4);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    v1::GenerateComplete complete;
    while (reader->Read(&response)) {
      if (response.has_complete()) complete = response.complete();
    }
    const grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_TRUE(complete.has_policy_report());
    const Report r = FromProto(complete.policy_report());
    ExpectAuditedReport(r, "lychee");
    EXPECT_GT(r.reused, 0);  // the sparse heads of layers 1-4
    EXPECT_LT(r.kv_read_fraction, 1.0);
    EXPECT_GT(complete.policy_report().cache_corrections(), 0);
  }
  const HttpReply reply = Post(port, "/v1/completions",
                               {{"prompt", LongPrompt()},
                                {"max_tokens", 8},
                                {"temperature", 0},
                                {"policy", {{"name", "lychee"}, {"budget_tokens", 64}}}});
  ASSERT_EQ(reply.status, 200) << reply.body.dump();
  EXPECT_EQ(reply.body["usage"]["policy_report"]["policy"], "lychee");
  EXPECT_EQ(reply.body["usage"]["policy_report"]["audited_steps"], 0);  // audit_rate 0
  EXPECT_EQ(reply.body["usage"]["policy_report"]["max_exact"], -1.0);

  auto scrape = testing::Fetch("127.0.0.1", port, "GET", "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  const std::string lychee = R"(model="stories260K",policy="lychee")";
  EXPECT_GT(Sample(scrape->body, "lychee_cache_corrections_total", lychee), 0) << scrape->body;
  EXPECT_GT(Sample(scrape->body, "lychee_policy_reused_selections_total", lychee), 0);
  EXPECT_GT(Sample(scrape->body, "lychee_dropped_mass_bound_count", lychee), 0);
}

}  // namespace
}  // namespace lychee
