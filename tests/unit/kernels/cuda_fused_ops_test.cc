// SPDX-License-Identifier: Apache-2.0
// The small fused CUDA kernels (kernels/cuda/cuda_kernels.h) against the CPU reference kernels:
// fresh bf16-rounded random inputs each run (seed printed; replay with LYCHEE_TEST_SEED), outputs
// poisoned with NaN before every launch, odd sizes (scalar paths) and multiples of 8 (16-byte
// paths), strided rows. Host-side validation tests run without a GPU; the rest skip there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/paged_kv.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kvcache/paged_kv_view.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;
using ::lychee::cuda::testing::RandomBf16Values;
using ::lychee::testing::RelativeL2;

// bf16 output rounding alone is ~2^-9 relative per element; 1e-2 leaves room for fp32 ordering.
constexpr double kBf16Tol = 1e-2;

// A fake, never dereferenced device address for host-only validation tests.
template <typename T>
T* FakePtr() {
  return reinterpret_cast<T*>(uintptr_t{4096});
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& buf) {
  std::vector<T> host;
  const absl::Status s = buf.Download(host);
  EXPECT_TRUE(s.ok()) << s;
  return host;
}

// ---- Host-side validation (no GPU needed) ------------------------------------------------------

TEST(CudaFusedOpsValidationTest, RmsNormRejectsBadParams) {
  RmsNormParams p;
  p.x = FakePtr<const bf16>();
  p.weight = FakePtr<const bf16>();
  p.out = FakePtr<bf16>();
  p.rows = 3;
  p.dim = 7;
  EXPECT_TRUE(CanImplementRmsNorm(p).ok());
  RmsNormParams bad = p;
  bad.x = nullptr;
  EXPECT_EQ(CanImplementRmsNorm(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.dim = 0;
  EXPECT_FALSE(CanImplementRmsNorm(bad).ok());
  bad = p;
  bad.rows = int64_t{1} << 40;
  EXPECT_FALSE(CanImplementRmsNorm(bad).ok());
  bad = p;
  bad.maybe_residual = p.out;
  EXPECT_FALSE(CanImplementRmsNorm(bad).ok());
  bad = p;
  bad.eps = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(CanImplementRmsNorm(bad).ok());
}

TEST(CudaFusedOpsValidationTest, RmsNormPerHeadRejectsBadParams) {
  RmsNormPerHeadParams p;
  p.x = FakePtr<bf16>();
  p.weight = FakePtr<const bf16>();
  p.tokens = 2;
  p.heads = 4;
  p.head_dim = 128;
  EXPECT_TRUE(CanImplementRmsNormPerHead(p).ok());
  RmsNormPerHeadParams bad = p;
  bad.row_stride = 4 * 128 - 1;
  EXPECT_FALSE(CanImplementRmsNormPerHead(bad).ok());
  bad = p;
  bad.head_dim = 2048;
  EXPECT_FALSE(CanImplementRmsNormPerHead(bad).ok());
  bad = p;
  bad.weight = nullptr;
  EXPECT_FALSE(CanImplementRmsNormPerHead(bad).ok());
}

RopeKvWriteParams ValidRopeParams() {
  RopeKvWriteParams p;
  p.q = FakePtr<bf16>();
  p.k = FakePtr<bf16>();
  p.v = FakePtr<const bf16>();
  p.positions = FakePtr<const int32_t>();
  p.slot_mapping = FakePtr<const int32_t>();
  p.inv_freq = FakePtr<const float>();
  p.cache.kv = FakePtr<bf16>();
  p.cache.num_blocks = 10;
  p.cache.num_kv_heads = 2;
  p.cache.block_size = 16;
  p.cache.head_dim = 64;
  p.num_tokens = 5;
  p.num_heads = 8;
  p.num_kv_heads = 2;
  p.head_dim = 64;
  return p;
}

TEST(CudaFusedOpsValidationTest, RopeKvWriteRejectsBadParams) {
  const RopeKvWriteParams p = ValidRopeParams();
  EXPECT_TRUE(CanImplementRopeKvWrite(p).ok()) << CanImplementRopeKvWrite(p);
  RopeKvWriteParams bad = p;
  bad.head_dim = bad.cache.head_dim = 63;
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.head_dim = bad.cache.head_dim = 1024;
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.cache.num_kv_heads = 4;  // the cache disagrees with the tokens
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.num_heads = 7;  // not a multiple of kv heads
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.q_row_stride = 8 * 64 - 2;
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.slot_mapping = nullptr;
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
  bad = p;
  bad.cache.num_blocks = int64_t{1} << 28;  // slots would overflow int32
  EXPECT_FALSE(CanImplementRopeKvWrite(bad).ok());
}

TEST(CudaFusedOpsValidationTest, ElementwiseRejectBadParams) {
  SiluMulParams s;
  s.gate = FakePtr<const bf16>();
  s.up = FakePtr<const bf16>() + 8;
  s.out = FakePtr<bf16>() + 64;
  s.rows = 2;
  s.dim = 8;
  EXPECT_TRUE(CanImplementSiluMul(s).ok());
  s.in_row_stride = 4;
  EXPECT_FALSE(CanImplementSiluMul(s).ok());
  s.in_row_stride = 16;
  s.out = const_cast<bf16*>(s.gate);  // strided input aliasing the contiguous output
  EXPECT_FALSE(CanImplementSiluMul(s).ok());

  EmbeddingGatherParams e;
  e.table = FakePtr<const bf16>();
  e.ids = FakePtr<const int32_t>();
  e.out = FakePtr<bf16>();
  e.tokens = 1;
  e.vocab = 10;
  e.hidden = 3;
  EXPECT_TRUE(CanImplementEmbeddingGather(e).ok());
  e.vocab = 0;
  EXPECT_FALSE(CanImplementEmbeddingGather(e).ok());

  ArgmaxParams a;
  a.logits = FakePtr<const float>();
  a.out_ids = FakePtr<int32_t>();
  a.rows = 2;
  a.vocab = 100;
  EXPECT_TRUE(CanImplementArgmax(a).ok());
  a.row_stride = 99;
  EXPECT_FALSE(CanImplementArgmax(a).ok());
}

TEST(CudaFusedOpsValidationTest, LaunchersRefuseInvalidParamsBeforeTouchingTheDevice) {
  // Validation comes first, so this holds on machines without a GPU too.
  RmsNormParams p;
  EXPECT_EQ(RmsNorm(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  RopeKvWriteParams r;
  EXPECT_EQ(RopeKvWrite(r, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ArgmaxParams a;
  EXPECT_EQ(Argmax(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaFusedOpsValidationTest, Bf16HostConversionRoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16Bits(1.0f), 0x3f80);
  // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(FloatToBf16Bits(1.0f + 1.0f / 256.0f), 0x3f80);
  // 1 + 3 * 2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
  EXPECT_EQ(FloatToBf16Bits(1.0f + 3.0f / 256.0f), 0x3f82);
  EXPECT_EQ(Bf16BitsToFloat(0xc000), -2.0f);
  EXPECT_TRUE(std::isnan(RoundToBf16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isinf(RoundToBf16(std::numeric_limits<float>::infinity())));
  // FLT_MAX lies above the largest bf16 (0x7f7f) by more than half a bf16 step: rounds to inf.
  EXPECT_EQ(RoundToBf16(std::numeric_limits<float>::max()), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FloatToBf16Bits(3.0e38f), 0x7f62);  // large but finite
  for (float f : {0.1f, -7.3f, 1e-20f, 65504.0f}) {
    EXPECT_EQ(Bf16ToFloat(FloatToBf16(f)), RoundToBf16(f));
    EXPECT_LE(std::fabs(RoundToBf16(f) - f), std::fabs(f) * (1.0f / 256.0f));
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------

class CudaFusedOpsTest : public CudaKernelTest {};

TEST_F(CudaFusedOpsTest, RmsNormMatchesCpu) {
  LY_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t rows, dim;
  };
  // Aligned rows of up to 8192 run the register kernel, 12288 and the odd dims the two-pass ones.
  for (const Case c : {Case{1, 1}, Case{3, 7}, Case{5, 64}, Case{17, 4096}, Case{2, 4099},
                       Case{33, 5120}, Case{3, 8192}, Case{2, 12288}}) {
    for (const bool residual : {false, true}) {
      for (const bool in_place : {false, true}) {
        SCOPED_TRACE(SeedNote() + " rows=" + std::to_string(c.rows) +
                     " dim=" + std::to_string(c.dim) + " residual=" + std::to_string(residual) +
                     " in_place=" + std::to_string(in_place));
        const size_t n = static_cast<size_t>(c.rows * c.dim);
        const auto x = RandomBf16Values(rng_, n, -3.0f, 3.0f);
        const auto r = RandomBf16Values(rng_, n, -3.0f, 3.0f);
        const auto w = RandomBf16Values(rng_, c.dim, 0.5f, 1.5f);
        const float eps = 1e-5f;

        DeviceBuffer<bf16> d_x, d_r, d_w, d_out;
        LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
        LY_ASSERT_OK(d_r.Upload(ToBf16(r)));
        LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
        LY_ASSERT_OK(d_out.Allocate(n));
        LY_ASSERT_OK(d_out.FillBytes(0xff));
        RmsNormParams p;
        p.x = d_x.get();
        p.maybe_residual = residual ? d_r.get() : nullptr;
        p.weight = d_w.get();
        p.out = in_place ? d_x.get() : d_out.get();
        p.rows = c.rows;
        p.dim = c.dim;
        p.eps = eps;
        LY_ASSERT_OK(RmsNorm(p, nullptr));
        const auto got = ToFloat(Download(in_place ? d_x : d_out));

        // CPU: the residual sum rounded to bf16 (what the GPU stores), then the fp32 RmsNorm.
        std::vector<float> normed_input = x;
        if (residual) {
          for (size_t i = 0; i < n; ++i) normed_input[i] = RoundToBf16(x[i] + r[i]);
        }
        std::vector<float> want(n);
        cpu::RmsNorm(normed_input.data(), w.data(), want.data(), c.rows, c.dim, eps);
        EXPECT_LT(RelativeL2(got, want), kBf16Tol);
        if (residual) {
          // Same fp32 add and the same round-to-nearest-even on both sides: bit-exact.
          const auto got_r = ToFloat(Download(d_r));
          size_t mismatches = 0;
          for (size_t i = 0; i < n; ++i) mismatches += got_r[i] != normed_input[i];
          EXPECT_EQ(mismatches, 0u);
        }
      }
    }
  }
}

TEST_F(CudaFusedOpsTest, RmsNormPerHeadMatchesCpuOnStridedRows) {
  LY_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t tokens, heads, head_dim, pad;
  };
  for (const Case c : {Case{1, 1, 64, 0}, Case{5, 3, 128, 64}, Case{7, 8, 128, 256},
                       Case{3, 2, 37, 5}, Case{2, 4, 256, 0}}) {
    SCOPED_TRACE(SeedNote() + " tokens=" + std::to_string(c.tokens) +
                 " heads=" + std::to_string(c.heads) + " head_dim=" + std::to_string(c.head_dim) +
                 " pad=" + std::to_string(c.pad));
    const int64_t width = c.heads * c.head_dim;
    const int64_t stride = width + c.pad;
    const auto x = RandomBf16Values(rng_, c.tokens * stride, -2.0f, 2.0f);
    const auto w = RandomBf16Values(rng_, c.head_dim, 0.5f, 1.5f);
    DeviceBuffer<bf16> d_x, d_w;
    LY_ASSERT_OK(d_x.Upload(ToBf16(x)));
    LY_ASSERT_OK(d_w.Upload(ToBf16(w)));
    RmsNormPerHeadParams p;
    p.x = d_x.get();
    p.weight = d_w.get();
    p.tokens = c.tokens;
    p.heads = c.heads;
    p.head_dim = c.head_dim;
    p.row_stride = c.pad > 0 ? stride : 0;
    p.eps = 1e-6f;
    LY_ASSERT_OK(RmsNormPerHead(p, nullptr));
    const auto got = ToFloat(Download(d_x));

    std::vector<float> heads(c.tokens * width), got_heads(c.tokens * width);
    for (int64_t t = 0; t < c.tokens; ++t) {
      std::copy_n(x.begin() + t * stride, width, heads.begin() + t * width);
      std::copy_n(got.begin() + t * stride, width, got_heads.begin() + t * width);
      for (int64_t i = width; i < stride; ++i) {  // the rest of the row stays untouched
        ASSERT_EQ(got[t * stride + i], x[t * stride + i]) << "token " << t << " col " << i;
      }
    }
    cpu::RmsNormPerHead(heads.data(), w.data(), c.tokens, c.heads, c.head_dim, 1e-6f);
    EXPECT_LT(RelativeL2(got_heads, heads), kBf16Tol);
  }
}

// ---- RoPE + paged K/V write -------------------------------------------------------------------

struct RopeCase {
  int64_t num_heads, num_kv_heads, head_dim, block_size;
  bool fused_qkv;  // q, k, v inside one [tokens, (H + 2 KV) * D] buffer (strided rows)
  cpu::RopeParams rope;
};

// One sequence's new tokens in the launch.
struct SeqChunk {
  int64_t start_position, num_tokens;
};

TEST_F(CudaFusedOpsTest, RopeKvWriteMatchesCpuApplyRopeAndWritePagedKv) {
  LY_SKIP_WITHOUT_GPU();
  cpu::RopeParams none{.head_dim = 128, .theta = 10000.0};
  cpu::RopeParams linear{
      .head_dim = 64, .theta = 10000.0, .scaling = cpu::RopeScalingKind::kLinear, .factor = 4.0};
  cpu::RopeParams llama3{.head_dim = 128,
                         .theta = 500000.0,
                         .scaling = cpu::RopeScalingKind::kLlama3,
                         .factor = 8.0,
                         .low_freq_factor = 1.0,
                         .high_freq_factor = 4.0,
                         .original_max_position_embeddings = 8192.0};
  const std::vector<RopeCase> cases = {
      {32, 8, 128, 16, true, llama3},
      {4, 4, 64, 32, false, linear},
      {8, 1, 128, 64, true, none},
      {6, 2, 128, 16, false, none},
  };
  // Mixed: a prefill from scratch, a decode far into a long context, a chunk starting
  // mid-block, a one-token sequence ending a block exactly, two tokens across a block boundary
  // (blocks of several tokens get their summaries from the second kernel, tokens alone in their
  // block from their own CTA). Decode: one token per sequence, launched with
  // tokens_in_distinct_blocks (no second kernel). Each set also has one padding token (slot -1).
  const std::vector<SeqChunk> mixed = {{0, 37}, {33000, 1}, {1000, 20}, {15, 1}, {63, 2}};
  const std::vector<SeqChunk> decode = {{33000, 1}, {15, 1}, {0, 1}, {100, 1}, {63, 1}, {64, 1}};
  std::vector<std::pair<RopeCase, bool>> runs;  // (case, decode step)
  for (const RopeCase& c : cases) runs.insert(runs.end(), {{c, false}, {c, true}});

  for (const auto& [c, decode_step] : runs) {
    const std::vector<SeqChunk>& chunks = decode_step ? decode : mixed;
    SCOPED_TRACE(SeedNote() + (decode_step ? " decode" : " mixed") +
                 " heads=" + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                 " d=" + std::to_string(c.head_dim) + " bs=" + std::to_string(c.block_size) +
                 " fused=" + std::to_string(c.fused_qkv) +
                 " scaling=" + std::to_string(static_cast<int>(c.rope.scaling)));
    const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads;
    const int64_t q_width = c.num_heads * d, kv_width = kvh * d;

    // Token layout and a paged pool: each sequence gets random physical blocks for the logical
    // blocks it touches.
    std::vector<int32_t> positions, seq_of_token;
    for (size_t s = 0; s < chunks.size(); ++s) {
      for (int64_t i = 0; i < chunks[s].num_tokens; ++i) {
        positions.push_back(static_cast<int32_t>(chunks[s].start_position + i));
        seq_of_token.push_back(static_cast<int32_t>(s));
      }
    }
    positions.push_back(5);  // padding token
    seq_of_token.push_back(-1);
    const int64_t num_tokens = static_cast<int64_t>(positions.size());

    std::vector<std::vector<int32_t>> tables(chunks.size());
    int64_t num_logical = 0;
    for (size_t s = 0; s < chunks.size(); ++s) {
      const int64_t end = chunks[s].start_position + chunks[s].num_tokens;
      tables[s].assign((end + bs - 1) / bs, -1);
      for (int64_t p = chunks[s].start_position; p < end; ++p) {
        if (tables[s][p / bs] < 0) tables[s][p / bs] = static_cast<int32_t>(num_logical++);
      }
    }
    const int64_t num_blocks = num_logical + 3;  // spare blocks nobody writes
    std::vector<int32_t> perm(num_blocks);
    for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), rng_);
    for (auto& table : tables) {
      for (int32_t& b : table) {
        if (b >= 0) b = perm[b];
      }
    }
    std::vector<int32_t> slots(num_tokens, -1);
    for (int64_t t = 0; t + 1 < num_tokens; ++t) {
      const int32_t pos = positions[t];
      slots[t] = static_cast<int32_t>(tables[seq_of_token[t]][pos / bs] * bs + pos % bs);
    }

    // Inputs: q, k, v (fused or separate), a pool holding random "earlier" keys and values.
    const int64_t qkv_width = q_width + 2 * kv_width;
    std::vector<float> qkv = RandomBf16Values(rng_, num_tokens * qkv_width, -2.0f, 2.0f);
    // Separate buffers are the same values packed contiguously.
    std::vector<float> q(num_tokens * q_width), k(num_tokens * kv_width), v(num_tokens * kv_width);
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::copy_n(qkv.begin() + t * qkv_width, q_width, q.begin() + t * q_width);
      std::copy_n(qkv.begin() + t * qkv_width + q_width, kv_width, k.begin() + t * kv_width);
      std::copy_n(qkv.begin() + t * qkv_width + q_width + kv_width, kv_width,
                  v.begin() + t * kv_width);
    }
    PagedKvBf16 shape{nullptr, nullptr, num_blocks, kvh, bs, d};
    const int64_t pool_elems = num_blocks * shape.block_stride();
    const int64_t summary_elems = num_blocks * shape.summary_block_stride();
    const std::vector<float> pool0 = RandomBf16Values(rng_, pool_elems, -2.0f, 2.0f);
    const std::vector<float> sentinel(summary_elems, 123.0f);  // untouched summaries keep it

    std::vector<float> inv_freq(d / 2);
    cpu::RopeParams rope = c.rope;
    rope.head_dim = d;
    cpu::ComputeRopeInvFreq(rope, inv_freq.data());

    DeviceBuffer<bf16> d_qkv, d_q, d_k, d_v, d_pool, d_summary;
    DeviceBuffer<int32_t> d_pos, d_slots;
    DeviceBuffer<float> d_inv;
    LY_ASSERT_OK(d_pool.Upload(ToBf16(pool0)));
    LY_ASSERT_OK(d_summary.Upload(ToBf16(sentinel)));
    LY_ASSERT_OK(d_pos.Upload(positions));
    LY_ASSERT_OK(d_slots.Upload(slots));
    LY_ASSERT_OK(d_inv.Upload(inv_freq));
    RopeKvWriteParams p;
    if (c.fused_qkv) {
      LY_ASSERT_OK(d_qkv.Upload(ToBf16(qkv)));
      p.q = d_qkv.get();
      p.k = d_qkv.get() + q_width;
      p.v = d_qkv.get() + q_width + kv_width;
      p.q_row_stride = p.k_row_stride = p.v_row_stride = qkv_width;
    } else {
      LY_ASSERT_OK(d_q.Upload(ToBf16(q)));
      LY_ASSERT_OK(d_k.Upload(ToBf16(k)));
      LY_ASSERT_OK(d_v.Upload(ToBf16(v)));
      p.q = d_q.get();
      p.k = d_k.get();
      p.v = d_v.get();
    }
    p.positions = d_pos.get();
    p.slot_mapping = d_slots.get();
    p.inv_freq = d_inv.get();
    p.cache = shape;
    p.cache.kv = d_pool.get();
    p.cache.key_summary = d_summary.get();
    p.num_tokens = num_tokens;
    p.num_heads = c.num_heads;
    p.num_kv_heads = kvh;
    p.head_dim = d;
    p.tokens_in_distinct_blocks = decode_step;
    LY_ASSERT_OK(RopeKvWrite(p, nullptr));

    // CPU reference: rotate q and k, write each sequence's chunk with cpu::WritePagedKv into an
    // fp32 copy of the pool whose summaries start consistent with the earlier keys.
    std::vector<int64_t> positions64(positions.begin(), positions.end());
    std::vector<float> want_q = q, want_k = k;
    cpu::ApplyRope(want_q.data(), num_tokens, c.num_heads, d, q_width, positions64.data(),
                   inv_freq.data());
    cpu::ApplyRope(want_k.data(), num_tokens, kvh, d, kv_width, positions64.data(),
                   inv_freq.data());
    std::vector<float> want_pool = pool0, want_summary(summary_elems, 0.0f);
    PagedKvView view{want_pool.data(), want_summary.data(), num_blocks, kvh, bs, d};
    int64_t first_token = 0;
    for (size_t s = 0; s < chunks.size(); ++s) {
      const int64_t start = chunks[s].start_position;
      const int64_t block = tables[s][start / bs];
      for (int64_t h = 0; h < kvh; ++h) {  // summary of the slots written before this launch
        for (int64_t e = 0; e < d; ++e) {
          float lo = std::numeric_limits<float>::infinity(), hi = -lo;
          for (int64_t slot = 0; slot < start % bs; ++slot) {
            lo = std::min(lo, view.K(block, h)[slot * d + e]);
            hi = std::max(hi, view.K(block, h)[slot * d + e]);
          }
          view.KeyMin(block, h)[e] = lo;
          view.KeyMax(block, h)[e] = hi;
        }
      }
      cpu::WritePagedKvParams w;
      w.cache = view;
      w.k = want_k.data() + first_token * kv_width;
      w.v = v.data() + first_token * kv_width;
      w.block_table = tables[s].data();
      w.num_tokens = chunks[s].num_tokens;
      w.num_table_blocks = static_cast<int64_t>(tables[s].size());
      w.start_position = start;
      cpu::WritePagedKv(w);
      first_token += chunks[s].num_tokens;
    }
    RoundToBf16InPlace(want_summary);

    // q and k rotated in place; v and the columns between them untouched.
    std::vector<float> got_q(num_tokens * q_width), got_k(num_tokens * kv_width),
        got_v(num_tokens * kv_width);
    if (c.fused_qkv) {
      const auto got = ToFloat(Download(d_qkv));
      for (int64_t t = 0; t < num_tokens; ++t) {
        std::copy_n(got.begin() + t * qkv_width, q_width, got_q.begin() + t * q_width);
        std::copy_n(got.begin() + t * qkv_width + q_width, kv_width, got_k.begin() + t * kv_width);
        std::copy_n(got.begin() + t * qkv_width + q_width + kv_width, kv_width,
                    got_v.begin() + t * kv_width);
      }
    } else {
      got_q = ToFloat(Download(d_q));
      got_k = ToFloat(Download(d_k));
      got_v = ToFloat(Download(d_v));
    }
    EXPECT_LT(RelativeL2(got_q, want_q), kBf16Tol);
    EXPECT_LT(RelativeL2(got_k, want_k), kBf16Tol);
    EXPECT_EQ(got_v, v);

    // The pool: written slots match the CPU, every other element is bit-identical to before.
    const auto got_pool = ToFloat(Download(d_pool));
    std::vector<bool> written(pool_elems, false);
    for (int64_t t = 0; t + 1 < num_tokens; ++t) {
      const int64_t block = slots[t] / bs, off = slots[t] % bs;
      for (int64_t half = 0; half < 2; ++half) {
        for (int64_t h = 0; h < kvh; ++h) {
          const int64_t base = block * shape.block_stride() + half * shape.kv_stride() +
                               h * shape.head_stride() + off * d;
          for (int64_t e = 0; e < d; ++e) written[base + e] = true;
        }
      }
    }
    std::vector<float> got_written, want_written;
    size_t stray = 0;
    for (int64_t i = 0; i < pool_elems; ++i) {
      if (written[i]) {
        got_written.push_back(got_pool[i]);
        want_written.push_back(want_pool[i]);
      } else {
        stray += !(got_pool[i] == pool0[i]);
      }
    }
    EXPECT_EQ(stray, 0u) << "elements outside the written slots changed";
    EXPECT_LT(RelativeL2(got_written, want_written), kBf16Tol);

    // Summaries: touched blocks match the CPU's incremental rule and, exactly, the min/max of
    // the GPU's own keys; untouched blocks keep the sentinel.
    const auto got_summary = ToFloat(Download(d_summary));
    std::vector<bool> touched(num_blocks, false);
    std::map<int64_t, int64_t> last_offset;
    for (int64_t t = 0; t + 1 < num_tokens; ++t) {
      touched[slots[t] / bs] = true;
      last_offset[slots[t] / bs] = std::max<int64_t>(last_offset[slots[t] / bs], slots[t] % bs);
    }
    std::vector<float> got_touched, want_touched;
    size_t self_mismatch = 0, sentinel_changed = 0;
    for (int64_t b = 0; b < num_blocks; ++b) {
      for (int64_t h = 0; h < kvh; ++h) {
        for (int64_t e = 0; e < 2 * d; ++e) {
          const int64_t i = b * shape.summary_block_stride() + h * 2 * d + e;
          if (!touched[b]) {
            sentinel_changed += got_summary[i] != 123.0f;
            continue;
          }
          got_touched.push_back(got_summary[i]);
          want_touched.push_back(want_summary[i]);
          float lo = std::numeric_limits<float>::infinity(), hi = -lo;
          for (int64_t slot = 0; slot <= last_offset[b]; ++slot) {
            const float key =
                got_pool[b * shape.block_stride() + h * shape.head_stride() + slot * d + e % d];
            lo = std::min(lo, key);
            hi = std::max(hi, key);
          }
          self_mismatch += got_summary[i] != (e < d ? lo : hi);
        }
      }
    }
    EXPECT_EQ(sentinel_changed, 0u);
    EXPECT_EQ(self_mismatch, 0u);
    EXPECT_LT(RelativeL2(got_touched, want_touched), kBf16Tol);
  }
}

// ---- SiLU·mul, embedding gather, argmax ------------------------------------------------------

TEST_F(CudaFusedOpsTest, SiluMulMatchesCpu) {
  LY_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t rows, dim;
    bool fused;  // gate and up halves of one [rows, 2 * dim] buffer
  };
  for (const Case c : {Case{1, 1, false}, Case{3, 11, true}, Case{5, 4096, true},
                       Case{7, 14336, false}, Case{2, 172, true}}) {
    SCOPED_TRACE(SeedNote() + " rows=" + std::to_string(c.rows) + " dim=" + std::to_string(c.dim) +
                 " fused=" + std::to_string(c.fused));
    const int64_t stride = c.fused ? 2 * c.dim : c.dim;
    const auto gate_up = RandomBf16Values(rng_, c.rows * 2 * c.dim, -6.0f, 6.0f);
    std::vector<float> gate(c.rows * c.dim), up(c.rows * c.dim);
    for (int64_t r = 0; r < c.rows; ++r) {
      std::copy_n(gate_up.begin() + r * 2 * c.dim, c.dim, gate.begin() + r * c.dim);
      std::copy_n(gate_up.begin() + r * 2 * c.dim + c.dim, c.dim, up.begin() + r * c.dim);
    }
    DeviceBuffer<bf16> d_in, d_gate, d_up, d_out;
    LY_ASSERT_OK(d_out.Allocate(c.rows * c.dim));
    LY_ASSERT_OK(d_out.FillBytes(0xff));
    SiluMulParams p;
    if (c.fused) {
      LY_ASSERT_OK(d_in.Upload(ToBf16(gate_up)));
      p.gate = d_in.get();
      p.up = d_in.get() + c.dim;
      p.in_row_stride = stride;
    } else {
      LY_ASSERT_OK(d_gate.Upload(ToBf16(gate)));
      LY_ASSERT_OK(d_up.Upload(ToBf16(up)));
      p.gate = d_gate.get();
      p.up = d_up.get();
    }
    p.out = d_out.get();
    p.rows = c.rows;
    p.dim = c.dim;
    LY_ASSERT_OK(SiluMul(p, nullptr));
    std::vector<float> want(c.rows * c.dim);
    cpu::SiluMul(gate.data(), up.data(), want.data(), c.rows * c.dim);
    EXPECT_LT(RelativeL2(ToFloat(Download(d_out)), want), kBf16Tol);
  }
}

TEST_F(CudaFusedOpsTest, EmbeddingGatherCopiesRowsExactly) {
  LY_SKIP_WITHOUT_GPU();
  for (const auto& [vocab, hidden] :
       {std::pair<int64_t, int64_t>{1000, 136}, {17, 7}, {32000, 4096}}) {
    SCOPED_TRACE(SeedNote() + " vocab=" + std::to_string(vocab) +
                 " hidden=" + std::to_string(hidden));
    const auto table = RandomBf16Values(rng_, vocab * hidden);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
    std::vector<int32_t> ids(13);
    for (int32_t& i : ids) i = id(rng_);
    ids[3] = -1;                               // out of range: zero row
    ids[7] = static_cast<int32_t>(vocab);      // out of range: zero row
    ids[9] = static_cast<int32_t>(vocab - 1);  // last row
    DeviceBuffer<bf16> d_table, d_out;
    DeviceBuffer<int32_t> d_ids;
    LY_ASSERT_OK(d_table.Upload(ToBf16(table)));
    LY_ASSERT_OK(d_ids.Upload(ids));
    LY_ASSERT_OK(d_out.Allocate(ids.size() * hidden));
    LY_ASSERT_OK(d_out.FillBytes(0xff));
    EmbeddingGatherParams p{
        d_table.get(), d_ids.get(), d_out.get(), static_cast<int64_t>(ids.size()), vocab, hidden};
    LY_ASSERT_OK(EmbeddingGather(p, nullptr));
    const auto got = ToFloat(Download(d_out));
    for (size_t t = 0; t < ids.size(); ++t) {
      const bool valid = ids[t] >= 0 && ids[t] < vocab;
      for (int64_t e = 0; e < hidden; ++e) {
        const float want = valid ? table[ids[t] * hidden + e] : 0.0f;
        ASSERT_EQ(got[t * hidden + e], want) << "token " << t << " element " << e;
      }
    }
  }
}

TEST_F(CudaFusedOpsTest, ArgmaxPicksFirstMaximumAndIgnoresNan) {
  LY_SKIP_WITHOUT_GPU();
  for (const auto& [rows, vocab, pad] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 0},
                                         {7, 128257, 3},
                                         {33, 32000, 0},
                                         {4, 1000, 24}}) {
    SCOPED_TRACE(SeedNote() + " rows=" + std::to_string(rows) + " vocab=" + std::to_string(vocab));
    const int64_t stride = vocab + pad;
    auto logits = ::lychee::testing::RandomVector(rng_, rows * stride, -30.0f, 30.0f);
    std::uniform_int_distribution<int64_t> col(0, vocab - 1);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits.data() + r * stride;
      if (r % 3 == 1 && vocab > 1) {  // a tie at the maximum: the smaller index wins
        const int64_t a = col(rng_), b = col(rng_);
        row[a] = row[b] = 100.0f;
      }
      if (r % 4 == 2) row[col(rng_)] = nan;                     // NaN never wins
      for (int64_t i = vocab; i < stride; ++i) row[i] = 1e30f;  // padding is never read
    }
    if (rows > 3) {
      for (int64_t i = 0; i < vocab; ++i) logits[3 * stride + i] = nan;  // all NaN: 0
    }
    DeviceBuffer<float> d_logits;
    DeviceBuffer<int32_t> d_ids;
    LY_ASSERT_OK(d_logits.Upload(logits));
    LY_ASSERT_OK(d_ids.Allocate(rows));
    LY_ASSERT_OK(d_ids.FillBytes(0xff));
    ArgmaxParams p{d_logits.get(), d_ids.get(), rows, vocab, pad > 0 ? stride : 0};
    LY_ASSERT_OK(Argmax(p, nullptr));
    const auto got = Download(d_ids);
    for (int64_t r = 0; r < rows; ++r) {
      int32_t want = 0;
      float best = -std::numeric_limits<float>::infinity();
      bool any = false;
      for (int64_t i = 0; i < vocab; ++i) {
        const float v = logits[r * stride + i];
        if (std::isnan(v)) continue;
        if (!any || v > best) {
          best = v;
          want = static_cast<int32_t>(i);
          any = true;
        }
      }
      EXPECT_EQ(got[r], want) << "row " << r;
    }
  }
}

}  // namespace
}  // namespace lychee::cuda
