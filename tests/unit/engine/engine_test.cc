// SPDX-License-Identifier: Apache-2.0
// The Engine end to end on the embedded stories260K model (real weights, real tokenizer, the real
// scheduler and paged KV cache): reference greedy output, batch invariance, seeded sampling,
// device sampling against the host sampler (on the GPU), stop conditions, aborts and
// cancellation, preemption under a tiny KV pool, prefix caching, admission errors and draining.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/device_select.h"
#include "kvcache/kv_pool.h"
#include "model/config.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {
namespace {

constexpr char kModelDir[] = "models/stories260K";

std::vector<int32_t> ReferenceGreedyIds() {
  std::ifstream in(std::string(kModelDir) + "/reference/greedy_bos.json");
  return nlohmann::json::parse(in)["greedy_ids"].get<std::vector<int32_t>>();
}

// engine_test runs every case on the CPU; engine_cuda_test (the same file, built with
// LYCHEE_ENGINE_TEST_DEVICE="cuda", labelled gpu) runs them on the GPU and skips without one.
#if defined(LYCHEE_ENGINE_TEST_DEVICE)
constexpr char kDevice[] = LYCHEE_ENGINE_TEST_DEVICE;
#else
constexpr char kDevice[] = "cpu";
#endif

class DeviceEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (std::string(kDevice) == "cpu") return;
    auto device = ResolveDevice(kDevice);
    if (!device.ok()) {
      GTEST_SKIP() << "no GPU on this machine (" << device.status().message()
                   << "); run scripts/gpu-check.sh on the GPU machine";
    }
  }
};
const auto* const kDeviceEnvironment = ::testing::AddGlobalTestEnvironment(new DeviceEnvironment());

EngineConfig SmallConfig() {
  EngineConfig config;
  config.device = kDevice;
  config.model_dir = kModelDir;
  config.max_num_seqs = 8;
  config.max_num_batched_tokens = 256;
  return config;
}

std::unique_ptr<Engine> MakeEngine(const EngineConfig& config) {
  auto engine = Engine::Create(config);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

GenerationRequest Greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.max_tokens = max_tokens;
  request.ignore_eos = true;
  return request;
}

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  GenerationOutput last;
  int events = 0;
};

Collected Drain(const TokenStreamPtr& stream) {
  Collected c;
  while (auto event = stream->Next(absl::Now() + absl::Seconds(60))) {
    ++c.events;
    c.tokens.insert(c.tokens.end(), event->token_ids.begin(), event->token_ids.end());
    c.text += event->text;
    if (event->finished) {
      c.last = std::move(*event);
      break;
    }
  }
  return c;
}

Collected RunToEnd(Engine& engine, GenerationRequest request) {
  auto stream = engine.Submit(std::move(request));
  EXPECT_TRUE(stream.ok()) << stream.status();
  return stream.ok() ? Drain(*stream) : Collected{};
}

TEST(EngineTest, GreedyFromBosReproducesTheReferenceStory) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> reference = ReferenceGreedyIds();
  Collected c = RunToEnd(*engine, Greedy({reference[0]}, 150));
  ASSERT_EQ(c.tokens.size(), 150u);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(reference.begin() + 1, reference.begin() + 151));
  EXPECT_TRUE(c.last.finished);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.last.completion_tokens, 150);
  EXPECT_EQ(c.last.prompt_tokens, 1);
  EXPECT_EQ(engine->model_info().model_id, "stories260K");
  EXPECT_EQ(c.text, engine->tokenizer().Decode(c.tokens, /*skip_special_tokens=*/true));
  EXPECT_GT(c.last.timings.e2e_seconds, 0.0);
  EXPECT_LE(c.last.timings.first_token_seconds, c.last.timings.e2e_seconds);
}

