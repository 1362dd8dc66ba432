// SPDX-License-Identifier: Apache-2.0
// Sparse policies through the whole Engine on the embedded stories260K model (5 layers, 4 kv
// heads, block size 16, 512-token context): a mixed batch of all five policies (dense,
// streaming, quest, lychee with a head-role mask written by HeadRoles::ToJson and cache
// correction, prhs with accuracy control) gives every request the greedy tokens it gets alone;
// each final event carries its PolicyReport (bounds, KV read, audits with the exact dropped mass
// under the bound, widenings, the policy's counters, corrections); audits are deterministic and
// do not change outputs; the head-role file is found, required by lychee, and a bad one stops
// the engine with its name. Random prompts from a fresh seed (LYCHEE_TEST_SEED replays).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "sparsity/head_roles.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr char kModelDir[] = "models/stories260K";
constexpr int64_t kLayers = 5, kKvHeads = 4;

struct Result {
  std::vector<int32_t> tokens;
  GenerationOutput last;
};

Result Drain(const TokenStreamPtr& stream) {
  Result r;
  while (auto event = stream->Next(absl::Now() + absl::Seconds(120))) {
    r.tokens.insert(r.tokens.end(), event->token_ids.begin(), event->token_ids.end());
    if (event->finished) {
      EXPECT_TRUE(event->error.ok()) << event->error;
      r.last = std::move(*event);
      break;
    }
  }
  return r;
}

// A temp file that removes itself.
struct TempFile {
  explicit TempFile(const std::string& text) {
    path = (std::filesystem::temp_directory_path() / ("lychee_roles_" + std::to_string(::getpid()) +
                                                      "_" + std::to_string(counter++) + ".json"))
               .string();
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
  std::string path;
  static inline int counter = 0;
};

std::string RolesJson() {
  sparsity::HeadRoles roles(kLayers, kKvHeads);  // layer 0 all retrieval
  roles.set_retrieval(2, 1, true);
  roles.set_retrieval(3, 3, true);
  return roles.ToJson();
}

class EnginePolicyTest : public ::testing::Test {
 protected:
  EnginePolicyTest() : seed_(::lychee::testing::TestSeed()), rng_(seed_) {}
  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }
  std::string Seed() const { return "LYCHEE_TEST_SEED=" + std::to_string(seed_); }

  std::unique_ptr<Engine> MakeEngine(const std::string& roles_path) {
    EngineConfig config;
    config.model_dir = kModelDir;
    config.device = "cpu";
    config.block_size = 16;
    config.max_num_seqs = 8;
    config.max_num_batched_tokens = 256;
    config.head_roles_path = roles_path;
    auto engine = Engine::Create(config);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }
  std::vector<int32_t> Prompt(int64_t len) {
    std::uniform_int_distribution<int32_t> tok(3, 511);
    std::vector<int32_t> p{1};
    for (int64_t i = 1; i < len; ++i) p.push_back(tok(rng_));
    return p;
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
};

GenerationRequest Request(std::vector<int32_t> prompt, const std::string& policy, int64_t budget) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = 64;
  r.ignore_eos = true;
  r.policy.name = policy;
  r.policy.budget_tokens = budget;
  return r;
}

// The five policies, with knobs that make each of them drop something on these contexts.
std::vector<GenerationRequest> FivePolicies(const std::vector<std::vector<int32_t>>& prompts) {
  std::vector<GenerationRequest> requests;
  requests.push_back(Request(prompts[0], "dense", 2048));
  requests.push_back(Request(prompts[1], "streaming", 48));
  GenerationRequest quest = Request(prompts[2], "quest", 48);
  quest.policy.max_dropped_mass = 0.3;
  quest.policy.audit_rate = 0.5;
  requests.push_back(quest);
  GenerationRequest lychee = Request(prompts[3], "lychee", 64);
  lychee.policy.lychee.sink_tokens = 4;
  lychee.policy.lychee.local_tokens = 16;
  lychee.policy.lychee.correction_interval = 16;
  lychee.policy.audit_rate = 0.25;
  requests.push_back(lychee);
  GenerationRequest prhs = Request(prompts[4], "prhs", 64);
  prhs.policy.max_dropped_mass = 0.5;
  prhs.policy.prhs.sink_tokens = 4;
  prhs.policy.prhs.local_tokens = 16;
  prhs.policy.audit_rate = 1.0;
  requests.push_back(prhs);
  return requests;
}

