// SPDX-License-Identifier: Apache-2.0
// The CPU forward pass against golden references produced by Hugging Face transformers
// (tools/make_reference.py): every folder under tests/golden/models/ holds config.json, the
// weights and reference.safetensors with, for each prompt i,
//   prompt{i}.ids [T] I64, prompt{i}.logits [T, V] F32 (prefill), prompt{i}.greedy [16] I64,
//   prompt{i}.decode_logits [16, V] F32 (row 0 = last prompt position).
// Checks: prefill logits and decode logits within 1e-4 relative L2 per row, greedy ids identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "model/safetensors.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

constexpr char kGoldenRoot[] = "tests/golden/models";
constexpr double kTol = 1e-4;

std::vector<std::string> DiscoverModels() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kGoldenRoot, ec)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "reference.safetensors")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

class GoldenModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return std::string(kGoldenRoot) + "/" + GetParam(); }
};

TEST_P(GoldenModelTest, PrefillGreedyAndDecodeMatchTransformers) {
  auto model_or = CpuModel::Load(Dir());
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  CpuModel& model = **model_or;
  auto ref_or = SafetensorsArchive::Open(Dir() + "/reference.safetensors");
  ASSERT_TRUE(ref_or.ok()) << ref_or.status();
  const SafetensorsArchive& ref = *ref_or;
  const int64_t vocab = model.vocab_size();

  int prompts = 0;
  double max_prefill_err = 0.0, max_decode_err = 0.0;
  for (int i = 0; ref.Contains("prompt" + std::to_string(i) + ".ids"); ++i, ++prompts) {
    const std::string p = "prompt" + std::to_string(i);
    SCOPED_TRACE(GetParam() + " " + p);
    auto ids64 = ref.ReadI64(p + ".ids");
    ASSERT_TRUE(ids64.ok()) << ids64.status();
    const std::vector<int32_t> ids(ids64->begin(), ids64->end());
    const int64_t t_len = static_cast<int64_t>(ids.size());
    auto want_logits = ref.ReadF32(p + ".logits", {t_len, vocab});
    ASSERT_TRUE(want_logits.ok()) << want_logits.status();
    auto want_greedy = ref.ReadI64(p + ".greedy");
    ASSERT_TRUE(want_greedy.ok()) << want_greedy.status();
    const int64_t steps = static_cast<int64_t>(want_greedy->size());
    auto want_decode = ref.ReadF32(p + ".decode_logits", {steps, vocab});
    ASSERT_TRUE(want_decode.ok()) << want_decode.status();

    // One batched prefill over the whole prompt.
    model.Reset();
    auto logits = model.Prefill(ids, LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (int64_t r = 0; r < t_len; ++r) {
      const double err =
          testing::RelativeL2(logits->data() + r * vocab, want_logits->data() + r * vocab, vocab);
      EXPECT_LT(err, kTol) << "prefill row " << r;
      max_prefill_err = std::max(max_prefill_err, err);
    }

    // Greedy decode with the KV cache: row 0 is the last prompt position.
    std::vector<float> row(logits->end() - vocab, logits->end());
    std::vector<int64_t> got_greedy;
    for (int64_t s = 0; s < steps; ++s) {
      const double err = testing::RelativeL2(row.data(), want_decode->data() + s * vocab, vocab);
      EXPECT_LT(err, kTol) << "decode step " << s;
      max_decode_err = std::max(max_decode_err, err);
      const int32_t next =
          static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      got_greedy.push_back(next);
      if (s + 1 < steps) {
        auto step = model.Decode(next);
        ASSERT_TRUE(step.ok()) << step.status();
        row.assign(step->begin(), step->end());
      }
    }
    EXPECT_EQ(got_greedy, *want_greedy);
  }
  EXPECT_GT(prompts, 0) << "no prompt0.ids in " << Dir();
  RecordProperty("max_prefill_relative_l2", std::to_string(max_prefill_err));
  RecordProperty("max_decode_relative_l2", std::to_string(max_decode_err));
  std::cout << GetParam() << ": " << prompts << " prompts, max relative L2 prefill "
            << max_prefill_err << ", decode " << max_decode_err << "\n";
}

// The same prefill logits when the prompt arrives in small chunks or one token at a time: K/V
// written by earlier calls, RoPE positions and the sliding window across chunk boundaries.
TEST_P(GoldenModelTest, ChunkedAndTokenByTokenPrefillMatchTransformers) {
  auto chunked_or = CpuModel::Load(Dir(), CpuModelOptions{.max_context = 0, .prefill_chunk = 3});
  ASSERT_TRUE(chunked_or.ok()) << chunked_or.status();
  auto single_or = CpuModel::Load(Dir());
  ASSERT_TRUE(single_or.ok()) << single_or.status();
  auto ref_or = SafetensorsArchive::Open(Dir() + "/reference.safetensors");
  ASSERT_TRUE(ref_or.ok()) << ref_or.status();
  const int64_t vocab = (*single_or)->vocab_size();
  for (int i = 0; ref_or->Contains("prompt" + std::to_string(i) + ".ids"); ++i) {
    const std::string p = "prompt" + std::to_string(i);
    SCOPED_TRACE(GetParam() + " " + p);
    auto ids64 = ref_or->ReadI64(p + ".ids");
    ASSERT_TRUE(ids64.ok()) << ids64.status();
    const std::vector<int32_t> ids(ids64->begin(), ids64->end());
    const int64_t t_len = static_cast<int64_t>(ids.size());
    auto want = ref_or->ReadF32(p + ".logits", {t_len, vocab});
    ASSERT_TRUE(want.ok()) << want.status();

    (*chunked_or)->Reset();
    auto chunked = (*chunked_or)->Prefill(ids, LogitsMode::kAll);
    ASSERT_TRUE(chunked.ok()) << chunked.status();
    (*single_or)->Reset();
    for (int64_t r = 0; r < t_len; ++r) {
      EXPECT_LT(testing::RelativeL2(chunked->data() + r * vocab, want->data() + r * vocab, vocab),
                kTol)
          << "chunked row " << r;
      auto step = (*single_or)->Decode(ids[r]);
      ASSERT_TRUE(step.ok()) << step.status();
      EXPECT_LT(testing::RelativeL2(step->data(), want->data() + r * vocab, vocab), kTol)
          << "token-by-token row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllGoldenModels, GoldenModelTest, ::testing::ValuesIn(DiscoverModels()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string name = param_info.param;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenModelTest);

TEST(GoldenModelDiscoveryTest, FindsGoldenModels) {
  EXPECT_FALSE(DiscoverModels().empty()) << "no reference.safetensors under " << kGoldenRoot;
}

}  // namespace
}  // namespace lychee
