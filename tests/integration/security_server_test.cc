// SPDX-License-Identifier: Apache-2.0
// Hardening of the real lychee-server (issue 15), on loopback with stories260K and real clients:
// curl for HTTP(S), the C++ gRPC client with and without TLS credentials.
//
// Covers: API keys on both ports (401 in OpenAI's error shape / UNAUTHENTICATED; probes, gRPC
// health and /metrics stay open); keys from flags and a key file; requests belong to their
// caller (another key's Abort is ignored, the same key on another connection may abort);
// random server-assigned ids; a prompt refused by byte size before tokenizing (HTTP 400 and
// gRPC INVALID_ARGUMENT naming max_prompt_bytes) and an oversized body refused by its length
// (413); an invalid X-Request-Id and an empty prompt refused; rejections counted in
// lychee_request_rejected_total{reason} and logged; the access log; the connection cap (503 with
// Retry-After, probes still answered); TLS on both ports (HTTPS with the CA, plaintext to the
// TLS port closed, gRPC over TLS) and mutual TLS (a client without a certificate refused).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/file.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lychee/v1/generate.grpc.pb.h"
#include "tests/integration/server_process.h"
#include "tests/integration/shared_server_test.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::LoopbackServerArgs;
using testing::ServerProcess;

constexpr char kModel[] = "models/stories260K";
constexpr char kKeyOne[] = "sk-test-one";
constexpr char kKeyTwo[] = "sk-test-two";  // from the key file

std::string TempDir() {
  static const std::string dir = [] {
    std::string templ = ::testing::TempDir() + "/lychee_security_XXXXXX";
    char* made = mkdtemp(templ.data());
    return made == nullptr ? std::string("/tmp") : std::string(made);
  }();
  return dir;
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Runs a shell command; returns its stdout (stderr is dropped).
std::string Shell(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  pclose(pipe);
  return out;
}

struct CurlResult {
  int status = 0;  // 0: no HTTP response (connection or TLS failure)
  std::string headers;
  std::string body;
};

// curl with `args` (URL and options); the body is read from `body_file` when set.
CurlResult Curl(const std::string& args, const std::string& body_file = "") {
  static int counter = 0;
  const std::string out = TempDir() + "/curl_body_" + std::to_string(++counter);
  const std::string head = out + ".head";
  std::string command = "curl -sS --max-time 20 -o " + out + " -D " + head + " -w '%{http_code}' ";
  if (!body_file.empty()) {
    command += "-H 'Content-Type: application/json' --data-binary @" + body_file + " ";
  }
  const std::string code = Shell(command + args);
  CurlResult result;
  result.status = std::atoi(code.c_str());
  result.headers = ReadFile(head).value_or("");
  result.body = ReadFile(out).value_or("");
  std::remove(out.c_str());
  std::remove(head.c_str());
  return result;
}

std::string Bearer(const std::string& key) { return "-H 'Authorization: Bearer " + key + "' "; }

std::chrono::system_clock::time_point In(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

v1::GenerateRequest Long(const std::string& id) {
  v1::GenerateRequest r;
  r.set_request_id(id);
  r.set_text("Once upon a time");
  r.mutable_sampling_params()->set_temperature(0);
  r.mutable_sampling_params()->set_max_tokens(400);
  r.mutable_sampling_params()->set_ignore_eos(true);
  return r;
}

struct StreamEnd {
  grpc::Status status;
  std::string finish_reason;
  int64_t completion_tokens = 0;
  std::string request_id;
};

StreamEnd Drain(grpc::ClientReader<v1::GenerateResponse>& reader) {
  StreamEnd end;
  v1::GenerateResponse response;
  while (reader.Read(&response)) {
    end.request_id = response.request_id();
    if (response.has_complete()) {
      end.finish_reason = response.complete().finish_reason();
      end.completion_tokens = response.complete().completion_tokens();
    }
  }
  end.status = reader.Finish();
  return end;
}

class SecurityServerTest : public testing::SharedServerTest<SecurityServerTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() {
    const std::string key_file =
        WriteTemp("keys.txt", std::string("# test keys\n") + kKeyTwo + "\n");
    return LoopbackServerArgs(
        kModel, {"--api-key", kKeyOne, "--api-key-file", key_file, "--access-log", "true"});
  }

 protected:
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(server_->http_port()) + path;
  }
  std::shared_ptr<grpc::Channel> NewChannel() const {
    // A channel argument makes each channel its own connection (no subchannel sharing).
    grpc::ChannelArguments args;
    args.SetInt("lychee.test.channel", ++channels_);
    return grpc::CreateCustomChannel(server_->grpc_address(), grpc::InsecureChannelCredentials(),
                                     args);
  }
  static void Authorize(grpc::ClientContext& context, const std::string& key) {
    context.AddMetadata("authorization", "Bearer " + key);
    context.set_deadline(In(absl::Seconds(60)));
  }
  mutable int channels_ = 0;
};