TEST_F(EnginePolicyTest, MixedBatchOfAllFivePoliciesMatchesEachAlone) {
  SCOPED_TRACE(Seed());
  TempFile roles(RolesJson());
  auto engine = MakeEngine(roles.path);
  ASSERT_NE(engine, nullptr);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t len : {150, 230, 180, 260, 200}) prompts.push_back(Prompt(len));
  const std::vector<GenerationRequest> requests = FivePolicies(prompts);

  std::vector<Result> alone;
  for (const GenerationRequest& r : requests) {
    auto stream = engine->Submit(r);
    ASSERT_TRUE(stream.ok()) << r.policy.name << ": " << stream.status();
    alone.push_back(Drain(*stream));
  }
  std::vector<TokenStreamPtr> streams;
  for (const GenerationRequest& r : requests) {
    auto stream = engine->Submit(r);
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string& name = requests[i].policy.name;
    SCOPED_TRACE(name);
    const Result together = Drain(streams[i]);
    ASSERT_EQ(alone[i].tokens.size(), 64u);
    EXPECT_EQ(together.tokens, alone[i].tokens);

    const PolicyReport& rep = together.last.policy_report;
    EXPECT_EQ(rep.policy, name);
    // Audits are a pure function of the request: the same steps. The masses agree closely, not
    // bit for bit: the batch's GEMMs (other row counts) round hidden states differently in the
    // last bits, which never flipped a greedy token here.
    const PolicyReport& solo = alone[i].last.policy_report;
    EXPECT_EQ(rep.audited_steps, solo.audited_steps);
    EXPECT_NEAR(rep.max_exact, solo.max_exact, 1e-3 * std::abs(solo.max_exact) + 1e-7);
    EXPECT_NEAR(rep.max_bound, solo.max_bound, 1e-3 * std::abs(solo.max_bound) + 1e-7);
    EXPECT_EQ(rep.widenings > 0, solo.widenings > 0);
    if (name == "dense") {
      EXPECT_EQ(rep.max_bound, -1.0f);
      EXPECT_EQ(rep.kv_read_fraction, 1.0);
      EXPECT_EQ(rep.head_selections, 0);
      continue;
    }
    EXPECT_GT(rep.max_bound, 0.0f);
    EXPECT_LE(rep.max_bound, 1.0f);
    EXPECT_GT(rep.mean_bound, 0.0);
    EXPECT_LE(rep.mean_bound, rep.max_bound);
    EXPECT_GT(rep.selection_seconds, 0.0);
    // Decode steps read less than dense (63 of the 64 tokens were decoded).
    EXPECT_LT(rep.kv_read_fraction, 1.0);
    EXPECT_GT(rep.kv_read_fraction, 0.0);
    if (requests[i].policy.audit_rate > 0) {
      EXPECT_GT(rep.audited_steps, 0);
      EXPECT_GE(rep.max_exact, 0.0f);
      EXPECT_LE(rep.max_exact, rep.max_bound) << "an exact mass above the certified bound";
    } else {
      EXPECT_EQ(rep.audited_steps, 0);
      EXPECT_EQ(rep.max_exact, -1.0f);
    }
    const float limit = static_cast<float>(requests[i].policy.max_dropped_mass);
    EXPECT_LE(rep.max_bound, limit);
    if (name == "lychee" || name == "prhs") {
      EXPECT_EQ(rep.head_selections, alone[i].last.policy_report.head_selections);
      EXPECT_GT(rep.head_selections, 0);
    }
    if (name == "lychee") {
      // Every 16 sparse decode tokens, one correction (plus its new token): 63 decodes → 3.
      EXPECT_EQ(rep.cache_corrections, 3);
      EXPECT_GT(rep.reused, 0);  // sparse heads reuse their retrieval head's set
    } else {
      EXPECT_EQ(rep.cache_corrections, 0);
    }
  }
}

// An audit runs dense attention beside the sparse one but the step's output stays sparse.
TEST_F(EnginePolicyTest, AuditsDoNotChangeOutputs) {
  SCOPED_TRACE(Seed());
  auto engine = MakeEngine("");
  ASSERT_NE(engine, nullptr);
  GenerationRequest r = Request(Prompt(220), "quest", 32);
  auto plain = engine->Submit(r);
  ASSERT_TRUE(plain.ok());
  const Result a = Drain(*plain);
  r.policy.audit_rate = 1.0;
  auto audited = engine->Submit(r);
  ASSERT_TRUE(audited.ok());
  const Result b = Drain(*audited);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.last.policy_report.audited_steps, 0);
  EXPECT_EQ(b.last.policy_report.audited_steps, 63);  // every decode step
  EXPECT_LE(b.last.policy_report.max_exact, b.last.policy_report.max_bound);
  EXPECT_EQ(a.last.policy_report.max_bound, b.last.policy_report.max_bound);
}

TEST_F(EnginePolicyTest, HeadRolesFileIsRequiredByLycheeAndCheckedAtStartup) {
  SCOPED_TRACE(Seed());
  {
    // stories260K has no lychee_head_roles.json: lychee is refused, the others run.
    auto engine = MakeEngine("");
    ASSERT_NE(engine, nullptr);
    auto refused = engine->Submit(Request(Prompt(20), "lychee", 64));
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(std::string(refused.status().message()).find("head-role"), std::string::npos)
        << refused.status();
    EXPECT_TRUE(engine->Submit(Request(Prompt(20), "prhs", 64)).ok());
  }
  {
    // A mask of another shape, and a file that is not JSON: startup errors naming the file.
    sparsity::HeadRoles wrong(kLayers + 1, kKvHeads);
    TempFile shape(wrong.ToJson());
    TempFile garbage("{not json");
    for (const std::string& path : {shape.path, garbage.path, std::string("/nonexistent.json")}) {
      EngineConfig config;
      config.model_dir = kModelDir;
      config.device = "cpu";
      config.head_roles_path = path;
      auto engine = Engine::Create(config);
      ASSERT_FALSE(engine.ok()) << path;
      EXPECT_NE(std::string(engine.status().message()).find(path), std::string::npos)
          << engine.status();
    }
  }
  {
    TempFile roles(RolesJson());
    auto engine = MakeEngine(roles.path);
    ASSERT_NE(engine, nullptr);
    auto accepted = engine->Submit(Request(Prompt(20), "lychee", 64));
    ASSERT_TRUE(accepted.ok()) << accepted.status();
    EXPECT_EQ(Drain(*accepted).tokens.size(), 64u);
  }
}

}  // namespace
}  // namespace lychee
