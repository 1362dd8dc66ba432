// SPDX-License-Identifier: Apache-2.0
// The GPU sampler (kernels/cuda/sampling.h) against the CPU sampler (engine/sampler.h) on fresh
// random logits each run (seed printed; replay with LYCHEE_TEST_SEED):
//  - greedy rows give exactly the CPU's Argmax (ties, NaN, -inf and +inf included), and random
//    rows with non-finite logits, ties at every cut and extreme parameters the CPU's rows;
//  - penalties give bit-identical penalised logits, and random rows the Sampler's processed
//    logits (temperature, then the kept sets of top-k/top-p/min-p; ties at a cut keep the lower
//    id), up to a top-p/min-p cut within fp rounding of its threshold;
//  - seeded draws do not depend on the batch (a row alone, or among 8 in any order), and replay
//    from a captured CUDA graph;
//  - sampled frequencies match the kept softmax (chi-square, small vocabularies);
//  - the chosen token's and the top-N logprobs match TopLogprobs of the raw row within fp32;
//  - host-side checks (CanImplementSample, workspace, Philox known answers) run without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sampling.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

template <typename T>
T* FakePtr() {
  return reinterpret_cast<T*>(uintptr_t{4096});
}

// One row: the request's sampling parameters and what its penalties see.
struct Row {
  ::lychee::SamplingParams params;
  uint64_t seed = 0;
  uint64_t step = 0;
  int top_logprobs = 0;
  bool want_logprob = false;
  std::vector<int32_t> prompt, output;
};

struct GpuResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<TopLogprobEntry> top;  // [rows * kMaxTopLogprobs]
  std::vector<float> logits;         // the row buffer after the kernel
};

// Host-side inputs of one launch: SamplingRow array and the concatenated penalty lists.
struct Packed {
  std::vector<SamplingRow> rows;
  std::vector<int32_t> ids, counts;
};

Packed Pack(const std::vector<Row>& rows, int64_t vocab) {
  Packed p;
  for (const Row& r : rows) {
    ::lychee::PenaltyTokens pen(r.params, r.prompt, r.output, vocab);
    SamplingRow s;
    s.temperature = r.params.temperature;
    s.top_p = r.params.top_p;
    s.min_p = r.params.min_p;
    s.repetition_penalty = r.params.repetition_penalty;
    s.presence_penalty = r.params.presence_penalty;
    s.frequency_penalty = r.params.frequency_penalty;
    s.top_k = r.params.top_k;
    s.top_logprobs = r.top_logprobs;
    s.want_logprob = r.want_logprob || r.top_logprobs > 0 ? 1 : 0;
    s.penalty_begin = static_cast<int32_t>(p.ids.size());
    s.penalty_count = static_cast<int32_t>(pen.ids().size());
    s.seed = r.seed;
    s.step = r.step;
    p.rows.push_back(s);
    p.ids.insert(p.ids.end(), pen.ids().begin(), pen.ids().end());
    p.counts.insert(p.counts.end(), pen.counts().begin(), pen.counts().end());
  }
  return p;
}

// Runs the kernel on `logits` ([rows, stride], vocab used per row). Failures are reported and
// leave the result empty.
GpuResult RunGpu(const std::vector<float>& logits, int64_t vocab, int64_t stride,
                 const std::vector<Row>& rows, bool write_processed) {
  GpuResult out;
  const Packed packed = Pack(rows, vocab);
  const int64_t n = static_cast<int64_t>(rows.size());
  // One extra unused penalty slot so every buffer is non-empty.
  std::vector<int32_t> ids = packed.ids, counts = packed.counts;
  ids.push_back(-1);
  counts.push_back(0);
  DeviceBuffer<float> d_logits, d_logprobs;
  DeviceBuffer<SamplingRow> d_rows;
  DeviceBuffer<int32_t> d_ids, d_counts, d_tokens;
  DeviceBuffer<TopLogprobEntry> d_top;
  DeviceBuffer<uint8_t> d_ws;
  const auto ok = [](const absl::Status& s) {
    EXPECT_TRUE(s.ok()) << s;
    return s.ok();
  };
  if (!ok(d_logits.Upload(logits)) || !ok(d_rows.Upload(packed.rows)) || !ok(d_ids.Upload(ids)) ||
      !ok(d_counts.Upload(counts)) || !ok(d_tokens.Allocate(static_cast<size_t>(n))) ||
      !ok(d_tokens.FillBytes(0xff)) || !ok(d_logprobs.Allocate(static_cast<size_t>(n))) ||
      !ok(d_logprobs.FillBytes(0xff)) ||
      !ok(d_top.Allocate(static_cast<size_t>(n) * kMaxTopLogprobs)) || !ok(d_top.FillBytes(0x7f)) ||
      !ok(d_ws.Allocate(SampleWorkspaceBytes(static_cast<int64_t>(ids.size())))) ||
      !ok(d_ws.FillBytes(0xff))) {
    return out;
  }
  SampleParams p;
  p.logits = d_logits.get();
  p.row_params = d_rows.get();
  p.penalty_ids = d_ids.get();
  p.penalty_counts = d_counts.get();
  p.out_tokens = d_tokens.get();
  p.out_logprobs = d_logprobs.get();
  p.out_top = d_top.get();
  p.workspace = d_ws.get();
  p.workspace_bytes = d_ws.bytes();
  p.rows = n;
  p.vocab = vocab;
  p.penalty_capacity = static_cast<int64_t>(ids.size());
  p.row_stride = stride == vocab ? 0 : stride;
  p.write_processed = write_processed;
  if (!ok(Sample(p, nullptr))) return out;
  if (!ok(d_tokens.Download(out.tokens)) || !ok(d_logprobs.Download(out.logprobs)) ||
      !ok(d_top.Download(out.top)) || !ok(d_logits.Download(out.logits))) {
    return GpuResult{};
  }
  return out;
}

