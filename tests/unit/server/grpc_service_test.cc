// SPDX-License-Identifier: Apache-2.0
// LycheeService over loopback with a FakeEngine (grpc_fake_engine.h): streaming, validation and
// error mapping, Abort RPC, client cancellation and deadlines reaching the engine, slow readers,
// concurrency, health, draining and shutdown with live streams. No model runs here; the real
// engine is exercised by tests/integration.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "server/grpc/grpc_server.h"
#include "server/security/api_keys.h"
#include "tests/unit/server/grpc_fake_engine.h"

namespace lychee::grpc_server {
namespace {

using testing::FakeEngine;

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> responses;
  std::string text;
  int64_t num_tokens = 0;
  std::string finish_reason;
};

class GrpcServiceTest : public ::testing::Test {
 protected:
  void StartServer(absl::Duration token_interval = absl::Milliseconds(1),
                   const PolicySpec& default_policy = {}) {
    engine_ = std::make_unique<FakeEngine>(token_interval);
    auto server = GrpcServer::Start(*engine_, {.host = "127.0.0.1",
                                               .port = 0,
                                               .server_version = "test",
                                               .default_policy = default_policy,
                                               .policies = {"dense", "quest", "prhs"}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::LycheeService::NewStub(channel_);
  }
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Now() + absl::Seconds(5));
    server_.reset();
    engine_.reset();
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int max_tokens,
                                         const std::string& id = "") {
    v1::GenerateRequest r;
    r.set_request_id(id);
    r.set_text(text);
    r.mutable_sampling_params()->set_temperature(0);
    r.mutable_sampling_params()->set_max_tokens(max_tokens);
    return r;
  }

  StreamResult RunStream(const v1::GenerateRequest& request,
                         absl::Duration timeout = absl::Seconds(20)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return Drain(context, request);
  }

  StreamResult Drain(grpc::ClientContext& context, const v1::GenerateRequest& request) {
    StreamResult result;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_chunk()) {
        result.text += response.chunk().text();
        result.num_tokens += response.chunk().token_ids_size();
      }
      if (response.has_complete()) result.finish_reason = response.complete().finish_reason();
      result.responses.push_back(response);
    }
    result.status = reader->Finish();
    return result;
  }

  std::unique_ptr<FakeEngine> engine_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LycheeService::Stub> stub_;
};

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return condition();
}

TEST_F(GrpcServiceTest, StreamsChunksThenComplete) {
  StreamResult r = RunStream(TextRequest("Once upon a time", 5, "req-1"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.num_tokens, 5);
  EXPECT_EQ(r.text, "w0 w1 w2 w3 w4 ");
  EXPECT_EQ(r.finish_reason, "length");
  ASSERT_FALSE(r.responses.empty());
  EXPECT_TRUE(r.responses.back().has_complete());
  for (const auto& response : r.responses) EXPECT_EQ(response.request_id(), "req-1");
  const v1::GenerateComplete& complete = r.responses.back().complete();
  EXPECT_EQ(complete.completion_tokens(), 5);
  EXPECT_GT(complete.prompt_tokens(), 0);
  // The engine got the tokenized prompt and the sampling parameters.
  const auto submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0].prompt, engine_->tokenizer().Encode("Once upon a time", true));
  EXPECT_EQ(submitted[0].max_tokens, 5);
  EXPECT_EQ(submitted[0].sampling.temperature, 0.0f);
  EXPECT_NE(submitted[0].deadline, absl::InfiniteFuture());
}

TEST_F(GrpcServiceTest, TokenIdsInputAndDefaults) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(1);
  request.mutable_token_ids()->add_ids(300);
  StreamResult r = RunStream(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.num_tokens, 16);  // max_tokens default
  const auto submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0].prompt, (std::vector<int32_t>{1, 300}));
  EXPECT_EQ(submitted[0].sampling.temperature, 1.0f);
  EXPECT_EQ(submitted[0].sampling.top_p, 1.0f);
  EXPECT_FALSE(submitted[0].sampling.has_seed);
  EXPECT_TRUE(submitted[0].skip_special_tokens);
  EXPECT_EQ(submitted[0].policy.name, "dense");
  // The server assigned a random id (not a guessable sequence), and every response carries it.
  ASSERT_FALSE(r.responses.empty());
  EXPECT_EQ(r.responses[0].request_id(), submitted[0].request_id);
  EXPECT_EQ(r.responses[0].request_id().rfind("req-", 0), 0u);
  EXPECT_EQ(r.responses[0].request_id().size(), 4u + 32u);
}

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest&)> mutate;
  const char* field;
};

