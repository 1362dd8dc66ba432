// SPDX-License-Identifier: Apache-2.0
#include "server/main/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "common/file.h"
#include "common/status.h"
#include "server/security/api_keys.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy_factory.h"

namespace lychee {
namespace {

template <typename T>
absl::Status Read(const YAML::Node& node, const std::string& key, T& out) {
  try {
    out = node.as<T>();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("config key `{}`: cannot read `{}` as the expected type", key,
                    node.IsScalar() ? node.Scalar() : std::string("<non-scalar>")));
  }
  return absl::OkStatus();
}

// The keys of one YAML mapping, each handed to `apply(key, value)`; `prefix` names the mapping in
// errors ("default_policy.").
template <typename Apply>
absl::Status ForEachKey(const YAML::Node& node, const std::string& prefix, Apply apply) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        fmt::format("config key `{}` must be a mapping", prefix.substr(0, prefix.size() - 1)));
  }
  for (const auto& entry : node) {
    std::string k;
    try {
      k = entry.first.as<std::string>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError("config: keys must be strings");
    }
    if (entry.second.IsNull()) continue;  // no value keeps the default
    LY_RETURN_IF_ERROR(apply(prefix + k, k, entry.second));
  }
  return absl::OkStatus();
}

absl::Status ApplyLychee(const YAML::Node& node, LycheeKnobs& l) {
  return ForEachKey(
      node, "default_policy.lychee.",
      [&l](const std::string& path, const std::string& k, const YAML::Node& v) {
        if (k == "mode") return Read(v, path, l.mode);
        if (k == "sink_tokens") return Read(v, path, l.sink_tokens);
        if (k == "local_tokens") return Read(v, path, l.local_tokens);
        if (k == "correction_interval") return Read(v, path, l.correction_interval);
        return absl::InvalidArgumentError(fmt::format("unknown config key `{}`", path));
      });
}

absl::Status ApplyPrhs(const YAML::Node& node, PrhsKnobs& h) {
  return ForEachKey(
      node, "default_policy.prhs.",
      [&h](const std::string& path, const std::string& k, const YAML::Node& v) {
        if (k == "tau") return Read(v, path, h.tau);
        if (k == "dilation") return Read(v, path, h.dilation);
        if (k == "dilate_fraction") return Read(v, path, h.dilate_fraction);
        if (k == "sink_tokens") return Read(v, path, h.sink_tokens);
        if (k == "local_tokens") return Read(v, path, h.local_tokens);
        if (k == "psaw_start_layer") return Read(v, path, h.psaw_start_layer);
        if (k == "psaw_phi") return Read(v, path, h.psaw_phi);
        if (k == "psaw_alpha") return Read(v, path, h.psaw_alpha);
        return absl::InvalidArgumentError(fmt::format("unknown config key `{}`", path));
      });
}

absl::Status ApplyDefaultPolicy(const YAML::Node& node, PolicySpec& p) {
  return ForEachKey(
      node, "default_policy.",
      [&p](const std::string& path, const std::string& k, const YAML::Node& v) {
        if (k == "name") return Read(v, path, p.name);
        if (k == "budget_tokens") return Read(v, path, p.budget_tokens);
        if (k == "max_dropped_mass") return Read(v, path, p.max_dropped_mass);
        if (k == "audit_rate") return Read(v, path, p.audit_rate);
        if (k == "lychee") return ApplyLychee(v, p.lychee);
        if (k == "prhs") return ApplyPrhs(v, p.prhs);
        return absl::InvalidArgumentError(fmt::format("unknown config key `{}`", path));
      });
}

