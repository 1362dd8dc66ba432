// SPDX-License-Identifier: Apache-2.0
// OpenAiGateway on a real HttpServer over a scripted engine (grpc_fake_engine.h): what the real
// model cannot show on demand. Engine refusals map to 429/503/409 in OpenAI's error shape;
// draining answers 503 while /v1/models still serves; SSE comment pings flow while the engine
// is silent; a client that hangs up mid-stream is aborted in the engine; the in-flight cap
// answers 429; the response id is the engine request id (X-Request-Id: "x" gives "cmpl-x", as
// the hang-up test uses); the gateway's destructor ends live streams; bodies not declared JSON
// get 415; token counts reach the access log's record.
#include "server/openai/openai_gateway.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "server/http/http_server.h"
#include "tests/unit/server/grpc_fake_engine.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee::openai {
namespace {

using json = nlohmann::json;

// FakeEngine, plus a status that the next Submit returns instead of streaming.
class ScriptedEngine final : public EngineClient {
 public:
  explicit ScriptedEngine(absl::Duration token_interval) : fake_(token_interval) {}
  absl::StatusOr<TokenStreamPtr> Submit(GenerationRequest request) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_error_.has_value()) {
        absl::Status error = *next_error_;
        next_error_.reset();
        return error;
      }
    }
    return fake_.Submit(std::move(request));
  }
  void Abort(const std::string& id) override { fake_.Abort(id); }
  EngineStats Stats() const override { return fake_.Stats(); }
  const ModelInfo& model_info() const override { return fake_.model_info(); }
  const Tokenizer& tokenizer() const override { return fake_.tokenizer(); }

  void FailNextSubmit(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    next_error_ = std::move(status);
  }
  testing::FakeEngine& fake() { return fake_; }

 private:
  testing::FakeEngine fake_;
  std::mutex mu_;
  std::optional<absl::Status> next_error_;
};

class OpenAiGatewayTest : public ::testing::Test {
 protected:
  void Start(absl::Duration token_interval, GatewayOptions options = {}) {
    engine_ = std::make_unique<ScriptedEngine>(token_interval);
    options.is_draining = [this] { return draining_.load(); };
    gateway_ = std::make_unique<OpenAiGateway>(
        *engine_, ChatPrompt::Load("models/stories260K", engine_->tokenizer()), options);
    server_ = std::make_unique<http::HttpServer>(
        http::HttpServerOptions{.address = "127.0.0.1", .port = 0, .on_response = on_response_});
    gateway_->AddRoutes(server_->router());
    ASSERT_TRUE(server_->Start().ok());
    port_ = static_cast<uint16_t>(server_->port());
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    gateway_.reset();
    engine_.reset();
  }

  absl::StatusOr<testing::ClientResponse> Post(const std::string& path, const json& body) {
    return testing::Fetch("127.0.0.1", port_, "POST", path, body.dump());
  }

  // A raw connection that sent `body` to /v1/completions and has read the response head.
  int OpenStream(const json& body, const std::string& request_id) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval tv{.tv_sec = 10, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const std::string text = body.dump();
    const std::string request =
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "X-Request-Id: " +
        request_id + "\r\nContent-Length: " + std::to_string(text.size()) + "\r\n\r\n" + text;
    EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
    std::string received;
    char buffer[256];
    while (received.find("data: ") == std::string::npos) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      received.append(buffer, static_cast<size_t>(n));
    }
    EXPECT_NE(received.find("text/event-stream"), std::string::npos) << received;
    return fd;
  }

  static bool WaitFor(const std::function<bool()>& condition) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!condition() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    return condition();
  }

  // A POST of `body` with `content_type` ("": no Content-Type header) on a connection of its own;
  // returns the raw response.
  std::string PostRaw(const std::string& path, const std::string& content_type,
                      const std::string& body) const {
    std::string request = "POST " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
    if (!content_type.empty()) request += "Content-Type: " + content_type + "\r\n";
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    absl::StatusOr<std::string> response = testing::RawExchange(port_, request);
    return response.ok() ? *response : response.status().ToString();
  }

  std::function<void(const http::ResponseRecord&)> on_response_;  // set before Start
  std::unique_ptr<ScriptedEngine> engine_;
  std::unique_ptr<OpenAiGateway> gateway_;
  std::unique_ptr<http::HttpServer> server_;
  std::atomic<bool> draining_{false};
  uint16_t port_ = 0;
};

