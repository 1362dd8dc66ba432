// SPDX-License-Identifier: Apache-2.0
// HttpServer over real sockets on 127.0.0.1 (port 0): the side routes (/metrics, /health,
// /ready), routing errors (404/405 JSON), keep-alive, HEAD, size limits (431/413), malformed
// requests (400) not disturbing a concurrent good request, chunked streaming, a handler that
// forgets to answer, and shutdown with connections still open.
#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "server/http/side_routes.h"
#include "server/metrics/registry.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee::http {
namespace {

using lychee::testing::ClientResponse;
using lychee::testing::Connection;
using lychee::testing::Fetch;
using lychee::testing::RawExchange;
using namespace std::chrono_literals;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.AddCounter("test_requests", "Requests.", {"code"}).WithLabels({"200"}).Increment(7);
    HttpServerOptions options;
    options.address = "127.0.0.1";
    options.port = 0;
    options.num_threads = 2;
    options.max_header_bytes = 4096;
    options.max_body_bytes = 1024;
    server_ = std::make_unique<HttpServer>(options);
    AddSideRoutes(server_->router(), &registry_, &state_);
    server_->router().Add("POST", "/echo", [](const HttpRequest& request, ResponseWriterPtr w) {
      HttpResponse response;
      response.content_type = "text/plain";
      response.body = request.body;
      response.headers.emplace_back("X-Query", request.query);
      w->Send(std::move(response));
    });
    // Answers from another thread after a delay: the connection waits without blocking others.
    server_->router().Add("GET", "/slow", [](const HttpRequest&, ResponseWriterPtr w) {
      std::thread([w] {
        std::this_thread::sleep_for(500ms);
        w->Send({.status = 200, .content_type = "text/plain", .body = "slow ok"});
      }).detach();
    });
    server_->router().Add("GET", "/stream", [](const HttpRequest&, ResponseWriterPtr w) {
      w->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
      std::thread([w] {
        for (int i = 0; i < 5; ++i) {
          w->Write("data: " + std::to_string(i) + "\n\n");
          std::this_thread::sleep_for(10ms);
        }
        w->End();
      }).detach();
    });
    server_->router().Add("GET", "/forgot", [](const HttpRequest&, ResponseWriterPtr) {});
    server_->router().AddPrefix(
        "GET", "/v1/models/", [](const HttpRequest& r, ResponseWriterPtr w) {
          w->Send({.status = 200, .content_type = "text/plain", .body = r.path.substr(11)});
        });
    ASSERT_TRUE(server_->Start().ok());
    port_ = static_cast<uint16_t>(server_->port());
    ASSERT_GT(port_, 0);
  }

  absl::StatusOr<ClientResponse> Get(const std::string& target) {
    return Fetch("127.0.0.1", port_, "GET", target);
  }

  metrics::MetricsRegistry registry_;
  ServingState state_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
};

TEST_F(HttpServerTest, MetricsServesTheRegistryAsText004) {
  auto response = Get("/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response->body,
            "# HELP test_requests_total Requests.\n# TYPE test_requests_total counter\n"
            "test_requests_total{code=\"200\"} 7\n");
}

TEST_F(HttpServerTest, HealthAndReadyFollowTheServingState) {
  auto status_of = [&](const std::string& target) {
    auto response = Get(target);
    return response.ok() ? response->status : -1;
  };
  EXPECT_EQ(status_of("/health"), 503);  // no engine yet
  EXPECT_EQ(status_of("/ready"), 503);
  bool alive = true;
  state_.SetEngineAliveCheck([&alive] { return alive; });
  EXPECT_EQ(status_of("/health"), 200);
  auto loading = Get("/ready");
  ASSERT_TRUE(loading.ok());
  EXPECT_EQ(loading->status, 503);
  EXPECT_EQ(loading->body, R"({"status":"loading"})");
  state_.SetModelLoaded(true);
  EXPECT_EQ(status_of("/ready"), 200);
  state_.SetDraining(true);
  auto draining = Get("/ready");
  ASSERT_TRUE(draining.ok());
  EXPECT_EQ(draining->status, 503);
  EXPECT_EQ(draining->body, R"({"status":"draining"})");
  EXPECT_EQ(status_of("/health"), 200);  // draining is still alive
  alive = false;
  EXPECT_EQ(status_of("/health"), 503);
}