// What Sampler::Sample leaves in a row (penalised; random rows also scaled and filtered), and
// the token a greedy row gets.
std::vector<float> CpuProcessed(const Row& row, const float* raw, int64_t vocab,
                                int32_t* greedy_token = nullptr) {
  std::vector<float> v(raw, raw + vocab);
  ::lychee::Sampler sampler(row.params, 0);
  const int32_t t = sampler.Sample(absl::MakeSpan(v), row.prompt, row.output);
  if (greedy_token != nullptr) *greedy_token = t;
  return v;
}

bool IsGreedy(const ::lychee::SamplingParams& p) {
  return p.temperature < kGreedyTemperature || p.top_k == 1;
}

bool SameValue(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// The GPU's processed row against the CPU's: identical, or, for a top-p/min-p cut within fp
// rounding of its threshold, kept(CPU, tighter thresholds) ⊆ kept(GPU) ⊆ kept(CPU, looser ones)
// with the same values where kept. Returns "" (same), "near" (tolerated) or the first difference.
std::string CompareProcessed(const float* gpu_row, const Row& row, const float* raw,
                             int64_t vocab) {
  const std::vector<float> want = CpuProcessed(row, raw, vocab);
  int64_t first_diff = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!SameValue(gpu_row[i], want[static_cast<size_t>(i)])) {
      first_diff = i;
      break;
    }
  }
  if (first_diff < 0) return "";
  const auto describe = [&](int64_t i) {
    return "token " + std::to_string(i) + ": gpu " + std::to_string(gpu_row[i]) + ", cpu " +
           std::to_string(want[static_cast<size_t>(i)]) + " (raw " + std::to_string(raw[i]) + ")";
  };
  if (IsGreedy(row.params) || (row.params.top_p >= 1.0f && row.params.min_p <= 0.0f)) {
    return describe(first_diff);
  }
  Row tight = row, loose = row;
  if (row.params.top_p < 1.0f) {
    tight.params.top_p = std::max(row.params.top_p - 1e-5f, 1e-6f);
    loose.params.top_p = std::min(row.params.top_p + 1e-5f, 1.0f);
  }
  if (row.params.min_p > 0.0f) {
    tight.params.min_p = std::min(row.params.min_p * (1.0f + 1e-4f), 1.0f);
    loose.params.min_p = row.params.min_p * (1.0f - 1e-4f);
  }
  const std::vector<float> lo = CpuProcessed(tight, raw, vocab);
  const std::vector<float> hi = CpuProcessed(loose, raw, vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    const size_t k = static_cast<size_t>(i);
    const bool g = gpu_row[i] != -kInf;
    if ((lo[k] != -kInf && !g) || (g && hi[k] == -kInf) || (g && !SameValue(gpu_row[i], hi[k]))) {
      return describe(i);
    }
  }
  return "near";
}

// log-softmax of raw[token] over the usable raw logits, in double (LiveRequest's reference).
double RawLogprob(const float* raw, int64_t vocab, int32_t token) {
  float max = -kInf;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(raw[i])) max = std::max(max, raw[i]);
  }
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(raw[i]) && raw[i] != -kInf) sum += std::exp(static_cast<double>(raw[i]) - max);
  }
  return static_cast<double>(raw[token]) - max - std::log(sum);
}

// ---- Host-side checks (no GPU needed) -----------------------------------------------------------

SampleParams ValidParams() {
  SampleParams p;
  p.logits = FakePtr<float>();
  p.row_params = FakePtr<const SamplingRow>();
  p.penalty_ids = FakePtr<const int32_t>();
  p.penalty_counts = FakePtr<const int32_t>();
  p.out_tokens = FakePtr<int32_t>();
  p.out_logprobs = FakePtr<float>();
  p.out_top = FakePtr<TopLogprobEntry>();
  p.workspace = FakePtr<uint8_t>();
  p.workspace_bytes = SampleWorkspaceBytes(100);
  p.rows = 3;
  p.vocab = 262144;
  p.penalty_capacity = 100;
  return p;
}