TEST_F(OpenAiGatewayTest, EngineRefusalsMapToHttpStatuses) {
  Start(absl::Milliseconds(1));
  struct Case {
    absl::Status status;
    int http_status;
    std::string type;
  };
  const std::vector<Case> cases = {
      {absl::ResourceExhaustedError("the waiting queue is full"), 429, "rate_limit_error"},
      {absl::UnavailableError("the server is shutting down"), 503, "service_unavailable_error"},
      {absl::AlreadyExistsError("request_id 'x' is already running"), 409, "invalid_request_error"},
      {absl::InvalidArgumentError("policy.name: unknown sparsity policy"), 400,
       "invalid_request_error"},
  };
  for (const Case& c : cases) {
    for (bool stream : {false, true}) {
      engine_->FailNextSubmit(c.status);
      auto r = Post("/v1/completions", {{"prompt", "Once"}, {"stream", stream}});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->status, c.http_status) << r->body;
      const json body = json::parse(r->body);
      EXPECT_EQ(body["error"]["type"], c.type);
      EXPECT_EQ(body["error"]["message"], std::string(c.status.message()));
      // Overload and draining are temporary: the client is told when to retry.
      const bool temporary = c.http_status == 429 || c.http_status == 503;
      EXPECT_EQ(r->Header("retry-after"), temporary ? "1" : "") << c.http_status;
    }
  }
  engine_->FailNextSubmit(absl::InvalidArgumentError("policy.name: unknown sparsity policy"));
  auto r = Post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "policy.name");
}

TEST_F(OpenAiGatewayTest, DrainingAnswers503AndModelsStillServe) {
  Start(absl::Milliseconds(1));
  draining_ = true;
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    auto r = Post(path, {{"prompt", "x"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 503) << path << " " << r->body;
  }
  auto models = testing::Fetch("127.0.0.1", port_, "GET", "/v1/models");
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(models->status, 200);
  EXPECT_TRUE(engine_->fake().submitted().empty());
}

TEST_F(OpenAiGatewayTest, PingsFlowWhileTheEngineIsSilent) {
  Start(absl::Milliseconds(150),
        {.poll_interval = absl::Milliseconds(10), .ping_interval = absl::Milliseconds(20)});
  auto r = Post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 3}, {"stream", true}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find(": ping\n\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"text\":\"w2 \""), std::string::npos) << r->body;
  EXPECT_EQ(r->body.substr(r->body.size() - 14), "data: [DONE]\n\n");
}

TEST_F(OpenAiGatewayTest, ClientHangingUpAbortsTheRequest) {
  Start(absl::Milliseconds(5),
        {.poll_interval = absl::Milliseconds(10), .ping_interval = absl::Milliseconds(20)});
  const int fd = OpenStream({{"prompt", "Once"}, {"max_tokens", 200}, {"stream", true}}, "gone-1");
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return engine_->fake().WasAborted("cmpl-gone-1"); }));
  EXPECT_TRUE(WaitFor([&] { return gateway_->num_live_requests() == 0; }));
}

TEST_F(OpenAiGatewayTest, InFlightCapAnswers429) {
  Start(absl::Milliseconds(5),
        {.max_concurrent_requests = 1, .poll_interval = absl::Milliseconds(10)});
  const int fd = OpenStream({{"prompt", "Once"}, {"max_tokens", 200}, {"stream", true}}, "one");
  EXPECT_EQ(gateway_->num_live_requests(), 1);
  auto r = Post("/v1/completions", {{"prompt", "x"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_NE(r->body.find("too many requests in flight"), std::string::npos);
  EXPECT_EQ(r->Header("retry-after"), "1");
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return gateway_->num_live_requests() == 0; }));
}

TEST_F(OpenAiGatewayTest, ResponseIdIsTheEngineRequestId) {
  Start(absl::Milliseconds(1));
  auto r = testing::Fetch("127.0.0.1", port_, "POST", "/v1/completions",
                          R"({"prompt": "Once", "max_tokens": 2})");
  ASSERT_TRUE(r.ok());
  const std::string generated = json::parse(r->body)["id"];
  EXPECT_EQ(generated.rfind("cmpl-", 0), 0u);
  EXPECT_EQ(generated.size(), 5u + 32u);
  const std::vector<GenerationRequest> submitted = engine_->fake().submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0].request_id, generated);
  EXPECT_EQ(submitted[0].max_tokens, 2);
  EXPECT_EQ(submitted[0].prompt.front(), 1);  // BOS, as the tokenizer adds it to plain text
}

