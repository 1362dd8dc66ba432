// SPDX-License-Identifier: Apache-2.0
// The CPU forward pass on the embedded stories260K model against its numpy/llama2.c reference:
// logits of the first 64 greedy ids (one prefill and token by token) and 200 greedy steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "common/file.h"
#include "engine/cpu_model.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/util/npy.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr char kModelDir[] = "models/stories260K";
constexpr double kTol = 1e-4;

struct Reference {
  std::vector<int32_t> greedy_ids;  // BOS followed by 200 greedy ids
  testing::NpyArray logits;         // [64, 512]
};

Reference LoadReference() {
  Reference ref;
  auto text = ReadFile(std::string(kModelDir) + "/reference/greedy_bos.json");
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return ref;
  const auto json = nlohmann::json::parse(*text);
  ref.greedy_ids = json["greedy_ids"].get<std::vector<int32_t>>();
  auto npy = testing::ReadNpy(std::string(kModelDir) + "/reference/logits_greedy64.npy");
  EXPECT_TRUE(npy.ok()) << npy.status();
  if (npy.ok()) ref.logits = *std::move(npy);
  return ref;
}

int32_t Argmax(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

class StoriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ref_ = LoadReference();
    ASSERT_EQ(ref_.greedy_ids.size(), 201u);
    ASSERT_EQ(ref_.logits.shape, (std::vector<int64_t>{64, 512}));
    auto model = CpuModel::Load(kModelDir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    ASSERT_EQ(model_->vocab_size(), 512);
  }

  void ExpectRowMatches(const float* got, int64_t row) {
    const double err = testing::RelativeL2(got, ref_.logits.data.data() + row * 512, 512);
    EXPECT_LT(err, kTol) << "position " << row;
    max_err_ = std::max(max_err_, err);
  }
  void TearDown() override {
    RecordProperty("max_relative_l2", std::to_string(max_err_));
    std::cout << "max relative L2 vs reference: " << max_err_ << "\n";
  }

  Reference ref_;
  std::unique_ptr<CpuModel> model_;
  double max_err_ = 0.0;
};

TEST_F(StoriesTest, PrefillLogitsMatchReference) {
  const std::vector<int32_t> ids(ref_.greedy_ids.begin(), ref_.greedy_ids.begin() + 64);
  auto logits = model_->Prefill(ids, LogitsMode::kAll);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), 64u * 512u);
  for (int64_t t = 0; t < 64; ++t) ExpectRowMatches(logits->data() + t * 512, t);
  EXPECT_EQ(model_->num_tokens(), 64);
}

TEST_F(StoriesTest, ChunkedPrefillMatchesReference) {
  // Chunks of 7 exercise attention over history written by earlier chunks.
  auto chunked = CpuModel::Load(kModelDir, CpuModelOptions{.max_context = 0, .prefill_chunk = 7});
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  const std::vector<int32_t> ids(ref_.greedy_ids.begin(), ref_.greedy_ids.begin() + 64);
  auto logits = (*chunked)->Prefill(ids, LogitsMode::kAll);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int64_t t = 0; t < 64; ++t) ExpectRowMatches(logits->data() + t * 512, t);
}

TEST_F(StoriesTest, DecodeLogitsMatchReference) {
  for (int64_t t = 0; t < 64; ++t) {
    auto logits = model_->Decode(ref_.greedy_ids[t]);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->size(), 512u);
    ExpectRowMatches(logits->data(), t);
  }
}

TEST_F(StoriesTest, PrefillLastMatchesReference) {
  const std::vector<int32_t> ids(ref_.greedy_ids.begin(), ref_.greedy_ids.begin() + 10);
  auto logits = model_->Prefill(ids, LogitsMode::kLast);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), 512u);
  ExpectRowMatches(logits->data(), 9);
  // Continue with decode steps after a prefill.
  for (int64_t t = 10; t < 20; ++t) {
    auto next = model_->Decode(ref_.greedy_ids[t]);
    ASSERT_TRUE(next.ok()) << next.status();
    ExpectRowMatches(next->data(), t);
  }
}