TEST(CudaSamplingValidationTest, CanImplementSampleRejectsBadParams) {
  EXPECT_TRUE(CanImplementSample(ValidParams()).ok());
  const auto bad = [](auto edit) {
    SampleParams p = ValidParams();
    edit(p);
    return CanImplementSample(p).code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(bad([](SampleParams& p) { p.logits = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.row_params = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.out_tokens = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.out_logprobs = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.out_top = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.workspace = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.rows = 0; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.rows = int64_t{1} << 32; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.vocab = 0; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.vocab = int64_t{1} << 31; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.row_stride = p.vocab - 1; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.penalty_capacity = -1; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.penalty_ids = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.penalty_counts = nullptr; }));
  EXPECT_TRUE(bad([](SampleParams& p) { p.workspace_bytes = SampleWorkspaceBytes(100) - 1; }));
  // Without penalty lists the arrays may be null.
  SampleParams none = ValidParams();
  none.penalty_capacity = 0;
  none.penalty_ids = nullptr;
  none.penalty_counts = nullptr;
  none.workspace_bytes = SampleWorkspaceBytes(0);
  EXPECT_TRUE(CanImplementSample(none).ok());
  none.row_stride = none.vocab + 5;
  EXPECT_TRUE(CanImplementSample(none).ok());
}

TEST(CudaSamplingValidationTest, WorkspaceHoldsOneFloatPerPenaltyEntry) {
  EXPECT_EQ(SampleWorkspaceBytes(0), 16u);
  EXPECT_EQ(SampleWorkspaceBytes(1), 16u);
  EXPECT_EQ(SampleWorkspaceBytes(5), 32u);
  EXPECT_EQ(SampleWorkspaceBytes(1000), 4000u);
  EXPECT_EQ(SampleWorkspaceBytes(-3), 16u);
}

TEST(CudaSamplingValidationTest, LauncherRefusesInvalidParamsBeforeTouchingTheDevice) {
  SampleParams p;
  EXPECT_EQ(Sample(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaSamplingValidationTest, PhiloxMatchesRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  const Philox4 a = Philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  const Philox4 b = Philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[1], 0x41c83b0eu);
  EXPECT_EQ(b.v[2], 0xa20bc7c6u);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
  const Philox4 c =
      Philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c.v[0], 0xd16cfe09u);
  EXPECT_EQ(c.v[1], 0x94fdccebu);
  EXPECT_EQ(c.v[2], 0x5001e420u);
  EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(CudaSamplingValidationTest, UniformsDependOnSeedStepAndTokenOnly) {
  // Two neighbouring tokens share a Philox block (its two halves); every (seed, step, token)
  // gets its own 53 bits.
  const Philox4 r = Philox4x32_10(21, 7, 0, 0, 0x89abcdefu, 0x01234567u);
  const uint64_t seed = 0x0123456789abcdefull;
  EXPECT_EQ(SampleUniformBits(seed, 7, 42), ((uint64_t{r.v[0]} << 32) | r.v[1]) >> 11);
  EXPECT_EQ(SampleUniformBits(seed, 7, 43), ((uint64_t{r.v[2]} << 32) | r.v[3]) >> 11);
  EXPECT_NE(SampleUniformBits(seed, 7, 42), SampleUniformBits(seed, 8, 42));
  EXPECT_NE(SampleUniformBits(seed, 7, 42), SampleUniformBits(seed + 1, 7, 42));
  EXPECT_NE(SampleUniformBits(seed, uint64_t{7} << 32, 42), SampleUniformBits(seed, 7, 42));
  EXPECT_LT(SampleUniformBits(seed, 7, 42), uint64_t{1} << 53);
}

// ---- On the GPU ---------------------------------------------------------------------------------

class CudaSamplingTest : public CudaKernelTest {
 protected:
  // Random logits: uniform in [lo, hi), optionally rounded to bf16 (many ties at large vocabs).
  std::vector<float> Logits(size_t n, float lo, float hi, bool bf16) {
    std::vector<float> v = ::lychee::testing::RandomVector(rng_, n, lo, hi);
    if (bf16) RoundToBf16InPlace(v);
    return v;
  }
  std::vector<int32_t> Tokens(size_t n, int64_t vocab) {
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = id(rng_);
    return t;
  }
};

TEST_F(CudaSamplingTest, GreedyRowsAreTheCpuArgmax) {
  LY_SKIP_WITHOUT_GPU();
  for (const int64_t vocab :
       {int64_t{1}, int64_t{3}, int64_t{1000}, int64_t{32000}, int64_t{128256}, int64_t{262144}}) {
    SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab));
    const int64_t rows = 12, stride = vocab + (vocab % 2 == 0 ? 3 : 0);
    std::vector<float> logits(static_cast<size_t>(rows * stride), 1e30f);  // padding never read
    std::vector<Row> spec(static_cast<size_t>(rows));
    std::uniform_int_distribution<int64_t> col(0, vocab - 1);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits.data() + r * stride;
      const std::vector<float> v = Logits(static_cast<size_t>(vocab), -20.0f, 20.0f, r % 2 == 1);
      std::copy(v.begin(), v.end(), row);
      Row& s = spec[static_cast<size_t>(r)];
      switch (r) {
        case 2:
          row[col(rng_)] = row[col(rng_)] = 50.0f;
          break;  // tie at the top: lower id
        case 3:
          for (int64_t i = 0; i < vocab; ++i) row[i] = kNan;
          break;  // all NaN: 0
        case 4:
          for (int64_t i = 0; i < vocab; ++i) row[i] = -kInf;
          break;  // all -inf: 0
        case 5:
          row[col(rng_)] = kNan;
          row[col(rng_)] = kInf;
          break;  // +inf wins
        case 6:
          for (int64_t i = 0; i < vocab; i += 2) row[i] = kNan;
          break;  // NaN skipped
        case 7:
          s.params.temperature = 0.8f;
          s.params.top_k = 1;
          break;  // top_k 1: greedy
        case 8:   // penalties decide
          s.params.repetition_penalty = 1.8f;
          s.params.frequency_penalty = 0.7f;
          s.params.presence_penalty = -0.3f;
          s.prompt = Tokens(50, vocab);
          s.output = Tokens(30, vocab);
          break;
        case 9:
          row[0] = row[vocab - 1] = 21.0f;
          break;  // tie between the ends
        default:
          break;
      }
    }
    const GpuResult got = RunGpu(logits, vocab, stride, spec, /*write_processed=*/false);
    ASSERT_EQ(got.tokens.size(), static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      int32_t want = -1;
      const std::vector<float> processed =
          CpuProcessed(spec[static_cast<size_t>(r)], logits.data() + r * stride, vocab, &want);
      EXPECT_EQ(got.tokens[static_cast<size_t>(r)], want) << "row " << r;
      EXPECT_EQ(want, ::lychee::Argmax(processed)) << "row " << r;
      for (int64_t i = vocab; i < stride; ++i) {
        ASSERT_EQ(got.logits[static_cast<size_t>(r * stride + i)], 1e30f) << "padding written";
      }
    }
  }
}