TEST_F(HttpServerTest, UnknownPathIs404Json) {
  auto response = Get("/nope?x=1");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(response->Header("content-type"), "application/json");
  auto json = nlohmann::json::parse(response->body);
  EXPECT_EQ(json["error"]["type"], "not_found_error");
  EXPECT_EQ(json["error"]["code"], 404);
  EXPECT_EQ(json["error"]["message"], "no route for GET /nope");
}

TEST_F(HttpServerTest, WrongMethodIs405WithAllow) {
  auto response = Fetch("127.0.0.1", port_, "POST", "/metrics", "x");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(response->Header("allow"), "GET");
  EXPECT_EQ(nlohmann::json::parse(response->body)["error"]["code"], 405);
  auto del = Fetch("127.0.0.1", port_, "DELETE", "/echo");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->status, 405);
  EXPECT_EQ(del->Header("allow"), "POST");
}

TEST_F(HttpServerTest, HeadAnswersHeadersOnly) {
  auto response = Fetch("127.0.0.1", port_, "HEAD", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "");
  EXPECT_EQ(response->Header("content-length"), std::to_string(registry_.Render().size()));
}

TEST_F(HttpServerTest, PrefixRoutesAndQuery) {
  auto model = Get("/v1/models/qwen3");
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(model->body, "qwen3");
  auto echo = Fetch("127.0.0.1", port_, "POST", "/echo?a=b", "hello");
  ASSERT_TRUE(echo.ok());
  EXPECT_EQ(echo->body, "hello");
  EXPECT_EQ(echo->Header("x-query"), "a=b");
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto connection = Connection::Open("127.0.0.1", port_);
  ASSERT_TRUE(connection.ok());
  for (int i = 0; i < 5; ++i) {
    auto response = (*connection)->Request("POST", "/echo", "n" + std::to_string(i));
    ASSERT_TRUE(response.ok()) << i << ": " << response.status();
    EXPECT_EQ(response->body, "n" + std::to_string(i));
    EXPECT_TRUE(response->keep_alive);
  }
  auto missing = (*connection)->Request("GET", "/missing");  // errors keep the connection too
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  auto again = (*connection)->Request("GET", "/metrics");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 200);
}