TEST_F(GrpcServiceTest, MalformedInputIsInvalidArgumentNamingTheField) {
  const std::vector<BadCase> cases = {
      {"no input", [](auto& r) { r.clear_input(); }, "input"},
      {"empty text", [](auto& r) { r.set_text(""); }, "text"},
      {"empty ids", [](auto& r) { r.mutable_token_ids(); }, "token_ids"},
      {"id too big",
       [](auto& r) { r.mutable_token_ids()->add_ids(1), r.mutable_token_ids()->add_ids(99999); },
       "token_ids[1]"},
      {"negative id", [](auto& r) { r.mutable_token_ids()->add_ids(-1); }, "token_ids[0]"},
      {"temperature", [](auto& r) { r.mutable_sampling_params()->set_temperature(-1); },
       "sampling_params.temperature"},
      {"nan temperature",
       [](auto& r) { r.mutable_sampling_params()->set_temperature(std::nanf("")); },
       "sampling_params.temperature"},
      {"top_p", [](auto& r) { r.mutable_sampling_params()->set_top_p(0); },
       "sampling_params.top_p"},
      {"top_k", [](auto& r) { r.mutable_sampling_params()->set_top_k(-5); },
       "sampling_params.top_k"},
      {"min_p", [](auto& r) { r.mutable_sampling_params()->set_min_p(2); },
       "sampling_params.min_p"},
      {"repetition", [](auto& r) { r.mutable_sampling_params()->set_repetition_penalty(0); },
       "sampling_params.repetition_penalty"},
      {"presence", [](auto& r) { r.mutable_sampling_params()->set_presence_penalty(3); },
       "sampling_params.presence_penalty"},
      {"frequency", [](auto& r) { r.mutable_sampling_params()->set_frequency_penalty(-3); },
       "sampling_params.frequency_penalty"},
      {"max_tokens 0", [](auto& r) { r.mutable_sampling_params()->set_max_tokens(0); },
       "sampling_params.max_tokens"},
      {"max_tokens <0", [](auto& r) { r.mutable_sampling_params()->set_max_tokens(-7); },
       "sampling_params.max_tokens"},
      {"min_tokens", [](auto& r) { r.mutable_sampling_params()->set_min_tokens(100); },
       "sampling_params.min_tokens"},
      {"empty stop", [](auto& r) { r.mutable_sampling_params()->add_stop(""); },
       "sampling_params.stop[0]"},
      {"stop id", [](auto& r) { r.mutable_sampling_params()->add_stop_token_ids(1 << 20); },
       "sampling_params.stop_token_ids[0]"},
      {"logprobs", [](auto& r) { r.mutable_sampling_params()->set_top_logprobs(21); },
       "sampling_params.top_logprobs"},
      {"budget", [](auto& r) { r.mutable_policy()->set_budget_tokens(-1); },
       "policy.budget_tokens"},
      {"dropped mass", [](auto& r) { r.mutable_policy()->set_max_dropped_mass(1.5); },
       "policy.max_dropped_mass"},
      {"request id", [](auto& r) { r.set_request_id("has space"); }, "request_id"},
      {"long request id", [](auto& r) { r.set_request_id(std::string(300, 'x')); }, "request_id"},
      {"prompt too long",
       [](auto& r) {
         for (int i = 0; i < 300; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "max_model_len"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest request = TextRequest("hello", 4);
    c.mutate(request);
    StreamResult r = RunStream(request);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_NE(r.status.error_message().find(c.field), std::string::npos)
        << c.name << ": " << r.status.error_message();
    EXPECT_TRUE(r.responses.empty()) << c.name;
  }
  EXPECT_TRUE(engine_->submitted().empty());
  // The server still serves.
  StreamResult ok = RunStream(TextRequest("hello", 3));
  EXPECT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.num_tokens, 3);
}

TEST_F(GrpcServiceTest, EngineErrorsMapToGrpcCodes) {
  const std::vector<std::pair<absl::StatusCode, grpc::StatusCode>> cases = {
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
  };
  for (const auto& [absl_code, grpc_code] : cases) {
    const std::string id = "fail-" + std::to_string(static_cast<int>(absl_code));
    StreamResult r = RunStream(TextRequest("hi", 2, id));
    EXPECT_EQ(r.status.error_code(), grpc_code) << id;
    EXPECT_EQ(r.status.error_message(), "fake engine refuses");
  }
}

TEST_F(GrpcServiceTest, DuplicateLiveIdIsAlreadyExists) {
  TearDown();
  StartServer(absl::Milliseconds(20));
  grpc::ClientContext first;
  auto reader = stub_->Generate(&first, TextRequest("a", 1000, "dup"));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  StreamResult second = RunStream(TextRequest("b", 2, "dup"));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  first.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(GrpcServiceTest, AbortRpcEndsTheStreamWithAbort) {
  TearDown();
  StartServer(absl::Milliseconds(10));
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("a", 100000, "to-abort"));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_chunk());

  grpc::ClientContext abort_context;
  v1::AbortRequest abort;
  abort.add_request_ids("to-abort");
  abort.add_request_ids("unknown-id");
  v1::AbortResponse abort_response;
  ASSERT_TRUE(stub_->Abort(&abort_context, abort, &abort_response).ok());

  std::string finish_reason;
  while (reader->Read(&response)) {
    if (response.has_complete()) finish_reason = response.complete().finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(finish_reason, "abort");
  EXPECT_TRUE(engine_->WasAborted("to-abort"));
}

TEST_F(GrpcServiceTest, ClientCancellationAbortsInTheEngine) {
  TearDown();
  StartServer(absl::Milliseconds(10));
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("a", 100000, "cancel-me"));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return engine_->WasAborted("cancel-me"); }));
  EXPECT_TRUE(WaitFor([&] { return !engine_->IsLive("cancel-me"); }));
  EXPECT_TRUE(WaitFor([&] { return server_->num_live_streams() == 0; }));
}