absl::Status ApplyKey(const std::string& key, const YAML::Node& v, ServerConfig& c) {
  EngineConfig& e = c.engine;
  if (key == "model") return Read(v, key, e.model_dir);
  if (key == "served_model_name") return Read(v, key, e.served_model_name);
  if (key == "host") return Read(v, key, c.host);
  if (key == "grpc_port") return Read(v, key, c.grpc_port);
  if (key == "http_port") return Read(v, key, c.http_port);
  if (key == "device") return Read(v, key, e.device);
  if (key == "tokenizer") return Read(v, key, e.tokenizer_dir);
  if (key == "gpu_memory_utilization") return Read(v, key, e.gpu_memory_utilization);
  if (key == "enforce_eager") return Read(v, key, e.enforce_eager);
  if (key == "device_sampling") return Read(v, key, e.device_sampling);
  if (key == "block_size") return Read(v, key, e.block_size);
  if (key == "kv_cache_bytes") return Read(v, key, e.kv_cache_bytes);
  if (key == "kv_cache_dtype") return Read(v, key, c.kv_cache_dtype);
  if (key == "max_num_seqs") return Read(v, key, e.max_num_seqs);
  if (key == "max_num_batched_tokens") return Read(v, key, e.max_num_batched_tokens);
  if (key == "max_model_len") return Read(v, key, e.max_model_len);
  if (key == "max_queue_len") return Read(v, key, e.max_queue_len);
  if (key == "enable_prefix_caching") return Read(v, key, e.enable_prefix_caching);
  if (key == "seed") return Read(v, key, e.seed);
  if (key == "shutdown_grace_seconds") return Read(v, key, c.shutdown_grace_seconds);
  if (key == "log_level") return Read(v, key, c.log_level);
  if (key == "head_roles") return Read(v, key, e.head_roles_path);
  if (key == "default_policy") return ApplyDefaultPolicy(v, c.default_policy);
  if (key == "api_keys") return Read(v, key, c.api_keys);
  if (key == "api_key_file") return Read(v, key, c.api_key_file);
  if (key == "metrics_require_auth") return Read(v, key, c.metrics_require_auth);
  if (key == "min_priority") return Read(v, key, c.min_priority);
  if (key == "max_prompt_bytes") return Read(v, key, c.max_prompt_bytes);
  if (key == "max_connections") return Read(v, key, c.max_connections);
  if (key == "access_log") return Read(v, key, c.access_log);
  if (key == "access_log_format") return Read(v, key, c.access_log_format);
  if (key == "memory_trim") return Read(v, key, c.memory_trim);
  if (key == "tls_cert") return Read(v, key, c.tls_cert);
  if (key == "tls_key") return Read(v, key, c.tls_key);
  if (key == "tls_client_ca") return Read(v, key, c.tls_client_ca);
  return absl::InvalidArgumentError(fmt::format("unknown config key `{}`", key));
}

absl::Status CheckAtLeast(const char* key, int64_t value, int64_t lo) {
  if (value >= lo) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("{} is {}, must be >= {}", key, value, lo));
}

// The sparsity factory's own checks (names and ranges), with the model-dependent ones (a
// head-role mask for lychee, sliding-window models) left to the engine, and the field named
// as the config spells it.
absl::Status ValidateDefaultPolicy(const PolicySpec& spec, int64_t block_size) {
  sparsity::PolicyContext context;
  context.block_size = block_size;
  context.head_roles = std::make_shared<const sparsity::HeadRoles>(1, 1);
  const absl::Status st = sparsity::ValidatePolicySpec(spec, context);
  if (st.ok()) return st;
  std::string message(st.message());
  if (absl::StartsWith(message, "policy")) message = "default_" + message;
  return absl::Status(st.code(), message);
}

}  // namespace

absl::Status ApplyYamlConfig(std::string_view yaml_text, ServerConfig& config) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(fmt::format("config: YAML syntax error: {}", e.what()));
  }
  if (root.IsNull()) return absl::OkStatus();  // an empty file
  if (!root.IsMap()) return absl::InvalidArgumentError("config: the top level must be a mapping");
  for (const auto& entry : root) {
    std::string key;
    try {
      key = entry.first.as<std::string>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError("config: keys must be strings");
    }
    if (entry.second.IsNull()) continue;  // `key:` with no value keeps the default
    LY_RETURN_IF_ERROR(ApplyKey(key, entry.second, config));
  }
  return absl::OkStatus();
}

