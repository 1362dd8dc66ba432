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
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "common/memory_trim.h"
#include "engine/engine.h"
#include "server/grpc/grpc_server.h"
#include "server/main/config.h"
#include "server/security/api_keys.h"
#include "server/security/request_owners.h"
#include "sparsity/policy_factory.h"
#if LYCHEE_WITH_HTTP
#include "server/http/access_log.h"
#include "server/http/http_server.h"
#include "server/http/side_routes.h"
#include "server/metrics/engine_metrics.h"
#include "server/metrics/registry.h"
#include "server/openai/api_error.h"
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

  // Authentication, ownership and limits shared by both front ends.
  const security::ApiKeys api_keys(config.api_keys);
  security::RequestOwners owners;
  const int64_t max_prompt_bytes = EffectiveMaxPromptBytes(config, eng.model_info().max_model_len);
  LY_LOG_INFO("lychee-server: {}; TLS {}; max_prompt_bytes {}; min_priority {}",
              api_keys.enabled() ? fmt::format("{} API key(s) required", api_keys.size())
                                 : std::string("no API key (any client may call)"),
              config.tls_cert.empty()        ? "off"
              : config.tls_client_ca.empty() ? "on"
                                             : "on, client certificates required",
              max_prompt_bytes, config.min_priority);
  // The access log (both ports). JSON lines go to stdout as they are, through a logger of their
  // own without the time and level prefix (stdout loggers share one lock: lines never mix).
  const bool access_json = config.access_log_format == "json";
  std::shared_ptr<spdlog::logger> access_logger;
  if (config.access_log && access_json) {
    access_logger = spdlog::stdout_logger_mt("access");
    access_logger->set_pattern("%v");
    access_logger->flush_on(spdlog::level::trace);
  }
  auto log_access = [&access_logger](const std::string& line) {
    if (access_logger) {
      access_logger->info(line);
    } else {
      LY_LOG_INFO("{}", line);
    }
  };
  // Gives memory back after spikes (common/memory_trim.h): told of every finished gRPC call and
  // HTTP request (by the gateway's workers, once they have freed their request), it trims once
  // the engine is idle. Declared before the front ends, which call it, and after the engine.
  std::optional<MemoryTrimmer> trimmer;
  if (config.memory_trim) {
    trimmer.emplace(MemoryTrimmerOptions{.is_idle = [&eng] {
      const EngineStats stats = eng.Stats();
      return stats.num_running == 0 && stats.num_waiting == 0;
    }});
  }
  auto on_grpc_call = [&config, access_json, &log_access,
                       &trimmer](const grpc_server::CallRecord& call) {
    if (trimmer) trimmer->NoteWork();
    if (!config.access_log) return;
    log_access(access_json ? http::GrpcAccessJson(call.method, call.code, call.duration_seconds,
                                                  call.peer, std::chrono::system_clock::now())
                           : http::GrpcAccessText(call.method, call.code, call.duration_seconds,
                                                  call.peer));
  };
