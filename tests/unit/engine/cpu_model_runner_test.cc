// SPDX-License-Identifier: Apache-2.0
// CpuModelRunner: batched steps (a mix of prefill chunks and decode steps of several sequences,
// shuffled block tables) give each sequence the logits it gets alone through CpuModel; golden
// models through chunked, batched prefill and greedy decode match transformers; invalid steps
// are rejected before anything is written; the o_proj bias is honoured.
//
// Random choices (token ids, chunk sizes, block tables) are seeded by TestSeed(): a failure
// prints the seed, LYCHEE_TEST_SEED=<seed> replays it.
#include "engine/cpu_model_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iterator>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/cpu_model.h"
#include "model/safetensors.h"
#include "tests/unit/engine/runner_step_driver.h"
#include "tests/util/numeric.h"

namespace lychee {
namespace {

using ::lychee::testing::AssignBlocks;
using ::lychee::testing::RunToCompletion;
using ::lychee::testing::SimSeq;

constexpr char kGoldenRoot[] = "tests/golden/models";

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
};

LoadedModel Load(const std::string& dir) {
  LoadedModel m;
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return m;
  auto archive = SafetensorsArchive::Open(dir);
  EXPECT_TRUE(archive.ok()) << archive.status();
  if (!archive.ok()) return m;
  auto weights = LoadModelWeights(*archive, *config);
  EXPECT_TRUE(weights.ok()) << weights.status();
  if (!weights.ok()) return m;
  m.config = *std::move(config);
  m.weights = *std::move(weights);
  return m;
}

std::vector<std::string> GoldenModelDirs() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kGoldenRoot, ec)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "config.json")) {
      dirs.push_back(entry.path().string());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// ---- (1) Batch invariance ------------------------------------------------------------------

class RunnerModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RunnerModelTest, MixedBatchMatchesEachSequenceAlone) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  LoadedModel m = Load(GetParam());
  ASSERT_GT(m.config.vocab_size, 0);
  const int64_t vocab = m.config.vocab_size;
  auto reference_or = CpuModel::Create(m.config, m.weights);
  ASSERT_TRUE(reference_or.ok()) << reference_or.status();
  CpuModel& reference = **reference_or;

  // Prompt lengths of several sizes, each followed by a few decode steps with fixed random ids.
  const std::vector<int64_t> prompt_lens = {37, 5, 23, 1, 50, 12};
  constexpr int64_t kDecodeSteps = 6;
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<std::vector<int32_t>> full(prompt_lens.size());
  for (size_t i = 0; i < prompt_lens.size(); ++i) {
    for (int64_t t = 0; t < prompt_lens[i] + kDecodeSteps; ++t) full[i].push_back(token(rng));
  }
  // Reference: each sequence alone, one prefill over all its tokens.
  std::vector<std::vector<float>> want(full.size());
  for (size_t i = 0; i < full.size(); ++i) {
    reference.Reset();
    auto logits = reference.Prefill(full[i], LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    want[i].assign(logits->begin(), logits->end());
  }

  for (const int64_t block_size : {4, 16}) {
    SCOPED_TRACE("block_size " + std::to_string(block_size));
    KvPool pool(KvCacheShapeFor(m.config, block_size), 64);
    auto runner_or = CpuModelRunner::Create(m.config, m.weights, &pool,
                                            {.max_num_batched_tokens = 32, .max_num_seqs = 8});
    ASSERT_TRUE(runner_or.ok()) << runner_or.status();
    std::vector<SimSeq> seqs(full.size());
    for (size_t i = 0; i < full.size(); ++i) {
      seqs[i].tokens.assign(full[i].begin(), full[i].begin() + prompt_lens[i]);
      seqs[i].final_len = static_cast<int64_t>(full[i].size());
    }
    AssignBlocks(seqs, block_size, pool.num_blocks(), rng);
    RunToCompletion(**runner_or, seqs, /*budget=*/17, rng,
                    [&](const SimSeq& s, const std::vector<float>&) {
                      const size_t i = static_cast<size_t>(&s - seqs.data());
                      return full[i][s.tokens.size()];
                    });
    int checked = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      ASSERT_EQ(seqs[i].tokens, full[i]);
      for (size_t p = 0; p < seqs[i].logits.size(); ++p) {
        if (seqs[i].logits[p].empty()) continue;
        EXPECT_LT(testing::RelativeL2(seqs[i].logits[p].data(), want[i].data() + p * vocab,
                                      static_cast<size_t>(vocab)),
                  1e-5)
            << "sequence " << i << " position " << p;
        ++checked;
      }
      // Every decode step and the prompt's end returned logits.
      for (int64_t p = prompt_lens[i] - 1; p < seqs[i].final_len - 1; ++p) {
        EXPECT_FALSE(seqs[i].logits[static_cast<size_t>(p)].empty()) << "position " << p;
      }
    }
    EXPECT_GE(checked, static_cast<int>(full.size()) * kDecodeSteps);
  }
}

