// SPDX-License-Identifier: Apache-2.0
// server/main/config: configs/default.yaml parses and matches the built-in defaults, unknown
// keys and bad values name the key, flags override the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/file.h"
#include "server/main/config.h"

namespace lychee {
namespace {

absl::StatusOr<ParsedServerArgs> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "lychee-server");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseServerArgs(static_cast<int>(argv.size()), argv.data());
}

TEST(ServerConfigTest, DefaultYamlHasEveryKeyAndTheDefaults) {
  auto text = ReadFile("configs/default.yaml");
  ASSERT_TRUE(text.ok()) << text.status();
  ServerConfig from_file;
  ASSERT_TRUE(ApplyYamlConfig(*text, from_file).ok());
  ServerConfig defaults;
  defaults.engine.model_dir = "models/stories260K";
  EXPECT_EQ(from_file.engine.model_dir, defaults.engine.model_dir);
  EXPECT_EQ(from_file.host, defaults.host);
  EXPECT_EQ(from_file.grpc_port, defaults.grpc_port);
  EXPECT_EQ(from_file.http_port, defaults.http_port);
  EXPECT_EQ(from_file.engine.device, defaults.engine.device);
  EXPECT_EQ(from_file.engine.block_size, defaults.engine.block_size);
  EXPECT_EQ(from_file.engine.kv_cache_bytes, defaults.engine.kv_cache_bytes);
  EXPECT_EQ(from_file.engine.max_num_seqs, defaults.engine.max_num_seqs);
  EXPECT_EQ(from_file.engine.max_num_batched_tokens, defaults.engine.max_num_batched_tokens);
  EXPECT_EQ(from_file.engine.max_model_len, defaults.engine.max_model_len);
  EXPECT_EQ(from_file.engine.max_queue_len, defaults.engine.max_queue_len);
  EXPECT_EQ(from_file.engine.enable_prefix_caching, defaults.engine.enable_prefix_caching);
  EXPECT_EQ(from_file.engine.seed, defaults.engine.seed);
  EXPECT_EQ(from_file.engine.tokenizer_dir, defaults.engine.tokenizer_dir);
  EXPECT_EQ(from_file.engine.gpu_memory_utilization, defaults.engine.gpu_memory_utilization);
  EXPECT_EQ(from_file.engine.enforce_eager, defaults.engine.enforce_eager);
  EXPECT_EQ(from_file.engine.device_sampling, defaults.engine.device_sampling);
  EXPECT_EQ(from_file.shutdown_grace_seconds, defaults.shutdown_grace_seconds);
  EXPECT_EQ(from_file.log_level, defaults.log_level);
  EXPECT_EQ(from_file.engine.head_roles_path, defaults.engine.head_roles_path);
  EXPECT_EQ(from_file.api_keys, defaults.api_keys);
  EXPECT_EQ(from_file.api_key_file, defaults.api_key_file);
  EXPECT_EQ(from_file.metrics_require_auth, defaults.metrics_require_auth);
  EXPECT_EQ(from_file.min_priority, defaults.min_priority);
  EXPECT_EQ(from_file.max_prompt_bytes, defaults.max_prompt_bytes);
  EXPECT_EQ(from_file.max_connections, defaults.max_connections);
  EXPECT_EQ(from_file.access_log, defaults.access_log);
  EXPECT_EQ(from_file.access_log_format, defaults.access_log_format);
  EXPECT_EQ(from_file.kv_cache_dtype, defaults.kv_cache_dtype);
  EXPECT_EQ(from_file.memory_trim, defaults.memory_trim);
  EXPECT_EQ(from_file.tls_cert, defaults.tls_cert);
  EXPECT_EQ(from_file.tls_key, defaults.tls_key);
  EXPECT_EQ(from_file.tls_client_ca, defaults.tls_client_ca);
  // default_policy: every knob, as PolicySpec's defaults.
  const PolicySpec& p = from_file.default_policy;
  const PolicySpec& d = defaults.default_policy;
  EXPECT_EQ(p.name, d.name);
  EXPECT_EQ(p.budget_tokens, d.budget_tokens);
  EXPECT_EQ(p.max_dropped_mass, d.max_dropped_mass);
  EXPECT_EQ(p.audit_rate, d.audit_rate);
  EXPECT_EQ(p.lychee.mode, d.lychee.mode);
  EXPECT_EQ(p.lychee.sink_tokens, d.lychee.sink_tokens);
  EXPECT_EQ(p.lychee.local_tokens, d.lychee.local_tokens);
  EXPECT_EQ(p.lychee.correction_interval, d.lychee.correction_interval);
  EXPECT_EQ(p.prhs.tau, d.prhs.tau);
  EXPECT_EQ(p.prhs.dilation, d.prhs.dilation);
  EXPECT_EQ(p.prhs.dilate_fraction, d.prhs.dilate_fraction);
  EXPECT_EQ(p.prhs.sink_tokens, d.prhs.sink_tokens);
  EXPECT_EQ(p.prhs.local_tokens, d.prhs.local_tokens);
  EXPECT_EQ(p.prhs.psaw_start_layer, d.prhs.psaw_start_layer);
  EXPECT_EQ(p.prhs.psaw_phi, d.prhs.psaw_phi);
  EXPECT_EQ(p.prhs.psaw_alpha, d.prhs.psaw_alpha);
  for (const char* key :
       {"  name:", "  budget_tokens:", "  max_dropped_mass:", "  audit_rate:", "  lychee:",
        "    mode:", "    sink_tokens:", "    local_tokens:", "    correction_interval:", "  prhs:",
        "    tau:", "    dilation:", "    dilate_fraction:", "    psaw_start_layer:",
        "    psaw_phi:", "    psaw_alpha:"}) {
    EXPECT_NE(text->find(std::string("\n") + key), std::string::npos) << key;
  }
  EXPECT_TRUE(ValidateServerConfig(from_file).ok());
  // Every key is documented: each ApplyKey key appears in the file.
  for (const char* key : {"model:",
                          "served_model_name:",
                          "host:",
                          "grpc_port:",
                          "http_port:",
                          "device:",
                          "block_size:",
                          "kv_cache_bytes:",
                          "kv_cache_dtype:",
                          "max_num_seqs:",
                          "max_num_batched_tokens:",
                          "max_model_len:",
                          "max_queue_len:",
                          "enable_prefix_caching:",
                          "seed:",
                          "shutdown_grace_seconds:",
                          "log_level:",
                          "tokenizer:",
                          "gpu_memory_utilization:",
                          "enforce_eager:",
                          "device_sampling:",
                          "head_roles:",
                          "default_policy:",
                          "api_keys:",
                          "api_key_file:",
                          "metrics_require_auth:",
                          "min_priority:",
                          "max_prompt_bytes:",
                          "max_connections:",
                          "access_log:",
                          "access_log_format:",
                          "memory_trim:",
                          "tls_cert:",
                          "tls_key:",
                          "tls_client_ca:"}) {
    EXPECT_NE(text->find(std::string("\n") + key), std::string::npos) << key;
  }
}

