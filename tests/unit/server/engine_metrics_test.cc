// SPDX-License-Identifier: Apache-2.0
// EngineMetrics without an engine: observer events and a stats function drive every lychee_*
// family; the rendered exposition is checked for values and then linted by promtool (Debian's
// prometheus package), which must report no problems at all.
#include "server/metrics/engine_metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/metrics/registry.h"

namespace lychee {
namespace {

bool Contains(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

GenerationRequest MakeRequest(const std::string& policy) {
  GenerationRequest request;
  request.request_id = "r";
  request.prompt = {1, 2, 3};
  request.policy.name = policy;
  return request;
}

GenerationOutput MakeFinal(FinishReason reason, int64_t prompt, int64_t completion, double queue,
                           double ttft, double e2e) {
  GenerationOutput out;
  out.finished = true;
  out.finish_reason = reason;
  out.prompt_tokens = prompt;
  out.completion_tokens = completion;
  out.timings = {.queue_seconds = queue, .first_token_seconds = ttft, .e2e_seconds = e2e};
  return out;
}

// A fully populated EngineMetrics: every family has at least one child with data.
std::string RenderPopulated(metrics::MetricsRegistry& registry, EngineMetrics& m) {
  m.SetStatsSource([] {
    EngineStats stats;
    stats.num_running = 3;
    stats.num_waiting = 7;
    stats.kv_usage = 0.25;
    return stats;
  });
  m.SetCacheConfig(16, 4096);
  m.OnStep(/*prompt_tokens=*/100, /*generated_tokens=*/0, 0.05);
  m.OnStep(0, 4, 0.01);
  m.OnStep(20, 4, 0.02);
  m.OnPrefixCacheLookup(64, 32);
  m.OnPrefixCacheLookup(16, 0);
  m.OnPreemption();
  m.OnInterTokenLatency("dense", 0.0015);
  m.OnInterTokenLatency("dense", 0.02);
  m.OnInterTokenLatency("lychee", 0.004);
  m.OnRequestFinished(MakeRequest("dense"), MakeFinal(FinishReason::kStop, 100, 8, 0.2, 0.4, 1.2));
  m.OnRequestFinished(MakeRequest("dense"),
                      MakeFinal(FinishReason::kLength, 20, 16, 0.1, 0.3, 2.0));
  m.OnRequestFinished(MakeRequest("lychee"), MakeFinal(FinishReason::kAbort, 5, 0, 0.5, 0, 0.6));
  m.RecordDroppedMass("lychee", 0.003);
  m.OnDroppedMass("quest", 0.25);  // the engine's callback records the same histogram
  // Sparse decode steps: one audited prhs step, one plain; a lychee step with a widening.
  m.OnSparseStep("prhs", SparseChunkStats{.max_bound = 0.02f,
                                          .sum_bound = 0.1,
                                          .heads = 32,
                                          .kv_tokens_read = 3000,
                                          .kv_tokens_dense = 12000,
                                          .widenings = 0,
                                          .exact_max = 0.005f,
                                          .selection_seconds = 0.25});
  m.OnSparseStep("prhs", SparseChunkStats{.max_bound = 0.5f,
                                          .sum_bound = 2.0,
                                          .heads = 32,
                                          .kv_tokens_read = 1000,
                                          .kv_tokens_dense = 12000,
                                          .widenings = 0,
                                          .exact_max = -1.0f,
                                          .selection_seconds = 0.5});
  m.OnSparseStep("lychee", SparseChunkStats{.max_bound = 0.0625f,
                                            .sum_bound = 0.01,
                                            .heads = 32,
                                            .kv_tokens_read = 500,
                                            .kv_tokens_dense = 1000,
                                            .widenings = 3,
                                            .exact_max = -1.0f,
                                            .selection_seconds = 0.125});
  m.OnCacheCorrection("lychee");
  m.OnCacheCorrection("lychee");
  GenerationOutput prhs_final = MakeFinal(FinishReason::kStop, 10, 2, 0.1, 0.2, 0.3);
  prhs_final.policy_report.policy = "prhs";
  prhs_final.policy_report.head_selections = 64;
  prhs_final.policy_report.reused = 48;
  prhs_final.policy_report.dense_fallbacks = 2;
  m.OnRequestFinished(MakeRequest("prhs"), prhs_final);
  return registry.Render();
}

TEST(EngineMetricsTest, EventsAndStatsReachTheExposition) {
  metrics::MetricsRegistry registry;
  EngineMetrics m(&registry, {.model_name = "stories260K", .max_model_len = 512});
  const std::string text = RenderPopulated(registry, m);

  EXPECT_TRUE(Contains(text, R"(lychee_num_requests_running{model="stories260K"} 3)")) << text;
  EXPECT_TRUE(Contains(text, R"(lychee_num_requests_waiting{model="stories260K"} 7)"));
  EXPECT_TRUE(Contains(text, R"(lychee_kv_cache_usage_perc{model="stories260K"} 0.25)"));
  EXPECT_TRUE(Contains(text, R"(lychee_prompt_tokens_total{model="stories260K"} 120)"));
  EXPECT_TRUE(Contains(text, R"(lychee_generation_tokens_total{model="stories260K"} 8)"));
  EXPECT_TRUE(Contains(text, R"(lychee_num_preemptions_total{model="stories260K"} 1)"));
  EXPECT_TRUE(Contains(text, R"(lychee_prefix_cache_queries_total{model="stories260K"} 80)"));
  EXPECT_TRUE(Contains(text, R"(lychee_prefix_cache_hits_total{model="stories260K"} 32)"));
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_request_success_total{model="stories260K",policy="dense",finished_reason="stop"} 1)"));
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_request_success_total{model="stories260K",policy="lychee",finished_reason="abort"} 1)"));
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_cache_config_info{model="stories260K",block_size="16",num_gpu_blocks="4096"} 1)"));
  // ITL: fine low-end buckets (1 ms, 2 ms, ...), cumulative.
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_inter_token_latency_seconds_bucket{model="stories260K",policy="dense",le="0.001"} 0)"));
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_inter_token_latency_seconds_bucket{model="stories260K",policy="dense",le="0.002"} 1)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_inter_token_latency_seconds_count{model="stories260K",policy="dense"} 2)"));
  // TTFT only for requests that produced a token (the aborted one did not).
  EXPECT_TRUE(Contains(
      text, R"(lychee_time_to_first_token_seconds_count{model="stories260K",policy="dense"} 2)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_time_to_first_token_seconds_count{model="stories260K",policy="lychee"} 0)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_e2e_request_latency_seconds_sum{model="stories260K",policy="dense"} 3.2)"));
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_request_queue_time_seconds_bucket{model="stories260K",policy="dense",le="0.3"} 2)"));
  // Token-count histograms: 1-2-5 buckets up to max_model_len.
  EXPECT_TRUE(Contains(
      text,
      R"(lychee_request_prompt_tokens_bucket{model="stories260K",policy="dense",le="500"} 2)"));
  EXPECT_EQ(
      text.find(
          R"(lychee_request_prompt_tokens_bucket{model="stories260K",policy="dense",le="1000"})"),
      std::string::npos);
  EXPECT_TRUE(Contains(
      text, R"(lychee_request_generation_tokens_sum{model="stories260K",policy="dense"} 24)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_dropped_mass_count{model="stories260K",policy="lychee"} 1)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_dropped_mass_sum{model="stories260K",policy="quest"} 0.25)"));
  EXPECT_TRUE(Contains(text, R"(lychee_iteration_tokens_count{model="stories260K"} 3)"));

  // Sparse attention.
  EXPECT_TRUE(
      Contains(text, R"(lychee_dropped_mass_bound_count{model="stories260K",policy="prhs"} 2)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_dropped_mass_bound_bucket{model="stories260K",policy="prhs",le="0.02"} 1)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_dropped_mass_bound_sum{model="stories260K",policy="lychee"} 0.0625)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_dropped_mass_exact_count{model="stories260K",policy="prhs"} 1)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_dropped_mass_exact_count{model="stories260K",policy="lychee"} 0)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_kv_tokens_read_total{model="stories260K",policy="prhs"} 4000)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_kv_tokens_dense_total{model="stories260K",policy="prhs"} 24000)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_policy_widenings_total{model="stories260K",policy="lychee"} 3)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_policy_selection_seconds_total{model="stories260K",policy="prhs"} 0.75)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_policy_selections_total{model="stories260K",policy="prhs"} 64)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_policy_reused_selections_total{model="stories260K",policy="prhs"} 48)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_policy_dense_fallbacks_total{model="stories260K",policy="prhs"} 2)"));
  EXPECT_TRUE(
      Contains(text, R"(lychee_cache_corrections_total{model="stories260K",policy="lychee"} 2)"));
}