// ExecuteAllLogits: every row of a mixed step, in row order.
TEST_P(RunnerModelTest, AllLogitsOfAMixedStepMatchEachSequenceAlone) {
  LoadedModel m = Load(GetParam());
  ASSERT_GT(m.config.vocab_size, 0);
  const int64_t vocab = m.config.vocab_size;
  auto reference_or = CpuModel::Create(m.config, m.weights);
  ASSERT_TRUE(reference_or.ok()) << reference_or.status();
  const std::vector<std::vector<int32_t>> seqs = {
      {5, 9, 11, 3, 7, 1, 2, 8, 4, 6, 10}, {12, 13, 14, 15, 16, 17}, {21, 22, 23}};
  constexpr int64_t kBlockSize = 4;
  KvPool pool(KvCacheShapeFor(m.config, kBlockSize), 16);
  auto runner_or = CpuModelRunner::Create(m.config, m.weights, &pool);
  ASSERT_TRUE(runner_or.ok()) << runner_or.status();
  const std::vector<std::vector<int32_t>> tables = {{7, 2, 12}, {0, 9}, {15}};

  // Step 1: the first 5, 4 and 3 tokens. Step 2: the rest (6 and 2 tokens).
  const std::vector<std::vector<int64_t>> splits = {{5, 4, 3}, {6, 2, 0}};
  std::vector<int64_t> done(seqs.size(), 0);
  std::vector<std::vector<float>> got(seqs.size());
  for (const auto& split : splits) {
    SchedulerOutput step;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (split[i] == 0) continue;
      ScheduledChunk ch;
      ch.seq_id = static_cast<SeqId>(i);
      ch.token_ids = absl::MakeConstSpan(seqs[i]).subspan(static_cast<size_t>(done[i]),
                                                          static_cast<size_t>(split[i]));
      ch.start_position = done[i];
      ch.block_table = tables[i];
      step.chunks.push_back(ch);
      step.num_batched_tokens += split[i];
    }
    std::vector<float> logits(static_cast<size_t>(step.num_batched_tokens * vocab));
    ASSERT_TRUE((*runner_or)->ExecuteAllLogits(step, absl::MakeSpan(logits)).ok());
    size_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      for (int64_t r = 0; r < split[i]; ++r, ++row) {
        got[i].insert(got[i].end(), logits.begin() + static_cast<std::ptrdiff_t>(row * vocab),
                      logits.begin() + static_cast<std::ptrdiff_t>((row + 1) * vocab));
      }
      done[i] += split[i];
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    (*reference_or)->Reset();
    auto want = (*reference_or)->Prefill(seqs[i], LogitsMode::kAll);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(got[i].size(), want->size());
    for (size_t p = 0; p < seqs[i].size(); ++p) {
      EXPECT_LT(testing::RelativeL2(got[i].data() + p * vocab, want->data() + p * vocab,
                                    static_cast<size_t>(vocab)),
                1e-5)
          << "sequence " << i << " position " << p;
    }
  }
}

// ---- (2) Golden models: all prompts batched, chunked prefill, greedy decode -----------------