// Prompts of different lengths, run together, give exactly what each gives alone.
TEST(EngineTest, ConcurrentGreedyRequestsMatchRunningThemOneAtATime) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  const Tokenizer& tok = engine->tokenizer();
  const std::vector<std::string> prompts = {
      "Once upon a time",       "Lily and Tom went to the park.", "The cat",
      "One day, a little bird", "Tim had a big red ball. He",     "Sue"};
  std::vector<Collected> alone;
  for (const std::string& p : prompts)
    alone.push_back(RunToEnd(*engine, Greedy(tok.Encode(p, true), 40)));

  std::vector<TokenStreamPtr> streams;
  for (const std::string& p : prompts) {
    auto s = engine->Submit(Greedy(tok.Encode(p, true), 40));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    Collected together = Drain(streams[i]);
    EXPECT_EQ(together.tokens, alone[i].tokens) << prompts[i];
    EXPECT_EQ(together.text, alone[i].text) << prompts[i];
  }
}

TEST(EngineTest, SameSeedSameSamplesAloneOrBatched) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  auto sampled = [](uint64_t seed) {
    GenerationRequest r = Greedy({1}, 30);
    r.sampling.temperature = 1.0f;
    r.sampling.top_p = 0.9f;
    r.sampling.seed = seed;
    r.sampling.has_seed = true;
    return r;
  };
  Collected alone = RunToEnd(*engine, sampled(7));
  auto a = engine->Submit(sampled(7));
  auto b = engine->Submit(sampled(8));
  ASSERT_TRUE(a.ok() && b.ok());
  Collected batched = Drain(*a);
  Collected other = Drain(*b);
  EXPECT_EQ(batched.tokens, alone.tokens);
  EXPECT_NE(other.tokens, alone.tokens);
}

TEST(EngineTest, StopStringEndsTheRequestAndIsNotShown) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  const std::string full = RunToEnd(*engine, Greedy({1}, 60)).text;
  const size_t at = full.find("Lily");
  ASSERT_NE(at, std::string::npos) << full;
  GenerationRequest r = Greedy({1}, 60);
  r.stop = {"Lily"};
  Collected c = RunToEnd(*engine, r);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.last.matched_stop, "Lily");
  EXPECT_EQ(c.text, full.substr(0, at));
}

TEST(EngineTest, StopTokenIdEndsTheRequest) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> reference = ReferenceGreedyIds();
  GenerationRequest r = Greedy({1}, 60);
  r.stop_token_ids = {reference[5]};
  Collected c = RunToEnd(*engine, r);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop);
  ASSERT_FALSE(c.tokens.empty());
  EXPECT_EQ(c.tokens.back(), reference[5]);
  EXPECT_LE(c.tokens.size(), 5u);
}

TEST(EngineTest, AbortAndCancelEndStreamsWithAbort) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  GenerationRequest r = Greedy({1}, 400);
  r.request_id = "to-abort";
  auto aborted = engine->Submit(r);
  ASSERT_TRUE(aborted.ok());
  auto cancelled = engine->Submit(Greedy({1}, 400));
  ASSERT_TRUE(cancelled.ok());
  ASSERT_TRUE((*aborted)->Next(absl::Now() + absl::Seconds(30)).has_value());
  engine->Abort("to-abort");
  (*cancelled)->Cancel();
  Collected a = Drain(*aborted);
  Collected c = Drain(*cancelled);
  EXPECT_EQ(a.last.finish_reason, FinishReason::kAbort);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kAbort);
  EXPECT_LT(a.last.completion_tokens, 400);
  // The engine keeps serving and the id is free again.
  r.max_tokens = 5;
  EXPECT_EQ(RunToEnd(*engine, r).last.completion_tokens, 5);
}