TEST_F(GrpcServiceTest, DeadlineExceededAbortsInTheEngine) {
  TearDown();
  StartServer(absl::Milliseconds(10));
  const absl::Time before = absl::Now();
  StreamResult r = RunStream(TextRequest("a", 100000, "slow"), absl::Milliseconds(300));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(absl::Now() - before, absl::Seconds(5));
  EXPECT_FALSE(r.responses.empty());  // it streamed until the deadline
  const auto submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_LT(submitted[0].deadline, before + absl::Seconds(2));  // the deadline reached the engine
  EXPECT_TRUE(WaitFor([&] { return !engine_->IsLive("slow"); }));
}

TEST_F(GrpcServiceTest, SlowReaderGetsEverythingCoalesced) {
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("a", 200, "slow-reader"));
  v1::GenerateResponse response;
  int64_t tokens = 0;
  int messages = 0;
  std::string finish_reason;
  while (reader->Read(&response)) {
    if (++messages < 5) absl::SleepFor(absl::Milliseconds(50));
    tokens += response.has_chunk() ? response.chunk().token_ids_size() : 0;
    if (response.has_complete()) finish_reason = response.complete().finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 200);
  EXPECT_EQ(finish_reason, "length");
  EXPECT_LE(messages, 201);  // at most one chunk per token plus the complete message
}

TEST_F(GrpcServiceTest, ConcurrentStreams) {
  constexpr int kStreams = 16;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = RunStream(TextRequest("x", 10 + i, "c" + std::to_string(i))); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(results[i].status.ok()) << i;
    EXPECT_EQ(results[i].num_tokens, 10 + i);
    EXPECT_EQ(results[i].finish_reason, "length");
  }
}