#if LYCHEE_WITH_HTTP
  // Every refused request, on either port: counted by reason and logged at info.
  auto& rejected = registry.AddCounter(
      "lychee_request_rejected",
      "Requests refused before or at admission (authentication, validation, limits, overload, "
      "draining), by front end and reason.",
      {"model", "api", "reason"});
  auto on_grpc_reject = [&rejected, &model_label](std::string_view reason, std::string_view method,
                                                  const grpc::Status& status) {
    rejected.WithLabels({model_label, "grpc", reason}).Increment();
    LY_LOG_INFO("grpc: rejected {} ({}): {} {}", method, reason,
                static_cast<int>(status.error_code()), status.error_message());
  };
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
  auto principal_of = [&api_keys](const http::HttpRequest& request) {
    if (api_keys.enabled()) {
      if (auto principal = api_keys.CheckAuthorization(request.Header("Authorization"))) {
        return *principal;
      }
    }
    return "http:" + request.remote_address;
  };
  openai::OpenAiGateway gateway(
      eng, std::move(chat_prompt),
      {// Beyond running + waiting requests the engine answers 429 anyway; the slack covers
       // requests still being parsed and tokenized.
       .max_concurrent_requests = config.engine.max_num_seqs + config.engine.max_queue_len + 64,
       .is_draining = [&serving] { return serving.draining(); },
       .default_policy = config.default_policy,
       .principal_of = principal_of,
       .owners = &owners,
       .min_priority = config.min_priority,
       .max_prompt_bytes = max_prompt_bytes,
       .trimmer = trimmer ? &*trimmer : nullptr});
  http::HttpServerOptions http_options{
      .address = config.host,
      .port = static_cast<uint16_t>(config.http_port),
      // A prompt's JSON (escapes included) plus room for messages and fields; oversized bodies
      // get 413 from their Content-Length, before any of it is read.
      .max_body_bytes = static_cast<size_t>(
          std::min<int64_t>(int64_t{32} << 20, 8 * max_prompt_bytes + (int64_t{1} << 20))),
      .max_connections = config.max_connections,
      .tls_cert = config.tls_cert,
      .tls_key = config.tls_key,
      .tls_client_ca = config.tls_client_ca,
      .on_response = [&rejected, &model_label, &log_access, access_json,
                      access_log = config.access_log](const http::ResponseRecord& r) {
        if (access_log) {
          log_access(access_json ? http::AccessLogJson(r, std::chrono::system_clock::now())
                                 : http::AccessLogText(r));
        }
        if ((r.status >= 400 && r.status < 500) || r.status == 503) {
          const std::string_view reason = security::RejectReasonForHttp(r.status);
          rejected.WithLabels({model_label, "http", reason}).Increment();
          LY_LOG_INFO("http: rejected {} {} ({}): {} peer={}", r.method, r.path, reason, r.status,
                      r.remote_address.empty() ? "-" : r.remote_address);
        }
      }};
  http::HttpServer http_server(std::move(http_options));
  // API keys: everything but the probes (and /metrics unless metrics_require_auth) needs one.
  http_server.router().SetGuard(
      [&api_keys, metrics_open = !config.metrics_require_auth](
          const http::HttpRequest& request) -> std::optional<http::HttpResponse> {
        if (!api_keys.enabled() || request.path == "/health" || request.path == "/ready" ||
            (metrics_open && request.path == "/metrics")) {
          return std::nullopt;
        }
        if (api_keys.CheckAuthorization(request.Header("Authorization")).has_value()) {
          return std::nullopt;
        }
        http::HttpResponse response = openai::ErrorResponse(openai::WithCode(
            absl::UnauthenticatedError(
                "missing or invalid API key: send the header `Authorization: Bearer <key>`"),
            "invalid_api_key"));
        response.headers.emplace_back("WWW-Authenticate", "Bearer");
        return response;
      });
  http::AddSideRoutes(http_server.router(), &registry, &serving);
  gateway.AddRoutes(http_server.router());
  if (absl::Status st = http_server.Start(); !st.ok()) return Fail(st);
  LY_LOG_INFO("lychee-server: http listening on {}",
              grpc_server::JoinHostPort(config.host, http_server.port()));
#else
  auto on_grpc_reject = [](std::string_view reason, std::string_view method,
                           const grpc::Status& status) {
    LY_LOG_INFO("grpc: rejected {} ({}): {} {}", method, reason,
                static_cast<int>(status.error_code()), status.error_message());
  };
#endif

  absl::StatusOr<std::unique_ptr<grpc_server::GrpcServer>> grpc =
      grpc_server::GrpcServer::Start(eng, {.host = config.host,
                                           .port = config.grpc_port,
                                           .server_version = LYCHEE_VERSION,
                                           .default_policy = config.default_policy,
                                           .policies = eng.ServedPolicies(),
                                           .api_keys = &api_keys,
                                           .owners = &owners,
                                           .min_priority = config.min_priority,
                                           .max_prompt_bytes = max_prompt_bytes,
                                           .on_reject = on_grpc_reject,
                                           .on_call_done = on_grpc_call,
                                           .tls_cert = config.tls_cert,
                                           .tls_key = config.tls_key,
                                           .tls_client_ca = config.tls_client_ca});
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
