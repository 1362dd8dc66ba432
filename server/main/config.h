// SPDX-License-Identifier: Apache-2.0
// ServerConfig: every option of lychee-server, from one YAML file (configs/default.yaml
// documents each key) with command-line flags on top. Parsed once in main and passed down
// explicitly; nothing else reads files, flags or environment variables for configuration.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

  // --- security and bounded work (configs/default.yaml documents each) ---
  // Bearer tokens clients must present on both ports; empty: no authentication. ParseServerArgs
  // gathers them from the file's `api_keys`, every --api-key, $LYCHEE_API_KEY and the lines of
  // api_key_file.
  std::vector<std::string> api_keys;
  std::string api_key_file;
  bool metrics_require_auth = false;  // /metrics needs a key too (/health, /ready never do)
  // Client-supplied priorities below this are raised to it (lower runs sooner): by default a
  // client may yield (priority > 0) but not jump ahead of others.
  int32_t min_priority = 0;
  // Prompt text longer than this (bytes) is refused before tokenizing. 0: 32 bytes per token of
  // the context length (max_model_len).
  int64_t max_prompt_bytes = 0;
  int max_connections = 1024;  // HTTP connections; beyond, requests other than probes get 503
  bool access_log = false;     // one info line per HTTP request
  // "text": a log line; "json": one JSON object per line on stdout, without the log's prefix
  // (server/http/access_log.h has the fields), and a line per gRPC call too.
  std::string access_log_format = "text";
  // CPU KV pages: auto (bf16 when the served context exceeds 8192 tokens, else fp32), fp32 (the
  // reference) or bf16 (half the bytes attention reads). Sets engine.cpu_kv_cache_dtype.
  std::string kv_cache_dtype = "auto";
  // Give heap memory freed after a spike back to the system (malloc_trim) once the engine is
  // idle after work, and under load after a large request (common/memory_trim.h).
  bool memory_trim = true;
  // TLS on both ports: PEM certificate chain and private key; with tls_client_ca, clients must
  // present a certificate signed by it (mutual TLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
};

// max_prompt_bytes as configured, or its default for a context of `max_model_len` tokens.
int64_t EffectiveMaxPromptBytes(const ServerConfig& config, int64_t max_model_len);

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