// Many streams ending every way at once (complete, Abort RPC, client cancel, deadline, slow
// reader): every call ends, nothing leaks, and the service keeps serving.
TEST_F(GrpcServiceTest, StressEveryWayOfEndingAtOnce) {
  TearDown();
  StartServer(absl::Milliseconds(1));
  constexpr int kStreams = 48;
  std::vector<std::thread> threads;
  std::atomic<int> ended{0};
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      const std::string id = "stress-" + std::to_string(i);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(
          absl::Now() + (i % 5 == 3 ? absl::Milliseconds(20 + i) : absl::Seconds(30))));
      auto reader = stub_->Generate(&context, TextRequest("x", i % 5 == 0 ? 30 : 5000, id));
      v1::GenerateResponse response;
      int read = 0;
      while (reader->Read(&response)) {
        ++read;
        if (i % 5 == 1 && read == 3) context.TryCancel();
        if (i % 5 == 2 && read == 2) {
          grpc::ClientContext abort_context;
          v1::AbortRequest abort;
          abort.add_request_ids(id);
          v1::AbortResponse abort_response;
          stub_->Abort(&abort_context, abort, &abort_response);
        }
        if (i % 5 == 4) {
          absl::SleepFor(absl::Milliseconds(2));
          if (read == 40) context.TryCancel();
        }
      }
      reader->Finish();
      ++ended;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ended.load(), kStreams);
  EXPECT_TRUE(WaitFor([&] { return server_->num_live_streams() == 0; }, absl::Seconds(10)));
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(WaitFor([&] { return !engine_->IsLive("stress-" + std::to_string(i)); })) << i;
  }
  StreamResult ok = RunStream(TextRequest("still", 3));
  EXPECT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.num_tokens, 3);
}

TEST_F(GrpcServiceTest, TokenizeDetokenizeAndInfo) {
  grpc::ClientContext c1;
  v1::TokenizeRequest tok;
  tok.set_text("Once upon a time");
  v1::TokenizeResponse tok_response;
  ASSERT_TRUE(stub_->Tokenize(&c1, tok, &tok_response).ok());
  EXPECT_EQ(std::vector<int32_t>(tok_response.token_ids().begin(), tok_response.token_ids().end()),
            engine_->tokenizer().Encode("Once upon a time", true));
  EXPECT_EQ(tok_response.tokens_size(), tok_response.token_ids_size());

  grpc::ClientContext c2;
  v1::DetokenizeRequest detok;
  *detok.mutable_token_ids() = tok_response.token_ids();
  v1::DetokenizeResponse detok_response;
  ASSERT_TRUE(stub_->Detokenize(&c2, detok, &detok_response).ok());
  EXPECT_EQ(detok_response.text(), "Once upon a time");

  grpc::ClientContext c3;
  detok.add_token_ids(1 << 30);
  grpc::Status bad = stub_->Detokenize(&c3, detok, &detok_response);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("token_ids["), std::string::npos);

  grpc::ClientContext c4;
  v1::GetModelInfoResponse model;
  ASSERT_TRUE(stub_->GetModelInfo(&c4, {}, &model).ok());
  EXPECT_EQ(model.model_id(), "fake-stories");
  EXPECT_EQ(model.vocab_size(), 512);
  EXPECT_EQ(model.max_context_length(), 256);

  grpc::ClientContext c5;
  v1::GetServerInfoResponse server;
  ASSERT_TRUE(stub_->GetServerInfo(&c5, {}, &server).ok());
  EXPECT_EQ(server.server_version(), "test");
  EXPECT_FALSE(server.is_draining());

  grpc::ClientContext c6;
  v1::GetLoadsResponse loads;
  ASSERT_TRUE(stub_->GetLoads(&c6, {}, &loads).ok());
  EXPECT_EQ(loads.num_kv_blocks_total(), 100);
  EXPECT_EQ(loads.max_total_num_tokens(), 1600);
  EXPECT_DOUBLE_EQ(loads.kv_usage(), 0.07);
}