TEST_F(CudaSamplingTest, PenaltiesGiveTheCpuLogitsBitForBit) {
  LY_SKIP_WITHOUT_GPU();
  for (const int64_t vocab : {int64_t{17}, int64_t{5000}, int64_t{128256}}) {
    SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab));
    std::uniform_real_distribution<float> rep(0.5f, 2.0f), occ(-2.0f, 2.0f);
    std::uniform_int_distribution<size_t> len(0, 300);
    const int64_t rows = 10;
    const std::vector<float> logits = Logits(static_cast<size_t>(rows * vocab), -8.0f, 8.0f, false);
    std::vector<Row> spec(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      Row& s = spec[static_cast<size_t>(r)];
      s.params.repetition_penalty = r % 3 == 2 ? 1.0f : rep(rng_);
      s.params.presence_penalty = r % 3 == 1 ? 0.0f : occ(rng_);
      s.params.frequency_penalty = r % 4 == 3 ? 0.0f : occ(rng_);
      // Few distinct ids at small vocabularies: many repeats; out-of-range ids are ignored.
      s.prompt = Tokens(len(rng_), vocab);
      s.output = Tokens(len(rng_), vocab);
      if (r == 4) s.prompt.push_back(static_cast<int32_t>(vocab + 3));
      if (r % 2 == 1) {  // random rows: the whole processed row
        s.params.temperature = 0.7f + 0.1f * static_cast<float>(r);
        s.params.top_k = r == 5 ? 7 : 0;
        s.params.top_p = r == 7 ? 0.8f : 1.0f;
        s.seed = 1000 + static_cast<uint64_t>(r);
      }
    }
    const GpuResult got = RunGpu(logits, vocab, vocab, spec, /*write_processed=*/true);
    ASSERT_EQ(got.logits.size(), logits.size());
    for (int64_t r = 0; r < rows; ++r) {
      SCOPED_TRACE("row " + std::to_string(r));
      const float* raw = logits.data() + r * vocab;
      const std::string diff =
          CompareProcessed(got.logits.data() + r * vocab, spec[static_cast<size_t>(r)], raw, vocab);
      EXPECT_TRUE(diff.empty() || diff == "near") << diff;
    }
  }
}