TEST(ServerConfigTest, UnknownKeyIsNamed) {
  ServerConfig c;
  absl::Status st = ApplyYamlConfig("grpc_port: 1\nmax_num_sequences: 4\n", c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_num_sequences"), absl::string_view::npos) << st;
}

TEST(ServerConfigTest, DefaultPolicySection) {
  ServerConfig c;
  ASSERT_TRUE(ApplyYamlConfig(R"(
default_policy:
  name: prhs
  budget_tokens: 512
  max_dropped_mass: 0
  audit_rate: 0.5
  lychee:
    mode: token
    correction_interval: 32
  prhs:
    tau: 0.9
    psaw_phi: 0.5
    sink_tokens:
head_roles: /masks/roles.json
)",
                              c)
                  .ok());
  EXPECT_EQ(c.default_policy.name, "prhs");
  EXPECT_EQ(c.default_policy.budget_tokens, 512);
  EXPECT_EQ(c.default_policy.max_dropped_mass, 0.0);
  EXPECT_EQ(c.default_policy.audit_rate, 0.5);
  EXPECT_EQ(c.default_policy.lychee.mode, "token");
  EXPECT_EQ(c.default_policy.lychee.correction_interval, 32);
  EXPECT_EQ(c.default_policy.lychee.sink_tokens, LycheeKnobs().sink_tokens);
  EXPECT_EQ(c.default_policy.prhs.tau, 0.9);
  EXPECT_EQ(c.default_policy.prhs.psaw_phi, 0.5);
  EXPECT_EQ(c.default_policy.prhs.sink_tokens, PrhsKnobs().sink_tokens);
  EXPECT_EQ(c.engine.head_roles_path, "/masks/roles.json");
  c.engine.model_dir = "models/stories260K";
  EXPECT_TRUE(ValidateServerConfig(c).ok());

  // Unknown nested keys and bad values name the full key.
  for (const auto& [yaml, key] : std::vector<std::pair<std::string, std::string>>{
           {"default_policy:\n  budget: 5\n", "default_policy.budget"},
           {"default_policy:\n  prhs:\n    taux: 1\n", "default_policy.prhs.taux"},
           {"default_policy:\n  lychee:\n    sink_tokens: many\n",
            "default_policy.lychee.sink_tokens"},
           {"default_policy: prhs\n", "default_policy"},
       }) {
    ServerConfig bad;
    const absl::Status st = ApplyYamlConfig(yaml, bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_NE(st.message().find(key), absl::string_view::npos) << st;
  }
  // Ranges are the sparsity factory's, named as the config spells them.
  for (const auto& [yaml, key] : std::vector<std::pair<std::string, std::string>>{
           {"default_policy:\n  name: magic\n", "default_policy.name"},
           {"default_policy:\n  audit_rate: 2\n", "default_policy.audit_rate"},
           {"default_policy:\n  name: quest\n  budget_tokens: 4\n", "default_policy.budget_tokens"},
           {"default_policy:\n  name: prhs\n  prhs:\n    tau: 3\n", "default_policy.prhs.tau"},
           {"default_policy:\n  name: lychee\n  lychee:\n    mode: page\n",
            "default_policy.lychee.mode"},
       }) {
    ServerConfig bad;
    bad.engine.model_dir = "models/stories260K";
    ASSERT_TRUE(ApplyYamlConfig(yaml, bad).ok()) << yaml;
    const absl::Status st = ValidateServerConfig(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_NE(st.message().find(key), absl::string_view::npos) << st;
  }
  auto parsed = Parse({"--head-roles", "/tmp/roles.json"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.engine.head_roles_path, "/tmp/roles.json");
}

TEST(ServerConfigTest, BadValueIsNamed) {
  ServerConfig c;
  absl::Status st = ApplyYamlConfig("max_num_seqs: many\n", c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_num_seqs"), absl::string_view::npos) << st;
  EXPECT_FALSE(ApplyYamlConfig("[1, 2]", c).ok());
  EXPECT_FALSE(ApplyYamlConfig("a: [", c).ok());
  EXPECT_TRUE(ApplyYamlConfig("", c).ok());
}

TEST(ServerConfigTest, FlagsOverrideTheFile) {
  const std::string path = ::testing::TempDir() + "/lychee_config_test.yaml";
  {
    std::ofstream out(path);
    out << "grpc_port: 7000\nhttp_port: 7001\nmax_num_seqs: 3\nlog_level: warn\n";
  }
  auto parsed = Parse({"--config", path, "--grpc-port", "0", "--device", "cpu", "--kv-cache-bytes",
                       "1048576", "--model", "models/stories260K"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.grpc_port, 0);     // flag
  EXPECT_EQ(parsed->config.http_port, 7001);  // file
  EXPECT_EQ(parsed->config.engine.max_num_seqs, 3);
  EXPECT_EQ(parsed->config.engine.kv_cache_bytes, 1048576);
  EXPECT_EQ(parsed->config.log_level, "warn");
  std::remove(path.c_str());
}

TEST(ServerConfigTest, ApiKeysAddUpFromEverySource) {
  const std::string path = ::testing::TempDir() + "/lychee_api_keys_test.txt";
  {
    std::ofstream out(path);
    out << "# rotation: old key first\n  file-key-1  \n\nfile-key-2\n";
  }
  const std::string yaml_path = ::testing::TempDir() + "/lychee_api_keys_test.yaml";
  {
    std::ofstream out(yaml_path);
    out << "api_keys: [yaml-key]\n";
  }
  setenv("LYCHEE_API_KEY", "env-key", 1);
  auto parsed =
      Parse({"--config", yaml_path, "--api-key", "flag-key-1", "--api-key", "flag-key-2",
             "--api-key-file", path, "--metrics-require-auth", "true", "--min-priority", "-5",
             "--max-prompt-bytes", "1000", "--max-connections", "8", "--access-log", "true"});
  unsetenv("LYCHEE_API_KEY");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ServerConfig& c = parsed->config;
  EXPECT_EQ(c.api_keys, (std::vector<std::string>{"yaml-key", "flag-key-1", "flag-key-2", "env-key",
                                                  "file-key-1", "file-key-2"}));
  EXPECT_TRUE(c.metrics_require_auth);
  EXPECT_EQ(c.min_priority, -5);
  EXPECT_EQ(c.max_prompt_bytes, 1000);
  EXPECT_EQ(c.max_connections, 8);
  EXPECT_TRUE(c.access_log);
  EXPECT_EQ(EffectiveMaxPromptBytes(c, 512), 1000);
  ServerConfig defaults;
  EXPECT_EQ(EffectiveMaxPromptBytes(defaults, 131072), 32 * 131072);
  EXPECT_EQ(EffectiveMaxPromptBytes(defaults, 512), 64 * 1024);

  // A key with a blank, an empty key file, a missing one: refused at startup, naming the file.
  {
    std::ofstream out(path);
    out << "two words\n";
  }
  auto bad = Parse({"--api-key-file", path});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 1"), absl::string_view::npos) << bad.status();
  {
    std::ofstream out(path);
    out << "# nothing\n";
  }
  EXPECT_FALSE(Parse({"--api-key-file", path}).ok());
  EXPECT_FALSE(Parse({"--api-key-file", "/nonexistent/keys"}).ok());
  EXPECT_FALSE(Parse({"--api-key", "has space"}).ok());
  EXPECT_FALSE(Parse({"--tls-cert", "/x.pem"}).ok());  // without --tls-key
  EXPECT_FALSE(Parse({"--tls-client-ca", "/ca.pem"}).ok());
  EXPECT_FALSE(Parse({"--max-connections", "0"}).ok());
  std::remove(path.c_str());
  std::remove(yaml_path.c_str());
}

TEST(ServerConfigTest, InvalidValuesAreRejected) {
  EXPECT_FALSE(Parse({"--device", "tpu"}).ok());
  EXPECT_FALSE(Parse({"--device", "cuda:x"}).ok());
  EXPECT_TRUE(Parse({"--device", "cuda:1"}).ok());
  EXPECT_TRUE(Parse({"--device", "auto"}).ok());
  EXPECT_FALSE(Parse({"--gpu-memory-utilization", "1.5"}).ok());
  EXPECT_FALSE(Parse({"--gpu-memory-utilization", "0"}).ok());
  EXPECT_FALSE(Parse({"--grpc-port", "70000"}).ok());
  EXPECT_FALSE(Parse({"--max-num-seqs", "0"}).ok());
  EXPECT_FALSE(Parse({"--no-such-flag"}).ok());
  EXPECT_FALSE(Parse({"--config", "/nonexistent/x.yaml"}).ok());
  // The access log's format: text or json, nothing else.
  auto json_format = Parse({"--access-log-format", "json"});
  ASSERT_TRUE(json_format.ok()) << json_format.status();
  EXPECT_EQ(json_format->config.access_log_format, "json");
  auto no_trim = Parse({"--memory-trim", "false"});
  ASSERT_TRUE(no_trim.ok()) << no_trim.status();
  EXPECT_FALSE(no_trim->config.memory_trim);
  auto bad_format = Parse({"--access-log-format", "xml"});
  ASSERT_FALSE(bad_format.ok());
  EXPECT_NE(bad_format.status().message().find("access_log_format"), absl::string_view::npos);
  auto help = Parse({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->exit_now);
}

TEST(ServerConfigTest, KvCacheDtypeReachesTheEngine) {
  auto by_default = Parse({});
  ASSERT_TRUE(by_default.ok()) << by_default.status();
  EXPECT_EQ(by_default->config.kv_cache_dtype, "auto");
  EXPECT_FALSE(by_default->config.engine.cpu_kv_cache_dtype.has_value()) << "auto: by context";
  auto fp32 = Parse({"--kv-cache-dtype", "fp32"});
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  EXPECT_EQ(fp32->config.engine.cpu_kv_cache_dtype, KvDtype::kFp32);
  auto bf16 = Parse({"--kv-cache-dtype", "bf16"});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->config.engine.cpu_kv_cache_dtype, KvDtype::kBf16);
  auto fp16 = Parse({"--kv-cache-dtype", "fp16"});
  ASSERT_FALSE(fp16.ok());
  EXPECT_NE(fp16.status().message().find("kv_cache_dtype"), absl::string_view::npos);
}

}  // namespace
}  // namespace lychee
