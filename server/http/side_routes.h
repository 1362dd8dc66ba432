// SPDX-License-Identifier: Apache-2.0
// The side endpoints every lychee HTTP port serves:
//   GET /metrics  the registry in Prometheus text format 0.0.4
//   GET /health   200 while the engine thread is alive, else 503 (liveness)
//   GET /ready    200 once the model is loaded and the server is not draining, else 503
// ServingState holds what /health and /ready report; main flips it as the server starts, loads
// and drains (SIGTERM: SetDraining(true) first, so load balancers stop sending traffic).
//
// Threading: ServingState is written by the controlling thread and read by the I/O threads
// (atomics, and a mutex around the liveness probe function).
#pragma once

#include <atomic>
#include <functional>
#include <mutex>

#include "server/http/router.h"
#include "server/metrics/registry.h"

namespace lychee::http {

class ServingState {
 public:
  // The liveness probe, e.g. [&engine] { return engine.alive(); }. Unset: not alive.
  void SetEngineAliveCheck(std::function<bool()> check);
  void SetModelLoaded(bool loaded) { model_loaded_.store(loaded); }
  void SetDraining(bool draining) { draining_.store(draining); }

  bool alive() const;
  bool ready() const { return alive() && model_loaded_.load() && !draining_.load(); }
  bool draining() const { return draining_.load(); }
  bool model_loaded() const { return model_loaded_.load(); }

 private:
  mutable std::mutex mu_;
  std::function<bool()> alive_check_;  // guarded by mu_
  std::atomic<bool> model_loaded_{false};
  std::atomic<bool> draining_{false};
};

// Adds GET /metrics, /health and /ready. Both pointers must outlive the server.
void AddSideRoutes(Router& router, const metrics::MetricsRegistry* registry,
                   const ServingState* state);

}  // namespace lychee::http
