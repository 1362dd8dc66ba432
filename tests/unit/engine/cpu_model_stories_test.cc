// SPDX-License-Identifier: Apache-2.0
// The CPU forward pass on the embedded stories260K model against its numpy/llama2.c reference:
// logits of the first 64 greedy ids (one prefill and token by token) and 200 greedy steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "common/file.h"
#include "engine/cpu_model.h"
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

TEST(CpuModelLoadTest, MissingDirectoryIsAnError) {
  auto model = CpuModel::Load("/nonexistent/model");
  EXPECT_FALSE(model.ok());
}

}  // namespace
}  // namespace lychee
