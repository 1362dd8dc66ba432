// SPDX-License-Identifier: Apache-2.0
// End to end with a real Prometheus (Debian's /usr/bin/prometheus): our HttpServer serves a
// registry with known values (plus a populated EngineMetrics), Prometheus scrapes it every
// second, and its HTTP API must return those values, including after they change. Proves that
// the exposition is ingested as intended (names, labels with escapes, histograms), not only that
// it parses. Prometheus runs in a unique temp dir and is killed at the end, on failure too.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "server/http/http_server.h"
#include "server/http/side_routes.h"
#include "server/metrics/engine_metrics.h"
#include "server/metrics/registry.h"
#include "tests/unit/server/http_test_client.h"

extern char** environ;

namespace lychee {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* kPrometheus = "/usr/bin/prometheus";

// A port that was free a moment ago (Prometheus needs a number on its command line).
uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string UrlEncode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// The Prometheus child process and its temp dir; both go away in the destructor.
class PrometheusProcess {
 public:
  ~PrometheusProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      int status = 0;
      while (waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(50ms);
      }
    }
    if (!dir_.empty()) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    }
  }

  // Writes the config and starts Prometheus scraping 127.0.0.1:target_port every second.
  bool Start(uint16_t target_port) {
    std::string tmpl = (fs::temp_directory_path() / "lychee_prometheus_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return false;
    dir_ = tmpl;
    web_port_ = FreePort();
    const fs::path config = dir_ / "prometheus.yml";
    std::ofstream(config) << fmt::format(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: lychee\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:{}']\n",
        target_port);
    std::vector<std::string> args = {
        kPrometheus,
        "--config.file=" + config.string(),
        "--storage.tsdb.path=" + (dir_ / "data").string(),
        fmt::format("--web.listen-address=127.0.0.1:{}", web_port_),
        "--log.level=warn",
    };
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = (dir_ / "prometheus.log").string();
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, kPrometheus, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  // The instant-query result vector, or nullopt while Prometheus is not answering.
  std::optional<nlohmann::json> Query(const std::string& promql) {
    auto response = testing::Fetch("127.0.0.1", web_port_, "GET",
                                   "/api/v1/query?query=" + UrlEncode(promql), "", 2s);
    if (!response.ok() || response->status != 200) return std::nullopt;
    auto json = nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || json.value("status", "") != "success") return std::nullopt;
    return json["data"]["result"];
  }

  // Polls until `promql` yields exactly one sample equal to `expected` (≤ `timeout`).
  bool WaitForValue(const std::string& promql, const std::string& expected,
                    std::chrono::seconds timeout, std::string* last_seen) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto result = Query(promql); result && result->size() == 1) {
        *last_seen = (*result)[0]["value"][1].get<std::string>();
        if (*last_seen == expected) return true;
      }
      if (!alive()) return false;
      std::this_thread::sleep_for(250ms);
    }
    return false;
  }

  bool alive() { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string log() const {
    std::ifstream in(dir_ / "prometheus.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  pid_t pid_ = -1;
  fs::path dir_;
  uint16_t web_port_ = 0;
};

TEST(PrometheusScrapeTest, PrometheusIngestsOurExposition) {
  if (access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << "prometheus not installed (scripts/install-deps.sh installs it)";
  }
  metrics::MetricsRegistry registry;
  auto& requests = registry.AddCounter("it_requests", "Requests.", {"code", "path"});
  requests.WithLabels({"200", "/a\"b\\c"}).Increment(42);
  registry.AddGauge("it_temperature_celsius", "Temperature.").Get().Set(21.5);
  auto& latency = registry.AddHistogram("it_latency_seconds", "Latency.", {}, {0.1, 1}).Get();
  for (double v : {0.05, 0.5, 0.7, 5.0}) latency.Observe(v);
  EngineMetrics engine_metrics(&registry, {.model_name = "it-model"});
  engine_metrics.SetStatsSource([] {
    EngineStats stats;
    stats.num_waiting = 7;
    stats.kv_usage = 0.5;
    return stats;
  });
  engine_metrics.SetCacheConfig(16, 1024);
  engine_metrics.OnStep(128, 2, 0.01);

  http::ServingState state;
  http::HttpServer server({.address = "127.0.0.1", .port = 0, .num_threads = 1});
  http::AddSideRoutes(server.router(), &registry, &state);
  ASSERT_TRUE(server.Start().ok());

  PrometheusProcess prometheus;
  ASSERT_TRUE(prometheus.Start(static_cast<uint16_t>(server.port())));
  std::string seen;
  // Bounded: Prometheus starts in a few seconds and scrapes every second.
  ASSERT_TRUE(prometheus.WaitForValue("up{job=\"lychee\"}", "1", 30s, &seen))
      << "last seen: " << seen << "\n"
      << prometheus.log();
  EXPECT_TRUE(
      prometheus.WaitForValue(R"(it_requests_total{code="200",path="/a\"b\\c"})", "42", 10s, &seen))
      << seen;
  EXPECT_TRUE(prometheus.WaitForValue("it_temperature_celsius", "21.5", 10s, &seen)) << seen;
  EXPECT_TRUE(prometheus.WaitForValue(R"(it_latency_seconds_bucket{le="1"})", "3", 10s, &seen))
      << seen;
  EXPECT_TRUE(prometheus.WaitForValue(R"(it_latency_seconds_bucket{le="+Inf"})", "4", 10s, &seen))
      << seen;
  EXPECT_TRUE(prometheus.WaitForValue("it_latency_seconds_count", "4", 10s, &seen)) << seen;
  EXPECT_TRUE(prometheus.WaitForValue("it_latency_seconds_sum", "6.25", 10s, &seen)) << seen;
  EXPECT_TRUE(
      prometheus.WaitForValue(R"(lychee_num_requests_waiting{model="it-model"})", "7", 10s, &seen))
      << seen;
  EXPECT_TRUE(
      prometheus.WaitForValue(R"(lychee_kv_cache_usage_perc{model="it-model"})", "0.5", 10s, &seen))
      << seen;
  EXPECT_TRUE(prometheus.WaitForValue(
      R"(lychee_cache_config_info{block_size="16",num_gpu_blocks="1024"})", "1", 10s, &seen))
      << seen;
  EXPECT_TRUE(prometheus.WaitForValue("lychee_prompt_tokens_total", "128", 10s, &seen)) << seen;

  // New values show up at the next scrapes.
  requests.WithLabels({"200", "/a\"b\\c"}).Increment(8);
  EXPECT_TRUE(
      prometheus.WaitForValue(R"(it_requests_total{code="200",path="/a\"b\\c"})", "50", 10s, &seen))
      << seen;
  // Every scrape succeeded (a malformed exposition makes up 0).
  EXPECT_TRUE(prometheus.WaitForValue("min_over_time(up{job=\"lychee\"}[1m])", "1", 5s, &seen))
      << seen;
  server.Shutdown();
}

}  // namespace
}  // namespace lychee