TEST(EngineTest, DeadlineEndsTheRequest) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  GenerationRequest r = Greedy({1}, 400);
  r.deadline = absl::Now() - absl::Seconds(1);
  Collected c = RunToEnd(*engine, r);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kAbort);
  EXPECT_EQ(c.last.error.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(EngineTest, BadRequestsAreRejectedWithTheFieldNamed) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  auto expect_invalid = [&](GenerationRequest r, const std::string& field) {
    auto s = engine->Submit(std::move(r));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.status().message()).find(field), std::string::npos) << s.status();
  };
  expect_invalid(Greedy({}, 5), "prompt");
  expect_invalid(Greedy({1, 99999}, 5), "prompt[1]");
  expect_invalid(Greedy({1}, 0), "max_tokens");
  expect_invalid(Greedy({1}, 100000), "max_model_len");
  GenerationRequest bad_temperature = Greedy({1}, 5);
  bad_temperature.sampling.temperature = -1;
  expect_invalid(bad_temperature, "temperature");
  GenerationRequest bad_policy = Greedy({1}, 5);
  bad_policy.policy.name = "nope";
  expect_invalid(bad_policy, "policy");

  GenerationRequest dup = Greedy({1}, 300);
  dup.request_id = "same";
  auto first = engine->Submit(dup);
  ASSERT_TRUE(first.ok());
  auto second = engine->Submit(dup);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  (*first)->Cancel();
  Drain(*first);
}

// The CPU pool's page dtype by default follows the served context (DefaultCpuKvDtype): lc20m at
// its 32K context gets bf16 pages (~2x the blocks of fp32 in the same budget), at 4K fp32; an
// explicit dtype wins. A sparse request then runs on the bf16 pool. CPU build only: a skip in the
// CUDA build would read as "no usable GPU" to scripts/gpu-check.sh.
#ifndef LYCHEE_ENGINE_TEST_DEVICE
TEST(EngineTest, CpuKvDtypeFollowsTheContextUnlessSet) {
  auto blocks = [](int64_t max_model_len, std::optional<KvDtype> dtype) -> int64_t {
    EngineConfig config = SmallConfig();
    config.model_dir = "models/lc20m";
    config.kv_cache_bytes = int64_t{32} << 20;
    config.max_model_len = max_model_len;
    config.cpu_kv_cache_dtype = dtype;
    auto engine = MakeEngine(config);
    return engine == nullptr ? -1 : engine->Stats().num_kv_blocks_total;
  };
  const int64_t fp32 = blocks(0, KvDtype::kFp32);
  const int64_t bf16 = blocks(0, KvDtype::kBf16);
  ASSERT_GT(fp32, 0);
  EXPECT_GT(bf16, fp32 * 3 / 2) << "half the K/V bytes (the fp32 key summaries stay)";
  EXPECT_EQ(blocks(0, std::nullopt), bf16) << "32K context: bf16 by default";
  EXPECT_EQ(blocks(4096, std::nullopt), fp32) << "4K context: fp32 by default";

  EngineConfig config = SmallConfig();
  config.model_dir = "models/lc20m";
  config.kv_cache_bytes = int64_t{32} << 20;
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 300; ++i) prompt.push_back(3 + (i * 7919) % 900);
  GenerationRequest r = Greedy(prompt, 4);
  r.policy.name = "quest";
  r.policy.budget_tokens = 64;
  const Collected out = RunToEnd(*engine, std::move(r));
  EXPECT_TRUE(out.last.error.ok()) << out.last.error;
  EXPECT_EQ(out.tokens.size(), 4u);
}
#endif  // LYCHEE_ENGINE_TEST_DEVICE

