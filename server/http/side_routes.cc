// SPDX-License-Identifier: Apache-2.0
// GET /metrics, /health and /ready (see side_routes.h).
#include "server/http/side_routes.h"

namespace lychee::http {

void ServingState::SetEngineAliveCheck(std::function<bool()> check) {
  std::lock_guard<std::mutex> lock(mu_);
  alive_check_ = std::move(check);
}

bool ServingState::alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return alive_check_ && alive_check_();
}

namespace {
HttpResponse Status(int code, const char* status) {
  HttpResponse response;
  response.status = code;
  response.body = std::string("{\"status\":\"") + status + "\"}";
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}
}  // namespace

void AddSideRoutes(Router& router, const metrics::MetricsRegistry* registry,
                   const ServingState* state) {
  router.Add("GET", "/metrics", [registry](const HttpRequest&, ResponseWriterPtr writer) {
    HttpResponse response;
    response.content_type = metrics::MetricsRegistry::kContentType;
    response.body = registry->Render();
    writer->Send(std::move(response));
  });
  router.Add("GET", "/health", [state](const HttpRequest&, ResponseWriterPtr writer) {
    writer->Send(state->alive() ? Status(200, "ok") : Status(503, "engine not alive"));
  });
  router.Add("GET", "/ready", [state](const HttpRequest&, ResponseWriterPtr writer) {
    if (state->ready()) return writer->Send(Status(200, "ready"));
    const char* why = !state->alive()          ? "engine not alive"
                      : !state->model_loaded() ? "loading"
                                               : "draining";
    writer->Send(Status(503, why));
  });
}

}  // namespace lychee::http