TEST_P(RunnerModelTest, BatchedChunkedPrefillAndGreedyDecodeMatchTransformers) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string dir = GetParam();
  if (!std::filesystem::exists(dir + "/reference.safetensors")) GTEST_SKIP() << "no reference";
  LoadedModel m = Load(dir);
  ASSERT_GT(m.config.vocab_size, 0);
  const int64_t vocab = m.config.vocab_size;
  auto ref_or = SafetensorsArchive::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref_or.ok()) << ref_or.status();
  const SafetensorsArchive& ref = *ref_or;

  struct Prompt {
    std::vector<float> logits, decode_logits;
    std::vector<int64_t> greedy;
    int64_t len = 0;
  };
  std::vector<Prompt> prompts;
  std::vector<SimSeq> seqs;
  for (int i = 0; ref.Contains("prompt" + std::to_string(i) + ".ids"); ++i) {
    const std::string p = "prompt" + std::to_string(i);
    auto ids = ref.ReadI64(p + ".ids");
    ASSERT_TRUE(ids.ok()) << ids.status();
    Prompt pr;
    pr.len = static_cast<int64_t>(ids->size());
    auto logits = ref.ReadF32(p + ".logits", {pr.len, vocab});
    ASSERT_TRUE(logits.ok()) << logits.status();
    pr.logits = *std::move(logits);
    auto greedy = ref.ReadI64(p + ".greedy");
    ASSERT_TRUE(greedy.ok()) << greedy.status();
    pr.greedy = *std::move(greedy);
    const int64_t steps = static_cast<int64_t>(pr.greedy.size());
    auto decode = ref.ReadF32(p + ".decode_logits", {steps, vocab});
    ASSERT_TRUE(decode.ok()) << decode.status();
    pr.decode_logits = *std::move(decode);
    SimSeq s;
    s.tokens.assign(ids->begin(), ids->end());
    // Greedy step s's logits come after position len - 1 + s; the last one needs no K/V after.
    s.final_len = pr.len + steps - 1;
    seqs.push_back(std::move(s));
    prompts.push_back(std::move(pr));
  }
  ASSERT_FALSE(prompts.empty());

  constexpr int64_t kBlockSize = 4;
  KvPool pool(KvCacheShapeFor(m.config, kBlockSize), 256);
  auto runner_or = CpuModelRunner::Create(m.config, std::move(m.weights), &pool,
                                          {.max_num_batched_tokens = 24, .max_num_seqs = 8});
  ASSERT_TRUE(runner_or.ok()) << runner_or.status();
  AssignBlocks(seqs, kBlockSize, pool.num_blocks(), rng);
  RunToCompletion(
      **runner_or, seqs, /*budget=*/11, rng, [](const SimSeq&, const std::vector<float>& last) {
        return static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      });
  for (size_t i = 0; i < seqs.size(); ++i) {
    SCOPED_TRACE("prompt" + std::to_string(i));
    const Prompt& pr = prompts[i];
    for (int64_t p = 0; p < pr.len; ++p) {
      const auto& got = seqs[i].logits[static_cast<size_t>(p)];
      if (got.empty()) continue;  // a chunk that did not ask for logits
      EXPECT_LT(
          testing::RelativeL2(got.data(), pr.logits.data() + p * vocab, static_cast<size_t>(vocab)),
          1e-4)
          << "prefill position " << p;
    }
    std::vector<int64_t> greedy;
    for (size_t st = 0; st < pr.greedy.size(); ++st) {
      const auto& got = seqs[i].logits[static_cast<size_t>(pr.len - 1) + st];
      ASSERT_FALSE(got.empty()) << "decode step " << st;
      EXPECT_LT(testing::RelativeL2(got.data(), pr.decode_logits.data() + st * vocab,
                                    static_cast<size_t>(vocab)),
                1e-4)
          << "decode step " << st;
      greedy.push_back(std::max_element(got.begin(), got.end()) - got.begin());
    }
    EXPECT_EQ(greedy, pr.greedy);
  }
}