// Issue 15: client priorities are clamped to min_priority, and requests are registered under
// their principal (for gRPC Abort) while they run.
TEST_F(OpenAiGatewayTest, PriorityIsClampedAndRequestsAreOwned) {
  security::RequestOwners owners;
  Start(absl::Milliseconds(1),
        {.principal_of = [](const http::HttpRequest&) { return std::string("key#7"); },
         .owners = &owners,
         .min_priority = 0});
  for (int priority : {-1000, 5}) {
    auto r =
        Post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 2}, {"priority", priority}});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 200) << r->body;
  }
  const std::vector<GenerationRequest> submitted = engine_->fake().submitted();
  ASSERT_EQ(submitted.size(), 2u);
  EXPECT_EQ(submitted[0].priority, 0);                       // raised to min_priority
  EXPECT_EQ(submitted[1].priority, 5);                       // yielding is allowed
  EXPECT_TRUE(WaitFor([&] { return owners.size() == 0; }));  // released as the requests end

  const int fd = OpenStream({{"prompt", "Once"}, {"max_tokens", 200}, {"stream", true}}, "mine");
  EXPECT_TRUE(owners.IsOwner("cmpl-mine", "key#7"));
  EXPECT_FALSE(owners.IsOwner("cmpl-mine", "key#8"));
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return owners.size() == 0; }));
}

TEST_F(OpenAiGatewayTest, DestructorEndsLiveStreams) {
  Start(absl::Milliseconds(5), {.poll_interval = absl::Milliseconds(10)});
  const int fd = OpenStream({{"prompt", "Once"}, {"max_tokens", 200}, {"stream", true}}, "live");
  EXPECT_EQ(gateway_->num_live_requests(), 1);
  gateway_.reset();  // the HTTP server still runs: the worker must stop on its own
  EXPECT_TRUE(engine_->fake().WasAborted("cmpl-live"));
  server_->Shutdown();
  close(fd);
}

// Issue 15: a web page may POST cross-origin without a CORS preflight as text/plain, form data
// or without a type; such bodies are refused (415, OpenAI's error shape) and never run. Only a
// declared JSON body is served.
TEST_F(OpenAiGatewayTest, BodiesThatAreNotDeclaredJsonAre415) {
  Start(absl::Milliseconds(1));
  const std::string body = R"({"prompt": "Once", "max_tokens": 2,
                               "messages": [{"role": "user", "content": "x"}]})";
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    for (const char* type : {"text/plain", "text/plain;charset=UTF-8",
                             "application/x-www-form-urlencoded", "multipart/form-data", ""}) {
      const std::string response = PostRaw(path, type, body);
      EXPECT_EQ(response.rfind("HTTP/1.1 415 ", 0), 0u) << path << " " << type << ": " << response;
      const std::string json_body = response.substr(response.find("\r\n\r\n") + 4);
      const json error = json::parse(json_body)["error"];
      EXPECT_EQ(error["type"], "invalid_request_error");
      EXPECT_EQ(error["code"], "unsupported_media_type");
      EXPECT_NE(error["message"].get<std::string>().find("application/json"), std::string::npos);
    }
    const std::string served = PostRaw(path, "Application/JSON; charset=utf-8", body);
    EXPECT_EQ(served.rfind("HTTP/1.1 200 ", 0), 0u) << served;
  }
  EXPECT_EQ(engine_->fake().submitted().size(), 2u);  // only the two JSON bodies ran
}

// Issue 15: the access log's token counts reach the server's response hook, for a whole
// response, a stream, and a refusal (unknown).
TEST_F(OpenAiGatewayTest, TokenCountsReachTheResponseRecord) {
  std::mutex mu;
  std::vector<http::ResponseRecord> records;
  on_response_ = [&](const http::ResponseRecord& r) {
    std::lock_guard<std::mutex> lock(mu);
    records.push_back(r);
  };
  Start(absl::Milliseconds(1));
  for (bool stream : {false, true}) {
    auto r = Post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 3}, {"stream", stream}});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->status, 200) << r->body;
  }
  auto refused = Post("/v1/completions", {{"prompt", "Once"}, {"temperature", -1}});
  ASSERT_TRUE(refused.ok());
  ASSERT_EQ(refused->status, 400);
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return records.size() == 3;
  }));
  std::lock_guard<std::mutex> lock(mu);
  const size_t num_prompt = engine_->fake().submitted().at(0).prompt.size();
  int num_served = 0;
  for (const http::ResponseRecord& r : records) {
    EXPECT_GT(r.request_body_bytes, 0u);
    if (r.status == 200) {
      ++num_served;
      EXPECT_EQ(r.prompt_tokens, static_cast<int64_t>(num_prompt));
      EXPECT_EQ(r.completion_tokens, 3);
    } else {
      EXPECT_EQ(r.status, 400);
      EXPECT_EQ(r.prompt_tokens, -1);  // refused before tokenizing: unknown
      EXPECT_EQ(r.completion_tokens, -1);
    }
  }
  EXPECT_EQ(num_served, 2);
}

}  // namespace
}  // namespace lychee::openai