// Sparse policies through the engine on the GPU (engine/cuda_sparse_decode.h): lc20m (head_dim
// 64, GQA 2, a calibrated lychee mask), dense and sparse requests in one batch, every decode
// step audited. The CPU runs the same policies in engine_policy_test.
TEST(EngineTest, SparsePoliciesRunOnTheGpuBesideDenseRequests) {
  if (std::string(kDevice) == "cpu") GTEST_SKIP() << "the CPU case is engine_policy_test";
  EngineConfig config = SmallConfig();
  config.model_dir = "models/lc20m";
  config.max_num_batched_tokens = 2048;
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int32_t> token(3, 1000);
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 1500; ++i) prompt.push_back(token(rng));
  std::vector<std::pair<std::string, TokenStreamPtr>> streams;
  for (const char* name : {"dense", "quest", "streaming", "lychee", "prhs"}) {
    GenerationRequest r = Greedy(prompt, 8);
    r.policy.name = name;
    r.policy.budget_tokens = 256;
    r.policy.audit_rate = 1.0;
    auto stream = engine->Submit(std::move(r));
    ASSERT_TRUE(stream.ok()) << name << ": " << stream.status();
    streams.emplace_back(name, *stream);
  }
  for (auto& [name, stream] : streams) {
    SCOPED_TRACE(name);
    const Collected c = Drain(stream);
    ASSERT_EQ(c.last.finish_reason, FinishReason::kLength) << c.last.error;
    ASSERT_EQ(c.tokens.size(), 8u);
    const PolicyReport& r = c.last.policy_report;
    EXPECT_EQ(r.policy, name);
    if (name == "dense") {
      EXPECT_EQ(r.max_bound, -1.0f);
      continue;
    }
    EXPECT_GE(r.max_bound, 0.0f);
    EXPECT_LE(r.max_bound, 1.0f);
    EXPECT_LT(r.kv_read_fraction, 0.5);  // 256 of ~1500 tokens per kv head and layer
    EXPECT_GT(r.head_selections, 0);     // counted on the device
    EXPECT_GE(r.audited_steps, 7);
    EXPECT_GE(r.max_exact, 0.0f);
    EXPECT_LE(r.max_exact, r.max_bound + 1e-3f);  // the certified bound holds
    std::printf("%s: kv read %.3f, max bound %.3f, max exact %.3f over %lld audited steps\n",
                name.c_str(), r.kv_read_fraction, r.max_bound, r.max_exact,
                static_cast<long long>(r.audited_steps));
  }
  // max_dropped_mass: quest widens on the GPU until every step's bound holds (lc20m's bound is
  // near 1 at this budget, so it must widen); prhs grows its sets in advance to the same end.
  const auto bounded = [&](const std::string& name) {
    GenerationRequest request = Greedy(prompt, 4);
    request.policy.name = name;
    request.policy.budget_tokens = 256;
    request.policy.max_dropped_mass = 0.3;
    request.policy.audit_rate = 1.0;
    auto stream = engine->Submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) return PolicyReport{};
    const Collected c = Drain(*stream);
    EXPECT_EQ(c.last.finish_reason, FinishReason::kLength) << c.last.error;
    const PolicyReport& r = c.last.policy_report;
    EXPECT_LE(r.max_bound, 0.3f * (1 + 1e-5f)) << name;
    EXPECT_LE(r.max_exact, r.max_bound + 1e-3f) << name;
    std::printf(
        "%s, max_dropped_mass 0.3: kv read %.3f, max bound %.3f, %lld widenings, %lld "
        "dense fallbacks\n",
        name.c_str(), r.kv_read_fraction, r.max_bound, static_cast<long long>(r.widenings),
        static_cast<long long>(r.dense_fallbacks));
    return r;
  };
  EXPECT_GT(bounded("quest").widenings, 0);
  const PolicyReport grown = bounded("prhs");
  EXPECT_EQ(grown.widenings, 0);  // controlled in advance, never widened after reading
  EXPECT_GT(grown.kv_read_fraction, 256.0 / 1500.0);  // it had to grow (or fall back)
}