TEST_F(SecurityServerTest, HttpNeedsAKeyExceptProbesAndMetrics) {
  for (const std::string& auth : {std::string(), Bearer("wrong-key"),
                                  std::string("-H 'Authorization: Basic c2stdGVzdC1vbmU=' ")}) {
    CurlResult r = Curl(auth + Url("/v1/models"));
    EXPECT_EQ(r.status, 401) << auth << r.body;
    json error = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(error.is_object()) << r.body;
    EXPECT_EQ(error["error"]["type"], "authentication_error");
    EXPECT_EQ(error["error"]["code"], "invalid_api_key");
    EXPECT_NE(r.headers.find("WWW-Authenticate: Bearer"), std::string::npos) << r.headers;
  }
  // Unknown paths too: nothing is routed for an unauthenticated client.
  EXPECT_EQ(Curl(Url("/v1/nothing")).status, 401);
  EXPECT_EQ(Curl(Bearer(kKeyOne) + Url("/v1/models")).status, 200);
  EXPECT_EQ(Curl(Bearer(kKeyTwo) + Url("/v1/models")).status, 200);  // from the key file
  const std::string body = WriteTemp("ok.json", R"({"prompt": "Once upon", "max_tokens": 3})");
  CurlResult completion = Curl(Bearer(kKeyTwo) + Url("/v1/completions"), body);
  EXPECT_EQ(completion.status, 200) << completion.body;
  EXPECT_EQ(Curl(Url("/v1/completions"), body).status, 401);
  EXPECT_EQ(Curl(Url("/health")).status, 200);
  EXPECT_EQ(Curl(Url("/ready")).status, 200);
  EXPECT_EQ(Curl(Url("/metrics")).status, 200);  // open unless --metrics-require-auth
}

