// SPDX-License-Identifier: Apache-2.0
// lychee-server: loads the config, the model (Engine::Create), and serves gRPC (lychee.v1,
// health, reflection) plus HTTP (/metrics, /health, /ready and the OpenAI-compatible /v1 API)
// until SIGTERM or SIGINT.
//
//   lychee-server [--config configs/default.yaml] [--model DIR] [--grpc-port N] ...
//
// Startup logs one line per port, for humans and tests to parse:
//   lychee-server: grpc listening on 127.0.0.1:PORT
//   lychee-server: http listening on 127.0.0.1:PORT
// Drain: the first SIGTERM/SIGINT marks the server draining (new Generate calls get
// UNAVAILABLE, new /v1 completions 503, health NOT_SERVING, /ready 503), stops listening for
// gRPC, lets live requests (gRPC and HTTP) finish for shutdown_grace_seconds, aborts the rest,
// stops the engine and exits 0. A second signal during the drain exits at once with status 1.
//
// Threads: main waits for the stop signal (a handler writes it to a self-pipe); the engine's
// step thread, gRPC's callback threads and the HTTP I/O threads do the work.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "engine/engine.h"
#include "server/grpc/grpc_server.h"
#include "server/main/config.h"
#include "sparsity/policy_factory.h"
#if LYCHEE_WITH_HTTP
#include "server/http/http_server.h"
#include "server/http/side_routes.h"
#include "server/metrics/engine_metrics.h"
#include "server/metrics/registry.h"
#include "server/openai/openai_gateway.h"
#endif

#ifndef LYCHEE_VERSION
#define LYCHEE_VERSION "dev"
#endif

namespace lychee {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "lychee-server: %s\n", status.ToString().c_str());
  return 1;
}

// SIGTERM/SIGINT → one byte on a self-pipe. A handler (not a blocked mask + sigwait) because
// libraries start threads before main (OpenBLAS's pool), and a signal delivered to one of those
// must not take the default action.
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &byte, 1);
}

absl::Status InstallStopSignals() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &action, nullptr) != 0 || sigaction(SIGINT, &action, nullptr) != 0) {
    return absl::InternalError("sigaction failed");
  }
  return absl::OkStatus();
}

// Blocks until a stop signal arrives; returns its number.
int WaitForStopSignal() {
  char byte = 0;
  while (read(g_signal_pipe[0], &byte, 1) != 1) {
  }
  return byte;
}

int Run(int argc, char** argv) {
  if (absl::Status st = InstallStopSignals(); !st.ok()) return Fail(st);

  absl::StatusOr<ParsedServerArgs> args = ParseServerArgs(argc, argv);
  if (!args.ok()) return Fail(args.status());
  if (args->exit_now) return 0;
  const ServerConfig& config = args->config;
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::flush_on(spdlog::level::trace);

#if LYCHEE_WITH_HTTP
  metrics::MetricsRegistry registry;
  const std::string model_label = ServedModelName(config.engine);
  EngineMetrics engine_metrics(&registry, EngineMetricsOptions{.model_name = model_label});
  EngineObserver* observer = &engine_metrics;
#else
  EngineObserver* observer = nullptr;
#endif

  LY_LOG_INFO("lychee-server {}: loading {} on {}", LYCHEE_VERSION, config.engine.model_dir,
              config.engine.device);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(config.engine, observer);
  if (!engine.ok()) return Fail(engine.status());
  Engine& eng = **engine;
  LY_LOG_INFO("lychee-server: model {} ({}, vocab {}, context {})", eng.model_info().model_id,
              eng.model_info().model_type, eng.model_info().vocab_size,
              eng.model_info().max_model_len);

#if LYCHEE_WITH_HTTP
  engine_metrics.SetStatsSource([&eng] { return eng.Stats(); });
  {
    const EngineStats stats = eng.Stats();
    engine_metrics.SetCacheConfig(stats.block_size, stats.num_kv_blocks_total);
  }
  http::ServingState serving;
  serving.SetEngineAliveCheck([] { return true; });
  // Declared before the HTTP server, which dispatches to it, and after the engine it calls.
  openai::ChatPrompt chat_prompt =
      openai::ChatPrompt::Load(config.engine.model_dir, eng.tokenizer());
  if (!chat_prompt.load_error().ok()) {
    LY_LOG_WARN("lychee-server: chat template unusable, /v1/chat/completions will fail: {}",
                chat_prompt.load_error().ToString());
  } else {
    LY_LOG_INFO("lychee-server: /v1/chat/completions uses {}", chat_prompt.description());
  }
  openai::OpenAiGateway gateway(eng, std::move(chat_prompt),
                                {.is_draining = [&serving] { return serving.draining(); },
                                 .default_policy = config.default_policy});
  http::HttpServer http_server(
      {.address = config.host, .port = static_cast<uint16_t>(config.http_port)});
  http::AddSideRoutes(http_server.router(), &registry, &serving);
  gateway.AddRoutes(http_server.router());
  if (absl::Status st = http_server.Start(); !st.ok()) return Fail(st);
  LY_LOG_INFO("lychee-server: http listening on {}",
              grpc_server::JoinHostPort(config.host, http_server.port()));
#endif

  absl::StatusOr<std::unique_ptr<grpc_server::GrpcServer>> grpc = grpc_server::GrpcServer::Start(
      eng, {.host = config.host,
            .port = config.grpc_port,
            .server_version = LYCHEE_VERSION,
            .default_policy = config.default_policy,
            .policies = absl::StrSplit(sparsity::AvailablePolicies(), ", ")});
  if (!grpc.ok()) return Fail(grpc.status());
  LY_LOG_INFO("lychee-server: grpc listening on {}", (*grpc)->address());
#if LYCHEE_WITH_HTTP
  serving.SetModelLoaded(true);
#endif

  const int signal_number = WaitForStopSignal();
  const absl::Duration grace = absl::Seconds(config.shutdown_grace_seconds);
  // A second signal while draining gives up on the grace period (as a second Ctrl-C does).
  std::thread([] {
    WaitForStopSignal();
    std::fprintf(stderr, "lychee-server: second signal, exiting without draining\n");
    std::_Exit(1);
  }).detach();
#if LYCHEE_WITH_HTTP
  serving.SetDraining(true);
#endif
  (*grpc)->BeginDrain();
  LY_LOG_INFO("lychee-server: {} received, draining ({} live streams, grace {})",
              signal_number == SIGTERM ? "SIGTERM" : "SIGINT", (*grpc)->num_live_streams(),
              absl::FormatDuration(grace));
  // Live calls end as the engine finishes them; at the deadline gRPC cancels the rest, which
  // aborts their requests. Then nothing is left for the engine.
  const absl::Time drain_deadline = absl::Now() + grace;
  (*grpc)->Shutdown(drain_deadline);
  grpc->reset();
#if LYCHEE_WITH_HTTP
  // HTTP requests get the same grace; the engine's shutdown below aborts what is left.
  gateway.WaitIdle(drain_deadline);
#endif
  eng.Shutdown(absl::ZeroDuration());
#if LYCHEE_WITH_HTTP
  http_server.Shutdown();
#endif
  LY_LOG_INFO("lychee-server: stopped");
  return 0;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) { return lychee::Run(argc, argv); }
