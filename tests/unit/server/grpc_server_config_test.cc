// SPDX-License-Identifier: Apache-2.0
// server/main/config: configs/default.yaml parses and matches the built-in defaults, unknown
// keys and bad values name the key, flags override the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
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
  EXPECT_EQ(from_file.shutdown_grace_seconds, defaults.shutdown_grace_seconds);
  EXPECT_EQ(from_file.log_level, defaults.log_level);
  EXPECT_TRUE(ValidateServerConfig(from_file).ok());
  // Every key is documented: each ApplyKey key appears in the file.
  for (const char* key :
       {"model:", "served_model_name:", "host:", "grpc_port:", "http_port:", "device:",
        "block_size:", "kv_cache_bytes:", "max_num_seqs:", "max_num_batched_tokens:",
        "max_model_len:", "max_queue_len:", "enable_prefix_caching:", "seed:",
        "shutdown_grace_seconds:", "log_level:", "tokenizer:", "gpu_memory_utilization:",
        "enforce_eager:"}) {
    EXPECT_NE(text->find(std::string("\n") + key), std::string::npos) << key;
  }
}

TEST(ServerConfigTest, UnknownKeyIsNamed) {
  ServerConfig c;
  absl::Status st = ApplyYamlConfig("grpc_port: 1\nmax_num_sequences: 4\n", c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_num_sequences"), absl::string_view::npos) << st;
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
  auto help = Parse({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->exit_now);
}

}  // namespace
}  // namespace lychee