TEST(EngineMetricsTest, GaugesFollowTheStatsSourceAtEachScrape) {
  metrics::MetricsRegistry registry;
  EngineMetrics m(&registry, {.model_name = "m"});
  int64_t waiting = 0;
  m.SetStatsSource([&waiting] {
    EngineStats stats;
    stats.num_waiting = waiting;
    return stats;
  });
  waiting = 5;
  EXPECT_TRUE(Contains(registry.Render(), R"(lychee_num_requests_waiting{model="m"} 5)"));
  waiting = 2;
  EXPECT_TRUE(Contains(registry.Render(), R"(lychee_num_requests_waiting{model="m"} 2)"));
}

TEST(EngineMetricsTest, ChangedCacheConfigKeepsOneSeriesAtOne) {
  metrics::MetricsRegistry registry;
  EngineMetrics m(&registry, {.model_name = "m"});
  m.SetCacheConfig(16, 100);
  m.SetCacheConfig(32, 50);
  const std::string text = registry.Render();
  EXPECT_TRUE(Contains(
      text, R"(lychee_cache_config_info{model="m",block_size="16",num_gpu_blocks="100"} 0)"));
  EXPECT_TRUE(Contains(
      text, R"(lychee_cache_config_info{model="m",block_size="32",num_gpu_blocks="50"} 1)"));
}