// One unary call of `method` with `bytes` as the request message, over the generic stub (so
// the bytes need not be a valid message). Server-streaming Generate works this way too: the
// status is what matters. `authorization`, when set, is sent as that metadata.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& bytes, grpc::ByteBuffer* response = nullptr,
                     const std::string& authorization = "") {
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::CompletionQueue cq;
  auto call = generic.PrepareUnaryCall(&context, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer received;
  grpc::Status status;
  call->Finish(&received, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (response != nullptr) *response = received;
  return status;
}

constexpr char kGarbage[] = "\xff\xff\xff\x0f\x12\x99garbage";

// Garbage bytes on every method are INVALID_ARGUMENT naming the message type, not gRPC's own
// UNIMPLEMENTED with empty details (grpc/grpc#30454), and the server keeps serving.
TEST_F(GrpcServiceTest, GarbageBytesAreInvalidArgumentOnEveryMethod) {
  const std::string garbage(kGarbage, sizeof(kGarbage) - 1);
  for (const std::string method : {"Generate", "Abort", "Tokenize", "Detokenize", "GetModelInfo",
                                   "GetServerInfo", "GetLoads"}) {
    const grpc::Status status = RawCall(channel_, "/lychee.v1.LycheeService/" + method, garbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_NE(status.error_message().find("is not a valid lychee.v1." + method + "Request"),
              std::string::npos)
        << method << ": " << status.error_message();
  }
  // A truncated valid message (a length prefix promising more bytes) does not parse either.
  v1::TokenizeRequest tokenize;
  tokenize.set_text("Once upon a time");
  const std::string encoded = tokenize.SerializeAsString();
  EXPECT_EQ(
      RawCall(channel_, "/lychee.v1.LycheeService/Tokenize", encoded.substr(0, 5)).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
  // The same bytes, whole, go through: the raw methods parse and serialize real messages.
  grpc::ByteBuffer response_bytes;
  ASSERT_TRUE(
      RawCall(channel_, "/lychee.v1.LycheeService/Tokenize", encoded, &response_bytes).ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response_bytes.Dump(&slices).ok());
  std::string response_wire;
  for (const grpc::Slice& s : slices) {
    response_wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(tokens.ParseFromString(response_wire));
  EXPECT_EQ(std::vector<int32_t>(tokens.token_ids().begin(), tokens.token_ids().end()),
            engine_->tokenizer().Encode("Once upon a time", true));
  // An empty message is a valid one (every field unset): GetLoads answers.
  EXPECT_TRUE(RawCall(channel_, "/lychee.v1.LycheeService/GetLoads", "").ok());
  // Still serving streams.
  StreamResult after = RunStream(TextRequest("still here", 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.num_tokens, 4);
}

// With API keys, a call without one is UNAUTHENTICATED before its bytes are looked at; with
// one, garbage is INVALID_ARGUMENT. Both are counted as rejections with their reason.
TEST_F(GrpcServiceTest, GarbageBytesAreCheckedAfterAuthenticationAndCounted) {
  TearDown();
  engine_ = std::make_unique<FakeEngine>(absl::Milliseconds(1));
  const security::ApiKeys keys({"secret-key"});
  std::mutex mu;
  std::vector<std::string> rejections;
  auto server = GrpcServer::Start(
      *engine_,
      {.host = "127.0.0.1",
       .port = 0,
       .server_version = "test",
       .api_keys = &keys,
       .on_reject = [&](std::string_view reason, std::string_view method, const grpc::Status&) {
         std::lock_guard<std::mutex> lock(mu);
         rejections.push_back(std::string(method) + ":" + std::string(reason));
       }});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  const std::string garbage(kGarbage, sizeof(kGarbage) - 1);
  for (const std::string method : {"Generate", "Tokenize"}) {
    const std::string path = "/lychee.v1.LycheeService/" + method;
    EXPECT_EQ(RawCall(channel_, path, garbage).error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method;
    EXPECT_EQ(RawCall(channel_, path, garbage, nullptr, "Bearer secret-key").error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << method;
  }
  // The keys and the hook are locals: stop the server before they go.
  server_->Shutdown(absl::Now() + absl::Seconds(5));
  server_.reset();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(rejections,
            (std::vector<std::string>{"Generate:unauthenticated", "Generate:invalid_request",
                                      "Tokenize:unauthenticated", "Tokenize:invalid_request"}));
}

grpc::health::v1::HealthCheckResponse::ServingStatus Health(grpc::Channel* channel,
                                                            const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return response.status();
}

// The server's default_policy fills what a request leaves unset, and GetServerInfo shows it.
TEST_F(GrpcServiceTest, DefaultPolicyFillsUnsetFieldsAndIsListed) {
  TearDown();
  PolicySpec defaults;
  defaults.name = "quest";
  defaults.budget_tokens = 64;
  defaults.audit_rate = 0.5;
  defaults.prhs.tau = 0.95;
  StartServer(absl::Milliseconds(1), defaults);

  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
  EXPECT_EQ(std::vector<std::string>(info.policies().begin(), info.policies().end()),
            (std::vector<std::string>{"dense", "quest", "prhs"}));
  EXPECT_EQ(info.default_policy().name(), "quest");
  EXPECT_EQ(info.default_policy().budget_tokens(), 64);
  EXPECT_DOUBLE_EQ(info.default_policy().audit_rate(), 0.5);
  EXPECT_DOUBLE_EQ(info.default_policy().max_dropped_mass(), 1.0);
  EXPECT_DOUBLE_EQ(info.default_policy().prhs().tau(), 0.95);
  EXPECT_EQ(info.default_policy().lychee().mode(), "block");

  v1::GenerateRequest request = TextRequest("hi", 2, "named-prhs");
  request.mutable_policy()->set_name("prhs");
  request.mutable_policy()->mutable_prhs()->set_dilation(2);
  ASSERT_TRUE(RunStream(request).status.ok());
  ASSERT_TRUE(RunStream(TextRequest("hi", 2, "no-policy")).status.ok());
  const std::vector<GenerationRequest> submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 2u);
  EXPECT_EQ(submitted[0].policy.name, "prhs");
  EXPECT_EQ(submitted[0].policy.budget_tokens, 64);
  EXPECT_DOUBLE_EQ(submitted[0].policy.audit_rate, 0.5);
  EXPECT_DOUBLE_EQ(submitted[0].policy.prhs.tau, 0.95);
  EXPECT_EQ(submitted[0].policy.prhs.dilation, 2);
  EXPECT_EQ(submitted[1].policy.name, "quest");
}

TEST_F(GrpcServiceTest, HealthAndDrain) {
  using HC = grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(Health(channel_.get(), ""), HC::SERVING);
  EXPECT_EQ(Health(channel_.get(), "lychee.v1.LycheeService"), HC::SERVING);
  server_->BeginDrain();
  EXPECT_EQ(Health(channel_.get(), ""), HC::NOT_SERVING);
  StreamResult r = RunStream(TextRequest("hi", 2));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
  EXPECT_TRUE(info.is_draining());
}

TEST_F(GrpcServiceTest, ShutdownLetsShortStreamsFinishAndCancelsLongOnes) {
  TearDown();
  StartServer(absl::Milliseconds(5));
  StreamResult short_result, long_result;
  std::thread short_client([&] { short_result = RunStream(TextRequest("a", 20, "short")); });
  std::thread long_client([&] { long_result = RunStream(TextRequest("a", 100000, "long")); });
  ASSERT_TRUE(WaitFor([&] { return engine_->IsLive("short") && engine_->IsLive("long"); }));
  server_->BeginDrain();
  server_->Shutdown(absl::Now() + absl::Milliseconds(500));
  short_client.join();
  long_client.join();
  EXPECT_TRUE(short_result.status.ok()) << short_result.status.error_message();
  EXPECT_EQ(short_result.num_tokens, 20);
  EXPECT_FALSE(long_result.status.ok());
  EXPECT_TRUE(WaitFor([&] { return engine_->WasAborted("long"); }));
}

}  // namespace
}  // namespace lychee::grpc_server