absl::Status ValidateServerConfig(const ServerConfig& c) {
  const EngineConfig& e = c.engine;
  if (e.model_dir.empty()) return absl::InvalidArgumentError("model is required (--model DIR)");
  int cuda_index = 0;
  const bool cuda_n = absl::StartsWith(e.device, "cuda:") &&
                      absl::SimpleAtoi(e.device.substr(5), &cuda_index) && cuda_index >= 0;
  if (e.device != "auto" && e.device != "cpu" && e.device != "cuda" && !cuda_n) {
    return absl::InvalidArgumentError(
        fmt::format("device is `{}`, must be auto, cpu, cuda or cuda:N", e.device));
  }
  if (!(e.gpu_memory_utilization > 0.0 && e.gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        fmt::format("gpu_memory_utilization is {}, must be in (0, 1]", e.gpu_memory_utilization));
  }
  for (const auto& [key, port] :
       {std::pair{"grpc_port", c.grpc_port}, {"http_port", c.http_port}}) {
    if (port < 0 || port > 65535) {
      return absl::InvalidArgumentError(fmt::format("{} is {}, must be in [0, 65535]", key, port));
    }
  }
  LY_RETURN_IF_ERROR(CheckAtLeast("block_size", e.block_size, 1));
  LY_RETURN_IF_ERROR(CheckAtLeast("kv_cache_bytes", e.kv_cache_bytes, 0));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_num_seqs", e.max_num_seqs, 1));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_num_batched_tokens", e.max_num_batched_tokens, 1));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_model_len", e.max_model_len, 0));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_queue_len", e.max_queue_len, 0));
  if (!(c.shutdown_grace_seconds >= 0 && c.shutdown_grace_seconds <= 86400)) {
    return absl::InvalidArgumentError(fmt::format(
        "shutdown_grace_seconds is {}, must be in [0, 86400]", c.shutdown_grace_seconds));
  }
  LY_RETURN_IF_ERROR(ValidateDefaultPolicy(c.default_policy, e.block_size));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_prompt_bytes", c.max_prompt_bytes, 0));
  LY_RETURN_IF_ERROR(CheckAtLeast("max_connections", c.max_connections, 1));
  if (c.kv_cache_dtype != "auto" && c.kv_cache_dtype != "fp32" && c.kv_cache_dtype != "bf16") {
    return absl::InvalidArgumentError(
        fmt::format("kv_cache_dtype is `{}`, must be auto, fp32 or bf16", c.kv_cache_dtype));
  }
  if (c.access_log_format != "text" && c.access_log_format != "json") {
    return absl::InvalidArgumentError(
        fmt::format("access_log_format is `{}`, must be text or json", c.access_log_format));
  }
  for (const std::string& key : c.api_keys) {
    if (!security::IsValidApiKey(key)) {
      return absl::InvalidArgumentError(
          "api_keys: an API key must be 1 to 4096 printable ASCII characters without blanks");
    }
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError("tls_cert and tls_key must be given together");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    return absl::InvalidArgumentError("tls_client_ca needs tls_cert and tls_key");
  }
  static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                                 "error", "critical", "off"};
  bool known_level = false;
  for (std::string_view level : kLevels) known_level |= (c.log_level == level);
  if (!known_level) {
    return absl::InvalidArgumentError(
        fmt::format("log_level is `{}`, must be trace, debug, info, warn, error, critical or off",
                    c.log_level));
  }
  return absl::OkStatus();
}

int64_t EffectiveMaxPromptBytes(const ServerConfig& config, int64_t max_model_len) {
  if (config.max_prompt_bytes > 0) return config.max_prompt_bytes;
  // No tokenizer we serve averages anywhere near 32 bytes per token on text that fits the
  // context; the floor keeps tiny test models usable.
  return std::max<int64_t>(int64_t{32} * max_model_len, 64 * 1024);
}