TEST(EngineMetricsTest, RegistryOutlivingEngineMetricsStillRenders) {
  metrics::MetricsRegistry registry;
  {
    EngineMetrics m(&registry, {.model_name = "m"});
    m.SetStatsSource([] { return EngineStats{.num_running = 1}; });
    EXPECT_TRUE(Contains(registry.Render(), R"(lychee_num_requests_running{model="m"} 1)"));
  }
  // The collect hook is now a no-op; the gauges keep their last values.
  EXPECT_TRUE(Contains(registry.Render(), R"(lychee_num_requests_running{model="m"} 1)"));
}

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs `command` through the shell, capturing stdout and stderr together.
CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(EngineMetricsTest, PromtoolCheckMetricsReportsNoProblems) {
  const char* promtool = "/usr/bin/promtool";
  if (access(promtool, X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed (scripts/install-deps.sh installs Debian's prometheus)";
  }
  metrics::MetricsRegistry registry;
  EngineMetrics m(&registry, {.model_name = "Qwen/Qwen3-8B \"test\"", .max_model_len = 131072});
  const std::string text = RenderPopulated(registry, m);

  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("lychee_metrics_" + std::to_string(getpid()) + ".prom");
  {
    std::ofstream file(path, std::ios::binary);
    file << text;
  }
  const CommandResult result =
      RunCommand(std::string(promtool) + " check metrics < " + path.string());
  std::filesystem::remove(path);
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n--- exposition ---\n" << text;
  // promtool prints lint problems (and exits 3 for them); nothing at all means clean.
  EXPECT_EQ(result.output, "") << result.output;
}

}  // namespace
}  // namespace lychee