TEST_F(StoriesTest, Greedy200StepsFromBosReproducesReference) {
  std::vector<int32_t> got = {ref_.greedy_ids[0]};
  auto logits = model_->Prefill(got, LogitsMode::kLast);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int step = 0; step < 200; ++step) {
    const int32_t next = Argmax(*logits);
    got.push_back(next);
    if (step + 1 < 200) {
      logits = model_->Decode(next);
      ASSERT_TRUE(logits.ok()) << logits.status();
    }
  }
  EXPECT_EQ(got, ref_.greedy_ids);
}

TEST_F(StoriesTest, ResetStartsANewSequence) {
  const std::vector<int32_t> ids(ref_.greedy_ids.begin(), ref_.greedy_ids.begin() + 5);
  ASSERT_TRUE(model_->Prefill(ids).ok());
  model_->Reset();
  EXPECT_EQ(model_->num_tokens(), 0);
  auto logits = model_->Decode(ref_.greedy_ids[0]);
  ASSERT_TRUE(logits.ok());
  ExpectRowMatches(logits->data(), 0);
}

TEST_F(StoriesTest, RejectsBadIdsAndContextOverflow) {
  const std::vector<int32_t> bad = {1, 512};
  auto r = model_->Prefill(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model_->num_tokens(), 0);
  EXPECT_EQ(model_->Decode(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model_->Prefill({}).status().code(), absl::StatusCode::kInvalidArgument);

  auto small = CpuModel::Load(kModelDir, CpuModelOptions{.max_context = 4});
  ASSERT_TRUE(small.ok());
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_EQ((*small)->Prefill(five).status().code(), absl::StatusCode::kResourceExhausted);
  const std::vector<int32_t> four = {1, 2, 3, 4};
  EXPECT_TRUE((*small)->Prefill(four).ok());
  EXPECT_EQ((*small)->Decode(1).status().code(), absl::StatusCode::kResourceExhausted);
}

// The context is the model's max_position_embeddings unless the KV memory budget holds fewer
// tokens; lc20m (32K positions) gets all of them under the default budget (a quarter of RAM).
TEST(CpuModelContextTest, ContextFromTheModelAndTheMemoryBudget) {
  auto lc = CpuModel::Load("models/lc20m");
  ASSERT_TRUE(lc.ok()) << lc.status();
  EXPECT_EQ((*lc)->max_context(), 32768);

  auto config = LoadModelConfig(kModelDir);
  ASSERT_TRUE(config.ok()) << config.status();
  const KvCacheShape shape = KvCacheShapeFor(*config, 16);
  // A budget of 1008 tokens (1000 rounded up to blocks) is more than stories260K's 512 positions.
  const int64_t budget = KvBytesForTokens(shape, 1000);
  auto capped = CpuModel::Load(kModelDir, CpuModelOptions{.kv_cache_bytes = budget});
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ((*capped)->max_context(), 512) << "stories260K has 512 positions";
  auto tiny =
      CpuModel::Load(kModelDir, CpuModelOptions{.kv_cache_bytes = KvBytesForTokens(shape, 100)});
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ((*tiny)->max_context(), 112);
  // A prompt that does not fit gets the error, and the sequence stays empty.
  const std::vector<int32_t> long_prompt(113, 5);
  const auto overflow = (*tiny)->Prefill(long_prompt, LogitsMode::kLast);
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(overflow.status().message().find("exceeds the context of 112"), std::string::npos)
      << overflow.status();
  EXPECT_EQ((*tiny)->num_tokens(), 0);
  // An explicit context larger than an explicit budget is refused; without a budget it is kept.
  EXPECT_EQ(
      CpuModel::Load(kModelDir, CpuModelOptions{.max_context = 4096,
                                                .kv_cache_bytes = KvBytesForTokens(shape, 100)})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  auto explicit_context = CpuModel::Load(kModelDir, CpuModelOptions{.max_context = 4096});
  ASSERT_TRUE(explicit_context.ok()) << explicit_context.status();
  EXPECT_EQ((*explicit_context)->max_context(), 4096);
  // A budget that holds no block at all is an error, not a zero-token model.
  EXPECT_FALSE(CpuModel::Load(kModelDir, CpuModelOptions{.kv_cache_bytes = 1}).ok());
}

// Past the old fixed cap of 8192 tokens: stories260K told it has 9000 positions prefills 8300
// tokens (chunks of 512 over the paged cache) and decodes after them with finite logits.
TEST(CpuModelContextTest, RunsPastEightThousandTokens) {
  auto config = LoadModelConfig(kModelDir);
  ASSERT_TRUE(config.ok()) << config.status();
  config->max_position_embeddings = 9000;
  auto archive = SafetensorsArchive::Open(kModelDir);
  ASSERT_TRUE(archive.ok()) << archive.status();
  auto weights = LoadModelWeights(*archive, *config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto model = CpuModel::Create(*config, *std::move(weights));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->max_context(), 9000);
  std::vector<int32_t> prompt(8300);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(3 + (i * 7919) % 509);
  auto last = (*model)->Prefill(prompt, LogitsMode::kLast);
  ASSERT_TRUE(last.ok()) << last.status();
  for (float x : *last) ASSERT_TRUE(std::isfinite(x));
  auto next = (*model)->Decode(Argmax(*last));
  ASSERT_TRUE(next.ok()) << next.status();
  for (float x : *next) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ((*model)->num_tokens(), 8301);
  const std::vector<int32_t> too_many(700, 5);
  EXPECT_EQ((*model)->Prefill(too_many).status().code(), absl::StatusCode::kResourceExhausted);
}

// A bf16 KV cache against the fp32 reference: logits of the 64 reference tokens within bf16
// rounding of K/V, and the greedy continuation the same for its first tokens.
TEST_F(StoriesTest, Bf16KvCacheStaysCloseToFp32) {
  auto bf16 = CpuModel::Load(kModelDir, CpuModelOptions{.kv_cache_dtype = KvDtype::kBf16});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  const std::vector<int32_t> ids(ref_.greedy_ids.begin(), ref_.greedy_ids.begin() + 64);
  auto want = model_->Prefill(ids, LogitsMode::kAll);
  ASSERT_TRUE(want.ok()) << want.status();
  const std::vector<float> fp32_logits(want->begin(), want->end());
  auto got = (*bf16)->Prefill(ids, LogitsMode::kAll);
  ASSERT_TRUE(got.ok()) << got.status();
  double worst = 0.0;
  for (int64_t t = 0; t < 64; ++t) {
    worst = std::max(worst,
                     testing::RelativeL2(got->data() + t * 512, fp32_logits.data() + t * 512, 512));
  }
  std::cout << "bf16 KV vs fp32 KV: worst relative L2 of 64 logit rows " << worst << "\n";
  EXPECT_LT(worst, 2e-2);
  EXPECT_GT(worst, 0.0);
  // Greedy from BOS: both caches follow the reference's greedy ids for 32 steps.
  (*bf16)->Reset();
  auto logits =
      (*bf16)->Prefill(absl::MakeConstSpan(ref_.greedy_ids).subspan(0, 1), LogitsMode::kLast);
  for (size_t i = 1; i <= 32 && logits.ok(); ++i) {
    ASSERT_EQ(Argmax(*logits), ref_.greedy_ids[i]) << "step " << i;
    logits = (*bf16)->Decode(ref_.greedy_ids[i]);
  }
  ASSERT_TRUE(logits.ok()) << logits.status();
}

TEST(CpuModelLoadTest, MissingDirectoryIsAnError) {
  auto model = CpuModel::Load("/nonexistent/model");
  EXPECT_FALSE(model.ok());
}

}  // namespace
}  // namespace lychee