absl::StatusOr<ParsedServerArgs> ParseServerArgs(int argc, const char* const* argv) {
  CLI::App app{"lychee-server: LLM inference over gRPC (lychee.v1) with /metrics on HTTP"};
  std::string config_path;
  ServerConfig flags;  // values of the given flags; only those given override the file
  app.add_option("--config", config_path, "YAML config file (see configs/default.yaml)");
  app.add_option("--model", flags.engine.model_dir,
                 "model folder (config.json, safetensors, "
                 "tokenizer)");
  app.add_option("--served-model-name", flags.engine.served_model_name, "name reported to clients");
  app.add_option("--host", flags.host, "address to listen on (gRPC and HTTP)");
  app.add_option("--grpc-port", flags.grpc_port, "gRPC port; 0 picks a free one");
  app.add_option("--http-port", flags.http_port, "HTTP port (/metrics, /health); 0 picks one");
  app.add_option("--device", flags.engine.device,
                 "auto (CUDA when a GPU is usable), cpu, cuda or cuda:N");
  app.add_option("--tokenizer", flags.engine.tokenizer_dir,
                 "tokenizer folder; default: the model folder (synthetic models need one)");
  app.add_option("--gpu-memory-utilization", flags.engine.gpu_memory_utilization,
                 "CUDA: fraction of the GPU's memory for weights, activations and KV cache");
  app.add_option("--enforce-eager", flags.engine.enforce_eager,
                 "CUDA: run decode steps kernel by kernel instead of replaying CUDA graphs "
                 "(true/false)");
  app.add_option("--device-sampling", flags.engine.device_sampling,
                 "CUDA: sample on the GPU (true/false; false copies logits to the host sampler)");
  app.add_option("--block-size", flags.engine.block_size, "KV cache tokens per block");
  app.add_option("--kv-cache-bytes", flags.engine.kv_cache_bytes, "KV pool bytes; 0: automatic");
  app.add_option("--kv-cache-dtype", flags.kv_cache_dtype,
                 "CPU KV pages: auto (bf16 beyond 8192 tokens of context), fp32 or bf16");
  app.add_option("--max-num-seqs", flags.engine.max_num_seqs, "requests per step at most");
  app.add_option("--max-num-batched-tokens", flags.engine.max_num_batched_tokens,
                 "tokens per step at most");
  app.add_option("--max-model-len", flags.engine.max_model_len, "context per request; 0: model's");
  app.add_option("--max-queue-len", flags.engine.max_queue_len, "waiting requests at most");
  app.add_option("--enable-prefix-caching", flags.engine.enable_prefix_caching,
                 "share KV blocks of equal prompt prefixes (true/false)");
  app.add_option("--seed", flags.engine.seed, "seed for requests without their own");
  app.add_option("--shutdown-grace-seconds", flags.shutdown_grace_seconds,
                 "SIGTERM: time live requests get to finish");
  app.add_option("--log-level", flags.log_level, "trace|debug|info|warn|error|critical|off");
  app.add_option("--head-roles", flags.engine.head_roles_path,
                 "LycheeDecode head-role mask (lychee-calibrate's JSON); default: "
                 "<model>/lychee_head_roles.json when present");
  app.add_option("--api-key", flags.api_keys,
                 "a bearer token clients must present (repeatable; also $LYCHEE_API_KEY)");
  app.add_option("--api-key-file", flags.api_key_file, "file of API keys, one per line");
  app.add_option("--metrics-require-auth", flags.metrics_require_auth,
                 "/metrics needs an API key too (true/false)");
  app.add_option("--min-priority", flags.min_priority,
                 "client priorities below this are raised to it (lower runs sooner)");
  app.add_option("--max-prompt-bytes", flags.max_prompt_bytes,
                 "prompt text bytes at most, checked before tokenizing; 0: 32 x max_model_len");
  app.add_option("--max-connections", flags.max_connections,
                 "HTTP connections at most; beyond, requests other than probes get 503");
  app.add_option("--access-log", flags.access_log, "one log line per HTTP request (true/false)");
  app.add_option("--access-log-format", flags.access_log_format,
                 "text (a log line) or json (one JSON object a line, also for gRPC calls)");
  app.add_option("--memory-trim", flags.memory_trim,
                 "give freed heap memory back to the system once idle after work (true/false)");
  app.add_option("--tls-cert", flags.tls_cert, "PEM certificate chain: TLS on both ports");
  app.add_option("--tls-key", flags.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", flags.tls_client_ca,
                 "PEM CA: clients must present a certificate it signed (mutual TLS)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return ParsedServerArgs{.config = {}, .exit_now = true};
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }

  ParsedServerArgs parsed;
  ServerConfig& c = parsed.config;
  c.engine.model_dir = "models/stories260K";
  if (!config_path.empty()) {
    LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(config_path));
    if (absl::Status st = ApplyYamlConfig(text, c); !st.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: {}", config_path, std::string(st.message())));
    }
  }
  auto given = [&app](const char* name) { return app.count(name) > 0; };
  if (given("--model")) c.engine.model_dir = flags.engine.model_dir;
  if (given("--served-model-name")) c.engine.served_model_name = flags.engine.served_model_name;
  if (given("--host")) c.host = flags.host;
  if (given("--grpc-port")) c.grpc_port = flags.grpc_port;
  if (given("--http-port")) c.http_port = flags.http_port;
  if (given("--device")) c.engine.device = flags.engine.device;
  if (given("--tokenizer")) c.engine.tokenizer_dir = flags.engine.tokenizer_dir;
  if (given("--gpu-memory-utilization")) {
    c.engine.gpu_memory_utilization = flags.engine.gpu_memory_utilization;
  }
  if (given("--enforce-eager")) c.engine.enforce_eager = flags.engine.enforce_eager;
  if (given("--device-sampling")) c.engine.device_sampling = flags.engine.device_sampling;
  if (given("--block-size")) c.engine.block_size = flags.engine.block_size;
  if (given("--kv-cache-bytes")) c.engine.kv_cache_bytes = flags.engine.kv_cache_bytes;
  if (given("--max-num-seqs")) c.engine.max_num_seqs = flags.engine.max_num_seqs;
  if (given("--max-num-batched-tokens")) {
    c.engine.max_num_batched_tokens = flags.engine.max_num_batched_tokens;
  }
  if (given("--max-model-len")) c.engine.max_model_len = flags.engine.max_model_len;
  if (given("--max-queue-len")) c.engine.max_queue_len = flags.engine.max_queue_len;
  if (given("--enable-prefix-caching")) {
    c.engine.enable_prefix_caching = flags.engine.enable_prefix_caching;
  }
  if (given("--seed")) c.engine.seed = flags.engine.seed;
  if (given("--shutdown-grace-seconds")) c.shutdown_grace_seconds = flags.shutdown_grace_seconds;
  if (given("--log-level")) c.log_level = flags.log_level;
  if (given("--head-roles")) c.engine.head_roles_path = flags.engine.head_roles_path;
  // API keys add up: the file's list, every --api-key, $LYCHEE_API_KEY, the key file's lines.
  for (const std::string& key : flags.api_keys) c.api_keys.push_back(key);
  if (const char* env_key = std::getenv("LYCHEE_API_KEY"); env_key != nullptr && *env_key) {
    c.api_keys.emplace_back(env_key);
  }
  if (given("--api-key-file")) c.api_key_file = flags.api_key_file;
  if (!c.api_key_file.empty()) {
    LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(c.api_key_file));
    absl::StatusOr<std::vector<std::string>> keys = security::ParseApiKeyFile(text);
    if (!keys.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("api_key_file {}: {}", c.api_key_file, std::string(keys.status().message())));
    }
    if (keys->empty()) {
      return absl::InvalidArgumentError(
          fmt::format("api_key_file {} holds no key", c.api_key_file));
    }
    c.api_keys.insert(c.api_keys.end(), keys->begin(), keys->end());
  }
  if (given("--metrics-require-auth")) c.metrics_require_auth = flags.metrics_require_auth;
  if (given("--min-priority")) c.min_priority = flags.min_priority;
  if (given("--max-prompt-bytes")) c.max_prompt_bytes = flags.max_prompt_bytes;
  if (given("--max-connections")) c.max_connections = flags.max_connections;
  if (given("--access-log")) c.access_log = flags.access_log;
  if (given("--access-log-format")) c.access_log_format = flags.access_log_format;
  if (given("--memory-trim")) c.memory_trim = flags.memory_trim;
  if (given("--tls-cert")) c.tls_cert = flags.tls_cert;
  if (given("--tls-key")) c.tls_key = flags.tls_key;
  if (given("--tls-client-ca")) c.tls_client_ca = flags.tls_client_ca;
  if (given("--kv-cache-dtype")) c.kv_cache_dtype = flags.kv_cache_dtype;
  LY_RETURN_IF_ERROR(ValidateServerConfig(c));
  if (c.kv_cache_dtype == "auto") {
    c.engine.cpu_kv_cache_dtype.reset();
  } else {
    c.engine.cpu_kv_cache_dtype = c.kv_cache_dtype == "bf16" ? KvDtype::kBf16 : KvDtype::kFp32;
  }
  return parsed;
}

}  // namespace lychee