TEST(EngineTest, FullQueueIsResourceExhaustedAndOthersAreUnharmed) {
  EngineConfig config = SmallConfig();
  config.max_num_seqs = 1;
  config.max_queue_len = 2;
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::vector<TokenStreamPtr> accepted;
  int rejected = 0;
  for (int i = 0; i < 8; ++i) {
    auto s = engine->Submit(Greedy({1}, 50));
    if (s.ok()) {
      accepted.push_back(*s);
    } else {
      EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  for (const TokenStreamPtr& s : accepted) EXPECT_EQ(Drain(s).last.completion_tokens, 50);
}

// A pool too small for all requests at once forces preemption by recompute; outputs must not
// change.
TEST(EngineTest, PreemptionUnderATinyKvPoolKeepsOutputsIdentical) {
  auto reference_engine = MakeEngine(SmallConfig());
  ASSERT_NE(reference_engine, nullptr);
  const Tokenizer& tok = reference_engine->tokenizer();
  const std::vector<std::string> prompts = {"Once upon a time", "The dog", "A girl named Sue",
                                            "Tom and Ben"};
  std::vector<Collected> expected;
  for (const auto& p : prompts)
    expected.push_back(RunToEnd(*reference_engine, Greedy(tok.Encode(p, true), 100)));

  EngineConfig tiny = SmallConfig();
  // 20 blocks of 16 tokens: room for ~2.5 of the 4 requests at full length.
  tiny.num_kv_blocks_override = 20;
  auto engine = MakeEngine(tiny);
  ASSERT_NE(engine, nullptr);
  std::vector<TokenStreamPtr> streams;
  for (const auto& p : prompts)
    streams.push_back(*engine->Submit(Greedy(tok.Encode(p, true), 100)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Drain(streams[i]).tokens, expected[i].tokens) << prompts[i];
  }
  EXPECT_GT(engine->Stats().num_preemptions, 0);
}

TEST(EngineTest, RepeatedPromptHitsThePrefixCache) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> prompt = ReferenceGreedyIds();
  prompt.resize(70);  // four full blocks of 16 and a partial one
  Collected first = RunToEnd(*engine, Greedy(prompt, 10));
  Collected second = RunToEnd(*engine, Greedy(prompt, 10));
  EXPECT_EQ(first.last.cached_tokens, 0);
  EXPECT_EQ(second.last.cached_tokens, 64);
  EXPECT_EQ(second.tokens, first.tokens);
  const EngineStats stats = engine->Stats();
  EXPECT_GE(stats.prefix_cache_hits, 64);
  EXPECT_GE(stats.prefix_cache_queries, stats.prefix_cache_hits);
}

TEST(EngineTest, LogprobsDescribeTheChosenToken) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  GenerationRequest r = Greedy({1}, 5);
  r.top_logprobs = 3;
  auto stream = engine->Submit(r);
  ASSERT_TRUE(stream.ok());
  int seen = 0;
  while (auto event = (*stream)->Next(absl::Now() + absl::Seconds(30))) {
    ASSERT_EQ(event->logprobs.size(), event->token_ids.size());
    for (size_t i = 0; i < event->token_ids.size(); ++i) {
      const OutputLogprob& lp = event->logprobs[i];
      EXPECT_EQ(lp.token_id, event->token_ids[i]);
      ASSERT_EQ(lp.top.size(), 3u);
      EXPECT_EQ(lp.top[0].token, lp.token_id);  // greedy: the chosen token is the best
      EXPECT_FLOAT_EQ(lp.top[0].logprob, lp.logprob);
      EXPECT_LE(lp.logprob, 0.0f);
      ++seen;
    }
    if (event->finished) break;
  }
  EXPECT_EQ(seen, 5);
}

