// SPDX-License-Identifier: Apache-2.0
// Sparse policies through the whole Engine on the embedded stories260K model (block size 16,
// 512-token context): quest with a budget covering the context and any policy with
// max_dropped_mass 0 reproduce dense greedy output; small budgets run and report certified
// dropped masses in [0, 1] through EngineObserver::OnDroppedMass; max_dropped_mass is honoured;
// dense requests batched with sparse ones are unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_observer.h"

namespace lychee {
namespace {

constexpr char kModelDir[] = "models/stories260K";
constexpr int64_t kTokens = 300;

class MassRecorder final : public EngineObserver {
 public:
  void OnDroppedMass(std::string_view policy, double mass) override {
    std::lock_guard<std::mutex> lock(mu_);
    masses_.emplace_back(std::string(policy), mass);
  }
  std::vector<std::pair<std::string, double>> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(masses_);
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, double>> masses_;
};

std::unique_ptr<Engine> MakeEngine(EngineObserver* observer) {
  EngineConfig config;
  config.model_dir = kModelDir;
  config.block_size = 16;
  config.max_num_seqs = 4;
  config.max_num_batched_tokens = 256;
  auto engine = Engine::Create(config, observer);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

GenerationRequest Greedy(const std::string& policy, int64_t budget, double max_mass = 1.0) {
  GenerationRequest request;
  request.prompt = {1};  // BOS
  request.max_tokens = kTokens;
  request.ignore_eos = true;
  request.policy.name = policy;
  request.policy.budget_tokens = budget;
  request.policy.max_dropped_mass = max_mass;
  return request;
}

std::vector<int32_t> Drain(const TokenStreamPtr& stream) {
  std::vector<int32_t> tokens;
  while (auto event = stream->Next(absl::Now() + absl::Seconds(120))) {
    tokens.insert(tokens.end(), event->token_ids.begin(), event->token_ids.end());
    if (event->finished) {
      EXPECT_TRUE(event->error.ok()) << event->error;
      break;
    }
  }
  return tokens;
}

std::vector<int32_t> Generate(Engine& engine, GenerationRequest request) {
  auto stream = engine.Submit(std::move(request));
  EXPECT_TRUE(stream.ok()) << stream.status();
  return stream.ok() ? Drain(*stream) : std::vector<int32_t>{};
}

class SparseEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = MakeEngine(&recorder_);
    ASSERT_NE(engine_, nullptr);
    dense_ = Generate(*engine_, Greedy("dense", 2048));
    ASSERT_EQ(dense_.size(), static_cast<size_t>(kTokens));
    EXPECT_TRUE(recorder_.Take().empty());  // dense records no dropped mass
  }
  MassRecorder recorder_;
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> dense_;
};

TEST_F(SparseEngineTest, QuestWithBudgetCoveringTheContextIsDense) {
  EXPECT_EQ(Generate(*engine_, Greedy("quest", 512)), dense_);
  const auto masses = recorder_.Take();
  // One per decode step: the 299 after the BOS prompt (whose one-token prefill runs dense).
  EXPECT_EQ(masses.size(), static_cast<size_t>(kTokens - 1));
  for (const auto& [policy, mass] : masses) {
    EXPECT_EQ(policy, "quest");
    EXPECT_EQ(mass, 0.0);
  }
}

TEST_F(SparseEngineTest, SmallBudgetsRunAndCertifyTheirDroppedMass) {
  for (const char* name : {"streaming", "quest"}) {
    const std::vector<int32_t> tokens = Generate(*engine_, Greedy(name, 64));
    EXPECT_EQ(tokens.size(), static_cast<size_t>(kTokens)) << name;
    const auto masses = recorder_.Take();
    ASSERT_EQ(masses.size(), static_cast<size_t>(kTokens - 1)) << name;
    double worst = 0;
    for (const auto& [policy, mass] : masses) {
      EXPECT_EQ(policy, name);
      EXPECT_GE(mass, 0.0);
      EXPECT_LE(mass, 1.0);
      worst = std::max(worst, mass);
    }
    EXPECT_GT(worst, 0.0) << name << " never skipped a block at 64 tokens of 300";
  }
}

TEST_F(SparseEngineTest, MaxDroppedMassZeroIsDense) {
  EXPECT_EQ(Generate(*engine_, Greedy("quest", 64, 0.0)), dense_);
  EXPECT_EQ(Generate(*engine_, Greedy("streaming", 16, 0.0)), dense_);
  for (const auto& [policy, mass] : recorder_.Take()) EXPECT_EQ(mass, 0.0) << policy;
}

TEST_F(SparseEngineTest, MaxDroppedMassBoundsEveryStep) {
  EXPECT_EQ(Generate(*engine_, Greedy("quest", 32, 0.05)).size(), static_cast<size_t>(kTokens));
  const auto masses = recorder_.Take();
  ASSERT_FALSE(masses.empty());
  for (const auto& [policy, mass] : masses) EXPECT_LE(mass, 0.05);
}

TEST_F(SparseEngineTest, DenseBatchedWithSparseIsUnchanged) {
  auto sparse = engine_->Submit(Greedy("streaming", 32));
  auto dense = engine_->Submit(Greedy("dense", 2048));
  ASSERT_TRUE(sparse.ok() && dense.ok());
  EXPECT_EQ(Drain(*dense), dense_);
  EXPECT_EQ(Drain(*sparse).size(), static_cast<size_t>(kTokens));
}

TEST_F(SparseEngineTest, UnknownPolicyOrTinyBudgetIsRejected) {
  auto unknown = engine_->Submit(Greedy("sparse", 64));
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unknown.status().message())
                .find("available: dense, streaming, quest, lychee, prhs"),
            std::string::npos)
      << unknown.status();
  // stories260K has no head-role mask: lychee is refused with the way to get one.
  auto lychee = engine_->Submit(Greedy("lychee", 64));
  ASSERT_EQ(lychee.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(lychee.status().message()).find("lychee-calibrate"), std::string::npos)
      << lychee.status();
  EXPECT_EQ(engine_->Submit(Greedy("quest", 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lychee