INSTANTIATE_TEST_SUITE_P(GoldenModels, RunnerModelTest, ::testing::ValuesIn(GoldenModelDirs()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string name = std::filesystem::path(param_info.param).filename();
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(RunnerModelTest);

// ---- (3) Invalid steps ------------------------------------------------------------------------

// A small random Llama-style model with every optional tensor present.
struct Synthetic {
  ModelConfig config;
  ModelWeights weights;
};

Synthetic MakeSynthetic(uint64_t seed) {
  Synthetic s;
  ModelConfig& c = s.config;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 32;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.attention_bias = true;
  c.o_proj_bias = true;
  std::mt19937_64 rng(seed);
  auto rnd = [&](int64_t n, float lo = -0.5f, float hi = 0.5f) {
    return testing::RandomVector(rng, static_cast<size_t>(n), lo, hi);
  };
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t in = c.intermediate_size;
  s.weights.embed_tokens = rnd(c.vocab_size * h, -1.0f, 1.0f);
  s.weights.final_norm = rnd(h, 0.5f, 1.5f);
  s.weights.lm_head = rnd(c.vocab_size * h);
  LayerWeights lw;
  lw.input_norm = rnd(h, 0.5f, 1.5f);
  lw.wq = rnd(q * h);
  lw.wk = rnd(kv * h);
  lw.wv = rnd(kv * h);
  lw.bq = rnd(q);
  lw.bk = rnd(kv);
  lw.bv = rnd(kv);
  lw.wo = rnd(h * q);
  lw.bo = rnd(h, -2.0f, 2.0f);
  lw.post_attention_norm = rnd(h, 0.5f, 1.5f);
  lw.w_gate = rnd(in * h);
  lw.w_up = rnd(in * h);
  lw.w_down = rnd(h * in);
  s.weights.layers.push_back(std::move(lw));
  return s;
}

std::vector<float> PoolSnapshot(KvPool& pool) {
  std::vector<float> all;
  for (int64_t l = 0; l < pool.num_layers(); ++l) {
    const PagedKvView v = pool.View(l);
    all.insert(all.end(), v.kv, v.kv + v.num_blocks * v.block_stride());
    all.insert(all.end(), v.key_summary, v.key_summary + v.num_blocks * v.summary_block_stride());
  }
  return all;
}

TEST(CpuModelRunnerTest, InvalidStepsAreRejectedBeforeAnythingIsWritten) {
  Synthetic s = MakeSynthetic(7);
  KvPool pool(KvCacheShapeFor(s.config, 4), 8);
  auto runner_or = CpuModelRunner::Create(s.config, s.weights, &pool,
                                          {.max_num_batched_tokens = 16, .max_num_seqs = 2});
  ASSERT_TRUE(runner_or.ok()) << runner_or.status();
  CpuModelRunner& runner = **runner_or;
  const std::vector<float> before = PoolSnapshot(pool);

  const std::vector<int32_t> good = {1, 2, 3, 4, 5};
  const std::vector<int32_t> table = {3, 6};
  auto make = [&](absl::Span<const int32_t> ids, absl::Span<const int32_t> tbl, int64_t start) {
    SchedulerOutput step;
    // A valid chunk first: it must not be written either when a later one is bad.
    ScheduledChunk ok_chunk{.seq_id = 1,
                            .token_ids = good,
                            .start_position = 0,
                            .block_table = table,
                            .needs_logits = true};
    step.chunks.push_back(ok_chunk);
    ScheduledChunk bad{.seq_id = 2,
                       .token_ids = ids,
                       .start_position = start,
                       .block_table = tbl,
                       .needs_logits = true};
    step.chunks.push_back(bad);
    return step;
  };
  const std::vector<int32_t> negative = {1, -1, 2};
  const std::vector<int32_t> too_large = {1, 2, 32};
  const std::vector<int32_t> other_table = {0, 1};
  const std::vector<int32_t> outside_pool = {0, 8};
  const std::vector<int32_t> twelve(12, 1);
  const std::vector<int32_t> three_blocks = {0, 1, 2};
  struct Case {
    const char* what;
    SchedulerOutput step;
  };
  std::vector<Case> cases = {
      {"negative id", make(negative, other_table, 0)},
      {"id == vocab", make(too_large, other_table, 0)},
      {"empty chunk", make({}, other_table, 0)},
      {"negative start", make(good, other_table, -1)},
      {"table too short", make(good, other_table, 4)},
      {"block outside the pool", make(good, outside_pool, 0)},
      {"more than max_num_batched_tokens", make(twelve, three_blocks, 0)},
  };
  {
    SchedulerOutput three = make(good, other_table, 0);
    three.chunks.push_back(three.chunks[0]);  // 3 chunks with logits > max_num_seqs
    cases.push_back({"more logit rows than max_num_seqs", std::move(three)});
  }
  for (const Case& c : cases) {
    auto result = runner.Execute(c.step);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
  }
  EXPECT_EQ(PoolSnapshot(pool), before) << "a rejected step wrote K/V";

  // ExecuteAllLogits: same validation, plus the caller's buffer size.
  std::vector<float> small(5 * 32 - 1);
  SchedulerOutput one;
  one.chunks.push_back({.seq_id = 1, .token_ids = good, .start_position = 0, .block_table = table});
  EXPECT_EQ(runner.ExecuteAllLogits(one, absl::MakeSpan(small)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PoolSnapshot(pool), before);

  // An empty step computes nothing; a valid one still works after the rejections.
  auto empty = runner.Execute(SchedulerOutput{});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  one.chunks[0].needs_logits = true;
  auto fine = runner.Execute(one);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->size(), 32u);
}

TEST(CpuModelRunnerTest, CreateRejectsAPoolOfAnotherShape) {
  Synthetic s = MakeSynthetic(1);
  KvCacheShape shape = KvCacheShapeFor(s.config, 4);
  shape.head_dim *= 2;
  KvPool pool(shape, 4);
  EXPECT_EQ(CpuModelRunner::Create(s.config, s.weights, &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
  Synthetic missing_bias = MakeSynthetic(1);
  missing_bias.weights.layers[0].bo.clear();  // config.o_proj_bias says it exists
  KvPool right(KvCacheShapeFor(missing_bias.config, 4), 4);
  EXPECT_EQ(
      CpuModelRunner::Create(missing_bias.config, missing_bias.weights, &right).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// ---- (4) o_proj bias ----------------------------------------------------------------------

// The one-token forward pass written out by hand (position 0: RoPE is the identity and attention
// returns v), as an independent oracle of where the biases go.
std::vector<float> OneTokenReference(const Synthetic& s, int32_t token) {
  const ModelConfig& c = s.config;
  const int64_t h = c.hidden_size, in = c.intermediate_size, d = c.head_dim;
  const int64_t q_dim = c.num_heads * d, kv_dim = c.num_kv_heads * d;
  const float eps = static_cast<float>(c.rms_norm_eps);
  auto rms = [&](const std::vector<float>& x, const std::vector<float>& w) {
    double ss = 0.0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i] * inv * w[i]);
    return out;
  };
  auto matvec = [](const std::vector<float>& w, const std::vector<float>& x, int64_t rows,
                   const std::vector<float>* bias) {
    std::vector<float> y(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double acc = bias ? (*bias)[static_cast<size_t>(r)] : 0.0;
      for (size_t k = 0; k < x.size(); ++k) acc += static_cast<double>(w[r * x.size() + k]) * x[k];
      y[static_cast<size_t>(r)] = static_cast<float>(acc);
    }
    return y;
  };
  const LayerWeights& lw = s.weights.layers[0];
  std::vector<float> x(s.weights.embed_tokens.begin() + token * h,
                       s.weights.embed_tokens.begin() + (token + 1) * h);
  const std::vector<float> v = matvec(lw.wv, rms(x, lw.input_norm), kv_dim, &lw.bv);
  std::vector<float> attn(static_cast<size_t>(q_dim));
  const int64_t group = c.num_heads / c.num_kv_heads;
  for (int64_t head = 0; head < c.num_heads; ++head) {
    for (int64_t e = 0; e < d; ++e) attn[head * d + e] = v[(head / group) * d + e];
  }
  const std::vector<float> o = matvec(lw.wo, attn, h, lw.bo.empty() ? nullptr : &lw.bo);
  for (int64_t i = 0; i < h; ++i) x[i] += o[i];
  const std::vector<float> n2 = rms(x, lw.post_attention_norm);
  const std::vector<float> g = matvec(lw.w_gate, n2, in, nullptr);
  const std::vector<float> u = matvec(lw.w_up, n2, in, nullptr);
  std::vector<float> act(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) act[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  const std::vector<float> down = matvec(lw.w_down, act, h, nullptr);
  for (int64_t i = 0; i < h; ++i) x[i] += down[i];
  return matvec(s.weights.lm_head, rms(x, s.weights.final_norm), c.vocab_size, nullptr);
}

TEST(CpuModelRunnerTest, OProjBiasIsHonoured) {
  const Synthetic s = MakeSynthetic(42);
  Synthetic no_bias = s;
  no_bias.config.o_proj_bias = false;
  no_bias.weights.layers[0].bo.clear();
  for (const int32_t token : {0, 5, 31}) {
    SCOPED_TRACE("token " + std::to_string(token));
    const std::vector<float> want = OneTokenReference(s, token);
    const std::vector<float> want_no_bias = OneTokenReference(no_bias, token);
    ASSERT_GT(testing::RelativeL2(want_no_bias, want), 1e-2) << "the bias should matter";

    KvPool pool(KvCacheShapeFor(s.config, 4), 2);
    auto runner_or = CpuModelRunner::Create(s.config, s.weights, &pool);
    ASSERT_TRUE(runner_or.ok()) << runner_or.status();
    const std::vector<int32_t> ids = {token};
    const std::vector<int32_t> table = {1};
    SchedulerOutput step;
    step.chunks.push_back({.seq_id = 0,
                           .token_ids = ids,
                           .start_position = 0,
                           .block_table = table,
                           .needs_logits = true});
    auto got = (*runner_or)->Execute(step);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LT(testing::RelativeL2(got->data(), want.data(), want.size()), 1e-5);

    // CpuModel shares the forward pass, bias included.
    auto model_or = CpuModel::Create(s.config, s.weights);
    ASSERT_TRUE(model_or.ok()) << model_or.status();
    auto single = (*model_or)->Decode(token);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_LT(testing::RelativeL2(single->data(), want.data(), want.size()), 1e-5);
  }
}

}  // namespace
}  // namespace lychee