TEST_F(SecurityServerTest, GrpcNeedsAKeyExceptHealth) {
  auto stub = v1::LycheeService::NewStub(NewChannel());
  {
    grpc::ClientContext context;
    v1::GetModelInfoResponse info;
    const grpc::Status st = stub->GetModelInfo(&context, {}, &info);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  }
  {
    grpc::ClientContext context;
    Authorize(context, "wrong-key");
    v1::GetLoadsResponse loads;
    EXPECT_EQ(stub->GetLoads(&context, {}, &loads).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    Authorize(context, "wrong-key");
    auto reader = stub->Generate(&context, Long(""));
    EXPECT_EQ(Drain(*reader).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    Authorize(context, kKeyOne);
    v1::GetModelInfoResponse info;
    EXPECT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  }
  auto health = grpc::health::v1::Health::NewStub(NewChannel());
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(SecurityServerTest, LycheeClientSendsTheKey) {
  const std::string address = server_->grpc_address();
  testing::ProgramResult without = testing::RunProgram(
      "lychee-client", {"--address", address, "--timeout", "10", "info"}, absl::Seconds(30));
  EXPECT_EQ(without.exit_code, 1) << without.out;
  EXPECT_NE(without.err.find("API key"), std::string::npos) << without.err;
  testing::ProgramResult with = testing::RunProgram(
      "lychee-client", {"--address", address, "--timeout", "10", "--api-key", kKeyTwo, "info"},
      absl::Seconds(30));
  EXPECT_EQ(with.exit_code, 0) << with.err;
  EXPECT_NE(with.out.find("stories260K"), std::string::npos) << with.out;
}

TEST_F(SecurityServerTest, RequestsBelongToTheirKey) {
  auto owner_stub = v1::LycheeService::NewStub(NewChannel());
  auto other_stub = v1::LycheeService::NewStub(NewChannel());
  {
    // Another key's Abort is ignored: the stream runs to its length.
    grpc::ClientContext context;
    Authorize(context, kKeyOne);
    auto reader = owner_stub->Generate(&context, Long("owned-by-one"));
    v1::GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    grpc::ClientContext abort_context;
    Authorize(abort_context, kKeyTwo);
    v1::AbortRequest abort;
    abort.add_request_ids("owned-by-one");
    v1::AbortResponse abort_response;
    ASSERT_TRUE(other_stub->Abort(&abort_context, abort, &abort_response).ok());
    StreamEnd end = Drain(*reader);
    ASSERT_TRUE(end.status.ok()) << end.status.error_message();
    EXPECT_EQ(end.finish_reason, "length");
    EXPECT_EQ(end.completion_tokens, 400);
  }
  {
    // The same key on another connection may abort it.
    grpc::ClientContext context;
    Authorize(context, kKeyOne);
    auto reader = owner_stub->Generate(&context, Long("owned-by-one-again"));
    v1::GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    grpc::ClientContext abort_context;
    Authorize(abort_context, kKeyOne);
    v1::AbortRequest abort;
    abort.add_request_ids("owned-by-one-again");
    v1::AbortResponse abort_response;
    ASSERT_TRUE(other_stub->Abort(&abort_context, abort, &abort_response).ok());
    StreamEnd end = Drain(*reader);
    ASSERT_TRUE(end.status.ok()) << end.status.error_message();
    EXPECT_EQ(end.finish_reason, "abort");
    EXPECT_LT(end.completion_tokens, 400);
  }
}

TEST_F(SecurityServerTest, ServerAssignedIdsAreRandom) {
  auto stub = v1::LycheeService::NewStub(NewChannel());
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    Authorize(context, kKeyOne);
    v1::GenerateRequest request = Long("");
    request.mutable_sampling_params()->set_max_tokens(2);
    auto reader = stub->Generate(&context, request);
    StreamEnd end = Drain(*reader);
    ASSERT_TRUE(end.status.ok()) << end.status.error_message();
    ids.push_back(end.request_id);
  }
  EXPECT_NE(ids[0], ids[1]);
  for (const std::string& id : ids) {
    EXPECT_EQ(id.rfind("req-", 0), 0u) << id;
    EXPECT_EQ(id.size(), 36u) << id;
  }
}

TEST_F(SecurityServerTest, PromptTooLongIsRefusedBeforeTokenizing) {
  // stories260K: 512-token context, so max_prompt_bytes is its 64 KiB floor. A 1 MB prompt
  // would take the tokenizer a while; refused by size it answers at once.
  const std::string big(1 << 20, 'a');
  const std::string body_file = WriteTemp("big.json", json{{"prompt", big}}.dump());
  const auto start = std::chrono::steady_clock::now();
  CurlResult r = Curl(Bearer(kKeyOne) + Url("/v1/completions"), body_file);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("max_prompt_bytes=65536"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"param\":\"prompt\""), std::string::npos) << r.body;
  EXPECT_LT(seconds, 5.0);
  // Chat: the rendered conversation is measured.
  const std::string chat_file =
      WriteTemp("big_chat.json", json{{"messages", {{{"role", "user"}, {"content", big}}}}}.dump());
  r = Curl(Bearer(kKeyOne) + Url("/v1/chat/completions"), chat_file);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("max_prompt_bytes"), std::string::npos) << r.body;
  // A 31 MB body is refused by its Content-Length, before it is read.
  const std::string huge_file =
      WriteTemp("huge.json", json{{"prompt", std::string(31 << 20, 'a')}}.dump());
  r = Curl(Bearer(kKeyOne) + Url("/v1/completions"), huge_file);
  EXPECT_EQ(r.status, 413) << r.body;
  std::remove(huge_file.c_str());
  // gRPC text.
  auto stub = v1::LycheeService::NewStub(NewChannel());
  grpc::ClientContext context;
  Authorize(context, kKeyOne);
  v1::GenerateRequest request = Long("");
  request.set_text(big);
  auto reader = stub->Generate(&context, request);
  StreamEnd end = Drain(*reader);
  EXPECT_EQ(end.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(end.status.error_message().find("max_prompt_bytes=65536"), std::string::npos)
      << end.status.error_message();
}

TEST_F(SecurityServerTest, BadRequestIdAndEmptyPromptAreRefused) {
  const std::string body = WriteTemp("small.json", R"({"prompt": "Once", "max_tokens": 2})");
  CurlResult r =
      Curl(Bearer(kKeyOne) + "-H 'X-Request-Id: has space' " + Url("/v1/completions"), body);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("X-Request-Id"), std::string::npos) << r.body;
  r = Curl(Bearer(kKeyOne) + "-H 'X-Request-Id: my-id-1' " + Url("/v1/completions"), body);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"id\":\"cmpl-my-id-1\""), std::string::npos) << r.body;
  EXPECT_NE(r.headers.find("X-Request-Id: cmpl-my-id-1"), std::string::npos) << r.headers;
  r = Curl(Bearer(kKeyOne) + Url("/v1/completions"), WriteTemp("empty.json", R"({"prompt": ""})"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("prompt is empty"), std::string::npos) << r.body;
  r = Curl(Bearer(kKeyOne) + Url("/v1/completions"), WriteTemp("broken.json", R"({"prompt": )"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body.find("json.exception"), std::string::npos) << r.body;
}

TEST_F(SecurityServerTest, RejectionsAreCountedLoggedAndAccessLogged) {
  EXPECT_EQ(Curl(Url("/v1/models")).status, 401);
  auto stub = v1::LycheeService::NewStub(NewChannel());
  grpc::ClientContext context;
  v1::GetLoadsResponse loads;
  EXPECT_EQ(stub->GetLoads(&context, {}, &loads).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  CurlResult metrics = Curl(Url("/metrics"));
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("lychee_request_rejected_total{model=\"stories260K\",api=\"http\","
                              "reason=\"unauthenticated\"}"),
            std::string::npos)
      << metrics.body.substr(0, 2000);
  EXPECT_NE(metrics.body.find("lychee_request_rejected_total{model=\"stories260K\",api=\"grpc\","
                              "reason=\"unauthenticated\"}"),
            std::string::npos);
  EXPECT_TRUE(
      server_->WaitForOutput("http: rejected GET /v1/models (unauthenticated)", absl::Seconds(5)));
  EXPECT_TRUE(
      server_->WaitForOutput("grpc: rejected GetLoads (unauthenticated)", absl::Seconds(5)));
  // The access log: method, path, status, duration, id, peer.
  EXPECT_TRUE(server_->WaitForOutput("http: GET /metrics 200 ", absl::Seconds(5)));
  // The key never reaches the log.
  EXPECT_EQ(server_->output().find(kKeyOne), std::string::npos);
}

TEST(SecurityMetricsAuthTest, MetricsCanRequireTheKey) {
  auto server = ServerProcess::Start(
      LoopbackServerArgs(kModel, {"--api-key", kKeyOne, "--metrics-require-auth", "true"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url = "http://127.0.0.1:" + std::to_string((*server)->http_port());
  EXPECT_EQ(Curl(url + "/metrics").status, 401);
  EXPECT_EQ(Curl(Bearer(kKeyOne) + url + "/metrics").status, 200);
  EXPECT_EQ(Curl(url + "/health").status, 200);
  EXPECT_EQ(Curl(url + "/ready").status, 200);
}

// Beyond --max-connections, requests get 503 with Retry-After, but probes are answered.
TEST(SecurityConnectionCapTest, BeyondTheCapRequestsGet503ButProbesAnswer) {
  auto server = ServerProcess::Start(LoopbackServerArgs(kModel, {"--max-connections", "2"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const uint16_t port = static_cast<uint16_t>((*server)->http_port());
  std::vector<std::unique_ptr<testing::Connection>> held;
  for (int i = 0; i < 2; ++i) {
    auto connection = testing::Connection::Open("127.0.0.1", port);
    ASSERT_TRUE(connection.ok()) << connection.status();
    ASSERT_TRUE((*connection)->Request("GET", "/health").ok());  // admitted and kept alive
    held.push_back(*std::move(connection));
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  CurlResult refused = Curl(url + "/v1/models");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.headers.find("Retry-After: 1"), std::string::npos) << refused.headers;
  EXPECT_NE(refused.body.find("max_connections=2"), std::string::npos) << refused.body;
  EXPECT_EQ(Curl(url + "/health").status, 200);
  held.clear();  // slots free again
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    served = Curl(url + "/v1/models").status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);
}

// A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate.
struct Pki {
  std::string dir, ca, server_cert, server_key, client_cert, client_key;
};

const Pki& TestPki() {
  static const Pki pki = [] {
    Pki p;
    p.dir = TempDir() + "/pki";
    const std::string script =
        "set -e; mkdir -p " + p.dir + "; cd " + p.dir +
        "; K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'"
        "; openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=lychee-test-ca"
        "; openssl req $K -keyout server.key -out server.csr -subj /CN=localhost"
        "; printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext"
        "; openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
        " -out server.pem -days 2 -extfile san.ext"
        "; openssl req $K -keyout client.key -out client.csr -subj /CN=lychee-test-client"
        "; openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
        " -out client.pem -days 2; echo done";
    Shell("bash " + WriteTemp("make_pki.sh", script));
    p.ca = p.dir + "/ca.pem";
    p.server_cert = p.dir + "/server.pem";
    p.server_key = p.dir + "/server.key";
    p.client_cert = p.dir + "/client.pem";
    p.client_key = p.dir + "/client.key";
    return p;
  }();
  return pki;
}

std::shared_ptr<grpc::Channel> TlsChannel(const ServerProcess& server, const Pki& pki,
                                          bool with_client_cert) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(pki.ca).value_or("");
  if (with_client_cert) {
    ssl.pem_cert_chain = ReadFile(pki.client_cert).value_or("");
    ssl.pem_private_key = ReadFile(pki.client_key).value_or("");
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  return grpc::CreateCustomChannel(server.grpc_address(), grpc::SslCredentials(ssl), args);
}

TEST(SecurityTlsTest, BothPortsSpeakTls) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(ReadFile(pki.server_cert).ok()) << "openssl could not make the test certificates";
  auto server = ServerProcess::Start(LoopbackServerArgs(
      kModel, {"--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--api-key", kKeyOne}));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string https = "https://127.0.0.1:" + std::to_string((*server)->http_port());
  CurlResult r = Curl("--cacert " + pki.ca + " " + Bearer(kKeyOne) + https + "/v1/models");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("stories260K"), std::string::npos);
  EXPECT_EQ(Curl("--cacert " + pki.ca + " " + https + "/health").status, 200);
  // Without trusting the CA, curl refuses the server.
  EXPECT_EQ(Curl(https + "/health").status, 0);
  // Plain HTTP to the TLS port: no HTTP answer, the connection just closes; the server goes on.
  auto plain =
      testing::RawExchange(static_cast<uint16_t>((*server)->http_port()),
                           "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", std::chrono::seconds(5));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->find("HTTP/1.1 200"), std::string::npos) << *plain;
  EXPECT_EQ(Curl("--cacert " + pki.ca + " " + https + "/health").status, 200);

  // gRPC over TLS with the CA (and the key), and a plaintext channel refused.
  auto stub = v1::LycheeService::NewStub(TlsChannel(**server, pki, /*with_client_cert=*/false));
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", std::string("Bearer ") + kKeyOne);
    context.set_deadline(In(absl::Seconds(30)));
    v1::GenerateRequest request = Long("");
    request.mutable_sampling_params()->set_max_tokens(3);
    auto reader = stub->Generate(&context, request);
    StreamEnd end = Drain(*reader);
    ASSERT_TRUE(end.status.ok()) << end.status.error_message();
    EXPECT_EQ(end.completion_tokens, 3);
  }
  // lychee-client over TLS (localhost matches the certificate's name).
  testing::ProgramResult client =
      testing::RunProgram("lychee-client",
                          {"--address", "localhost:" + std::to_string((*server)->grpc_port()),
                           "--timeout", "10", "--tls-ca", pki.ca, "--api-key", kKeyOne, "info"},
                          absl::Seconds(30));
  EXPECT_EQ(client.exit_code, 0) << client.err;
  auto insecure = v1::LycheeService::NewStub(
      grpc::CreateChannel((*server)->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(In(absl::Seconds(5)));
  v1::GetLoadsResponse loads;
  EXPECT_EQ(insecure->GetLoads(&context, {}, &loads).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(SecurityTlsTest, MutualTlsRefusesClientsWithoutACertificate) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(ReadFile(pki.client_cert).ok()) << "openssl could not make the test certificates";
  auto server =
      ServerProcess::Start(LoopbackServerArgs(kModel, {"--tls-cert", pki.server_cert, "--tls-key",
                                                       pki.server_key, "--tls-client-ca", pki.ca}));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string https = "https://127.0.0.1:" + std::to_string((*server)->http_port());
  EXPECT_EQ(Curl("--cacert " + pki.ca + " " + https + "/v1/models").status, 0);
  CurlResult r = Curl("--cacert " + pki.ca + " --cert " + pki.client_cert + " --key " +
                      pki.client_key + " " + https + "/v1/models");
  EXPECT_EQ(r.status, 200) << r.body;

  auto without = v1::LycheeService::NewStub(TlsChannel(**server, pki, false));
  {
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(5)));
    v1::GetLoadsResponse loads;
    EXPECT_EQ(without->GetLoads(&context, {}, &loads).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  auto with = v1::LycheeService::NewStub(TlsChannel(**server, pki, true));
  grpc::ClientContext context;
  context.set_deadline(In(absl::Seconds(10)));
  v1::GetLoadsResponse loads;
  const grpc::Status st = with->GetLoads(&context, {}, &loads);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

}  // namespace
}  // namespace lychee