// Sampling on the device (the default with device: cuda) against the host sampler over the same
// logits (device_sampling: false): the same greedy tokens and text, with and without penalties,
// and the same logprobs within fp32. Requests run one at a time, so both engines run identical
// steps. On the CPU both engines sample on the host.
TEST(EngineTest, DeviceSamplingGivesTheHostSamplersGreedyTokens) {
  std::vector<GenerationRequest> requests;
  requests.push_back(Greedy({1}, 60));
  GenerationRequest with_logprobs = Greedy({1, 400, 25, 90}, 30);
  with_logprobs.top_logprobs = 4;
  requests.push_back(with_logprobs);
  GenerationRequest penalised = Greedy({1, 77, 77, 300}, 50);
  penalised.sampling.repetition_penalty = 1.3f;
  penalised.sampling.frequency_penalty = 0.4f;
  penalised.sampling.presence_penalty = 0.2f;
  penalised.top_logprobs = 2;
  requests.push_back(penalised);
  const auto run_all = [&requests](bool device_sampling) {
    EngineConfig config = SmallConfig();
    config.device_sampling = device_sampling;
    auto engine = MakeEngine(config);
    std::vector<Collected> out;
    std::vector<std::vector<OutputLogprob>> logprobs;
    if (engine == nullptr) return std::make_pair(out, logprobs);
    for (const GenerationRequest& r : requests) {
      auto stream = engine->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      if (!stream.ok()) continue;
      Collected c;
      std::vector<OutputLogprob> lp;
      while (auto event = (*stream)->Next(absl::Now() + absl::Seconds(60))) {
        c.tokens.insert(c.tokens.end(), event->token_ids.begin(), event->token_ids.end());
        c.text += event->text;
        lp.insert(lp.end(), event->logprobs.begin(), event->logprobs.end());
        if (event->finished) break;
      }
      out.push_back(std::move(c));
      logprobs.push_back(std::move(lp));
    }
    return std::make_pair(out, logprobs);
  };
  const auto [host, host_lp] = run_all(false);
  const auto [device, device_lp] = run_all(true);
  ASSERT_EQ(host.size(), requests.size());
  ASSERT_EQ(device.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ASSERT_EQ(host[i].tokens.size(), static_cast<size_t>(requests[i].max_tokens));
    EXPECT_EQ(device[i].tokens, host[i].tokens);
    EXPECT_EQ(device[i].text, host[i].text);
    ASSERT_EQ(device_lp[i].size(), host_lp[i].size());
    for (size_t t = 0; t < host_lp[i].size(); ++t) {
      const OutputLogprob& h = host_lp[i][t];
      const OutputLogprob& d = device_lp[i][t];
      EXPECT_EQ(d.token_id, h.token_id);
      EXPECT_NEAR(d.logprob, h.logprob, 1e-4) << "token " << t;
      ASSERT_EQ(d.top.size(), h.top.size()) << "token " << t;
      for (size_t j = 0; j < h.top.size(); ++j) {
        EXPECT_EQ(d.top[j].token, h.top[j].token) << "token " << t << " top " << j;
        EXPECT_NEAR(d.top[j].logprob, h.top[j].logprob, 1e-4) << "token " << t << " top " << j;
      }
    }
  }
  // The penalties change the greedy continuation (else this case would test nothing).
  EXPECT_NE(RunToEnd(*MakeEngine(SmallConfig()), Greedy({1, 77, 77, 300}, 50)).tokens,
            host[2].tokens);
}

TEST(EngineTest, ShutdownFinishesInFlightWorkThenRefusesNewRequests) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  auto running = engine->Submit(Greedy({1}, 20));
  ASSERT_TRUE(running.ok());
  engine->Shutdown(absl::Seconds(30));
  Collected c = Drain(*running);
  EXPECT_EQ(c.last.completion_tokens, 20);
  EXPECT_EQ(engine->Submit(Greedy({1}, 5)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, ShutdownWithoutGraceAbortsLongRequests) {
  auto engine = MakeEngine(SmallConfig());
  ASSERT_NE(engine, nullptr);
  auto running = engine->Submit(Greedy({1}, 400));
  ASSERT_TRUE(running.ok());
  engine->Shutdown(absl::ZeroDuration());
  Collected c = Drain(*running);
  EXPECT_TRUE(c.last.finished);
}

TEST(EngineTest, MissingModelIsAClearError) {
  EngineConfig config = SmallConfig();
  config.model_dir = "/nonexistent/model";
  auto engine = Engine::Create(config);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(std::string(engine.status().message()).find("/nonexistent/model"), std::string::npos);
}

}  // namespace
}  // namespace lychee