TEST_F(CudaSamplingTest, FiltersKeepTheCpuSets) {
  LY_SKIP_WITHOUT_GPU();
  struct Filter {
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  const Filter filters[] = {
      {1.0f, 0, 1.0f, 0.0f},    {0.7f, 5, 1.0f, 0.0f},    {1.3f, 50, 1.0f, 0.0f},
      {1.0f, 1000, 1.0f, 0.0f}, {1.0f, 0, 0.9f, 0.0f},    {0.5f, 0, 0.5f, 0.0f},
      {1.0f, 0, 0.99f, 0.0f},   {2.0f, 0, 0.1f, 0.0f},    {1.0f, 0, 1.0f, 0.05f},
      {0.8f, 0, 1.0f, 0.3f},    {1.0f, 40, 0.95f, 0.02f}, {0.6f, 3, 0.2f, 0.5f},
      {1.1f, 200, 0.7f, 0.0f},  {1.0f, 2, 0.999f, 0.01f}};
  int near = 0, rows_checked = 0;
  for (const int64_t vocab : {int64_t{7}, int64_t{1000}, int64_t{32000}, int64_t{128256}}) {
    for (const bool bf16 : {false, true}) {
      SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab) + (bf16 ? " bf16" : " fp32"));
      const int64_t rows = static_cast<int64_t>(std::size(filters));
      // Peaked rows (scale 12) and flat ones (scale 2) alternate.
      std::vector<float> logits;
      for (int64_t r = 0; r < rows; ++r) {
        const float scale = r % 2 == 0 ? 12.0f : 2.0f;
        const auto v = Logits(static_cast<size_t>(vocab), -scale, scale, bf16);
        logits.insert(logits.end(), v.begin(), v.end());
      }
      std::vector<Row> spec(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        Row& s = spec[static_cast<size_t>(r)];
        const Filter& f = filters[r];
        s.params.temperature = f.temperature;
        s.params.top_k = f.top_k;
        s.params.top_p = f.top_p;
        s.params.min_p = f.min_p;
        s.seed = static_cast<uint64_t>(r) * 7919;
        s.step = 3;
      }
      const GpuResult got = RunGpu(logits, vocab, vocab, spec, /*write_processed=*/true);
      ASSERT_EQ(got.logits.size(), logits.size());
      for (int64_t r = 0; r < rows; ++r) {
        const float* g = got.logits.data() + r * vocab;
        const std::string diff =
            CompareProcessed(g, spec[static_cast<size_t>(r)], logits.data() + r * vocab, vocab);
        EXPECT_TRUE(diff.empty() || diff == "near") << "row " << r << ": " << diff;
        if (diff == "near") ++near;
        ++rows_checked;
        // The drawn token is one of the kept ones.
        const int32_t t = got.tokens[static_cast<size_t>(r)];
        ASSERT_GE(t, 0);
        ASSERT_LT(t, vocab);
        EXPECT_NE(g[t], -kInf) << "row " << r << " drew a removed token";
      }
    }
  }
  std::printf("%d rows, %d with a top-p/min-p cut within rounding of its threshold\n", rows_checked,
              near);
  EXPECT_LE(near, 2) << "more boundary cases than rounding explains";
}

TEST_F(CudaSamplingTest, RandomRowsHandleNonFiniteLogitsTiesAndExtremeParameters) {
  LY_SKIP_WITHOUT_GPU();
  for (const int64_t vocab : {int64_t{2}, int64_t{300}, int64_t{262144}}) {
    SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab));
    std::uniform_int_distribution<int64_t> col(0, vocab - 1);
    const int64_t rows = 12;
    std::vector<float> logits = Logits(static_cast<size_t>(rows * vocab), -6.0f, 6.0f, true);
    std::vector<Row> spec(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits.data() + r * vocab;
      Row& s = spec[static_cast<size_t>(r)];
      s.params.temperature = 1.0f;
      s.seed = 77 + static_cast<uint64_t>(r);
      switch (r) {
        case 0:  // NaN and -inf among the values, top-k larger than what is usable
          for (int64_t i = 0; i < vocab; ++i) {
            if (i % 3 == 1) row[i] = kNan;
            if (i % 3 == 2) row[i] = -kInf;
          }
          s.params.top_k = static_cast<int>(vocab - 1);
          s.params.top_p = 0.6f;
          break;
        case 1:  // +inf logits share all the mass
          row[col(rng_)] = kInf;
          row[col(rng_)] = kInf;
          s.params.top_p = 0.5f;
          break;
        case 2:
          std::fill(row, row + vocab, -kInf);
          break;  // nothing usable: token 0
        case 3:
          std::fill(row, row + vocab, kNan);
          break;  // nothing usable: token 0
        case 4:   // one value everywhere: top-p cuts inside the tie, by id
          std::fill(row, row + vocab, 1.5f);
          s.params.top_p = 0.37f;
          break;
        case 5:  // ties everywhere, top-k cuts inside a tie group
          for (int64_t i = 0; i < vocab; ++i) row[i] = static_cast<float>(i % 4);
          s.params.top_k = static_cast<int>(vocab / 3 + 1);
          break;
        case 6:
          s.params.min_p = 1.0f;
          break;  // only the top token (and its ties)
        case 7:
          s.params.top_p = 1e-6f;
          break;  // only the top token
        case 8:   // tiny temperature, large logits: +inf after scaling
          s.params.temperature = 2e-5f;
          row[col(rng_)] = 3e38f;
          break;
        case 9:  // -0 and +0 tie (the CPU's == treats them alike)
          std::fill(row, row + vocab, -1.0f);
          row[vocab - 1] = 0.0f;
          row[0] = -0.0f;
          s.params.top_k = 1 + (vocab > 2 ? 1 : 0);
          s.params.temperature = 0.5f;
          break;
        case 10:  // all filters at once on a peaked row
          for (int64_t i = 0; i < vocab; ++i) row[i] *= 3.0f;
          s.params.top_k = 10;
          s.params.top_p = 0.95f;
          s.params.min_p = 0.1f;
          break;
        default:
          s.params.temperature = 3.0f;
          break;  // flat: every token in play
      }
    }
    const GpuResult got = RunGpu(logits, vocab, vocab, spec, /*write_processed=*/true);
    ASSERT_EQ(got.tokens.size(), static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      SCOPED_TRACE("row " + std::to_string(r));
      const float* g = got.logits.data() + r * vocab;
      const std::string diff =
          CompareProcessed(g, spec[static_cast<size_t>(r)], logits.data() + r * vocab, vocab);
      EXPECT_TRUE(diff.empty() || diff == "near") << diff;
      const int32_t t = got.tokens[static_cast<size_t>(r)];
      ASSERT_GE(t, 0);
      ASSERT_LT(t, vocab);
      if (r == 2 || r == 3) {
        EXPECT_EQ(t, 0);
      } else {
        EXPECT_NE(g[t], -kInf) << "drew a removed token";
      }
    }
  }
}

