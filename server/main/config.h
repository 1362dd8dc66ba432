// SPDX-License-Identifier: Apache-2.0
// ServerConfig: every option of lychee-server, from one YAML file (configs/default.yaml
// documents each key) with command-line flags on top. Parsed once in main and passed down
// explicitly; nothing else reads files, flags or environment variables for configuration.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/request.h"

namespace lychee {

struct ServerConfig {
  EngineConfig engine;  // model, served_model_name, device, KV cache and scheduler limits, seed
  std::string host = "0.0.0.0";
  int grpc_port = 50051;               // 0: pick a free port (logged at startup)
  int http_port = 8000;                // /metrics, /health, /ready; 0: pick a free port
  double shutdown_grace_seconds = 30;  // SIGTERM: time live requests get to finish
  std::string log_level = "info";      // trace, debug, info, warn, error, critical, off
  // What a request's unset policy fields become (gRPC SparsityPolicy, the OpenAI `policy`
  // object): name, budget, dropped-mass bound, audit rate and each policy's knobs.
  PolicySpec default_policy;
};

// Applies the keys of a YAML mapping to `config`. Unknown keys and values of the wrong type are
// InvalidArgument naming the key.
absl::Status ApplyYamlConfig(std::string_view yaml_text, ServerConfig& config);

// Ranges and enumerations (ports, device, sizes, log level, default_policy's knobs).
absl::Status ValidateServerConfig(const ServerConfig& config);

// Command line: `--config FILE` first, then every other flag overrides the file. Returns
// `exit_now` after --help (printed to stdout).
struct ParsedServerArgs {
  ServerConfig config;
  bool exit_now = false;  // --help was printed
};
absl::StatusOr<ParsedServerArgs> ParseServerArgs(int argc, const char* const* argv);

}  // namespace lychee