TEST_F(HttpServerTest, MalformedAndOversizedRequestsGet4xxWithoutDisturbingOthers) {
  // A good request is in flight (its handler answers after 500 ms) while bad ones arrive.
  auto slow = std::async(std::launch::async, [&] { return Get("/slow"); });
  std::this_thread::sleep_for(50ms);

  auto malformed = RawExchange(port_, "GARBAGE\r\n\r\n");
  ASSERT_TRUE(malformed.ok());
  EXPECT_TRUE(malformed->starts_with("HTTP/1.1 400 ")) << *malformed;
  EXPECT_NE(malformed->find("Connection: close"), std::string::npos);

  auto bad_version = RawExchange(port_, "GET / HTTP/9.Z\r\n\r\n");
  ASSERT_TRUE(bad_version.ok());
  EXPECT_TRUE(bad_version->starts_with("HTTP/1.1 400 ")) << *bad_version;

  const std::string big_header =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  auto oversized = RawExchange(port_, big_header);
  ASSERT_TRUE(oversized.ok());
  EXPECT_TRUE(oversized->starts_with("HTTP/1.1 431 ")) << oversized->substr(0, 200);

  auto big_body = Fetch("127.0.0.1", port_, "POST", "/echo", std::string(4096, 'b'));
  ASSERT_TRUE(big_body.ok()) << big_body.status();
  EXPECT_EQ(big_body->status, 413);

  auto declared_big =
      RawExchange(port_, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\nabc");
  ASSERT_TRUE(declared_big.ok());
  EXPECT_TRUE(declared_big->starts_with("HTTP/1.1 413 ")) << *declared_big;

  auto slow_response = slow.get();
  ASSERT_TRUE(slow_response.ok()) << slow_response.status();
  EXPECT_EQ(slow_response->status, 200);
  EXPECT_EQ(slow_response->body, "slow ok");
  // And the server still serves.
  auto after = Get("/metrics");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
}

TEST_F(HttpServerTest, StreamsChunkedResponses) {
  auto response = Get("/stream");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->Header("transfer-encoding"), "chunked");
  EXPECT_EQ(response->Header("content-type"), "text/event-stream");
  EXPECT_EQ(response->body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
  // The raw framing is chunked.
  auto raw = RawExchange(port_, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(raw.ok());
  EXPECT_NE(raw->find("\r\n9\r\ndata: 0\n\n\r\n"), std::string::npos) << *raw;
  EXPECT_TRUE(raw->ends_with("0\r\n\r\n")) << *raw;
  // HTTP/1.0 has no chunking: raw body, then close.
  auto old = RawExchange(port_, "GET /stream HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->starts_with("HTTP/1.0 200 ")) << *old;
  EXPECT_TRUE(old->ends_with("\r\n\r\ndata: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"))
      << *old;
}

TEST_F(HttpServerTest, StreamingHandlerLearnsThatTheClientLeft) {
  // What the gateway needs to abort a request in the engine when the client disconnects.
  std::promise<void> gone;
  std::promise<int> writes_until_false;
  HttpServer server({.address = "127.0.0.1", .port = 0});
  server.router().Add("GET", "/events", [&](const HttpRequest&, ResponseWriterPtr w) {
    w->OnClientGone([&gone] { gone.set_value(); });
    w->StartStream(200, "text/event-stream");
    std::thread([w, &writes_until_false] {
      int writes = 0;
      while (w->Write("data: " + std::string(1024, 'x') + "\n\n")) {
        ++writes;
        std::this_thread::sleep_for(5ms);
        if (writes > 4000) break;  // 20 s: the test has failed
      }
      writes_until_false.set_value(writes);
      w->End();
    }).detach();
  });
  ASSERT_TRUE(server.Start().ok());
  // Read a little of the stream, then hang up.
  auto partial = RawExchange(static_cast<uint16_t>(server.port()),
                             "GET /events HTTP/1.1\r\nHost: x\r\n\r\n", 200ms);
  ASSERT_TRUE(partial.ok());
  EXPECT_NE(partial->find("data: x"), std::string::npos);
  EXPECT_EQ(gone.get_future().wait_for(10s), std::future_status::ready);
  auto writes = writes_until_false.get_future();
  ASSERT_EQ(writes.wait_for(10s), std::future_status::ready);
  EXPECT_LT(writes.get(), 4000);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  auto raw = RawExchange(port_,
                         "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         "Content-Length: 2\r\nConnection: close\r\n\r\nhi");
  ASSERT_TRUE(raw.ok());
  EXPECT_TRUE(raw->starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")) << *raw;
  EXPECT_TRUE(raw->ends_with("\r\n\r\nhi")) << *raw;
}

TEST_F(HttpServerTest, HandlerWithoutAnswerGets500) {
  auto response = Get("/forgot");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 500);
}

TEST_F(HttpServerTest, PortZeroPicksDistinctFreePorts) {
  HttpServer other({.address = "127.0.0.1", .port = 0});
  ASSERT_TRUE(other.Start().ok());
  EXPECT_GT(other.port(), 0);
  EXPECT_NE(other.port(), server_->port());
  // The bound port cannot be bound again.
  HttpServer clash({.address = "127.0.0.1", .port = static_cast<uint16_t>(other.port())});
  EXPECT_EQ(clash.Start().code(), absl::StatusCode::kUnavailable);
  HttpServer bad({.address = "not an address"});
  EXPECT_EQ(bad.Start().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(HttpServerTest, ShutdownClosesOpenConnectionsAndStreams) {
  auto idle = Connection::Open("127.0.0.1", port_);
  ASSERT_TRUE(idle.ok());
  ASSERT_TRUE((*idle)->Request("GET", "/metrics").ok());
  // A stream that never ends on its own.
  std::promise<ResponseWriterPtr> stream_writer;
  HttpServer server({.address = "127.0.0.1", .port = 0});
  server.router().Add("GET", "/forever", [&](const HttpRequest&, ResponseWriterPtr w) {
    w->StartStream(200, "text/event-stream");
    w->Write("data: x\n\n");
    stream_writer.set_value(w);
  });
  ASSERT_TRUE(server.Start().ok());
  const auto port = static_cast<uint16_t>(server.port());
  auto reader = std::async(std::launch::async, [port] {
    return RawExchange(port, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n", 10s);
  });
  ResponseWriterPtr writer = stream_writer.get_future().get();
  const auto start = std::chrono::steady_clock::now();
  server.Shutdown();
  server_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_TRUE(writer->client_gone());
  EXPECT_FALSE(writer->Write("data: late\n\n"));
  auto got = reader.get();
  ASSERT_TRUE(got.ok());
  EXPECT_NE(got->find("data: x"), std::string::npos);
  writer.reset();  // the last reference: must not touch the stopped server
  EXPECT_FALSE(Fetch("127.0.0.1", port_, "GET", "/metrics", "", 1s).ok());
}

// Issue 15: when accept fails for lack of file descriptors, the loop backs off instead of
// retrying at once (which burnt a full core and logged 1.6M lines in 6 s).
int NumOpenFds() {
  int n = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++n;
    closedir(dir);
  }
  return n;
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(HttpServerLimitsTest, AcceptBacksOffWhenDescriptorsRunOut) {
  HttpServerOptions options;
  options.address = "127.0.0.1";
  options.port = 0;
  options.num_threads = 2;
  HttpServer server(options);
  ASSERT_TRUE(server.Start().ok());
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // Few descriptors beyond those open now (fd numbers are dense from 0 here).
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(NumOpenFds() + 16);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fds;  // client sockets and fillers
  // Connections until no descriptor is left (each takes one here and one in the server).
  for (int fd; (fd = ConnectTo(server.port())) >= 0;) {
    fds.push_back(fd);
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(100ms);
  for (int fd; (fd = dup(0)) >= 0;) fds.push_back(fd);  // whatever the server left
  // Free one descriptor and take it with a client connection: the kernel completes the
  // handshake, and the server's accept fails with EMFILE until a descriptor frees up.
  ASSERT_FALSE(fds.empty());
  close(fds.back());
  fds.pop_back();
  const int pending = ConnectTo(server.port());
  EXPECT_GE(pending, 0);
  const double cpu_before = ProcessCpuSeconds();
  std::this_thread::sleep_for(1s);
  const double cpu_used = ProcessCpuSeconds() - cpu_before;
  for (int fd : fds) close(fd);
  if (pending >= 0) close(pending);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  // A spinning accept loop uses about a full core for the second; the backoff next to nothing.
  EXPECT_LT(cpu_used, 0.3);
  // Descriptors are back: the server accepts and answers again.
  auto health = Fetch("127.0.0.1", static_cast<uint16_t>(server.port()), "GET", "/health", "", 5s);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(health->status, 404);  // no routes here: answered by the router
  server.Shutdown();
}

}  // namespace
}  // namespace lychee::http