TEST_F(CudaSamplingTest, SeededDrawsDoNotDependOnTheBatch) {
  LY_SKIP_WITHOUT_GPU();
  const int64_t vocab = 32000;
  const int64_t rows = 8;
  std::vector<float> logits = Logits(static_cast<size_t>(rows * vocab), -4.0f, 4.0f, false);
  std::vector<Row> spec(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    Row& s = spec[static_cast<size_t>(r)];
    s.params.temperature = 0.6f + 0.2f * static_cast<float>(r);
    s.params.top_k = r % 3 == 0 ? 0 : 20 * static_cast<int>(r);
    s.params.top_p = r % 2 == 0 ? 1.0f : 0.9f;
    s.params.min_p = r == 5 ? 0.01f : 0.0f;
    s.params.repetition_penalty = r == 6 ? 1.3f : 1.0f;
    s.prompt = Tokens(40, vocab);
    s.output = Tokens(static_cast<size_t>(r), vocab);
    s.seed = 42 + static_cast<uint64_t>(r % 4);  // rows share seeds: rows differ by step anyway
    s.step = 100 + static_cast<uint64_t>(r);
    s.top_logprobs = r % 2 == 0 ? 5 : 0;
  }
  const GpuResult batch = RunGpu(logits, vocab, vocab, spec, false);
  ASSERT_EQ(batch.tokens.size(), static_cast<size_t>(rows));
  // Again, in reverse order.
  std::vector<Row> reversed(spec.rbegin(), spec.rend());
  std::vector<float> reversed_logits;
  for (int64_t r = rows - 1; r >= 0; --r) {
    reversed_logits.insert(reversed_logits.end(), logits.begin() + r * vocab,
                           logits.begin() + (r + 1) * vocab);
  }
  const GpuResult back = RunGpu(reversed_logits, vocab, vocab, reversed, false);
  ASSERT_EQ(back.tokens.size(), static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    SCOPED_TRACE(SeedNote() + " row " + std::to_string(r));
    const std::vector<float> one(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    const GpuResult alone = RunGpu(one, vocab, vocab, {spec[static_cast<size_t>(r)]}, false);
    ASSERT_EQ(alone.tokens.size(), 1u);
    EXPECT_EQ(alone.tokens[0], batch.tokens[static_cast<size_t>(r)]);
    EXPECT_EQ(back.tokens[static_cast<size_t>(rows - 1 - r)], batch.tokens[static_cast<size_t>(r)]);
    EXPECT_EQ(alone.logprobs[0], batch.logprobs[static_cast<size_t>(r)]);
    for (int j = 0; j < kMaxTopLogprobs; ++j) {
      EXPECT_EQ(alone.top[static_cast<size_t>(j)].token,
                batch.top[static_cast<size_t>(r * kMaxTopLogprobs + j)].token);
    }
  }
  // Steps move the stream: 16 steps of a flat row do not all repeat one token.
  std::vector<Row> steps(16, spec[0]);
  std::vector<float> same;
  for (int i = 0; i < 16; ++i) {
    steps[static_cast<size_t>(i)].step = static_cast<uint64_t>(i);
    same.insert(same.end(), logits.begin(), logits.begin() + vocab);
  }
  const GpuResult drawn = RunGpu(same, vocab, vocab, steps, false);
  ASSERT_EQ(drawn.tokens.size(), 16u);
  EXPECT_GT(std::count_if(drawn.tokens.begin(), drawn.tokens.end(),
                          [&](int32_t t) { return t != drawn.tokens[0]; }),
            0);
}

TEST_F(CudaSamplingTest, SampledFrequenciesMatchTheKeptSoftmax) {
  LY_SKIP_WITHOUT_GPU();
  const int64_t vocab = 16;
  const int64_t draws = 60000;
  std::vector<float> base = Logits(static_cast<size_t>(vocab), -2.5f, 2.5f, false);
  base[3] = base[9];  // a tie: both must get their share
  struct Case {
    const char* name;
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  const Case cases[] = {{"temperature", 0.9f, 0, 1.0f, 0.0f},
                        {"top_k", 1.2f, 6, 1.0f, 0.0f},
                        {"top_p", 1.0f, 0, 0.75f, 0.0f},
                        {"min_p", 0.8f, 0, 1.0f, 0.12f},
                        {"all", 1.0f, 10, 0.9f, 0.04f}};
  std::uniform_int_distribution<uint64_t> seed_dist;
  for (const Case& c : cases) {
    SCOPED_TRACE(SeedNote() + " " + c.name);
    Row row;
    row.params.temperature = c.temperature;
    row.params.top_k = c.top_k;
    row.params.top_p = c.top_p;
    row.params.min_p = c.min_p;
    row.seed = seed_dist(rng_);
    std::vector<Row> spec(static_cast<size_t>(draws), row);
    std::vector<float> logits;
    logits.reserve(static_cast<size_t>(draws * vocab));
    for (int64_t d = 0; d < draws; ++d) {
      spec[static_cast<size_t>(d)].step = static_cast<uint64_t>(d);
      logits.insert(logits.end(), base.begin(), base.end());
    }
    const GpuResult got = RunGpu(logits, vocab, vocab, spec, false);
    ASSERT_EQ(got.tokens.size(), static_cast<size_t>(draws));
    // Expected: softmax of the CPU's processed row.
    const std::vector<float> processed = CpuProcessed(row, base.data(), vocab);
    std::vector<double> p(static_cast<size_t>(vocab), 0.0);
    double total = 0.0;
    const float max = *std::max_element(processed.begin(), processed.end());
    for (int64_t i = 0; i < vocab; ++i) {
      if (processed[static_cast<size_t>(i)] == -kInf) continue;
      p[static_cast<size_t>(i)] =
          std::exp(static_cast<double>(processed[static_cast<size_t>(i)]) - max);
      total += p[static_cast<size_t>(i)];
    }
    std::vector<int64_t> count(static_cast<size_t>(vocab), 0);
    for (int32_t t : got.tokens) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, vocab);
      ++count[static_cast<size_t>(t)];
    }
    double chi2 = 0.0;
    int kept = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const size_t k = static_cast<size_t>(i);
      if (p[k] == 0.0) {
        EXPECT_EQ(count[k], 0) << "token " << i << " is filtered out but was drawn";
        continue;
      }
      ++kept;
      const double expected = static_cast<double>(draws) * p[k] / total;
      chi2 += (static_cast<double>(count[k]) - expected) *
              (static_cast<double>(count[k]) - expected) / expected;
    }
    const double df = kept - 1;
    // Mean df, standard deviation sqrt(2 df): this bound fails by chance with p < 1e-7.
    const double bound = df + 8.0 * std::sqrt(2.0 * std::max(df, 1.0)) + 12.0;
    std::printf("%s: %d kept tokens, chi2 %.1f (df %.0f, bound %.1f)\n", c.name, kept, chi2, df,
                bound);
    EXPECT_LT(chi2, bound);
  }
}

TEST_F(CudaSamplingTest, LogprobsMatchTopLogprobsOfTheRawRow) {
  LY_SKIP_WITHOUT_GPU();
  for (const int64_t vocab : {int64_t{5}, int64_t{1000}, int64_t{128256}}) {
    for (const bool bf16 : {false, true}) {
      SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab) + (bf16 ? " bf16" : " fp32"));
      const int64_t rows = 8;
      std::vector<float> logits = Logits(static_cast<size_t>(rows * vocab), -10.0f, 10.0f, bf16);
      std::vector<Row> spec(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        Row& s = spec[static_cast<size_t>(r)];
        float* row = logits.data() + r * vocab;
        s.top_logprobs = r == 0 ? 1 : (r % 2 == 0 ? 20 : 5);
        s.want_logprob = true;
        if (r == 2) {  // fewer usable logits than asked for
          for (int64_t i = 0; i < vocab; ++i) {
            if (i % 3 != 0) row[i] = i % 2 == 0 ? kNan : -kInf;
          }
        }
        if (r == 3) {  // the argmax is in the prompt and a penalty boosts it: the reported
                       // logprob is still the raw one
          const int32_t best =
              ::lychee::Argmax(absl::MakeConstSpan(row, static_cast<size_t>(vocab)));
          s.prompt = {best, static_cast<int32_t>(vocab / 2)};
          s.params.repetition_penalty = 0.5f;
        }
        if (r >= 4) {  // random rows with filters and penalties
          s.params.temperature = 0.9f;
          s.params.top_k = r == 4 ? 3 : 0;
          s.params.top_p = r == 5 ? 0.8f : 1.0f;
          s.params.presence_penalty = r == 6 ? 1.5f : 0.0f;
          s.output = Tokens(10, vocab);
          s.seed = static_cast<uint64_t>(r);
        }
      }
      const GpuResult got = RunGpu(logits, vocab, vocab, spec, false);
      ASSERT_EQ(got.tokens.size(), static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        SCOPED_TRACE("row " + std::to_string(r));
        const float* raw = logits.data() + r * vocab;
        const Row& s = spec[static_cast<size_t>(r)];
        const auto want = ::lychee::TopLogprobs(
            absl::MakeConstSpan(raw, static_cast<size_t>(vocab)), s.top_logprobs);
        const TopLogprobEntry* top = got.top.data() + r * kMaxTopLogprobs;
        for (int j = 0; j < kMaxTopLogprobs; ++j) {
          if (j >= static_cast<int>(want.size())) {
            EXPECT_EQ(top[j].token, -1) << "slot " << j;
            continue;
          }
          EXPECT_EQ(top[j].token, want[static_cast<size_t>(j)].token) << "slot " << j;
          EXPECT_NEAR(top[j].logprob, want[static_cast<size_t>(j)].logprob,
                      2e-5 + 2e-6 * std::abs(want[static_cast<size_t>(j)].logprob))
              << "slot " << j;
        }
        const int32_t token = got.tokens[static_cast<size_t>(r)];
        const double ref = RawLogprob(raw, vocab, token);
        EXPECT_NEAR(got.logprobs[static_cast<size_t>(r)], ref, 2e-5 + 2e-6 * std::abs(ref));
        if (r < 4) {  // greedy: the chosen token is the (penalised) argmax
          int32_t want_token = -1;
          CpuProcessed(s, raw, vocab, &want_token);
          EXPECT_EQ(token, want_token);
        }
      }
    }
  }
}

TEST_F(CudaSamplingTest, ACapturedGraphReplaysWithNewRows) {
  LY_SKIP_WITHOUT_GPU();
  const int64_t vocab = 5000, rows = 6;
  const std::vector<float> logits = Logits(static_cast<size_t>(rows * vocab), -5.0f, 5.0f, false);
  std::vector<Row> spec(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    Row& s = spec[static_cast<size_t>(r)];
    s.params.temperature = r == 0 ? 0.0f : 1.0f;
    s.params.top_p = 0.9f;
    s.params.frequency_penalty = 0.5f;
    s.output = Tokens(20, vocab);
    s.seed = 5;
    s.top_logprobs = 3;
  }
  // Penalty lists padded to a fixed capacity, as a runner would size them.
  constexpr int64_t kCapacity = 512;
  const auto upload_rows = [&](const std::vector<Row>& rs, DeviceBuffer<SamplingRow>& d_rows,
                               DeviceBuffer<int32_t>& d_ids, DeviceBuffer<int32_t>& d_counts) {
    Packed p = Pack(rs, vocab);
    p.ids.resize(kCapacity, -1);
    p.counts.resize(kCapacity, 0);
    LY_EXPECT_OK(d_rows.Write(p.rows));
    LY_EXPECT_OK(d_ids.Write(p.ids));
    LY_EXPECT_OK(d_counts.Write(p.counts));
  };
  DeviceBuffer<float> d_logits, d_logprobs;
  DeviceBuffer<SamplingRow> d_rows;
  DeviceBuffer<int32_t> d_ids, d_counts, d_tokens;
  DeviceBuffer<TopLogprobEntry> d_top;
  DeviceBuffer<uint8_t> d_ws;
  LY_ASSERT_OK(d_logits.Allocate(logits.size()));
  LY_ASSERT_OK(d_rows.Allocate(static_cast<size_t>(rows)));
  LY_ASSERT_OK(d_ids.Allocate(kCapacity));
  LY_ASSERT_OK(d_counts.Allocate(kCapacity));
  LY_ASSERT_OK(d_tokens.Allocate(static_cast<size_t>(rows)));
  LY_ASSERT_OK(d_logprobs.Allocate(static_cast<size_t>(rows)));
  LY_ASSERT_OK(d_top.Allocate(static_cast<size_t>(rows) * kMaxTopLogprobs));
  LY_ASSERT_OK(d_ws.Allocate(SampleWorkspaceBytes(kCapacity)));
  SampleParams p;
  p.logits = d_logits.get();
  p.row_params = d_rows.get();
  p.penalty_ids = d_ids.get();
  p.penalty_counts = d_counts.get();
  p.out_tokens = d_tokens.get();
  p.out_logprobs = d_logprobs.get();
  p.out_top = d_top.get();
  p.workspace = d_ws.get();
  p.workspace_bytes = d_ws.bytes();
  p.rows = rows;
  p.vocab = vocab;
  p.penalty_capacity = kCapacity;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status captured = Sample(p, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  LY_ASSERT_OK(captured);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(SeedNote() + " round " + std::to_string(round));
    for (Row& s : spec) {  // new draws and penalty lists, same addresses
      s.step = static_cast<uint64_t>(round * 10);
      s.output.push_back(static_cast<int32_t>(round));
    }
    LY_ASSERT_OK(d_logits.Write(logits));
    upload_rows(spec, d_rows, d_ids, d_counts);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    LY_ASSERT_OK(d_tokens.Download(tokens));
    LY_ASSERT_OK(d_logprobs.Download(logprobs));
    const GpuResult eager = RunGpu(logits, vocab, vocab, spec, false);
    EXPECT_EQ(tokens, eager.tokens);
    EXPECT_EQ(logprobs, eager.logprobs);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace lychee::cuda
