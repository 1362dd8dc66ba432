// SPDX-License-Identifier: Apache-2.0
// Quest block selection (kernels/cuda/block_select.h) and sparse decode attention (DecodeAttention
// with per_kv_head_tables) against the CPU: the scores against a double-precision box bound from
// the same bf16 summaries; the selection against sparsity::AppendTopK (the CPU QuestPolicy's
// top-k) run on the GPU's own scores, with planted ties; the sparse attention against
// cpu::SparseDecodeAttention over the same selection. Ragged batches (context 0, 1, within the
// budget, far beyond it), GQA groups 1-8, head_dim 64/128, block sizes 16/32, shuffled block
// tables, NaN in every pool slot that must not be read, outputs poisoned. Capability checks run
// without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/sparse_attention.h"
#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/decode_attention.h"
#include "kvcache/paged_kv_view.h"
#include "sparsity/block_scoring.h"
#include "sparsity/policy.h"
#include "sparsity/streaming_policy.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/unit/kernels/prhs_grow_reference.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;
using ::lychee::cuda::testing::RandomBf16Values;
using ::lychee::testing::RelativeL2;

BlockSelectShape Shape(int64_t batch, int64_t max_blocks, int64_t budget) {
  BlockSelectShape s;
  s.batch = batch;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  s.max_blocks_per_seq = max_blocks;
  s.budget_blocks = budget;
  s.sink_blocks = 1;
  return s;
}

TEST(CudaBlockSelectPlanTest, CanImplementNamesWhatIsUnsupported) {
  EXPECT_TRUE(CanImplementBlockSelect(Shape(4, 8192, 128)).ok());
  BlockSelectShape s = Shape(4, 8192, 128);
  s.head_dim = 96;
  EXPECT_NE(CanImplementBlockSelect(s).message().find("head_dim"), std::string::npos);
  s = Shape(4, 8192, 128);
  s.num_heads = 80;  // group 10
  EXPECT_NE(CanImplementBlockSelect(s).message().find("GQA"), std::string::npos);
  s = Shape(4, 8192, 1);  // the sink and the last block alone exceed it
  EXPECT_NE(CanImplementBlockSelect(s).message().find("budget_blocks"), std::string::npos);
  s = Shape(4, 100, 128);  // budget wider than the table
  EXPECT_FALSE(CanImplementBlockSelect(s).ok());
  s = Shape(4, kBlockSelectMaxBlocks + 1, 128);
  EXPECT_NE(CanImplementBlockSelect(s).message().find("max_blocks_per_seq"), std::string::npos);
  BlockSelectParams p;
  p.shape = Shape(4, 8192, 128);
  EXPECT_FALSE(CanRunBlockSelect(p).ok());  // no pointers
  EXPECT_EQ(QuestBlockSelect(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// A pool of NaN with random bf16 keys and values in the written slots of shuffled pages, and
// their key summaries. Block 5 of every long sequence repeats block 3's keys: equal scores, a tie
// to break. all_alike: every block repeats block 0's keys (the last, partial one its first rows),
// so a row's full blocks all score the same: the select's threshold is one value shared by
// thousands of candidates, of which the earliest are taken.
struct RandomPool {
  int64_t num_blocks = 0, max_blocks = 0;
  std::vector<int32_t> tables;  // [batch, max_blocks]
  std::vector<float> pool, summary;
  PagedKvView view;
};

void FillRandomPool(std::mt19937_64& rng, const std::vector<int64_t>& contexts, int64_t kvh,
                    int64_t bs, int64_t d, int64_t max_blocks, RandomPool* out,
                    bool all_alike = false) {
  const int64_t batch = static_cast<int64_t>(contexts.size());
  int64_t total_pages = 0;
  for (int64_t ctx : contexts) total_pages += (ctx + bs - 1) / bs;
  const int64_t num_blocks = total_pages + 3;
  std::vector<int32_t> perm(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  out->num_blocks = num_blocks;
  out->max_blocks = max_blocks;
  out->tables.assign(batch * max_blocks, 0);
  out->view = PagedKvView{nullptr, nullptr, num_blocks, kvh, bs, d};
  PagedKvView& view = out->view;
  out->pool.assign(num_blocks * view.block_stride(), std::numeric_limits<float>::quiet_NaN());
  out->summary.assign(num_blocks * view.summary_block_stride(), 0.0f);
  view.kv = out->pool.data();
  view.key_summary = out->summary.data();
  std::vector<int32_t>& tables = out->tables;
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pages = (contexts[b] + bs - 1) / bs;
    for (int64_t i = 0; i < pages; ++i) tables[b * max_blocks + i] = perm[next++];
    for (int64_t i = 0; i < pages; ++i) {
      const int64_t block = tables[b * max_blocks + i];
      const int64_t rows = std::min(bs, contexts[b] - i * bs);
      for (int64_t g = 0; g < kvh; ++g) {
        const bool copy = all_alike ? i > 0 : i == 5 && pages > 8;
        const std::vector<float> k = RandomBf16Values(rng, rows * d);
        const std::vector<float> v = RandomBf16Values(rng, rows * d);
        float* kd = view.K(block, g);
        if (copy) {
          std::copy_n(view.K(tables[b * max_blocks + (all_alike ? 0 : 3)], g), rows * d, kd);
        } else {
          std::copy(k.begin(), k.end(), kd);
        }
        std::copy(v.begin(), v.end(), view.V(block, g));
        for (int64_t e = 0; e < d; ++e) {
          float lo = kd[e], hi = kd[e];
          for (int64_t r = 1; r < rows; ++r) {
            lo = std::min(lo, kd[r * d + e]);
            hi = std::max(hi, kd[r * d + e]);
          }
          view.KeyMin(block, g)[e] = lo;
          view.KeyMax(block, g)[e] = hi;
        }
      }
    }
  }
}

// The pool, queries, block tables and lengths on the device.
struct DeviceInputs {
  DeviceBuffer<bf16> q, pool, summary;
  DeviceBuffer<int32_t> tables, lens;
  PagedKvBf16 cache;
};

absl::Status Upload(const RandomPool& rp, const std::vector<float>& q,
                    const std::vector<int64_t>& contexts, DeviceInputs* out) {
  const std::vector<int32_t> lens(contexts.begin(), contexts.end());
  LY_RETURN_IF_ERROR(out->q.Upload(ToBf16(q)));
  LY_RETURN_IF_ERROR(out->pool.Upload(ToBf16(rp.pool)));
  LY_RETURN_IF_ERROR(out->summary.Upload(ToBf16(rp.summary)));
  LY_RETURN_IF_ERROR(out->tables.Upload(rp.tables));
  LY_RETURN_IF_ERROR(out->lens.Upload(lens));
  out->cache = PagedKvBf16{out->pool.get(),      out->summary.get(), rp.num_blocks,
                           rp.view.num_kv_heads, rp.view.block_size, rp.view.head_dim};
  return absl::OkStatus();
}

// Box bounds come from tensor cores (bf16 products exact, fp32 sums in the mma's order).
constexpr double kBoxTol = 4e-5;

// The box bound of block `i` of sequence b for kv head g (max over its query heads, scaled), in
// double, and the magnitude its fp32 sum may be off by.
std::pair<double, double> BoxBound(const RandomPool& rp, const std::vector<float>& q, int64_t b,
                                   int64_t g, int64_t i, int64_t h, float scale) {
  const PagedKvView& view = rp.view;
  const int64_t d = view.head_dim, kvh = view.num_kv_heads, group = h / kvh;
  const int64_t block = rp.tables[b * rp.max_blocks + i];
  double best = -INFINITY, magnitude = 0.0;
  for (int64_t hh = 0; hh < group; ++hh) {
    const float* qh = q.data() + (b * h + g * group + hh) * d;
    double bound = 0.0;
    for (int64_t e = 0; e < d; ++e) {
      const double lo = static_cast<double>(qh[e]) * view.KeyMin(block, g)[e];
      const double hi = static_cast<double>(qh[e]) * view.KeyMax(block, g)[e];
      bound += std::max(lo, hi);
      magnitude += std::fabs(qh[e]) * std::max(std::fabs(view.KeyMin(block, g)[e]),
                                               std::fabs(view.KeyMax(block, g)[e]));
    }
    best = std::max(best, bound * scale);
  }
  return {best, magnitude * scale};
}

// Query head hh's (of kv head g's group) lower bound of block `i`, scaled, in double, and the
// magnitude its fp32 sum may be off by.
std::pair<double, double> LowerBound(const RandomPool& rp, const std::vector<float>& q, int64_t b,
                                     int64_t g, int64_t hh, int64_t i, int64_t h, float scale) {
  const PagedKvView& view = rp.view;
  const int64_t d = view.head_dim, group = h / view.num_kv_heads;
  const int64_t block = rp.tables[b * rp.max_blocks + i];
  const float* qh = q.data() + (b * h + g * group + hh) * d;
  double bound = 0.0, magnitude = 0.0;
  for (int64_t e = 0; e < d; ++e) {
    const double lo = static_cast<double>(qh[e]) * view.KeyMin(block, g)[e];
    const double hi = static_cast<double>(qh[e]) * view.KeyMax(block, g)[e];
    bound += std::min(lo, hi);
    magnitude += std::max(std::fabs(lo), std::fabs(hi));
  }
  return {bound * scale, magnitude * scale};
}

// The GPU's exact scores of blocks [from, to) of sequence b, kv head g (max over each block's
// keys of q̄·k) against double precision.
void ExpectExactScores(const RandomPool& rp, const std::vector<double>& qbar, int64_t b, int64_t g,
                       int64_t ctx, int64_t from, int64_t to, const float* got) {
  const PagedKvView& view = rp.view;
  const int64_t d = view.head_dim, bs = view.block_size;
  for (int64_t i = from; i < to; ++i) {
    const float* k = view.K(rp.tables[b * rp.max_blocks + i], g);
    double best = -INFINITY, magnitude = 0.0;
    for (int64_t t = 0; t < std::min(bs, ctx - i * bs); ++t) {
      double dot = 0.0, mag = 0.0;
      for (int64_t e = 0; e < d; ++e) {
        dot += qbar[e] * k[t * d + e];
        mag += std::fabs(qbar[e] * k[t * d + e]);
      }
      best = std::max(best, dot);
      magnitude = std::max(magnitude, mag);
    }
    ASSERT_NEAR(got[i], best, 1e-5 * magnitude + 1e-6) << "block " << i;
  }
}

// The row's certified unread mass: ln Σ over its unread blocks of tokens · exp(score), from the
// GPU's own scores (-inf when it read everything).
void ExpectLogUnread(const float* scores, const std::vector<uint8_t>& is_read, int64_t n,
                     int64_t bs, int64_t ctx, float got) {
  double m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (is_read[i] == 0) m = std::max(m, static_cast<double>(scores[i]));
  }
  if (m == -INFINITY) {
    ASSERT_EQ(got, -INFINITY);
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (is_read[i] == 0) sum += std::min(bs, ctx - i * bs) * std::exp(scores[i] - m);
  }
  ASSERT_NEAR(got, m + std::log(sum), 1e-4 * std::max(1.0, std::fabs(m)));
}

struct SelectCase {
  int64_t num_heads, num_kv_heads, head_dim, block_size, budget_blocks, sink_blocks;
};

// SparseBlockSelect's inputs for a case: the uploaded pool, queries, tables and lengths, and the
// shape (outputs and per-row inputs are the caller's).
BlockSelectParams SparseSelectInputs(const DeviceInputs& in, const SelectCase& c, int64_t batch,
                                     int64_t max_blocks, float scale) {
  BlockSelectParams sp;
  sp.q = in.q.get();
  sp.cache = in.cache;
  sp.block_tables = in.tables.get();
  sp.context_lens = in.lens.get();
  sp.shape.batch = batch;
  sp.shape.num_heads = c.num_heads;
  sp.shape.num_kv_heads = c.num_kv_heads;
  sp.shape.head_dim = c.head_dim;
  sp.shape.block_size = c.block_size;
  sp.shape.max_blocks_per_seq = max_blocks;
  sp.scale = scale;
  return sp;
}

// A case's dense decode attention (the LSE an audit compares with), the buffers for the sparse
// one's LSE and output, and the per-sequence stats the dropped-mass kernels accumulate into.
// params.maybe_lse is dense_lse; the caller must not move it once made (params points into it).
struct CaseAttention {
  DecodeAttentionPlan plan;
  DeviceBuffer<bf16> out;
  DeviceBuffer<uint8_t> workspace;
  DeviceBuffer<int32_t> counters;
  DeviceBuffer<float> lse, dense_lse;
  DeviceBuffer<SparseSeqStats> stats;
  DecodeAttentionParams params;
};
absl::Status MakeCaseAttention(const DeviceInputs& in, const SelectCase& c, int64_t batch,
                               int64_t max_blocks, int64_t max_ctx, float scale, CaseAttention* a) {
  DecodeAttentionShape as;
  as.batch = batch;
  as.num_heads = c.num_heads;
  as.num_kv_heads = c.num_kv_heads;
  as.head_dim = c.head_dim;
  as.block_size = c.block_size;
  as.max_blocks_per_seq = max_blocks;
  as.max_context_len = max_ctx;
  a->plan = PlanDecodeAttention(as, ::lychee::cuda::testing::NumSms());
  const int64_t heads = batch * c.num_heads;
  LY_RETURN_IF_ERROR(a->out.Allocate(heads * c.head_dim));
  LY_RETURN_IF_ERROR(
      a->workspace.Allocate(std::max<size_t>(16, DecodeAttentionWorkspaceBytes(as, a->plan))));
  LY_RETURN_IF_ERROR(a->counters.Allocate(batch * c.num_kv_heads * kDecodeSplitCountersPerRow));
  LY_RETURN_IF_ERROR(a->counters.FillBytes(0));
  LY_RETURN_IF_ERROR(a->lse.Allocate(heads));
  LY_RETURN_IF_ERROR(a->lse.FillBytes(0xff));
  LY_RETURN_IF_ERROR(a->dense_lse.Allocate(heads));
  LY_RETURN_IF_ERROR(a->stats.Allocate(batch));
  LY_RETURN_IF_ERROR(a->stats.FillBytes(0));
  DecodeAttentionParams& ap = a->params;
  ap.q = in.q.get();
  ap.cache = in.cache;
  ap.block_tables = in.tables.get();
  ap.context_lens = in.lens.get();
  ap.out = a->out.get();
  ap.maybe_lse = a->dense_lse.get();
  ap.workspace = a->workspace.get();
  ap.split_counters = a->counters.get();
  ap.shape = as;
  ap.scale = scale;
  return absl::OkStatus();
}

class CudaBlockSelectTest : public CudaKernelTest {
 protected:
  void RunCase(const SelectCase& c, const std::vector<int64_t>& contexts, bool all_alike = false);
  // scores_from_attention: as the runner with 16-token blocks, a dense decode attention writes the
  // kExactTopK rows' exact block scores before each selection (exact_scores_given).
  void RunSparseCase(const SelectCase& c, const std::vector<int64_t>& contexts,
                     bool scores_from_attention = false);
  // control: sequences under max_dropped_mass < 1 too (GrowPrhsToBound).
  void RunPrhsCase(const SelectCase& c, const std::vector<int64_t>& contexts, bool control = false);
  void RunWideningCase(const SelectCase& c, const std::vector<int64_t>& contexts);
  SelectSearch search_ = SelectSearch::kBisect;  // every case's selection search and emission
  SelectEmit emit_ = SelectEmit::kWalk;
};

// sparsity::PrhsPolicy's Rescore on given exact scores: candidates [first, end), `take` of them,
// the top ceil(fraction · take) bringing their ±1..±dilation candidate neighbours, in the CPU's
// order (score descending, ties to the earlier block). Ascending.
std::vector<int32_t> PrhsRescoreReference(const float* scores, int64_t first, int64_t end,
                                          int64_t take, double fraction, int64_t dilation) {
  std::vector<int32_t> chosen;
  if (take <= 0) return chosen;
  if (take >= end - first) {  // every candidate, whatever the scores (the GPU scores none)
    for (int64_t b = first; b < end; ++b) chosen.push_back(static_cast<int32_t>(b));
    return chosen;
  }
  std::vector<int32_t> order;
  for (int64_t b = first; b < end; ++b) order.push_back(static_cast<int32_t>(b));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  });
  std::vector<uint8_t> in(static_cast<size_t>(std::max<int64_t>(end, 0)), 0);
  int64_t count = 0;
  auto add = [&](int64_t b) {
    if (count >= take || b < first || b >= end || in[b] != 0) return;
    in[b] = 1;
    ++count;
  };
  const int64_t widened = static_cast<int64_t>(std::ceil(fraction * static_cast<double>(take)));
  for (size_t i = 0; i < order.size() && count < take; ++i) {
    add(order[i]);
    if (static_cast<int64_t>(i) < widened) {
      for (int64_t r = 1; r <= dilation; ++r) {
        add(order[i] - r);
        add(order[i] + r);
      }
    }
  }
  for (int64_t b = first; b < end; ++b) {
    if (in[b] != 0) chosen.push_back(static_cast<int32_t>(b));
  }
  return chosen;
}

void CudaBlockSelectTest::RunCase(const SelectCase& c, const std::vector<int64_t>& contexts,
                                  bool all_alike) {
  SCOPED_TRACE(SeedNote() + " heads=" + std::to_string(c.num_heads) + "/" +
               std::to_string(c.num_kv_heads) + " d=" + std::to_string(c.head_dim) + " bs=" +
               std::to_string(c.block_size) + " budget=" + std::to_string(c.budget_blocks));
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = std::max((max_ctx + bs - 1) / bs + 1, c.budget_blocks);

  RandomPool rp;
  FillRandomPool(rng_, contexts, kvh, bs, d, max_blocks, &rp, all_alike);
  const std::vector<int32_t>& tables = rp.tables;
  const PagedKvView& view = rp.view;
  const std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  // Selection on the GPU.
  BlockSelectShape shape;
  shape.batch = batch;
  shape.num_heads = h;
  shape.num_kv_heads = kvh;
  shape.head_dim = d;
  shape.block_size = bs;
  shape.max_blocks_per_seq = max_blocks;
  shape.budget_blocks = c.budget_blocks;
  shape.sink_blocks = c.sink_blocks;
  LY_ASSERT_OK(CanImplementBlockSelect(shape));
  DeviceInputs in;
  LY_ASSERT_OK(Upload(rp, q, contexts, &in));
  DeviceBuffer<int32_t> d_sel_tables, d_sel_lens, d_sel_blocks;
  DeviceBuffer<float> d_scores;
  const int64_t rows = batch * kvh;
  LY_ASSERT_OK(d_sel_tables.Allocate(rows * c.budget_blocks));
  LY_ASSERT_OK(d_sel_tables.FillBytes(0xff));
  LY_ASSERT_OK(d_sel_blocks.Allocate(rows * c.budget_blocks));
  LY_ASSERT_OK(d_sel_blocks.FillBytes(0xff));
  LY_ASSERT_OK(d_sel_lens.Allocate(rows));
  LY_ASSERT_OK(d_sel_lens.FillBytes(0xff));
  LY_ASSERT_OK(d_scores.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_scores.FillBytes(0xff));
  const PagedKvBf16 cache = in.cache;
  BlockSelectParams sp;
  sp.search = search_;
  sp.emit = emit_;
  sp.q = in.q.get();
  sp.cache = cache;
  sp.block_tables = in.tables.get();
  sp.context_lens = in.lens.get();
  sp.sel_tables = d_sel_tables.get();
  sp.sel_lens = d_sel_lens.get();
  sp.maybe_sel_blocks = d_sel_blocks.get();
  sp.scores = d_scores.get();
  sp.shape = shape;
  sp.scale = scale;
  // With the phase clocks on (the bench's profile): the same results, and every row's phases
  // recorded in order.
  DeviceBuffer<int64_t> d_phase_clocks;
  LY_ASSERT_OK(d_phase_clocks.Allocate(rows * kSelectPhases));
  LY_ASSERT_OK(d_phase_clocks.FillBytes(0));
  sp.maybe_phase_clocks = d_phase_clocks.get();
  LY_ASSERT_OK(QuestBlockSelect(sp, nullptr));
  std::vector<int64_t> phase_clocks;
  LY_ASSERT_OK(d_phase_clocks.Download(phase_clocks));
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t* clock = phase_clocks.data() + row * kSelectPhases;
    for (const int phase :
         {kSelectEntry, kSelectPlanned, kSelectEmitted, kSelectGathered, kSelectEnd}) {
      ASSERT_NE(clock[phase], 0) << "row " << row << " phase " << phase;
    }
    int64_t last = clock[kSelectEntry];
    for (int phase = 1; phase < kSelectPhases; ++phase) {
      if (clock[phase] == 0) continue;
      ASSERT_GE(clock[phase], last) << "row " << row << " phase " << phase;
      last = clock[phase];
    }
  }
  std::vector<float> scores;
  std::vector<int32_t> sel_tables, sel_blocks, sel_lens;
  LY_ASSERT_OK(d_scores.Download(scores));
  LY_ASSERT_OK(d_sel_tables.Download(sel_tables));
  LY_ASSERT_OK(d_sel_blocks.Download(sel_blocks));
  LY_ASSERT_OK(d_sel_lens.Download(sel_lens));

  // Scores and selection, per (sequence, kv head).
  std::vector<std::vector<int32_t>> want_blocks(rows);
  std::vector<int32_t> order;
  int64_t ties_seen = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = (contexts[b] + bs - 1) / bs;
    for (int64_t g = 0; g < kvh; ++g) {
      SCOPED_TRACE("sequence " + std::to_string(b) + " kv head " + std::to_string(g));
      const int64_t row = b * kvh + g;
      const float* got_scores = scores.data() + row * max_blocks;
      if (n > c.budget_blocks) {
        for (int64_t i = 0; i < n; ++i) {
          const auto [best, magnitude] = BoxBound(rp, q, b, g, i, h, scale);
          ASSERT_NEAR(got_scores[i], best, kBoxTol * magnitude + 1e-6) << "block " << i;
        }
        if (n > 8) ties_seen += got_scores[3] == got_scores[5];
      }
      std::vector<int32_t>& want = want_blocks[row];
      if (n <= c.budget_blocks) {
        for (int64_t i = 0; i < n; ++i) want.push_back(static_cast<int32_t>(i));
      } else {
        const std::vector<float> row_scores(got_scores, got_scores + n);
        sparsity::AppendTopK(row_scores, std::min(n - 1, c.sink_blocks), 1, c.budget_blocks, {},
                             &order, &want);
      }
      const int64_t count = static_cast<int64_t>(want.size());
      ASSERT_LE(count, c.budget_blocks);
      for (int64_t j = 0; j < count; ++j) {
        ASSERT_EQ(sel_blocks[row * c.budget_blocks + j], want[j]) << "slot " << j;
        ASSERT_EQ(sel_tables[row * c.budget_blocks + j], tables[b * max_blocks + want[j]]);
      }
      const int64_t want_len = contexts[b] == 0 ? 0 : (count - 1) * bs + contexts[b] - (n - 1) * bs;
      ASSERT_EQ(sel_lens[row], want_len);
    }
  }
  std::printf("  %lld (sequence, kv head) rows selected, %lld planted ties scored equal\n",
              static_cast<long long>(rows), static_cast<long long>(ties_seen));

  // Sparse attention over the selection, against the CPU's.
  DecodeAttentionShape as;
  as.batch = batch;
  as.num_heads = h;
  as.num_kv_heads = kvh;
  as.head_dim = d;
  as.block_size = bs;
  as.max_blocks_per_seq = c.budget_blocks;
  as.max_context_len = c.budget_blocks * bs;
  LY_ASSERT_OK(CanImplementDecodeAttention(as));
  DecodeAttentionPlanOptions many;
  many.min_chunk_tokens = 1;
  many.ctas_per_sm = 64;
  for (const DecodeAttentionPlan& plan :
       {PlanDecodeAttention(as, ::lychee::cuda::testing::NumSms()),
        PlanDecodeAttention(as, ::lychee::cuda::testing::NumSms(), many)}) {
    SCOPED_TRACE("splits " + std::to_string(plan.num_splits));
    DeviceBuffer<bf16> d_out;
    DeviceBuffer<uint8_t> d_ws;
    DeviceBuffer<int32_t> d_counters;
    LY_ASSERT_OK(d_out.Allocate(batch * h * d));
    LY_ASSERT_OK(d_out.FillBytes(0xff));
    LY_ASSERT_OK(d_ws.Allocate(std::max<size_t>(16, DecodeAttentionWorkspaceBytes(as, plan))));
    LY_ASSERT_OK(d_counters.Allocate(rows * kDecodeSplitCountersPerRow));
    LY_ASSERT_OK(d_counters.FillBytes(0));
    DecodeAttentionParams ap;
    ap.q = in.q.get();
    ap.cache = cache;
    ap.block_tables = d_sel_tables.get();
    ap.context_lens = d_sel_lens.get();
    ap.per_kv_head_tables = true;
    ap.out = d_out.get();
    ap.workspace = d_ws.get();
    ap.split_counters = d_counters.get();
    ap.shape = as;
    ap.scale = scale;
    LY_ASSERT_OK(DecodeAttention(ap, plan, nullptr));
    std::vector<bf16> out_raw;
    LY_ASSERT_OK(d_out.Download(out_raw));
    const std::vector<float> out = ToFloat(out_raw);
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("sequence " + std::to_string(b) + " context " + std::to_string(contexts[b]));
      const float* got = out.data() + b * h * d;
      if (contexts[b] == 0) {
        for (int64_t i = 0; i < h * d; ++i) ASSERT_EQ(got[i], 0.0f) << i;
        continue;
      }
      std::vector<int32_t> selected;
      std::vector<int64_t> offsets = {0};
      for (int64_t g = 0; g < kvh; ++g) {
        const std::vector<int32_t>& w = want_blocks[b * kvh + g];
        selected.insert(selected.end(), w.begin(), w.end());
        offsets.push_back(static_cast<int64_t>(selected.size()));
      }
      std::vector<float> want(h * d), dropped(h), scratch(contexts[b] + 1);
      cpu::SparseDecodeAttentionParams r;
      r.q = q.data() + b * h * d;
      r.cache = view;
      r.block_table = tables.data() + b * max_blocks;
      r.selected = selected.data();
      r.selected_offsets = offsets.data();
      r.out = want.data();
      r.dropped_mass = dropped.data();
      r.scratch = scratch.data();
      r.num_heads = h;
      r.num_table_blocks = max_blocks;
      r.position = contexts[b] - 1;
      r.scale = scale;
      ASSERT_EQ(cpu::SelectionError(r), "");
      cpu::SparseDecodeAttention(r);
      EXPECT_LT(RelativeL2(got, want.data(), want.size()), 1e-2);
    }
  }
}

TEST_F(CudaBlockSelectTest, LlamaHeadsRaggedBatch) {
  LY_SKIP_WITHOUT_GPU();
  // Context 0, 1, within the budget, just over it, far beyond it.
  RunCase({32, 8, 128, 16, 64, 1}, {0, 1, 500, 1040, 9000, 33000});
}

TEST_F(CudaBlockSelectTest, GroupsHeadDimsBlockSizesAndSinks) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {17, 3000, 12345};
  RunCase({8, 8, 64, 32, 16, 2}, contexts);     // group 1, head_dim 64, two sink blocks
  RunCase({28, 4, 128, 16, 100, 1}, contexts);  // group 7
  RunCase({16, 2, 128, 32, 9, 0}, contexts);    // group 8, no sinks
  RunCase({12, 4, 64, 16, 256, 4}, contexts);   // group 3
}

// Thousands of equal scores: the select cannot narrow them to a few survivors and counts them all
// the way down; the earliest take the budget. Rows past 8192 candidates (140000 tokens) re-read
// their scores each round instead of keeping them in registers, with distinct scores too.
TEST_F(CudaBlockSelectTest, RowsOfEqualScoresAndLongRows) {
  LY_SKIP_WITHOUT_GPU();
  RunCase({32, 8, 128, 16, 64, 1}, {2000, 33000, 140000}, /*all_alike=*/true);
  RunCase({32, 8, 128, 16, 2048, 1}, {140000});
}

// The radix search (SelectSearch::kRadix: four bits a round from the scores' common prefix) must
// make the bisection's picks: its cases again, ties, rows past the register cache, sparse modes
// and widening rounds included.
TEST_F(CudaBlockSelectTest, RadixSearchPicksAsTheBisection) {
  LY_SKIP_WITHOUT_GPU();
  search_ = SelectSearch::kRadix;
  RunCase({32, 8, 128, 16, 64, 1}, {0, 1, 500, 1040, 9000, 33000});
  RunCase({28, 4, 128, 16, 100, 1}, {17, 3000, 12345});
  RunCase({16, 2, 128, 32, 9, 0}, {17, 3000, 12345});
  RunCase({32, 8, 128, 16, 64, 1}, {2000, 33000, 140000}, /*all_alike=*/true);
  RunCase({32, 8, 128, 16, 2048, 1}, {140000, 131072});
  RunSparseCase({32, 8, 128, 16, 0, 0}, {0, 1, 40, 700, 5003, 20000, 333});
  RunSparseCase({4, 2, 64, 16, 0, 0}, {0, 1, 40, 700, 5003, 20000, 333}, true);
  RunWideningCase({32, 8, 128, 16, 0, 0}, {700, 40, 5003, 20000, 333, 9001, 1, 2600});
}

// The striped emission (SelectEmit::kStriped) must give the walk's slots: ties at the threshold
// (only the earliest taken), rows at 8192 candidates and past them (the walk then), sparse modes,
// with either search.
TEST_F(CudaBlockSelectTest, StripedEmissionSlotsAsTheWalk) {
  LY_SKIP_WITHOUT_GPU();
  emit_ = SelectEmit::kStriped;
  RunCase({32, 8, 128, 16, 64, 1}, {0, 1, 500, 1040, 9000, 33000});
  RunCase({32, 8, 128, 16, 64, 1}, {2000, 33000, 140000}, /*all_alike=*/true);
  // Quest forces the sink and the last block: 8194 blocks leave exactly 8192 candidates (striped),
  // 8195 one more (the walk).
  RunCase({4, 2, 64, 16, 2048, 1}, {131100, 131120});
  RunSparseCase({32, 8, 128, 16, 0, 0}, {0, 1, 40, 700, 5003, 20000, 333});
  search_ = SelectSearch::kRadix;
  RunCase({28, 4, 128, 16, 100, 1}, {17, 3000, 12345, 131072});
  RunWideningCase({4, 2, 64, 16, 0, 0}, {700, 40, 5003, 20000, 333, 9001, 1, 2600});
}

TEST_F(CudaBlockSelectTest, RandomShapes) {
  LY_SKIP_WITHOUT_GPU();
  std::uniform_int_distribution<int64_t> len(0, 20000), batch(1, 6), budget(3, 300);
  std::uniform_int_distribution<int> pick(0, 2);
  for (int trial = 0; trial < 3; ++trial) {
    std::vector<int64_t> contexts(batch(rng_));
    for (int64_t& c : contexts) c = len(rng_);
    const int64_t kv_heads[] = {1, 2, 8};
    const int64_t groups[] = {1, 4, 8};
    const int64_t kv = kv_heads[pick(rng_)];
    RunCase({kv * groups[pick(rng_)], kv, pick(rng_) == 0 ? 64 : 128, pick(rng_) == 0 ? 32 : 16,
             budget(rng_), pick(rng_)},
            contexts);
  }
}

// ---- SparseBlockSelect: rows of mixed modes, rules per sequence, the unread bound
// ----------------

// The set a kTopK / kExactTopK row must choose, by the CPU's own code: AppendTopK as the CPU
// policies call it (Quest, LycheeDecode) over the GPU's scores, StreamingPolicy's Select.
std::vector<int32_t> WantedSet(const SelectSeqRule& rule, const RandomPool& rp, int64_t ctx,
                               const float* scores) {
  const int64_t bs = rp.view.block_size;
  const int64_t n = (ctx + bs - 1) / bs;
  std::vector<int32_t> out, order;
  if (n == 0) return out;
  const std::vector<float> row(scores, scores + n);
  switch (rule.rule) {
    case SelectRule::kQuest:
      sparsity::AppendTopK(row, std::min<int64_t>(n - 1, rule.sink_blocks), 1, rule.budget_blocks,
                           {}, &order, &out);
      break;
    case SelectRule::kTopK:
      sparsity::AppendTopK(row, rule.sink_blocks, rule.local_blocks, rule.budget_blocks, {}, &order,
                           &out);
      break;
    case SelectRule::kStreaming: {
      sparsity::StreamingPolicy policy({rule.budget_blocks * bs, 1.0}, rule.sink_blocks * bs);
      sparsity::DecodeQuery query;
      query.cache = rp.view;
      query.position = ctx - 1;
      const std::vector<int64_t> budgets(rp.view.num_kv_heads, rule.budget_blocks * bs);
      sparsity::Selection sel;
      policy.Select(query, budgets, &sel);
      out.assign(sel.blocks.begin() + sel.offsets[0], sel.blocks.begin() + sel.offsets[1]);
      break;
    }
  }
  return out;
}

void CudaBlockSelectTest::RunSparseCase(const SelectCase& c, const std::vector<int64_t>& contexts,
                                        bool scores_from_attention) {
  SCOPED_TRACE(SeedNote() + " heads=" + std::to_string(c.num_heads) + "/" +
               std::to_string(c.num_kv_heads) + " d=" + std::to_string(c.head_dim) +
               " bs=" + std::to_string(c.block_size) +
               (scores_from_attention ? " scores from the attention" : ""));
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  const int64_t group = h / kvh;
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = (max_ctx + bs - 1) / bs + 1;
  RandomPool rp;
  FillRandomPool(rng_, contexts, kvh, bs, d, max_blocks, &rp);
  const std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t rows = batch * kvh;

  // A rule per sequence: the three kinds in turn, random budgets, sinks and windows.
  std::vector<SelectSeqRule> rules(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = (contexts[b] + bs - 1) / bs;
    std::uniform_int_distribution<int64_t> budget(1, std::max<int64_t>(1, n / 2 + 2));
    std::uniform_int_distribution<int> small(0, 3);
    rules[b].rule = static_cast<SelectRule>(b % 3);
    rules[b].budget_blocks = static_cast<int32_t>(budget(rng_));
    rules[b].sink_blocks = small(rng_);
    rules[b].local_blocks = 1 + small(rng_);
  }
  DeviceInputs in;
  LY_ASSERT_OK(Upload(rp, q, contexts, &in));
  DeviceBuffer<int32_t> d_sel_tables, d_sel_lens, d_sets, d_set_sizes, d_reused;
  DeviceBuffer<float> d_scores, d_log_unread;
  DeviceBuffer<int8_t> d_modes;
  DeviceBuffer<SelectSeqRule> d_rules;
  LY_ASSERT_OK(d_rules.Upload(rules));
  LY_ASSERT_OK(d_sel_tables.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_sets.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_sets.FillBytes(0xff));
  LY_ASSERT_OK(d_sel_lens.Allocate(rows));
  LY_ASSERT_OK(d_set_sizes.Allocate(rows));
  LY_ASSERT_OK(d_scores.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_log_unread.Allocate(rows));
  LY_ASSERT_OK(d_reused.Allocate(rows));
  BlockSelectParams sp = SparseSelectInputs(in, c, batch, max_blocks, scale);
  sp.search = search_;
  sp.emit = emit_;
  sp.sel_tables = d_sel_tables.get();
  sp.sel_lens = d_sel_lens.get();
  sp.maybe_sel_blocks = d_sets.get();
  sp.maybe_set_sizes = d_set_sizes.get();
  sp.scores = d_scores.get();
  sp.maybe_log_unread = d_log_unread.get();
  sp.maybe_row_reused = d_reused.get();
  sp.seq_rules = d_rules.get();

  // The dense decode attention: with scores_from_attention before each selection (block scores),
  // and after the second for the dense LSE.
  CaseAttention att;
  LY_ASSERT_OK(MakeCaseAttention(in, c, batch, max_blocks, max_ctx, scale, &att));
  DecodeAttentionParams ap = att.params;
  const DecodeAttentionPlan& plan = att.plan;
  DeviceBuffer<float>&d_lse = att.lse, &d_dense_lse = att.dense_lse;
  DeviceBuffer<SparseSeqStats>& d_stats = att.stats;
  // Launch 1 ("layer 0") chooses sets; launch 2 also inherits them where launch 1 chose one.
  std::vector<int32_t> prev_sets, prev_sizes;
  std::vector<int8_t> prev_modes(rows, 0);
  std::uniform_int_distribution<int> pick(0, 2);
  int64_t checked[4] = {0, 0, 0, 0};
  std::vector<int32_t> sel_tables, sel_lens, sets, set_sizes;
  std::vector<float> scores, log_unread;
  std::vector<int8_t> modes(rows);
  for (int launch = 0; launch < 2; ++launch) {
    SCOPED_TRACE("launch " + std::to_string(launch));
    for (int64_t r = 0; r < rows; ++r) {
      const auto m = static_cast<SelectRowMode>(pick(rng_));
      const bool chose = prev_modes[r] == static_cast<int8_t>(SelectRowMode::kTopK) ||
                         prev_modes[r] == static_cast<int8_t>(SelectRowMode::kExactTopK);
      modes[r] = static_cast<int8_t>(
          launch == 1 && m == SelectRowMode::kExactTopK && chose ? SelectRowMode::kInherit : m);
    }
    LY_ASSERT_OK(d_modes.Upload(modes));
    LY_ASSERT_OK(d_sel_tables.FillBytes(0xff));
    LY_ASSERT_OK(d_sel_lens.FillBytes(0xff));
    LY_ASSERT_OK(d_scores.FillBytes(0xff));
    LY_ASSERT_OK(d_log_unread.FillBytes(0xff));
    LY_ASSERT_OK(d_reused.FillBytes(0xff));
    sp.row_modes = d_modes.get();
    if (scores_from_attention) {
      DecodeAttentionParams scoring = ap;
      scoring.maybe_block_scores = d_scores.get();
      scoring.block_scores_row_stride = max_blocks;
      LY_ASSERT_OK(DecodeAttention(scoring, plan, nullptr));
      sp.exact_scores_given = true;
    }
    LY_ASSERT_OK(SparseBlockSelect(sp, nullptr));
    std::vector<int32_t> reused_rows;
    LY_ASSERT_OK(d_reused.Download(reused_rows));
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_EQ(reused_rows[r], modes[r] == static_cast<int8_t>(SelectRowMode::kInherit) ? 1 : 0);
    }
    LY_ASSERT_OK(d_sel_tables.Download(sel_tables));
    LY_ASSERT_OK(d_sel_lens.Download(sel_lens));
    LY_ASSERT_OK(d_sets.Download(sets));
    LY_ASSERT_OK(d_set_sizes.Download(set_sizes));
    LY_ASSERT_OK(d_scores.Download(scores));
    LY_ASSERT_OK(d_log_unread.Download(log_unread));
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t ctx = contexts[b], n = (ctx + bs - 1) / bs;
      const int32_t* table = rp.tables.data() + b * max_blocks;
      for (int64_t g = 0; g < kvh; ++g) {
        const int64_t row = b * kvh + g;
        const auto mode = static_cast<SelectRowMode>(modes[row]);
        SCOPED_TRACE("sequence " + std::to_string(b) + " (context " + std::to_string(ctx) +
                     ", rule " + std::to_string(static_cast<int>(rules[b].rule)) + ", budget " +
                     std::to_string(rules[b].budget_blocks) + ") kv head " + std::to_string(g) +
                     " mode " + std::to_string(modes[row]));
        ++checked[modes[row]];
        const float* row_scores = scores.data() + row * max_blocks;
        const SelectRange range = ResolveSelectRule(rules[b], static_cast<int32_t>(n));
        const bool ranks = range.take > 0 && range.take < range.last_begin - range.first;
        // Scores where the row needed them: exact ones of the group-mean query, or box bounds.
        if (mode == SelectRowMode::kExactTopK && ranks) {
          std::vector<double> qbar(d, 0.0);
          for (int64_t hh = 0; hh < group; ++hh) {
            for (int64_t e = 0; e < d; ++e) qbar[e] += q[(b * h + g * group + hh) * d + e];
          }
          for (double& v : qbar) v /= static_cast<double>(group);
          ASSERT_NO_FATAL_FAILURE(ExpectExactScores(rp, qbar, b, g, ctx, 0, n, row_scores));
        } else if (mode == SelectRowMode::kTopK || mode == SelectRowMode::kInherit) {
          const bool scored =
              mode == SelectRowMode::kInherit || range.take < range.last_begin - range.first;
          for (int64_t i = 0; scored && i < n; ++i) {
            const auto [best, magnitude] = BoxBound(rp, q, b, g, i, h, scale);
            ASSERT_NEAR(row_scores[i], best, kBoxTol * magnitude + 1e-6) << "block " << i;
          }
        }
        // What the row reads.
        std::vector<int32_t> read;
        if (mode == SelectRowMode::kAll || mode == SelectRowMode::kExactTopK) {
          for (int64_t i = 0; i < n; ++i) read.push_back(static_cast<int32_t>(i));
        } else if (mode == SelectRowMode::kTopK) {
          read = WantedSet(rules[b], rp, ctx, row_scores);
        } else {
          read.assign(prev_sets.begin() + row * max_blocks,
                      prev_sets.begin() + row * max_blocks + prev_sizes[row]);
        }
        if (mode == SelectRowMode::kTopK || mode == SelectRowMode::kExactTopK) {
          const std::vector<int32_t> want_set =
              mode == SelectRowMode::kTopK ? read : WantedSet(rules[b], rp, ctx, row_scores);
          ASSERT_EQ(set_sizes[row], static_cast<int32_t>(want_set.size()));
          for (size_t j = 0; j < want_set.size(); ++j) {
            ASSERT_EQ(sets[row * max_blocks + j], want_set[j]) << "set slot " << j;
          }
        }
        int64_t tokens = 0;
        std::vector<uint8_t> is_read(n, 0);
        for (size_t j = 0; j < read.size(); ++j) {
          ASSERT_EQ(sel_tables[row * max_blocks + j], table[read[j]]) << "slot " << j;
          tokens += std::min(bs, ctx - read[j] * bs);
          is_read[read[j]] = 1;
        }
        ASSERT_EQ(sel_lens[row], tokens);
        ASSERT_NO_FATAL_FAILURE(ExpectLogUnread(row_scores, is_read, n, bs, ctx, log_unread[row]));
      }
    }
    prev_sets = sets;
    prev_sizes = set_sizes;
    prev_modes = modes;
  }
  std::printf("  rows checked by mode (all, top-k, exact top-k, inherit): %lld %lld %lld %lld\n",
              static_cast<long long>(checked[0]), static_cast<long long>(checked[1]),
              static_cast<long long>(checked[2]), static_cast<long long>(checked[3]));

  // The sparse attention's LSE over launch 2's tables and the dense LSE: the certified bound
  // must hold for every head, and AccumulateDroppedMass must total both.
  LY_ASSERT_OK(DecodeAttention(ap, plan, nullptr));
  ap.block_tables = d_sel_tables.get();
  ap.context_lens = d_sel_lens.get();
  ap.per_kv_head_tables = true;
  ap.maybe_lse = d_lse.get();
  LY_ASSERT_OK(DecodeAttention(ap, plan, nullptr));
  DroppedMassParams dp;
  dp.lse = d_lse.get();
  dp.maybe_dense_lse = d_dense_lse.get();
  dp.log_unread = d_log_unread.get();
  dp.sel_lens = d_sel_lens.get();
  dp.maybe_row_reused = d_reused.get();
  dp.stats = d_stats.get();
  dp.batch = batch;
  dp.num_heads = h;
  dp.num_kv_heads = kvh;
  LY_ASSERT_OK(AccumulateDroppedMass(dp, nullptr));
  std::vector<float> lse, dense_lse;
  std::vector<SparseSeqStats> stats;
  LY_ASSERT_OK(d_lse.Download(lse));
  LY_ASSERT_OK(d_dense_lse.Download(dense_lse));
  LY_ASSERT_OK(d_stats.Download(stats));
  double tightest = 1.0;
  for (int64_t b = 0; b < batch; ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b));
    double max_bound = 0.0, sum_bound = 0.0, exact_max = 0.0;
    int64_t tokens = 0;
    for (int64_t g = 0; g < kvh; ++g) {
      const int64_t row = b * kvh + g;
      double bound = 0.0;
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t i = b * h + g * group + hh;
        double head_bound = 0.0;
        if (log_unread[row] != -INFINITY) {
          head_bound = 1.0 / (1.0 + std::exp(static_cast<double>(lse[i]) - log_unread[row]));
        }
        bound = std::max(bound, head_bound);
        if (contexts[b] == 0) continue;
        const double exact = 1.0 - std::exp(static_cast<double>(lse[i]) - dense_lse[i]);
        exact_max = std::max(exact_max, exact);
        // The certified property: the bound is never below the exact dropped mass.
        ASSERT_LE(exact, head_bound + 1e-4) << "kv head " << g << " head " << hh;
        if (exact > 1e-3) tightest = std::min(tightest, exact / head_bound);
      }
      max_bound = std::max(max_bound, bound);
      sum_bound += bound;
      tokens += sel_lens[row];
    }
    EXPECT_NEAR(stats[b].max_bound, max_bound, 1e-4);
    EXPECT_NEAR(stats[b].sum_bound, sum_bound, 1e-4 * kvh);
    EXPECT_NEAR(stats[b].exact_max, exact_max, 1e-4);
    EXPECT_EQ(stats[b].heads, kvh);
    EXPECT_EQ(stats[b].tokens_read, tokens);
    int64_t inherited = 0;
    for (int64_t g = 0; g < kvh; ++g) {
      inherited += modes[b * kvh + g] == static_cast<int8_t>(SelectRowMode::kInherit);
    }
    EXPECT_EQ(stats[b].reused, inherited);
  }
  std::printf("  certified bound held for every head; tightest exact/bound %.3f\n", tightest);
}

TEST_F(CudaBlockSelectTest, SparseModesRulesAndBounds) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {0, 1, 40, 700, 5003, 20000, 333};
  RunSparseCase({32, 8, 128, 16, 0, 0}, contexts);  // Llama-3-8B heads
  RunSparseCase({14, 2, 64, 32, 0, 0}, contexts);   // group 7, head_dim 64
  RunSparseCase({4, 2, 64, 16, 0, 0}, contexts);    // lc20m's heads
  RunSparseCase({32, 8, 128, 16, 0, 0}, contexts, true);
  RunSparseCase({4, 2, 64, 16, 0, 0}, contexts, true);
}

// max_dropped_mass's widening rounds, as the runner runs them after a layer's sparse attention:
// WidenBudgets, SparseBlockSelect of the widened rows only (maybe_row_active), the sparse
// attention again over the part-1 lengths (rows not widened: -1, skipped). Every round against
// the host: the widening decision from the downloaded LSE and unread bounds (KvHeadBound), the
// doubled budgets, the widened rows' sets by their rule with max(1, tokens / block_size) blocks
// (sparsity's own AppendTopK / StreamingPolicy), every other row's outputs and LSE untouched.
// After the rounds the host plans (doublings until a budget covers its row), every row meets
// its sequence's max_dropped_mass or reads everything, and the exact dropped mass against the
// dense LSE stays under the bound. Sequence 0 reads everything (kAll) and must never widen.
// Every third sequence is a LycheeDecode one: a first launch chooses its sets (kExactTopK), the
// widened launch's rows inherit them (kInherit); widened, such a row reads its inherited set plus
// its own choice by exact scores (checked against double precision) and keeps its set.
void CudaBlockSelectTest::RunWideningCase(const SelectCase& c,
                                          const std::vector<int64_t>& contexts) {
  SCOPED_TRACE(SeedNote() + " widening heads=" + std::to_string(c.num_heads) + "/" +
               std::to_string(c.num_kv_heads) + " d=" + std::to_string(c.head_dim) +
               " bs=" + std::to_string(c.block_size));
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  const int64_t group = h / kvh;
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = (max_ctx + bs - 1) / bs + 1;
  RandomPool rp;
  FillRandomPool(rng_, contexts, kvh, bs, d, max_blocks, &rp);
  const std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t rows = batch * kvh;

  // Quest's, the streaming and LycheeDecode's rule in turn, budgets in tokens (not always whole
  // blocks), and a max_dropped_mass per sequence (1: none).
  const float masses[] = {0.5f, 0.2f, 0.05f, 1.0f, 0.01f};
  std::vector<SelectSeqRule> rules(batch);
  std::vector<float> max_mass(batch);
  std::vector<int8_t> modes(rows, static_cast<int8_t>(SelectRowMode::kTopK));
  std::vector<int8_t> first_modes(rows, static_cast<int8_t>(SelectRowMode::kAll));
  int64_t rounds = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = (contexts[b] + bs - 1) / bs;
    std::uniform_int_distribution<int64_t> budget(1, std::max<int64_t>(1, contexts[b] / 6));
    std::uniform_int_distribution<int> small(0, 3);
    const SelectRule kinds[] = {SelectRule::kQuest, SelectRule::kStreaming, SelectRule::kTopK};
    rules[b].rule = kinds[b % 3];
    rules[b].local_blocks = 1 + small(rng_);
    if (rules[b].rule == SelectRule::kTopK) {
      for (int64_t g = 0; g < kvh; ++g) {
        first_modes[b * kvh + g] = static_cast<int8_t>(SelectRowMode::kExactTopK);
        modes[b * kvh + g] = static_cast<int8_t>(SelectRowMode::kInherit);
      }
    }
    rules[b].budget_tokens = static_cast<int32_t>(budget(rng_));
    rules[b].budget_blocks =
        static_cast<int32_t>(std::max<int64_t>(1, rules[b].budget_tokens / bs));
    rules[b].sink_blocks = small(rng_);
    max_mass[b] = masses[b % 5];
    if (b == 0) {
      max_mass[b] = 0.01f;
      for (int64_t g = 0; g < kvh; ++g) modes[g] = static_cast<int8_t>(SelectRowMode::kAll);
    }
    if (max_mass[b] < 1.0f && b != 0) {
      rounds = std::max(rounds, WideningRounds(n, bs, rules[b].budget_tokens));
    }
  }
  DeviceInputs in;
  LY_ASSERT_OK(Upload(rp, q, contexts, &in));
  DeviceBuffer<int32_t> d_sel_tables, d_sel_lens, d_sets, d_set_sizes, d_reused, d_split;
  DeviceBuffer<int32_t> d_budgets, d_active;
  DeviceBuffer<float> d_scores, d_log_unread, d_mass, d_widen_scores;
  DeviceBuffer<int8_t> d_modes;
  DeviceBuffer<SelectSeqRule> d_rules;
  LY_ASSERT_OK(d_rules.Upload(rules));
  LY_ASSERT_OK(d_modes.Upload(first_modes));
  LY_ASSERT_OK(d_mass.Upload(max_mass));
  for (DeviceBuffer<int32_t>* buf : {&d_sel_tables, &d_sets}) {
    LY_ASSERT_OK(buf->Allocate(rows * max_blocks));
    LY_ASSERT_OK(buf->FillBytes(0xff));
  }
  for (DeviceBuffer<int32_t>* buf : {&d_sel_lens, &d_set_sizes, &d_reused, &d_budgets, &d_active}) {
    LY_ASSERT_OK(buf->Allocate(rows));
    LY_ASSERT_OK(buf->FillBytes(0xff));
  }
  LY_ASSERT_OK(d_split.Allocate(2 * rows));
  LY_ASSERT_OK(d_split.FillBytes(0xff));
  LY_ASSERT_OK(d_scores.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_scores.FillBytes(0xff));
  LY_ASSERT_OK(d_log_unread.Allocate(rows));
  LY_ASSERT_OK(d_log_unread.FillBytes(0xff));
  LY_ASSERT_OK(d_widen_scores.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_widen_scores.FillBytes(0xff));
  BlockSelectParams sp = SparseSelectInputs(in, c, batch, max_blocks, scale);
  sp.search = search_;
  sp.emit = emit_;
  sp.sel_tables = d_sel_tables.get();
  sp.sel_lens = d_sel_lens.get();
  sp.maybe_sel_blocks = d_sets.get();
  sp.maybe_set_sizes = d_set_sizes.get();
  sp.scores = d_scores.get();
  sp.maybe_log_unread = d_log_unread.get();
  sp.maybe_row_reused = d_reused.get();
  sp.maybe_split_lens = d_split.get();
  sp.row_modes = d_modes.get();
  sp.seq_rules = d_rules.get();
  // "Layer 0": the LycheeDecode sequences' retrieval heads choose the sets; then the layer under
  // test, where they inherit them.
  LY_ASSERT_OK(SparseBlockSelect(sp, nullptr));
  std::vector<int32_t> inherited_sets, inherited_sizes;
  LY_ASSERT_OK(d_sets.Download(inherited_sets));
  LY_ASSERT_OK(d_set_sizes.Download(inherited_sizes));
  LY_ASSERT_OK(d_modes.Write(modes));
  LY_ASSERT_OK(SparseBlockSelect(sp, nullptr));

  // The sparse attention of the budget-bound rows (part 1), and the dense one for the audit.
  CaseAttention att;
  LY_ASSERT_OK(MakeCaseAttention(in, c, batch, max_blocks, max_ctx, scale, &att));
  const DecodeAttentionParams& ap = att.params;
  const DecodeAttentionPlan& plan = att.plan;
  DeviceBuffer<float>&d_lse = att.lse, &d_dense_lse = att.dense_lse;
  DeviceBuffer<SparseSeqStats>& d_stats = att.stats;
  LY_ASSERT_OK(DecodeAttention(ap, plan, nullptr));
  DecodeAttentionParams sparse = ap;
  sparse.block_tables = d_sel_tables.get();
  sparse.context_lens = d_split.get() + rows;
  sparse.per_kv_head_tables = true;
  sparse.maybe_lse = d_lse.get();
  LY_ASSERT_OK(DecodeAttention(sparse, plan, nullptr));

  WidenBudgetsParams wp;
  wp.lse = d_lse.get();
  wp.log_unread = d_log_unread.get();
  wp.max_mass = d_mass.get();
  wp.row_budgets = d_budgets.get();  // poisoned: the first round starts from the rules
  wp.seq_rules = d_rules.get();
  wp.block_size = bs;
  wp.row_active = d_active.get();
  wp.part1_lens = d_split.get() + rows;
  wp.stats = d_stats.get();
  wp.batch = batch;
  wp.num_heads = h;
  wp.num_kv_heads = kvh;
  std::vector<int64_t> widenings(batch, 0);
  int64_t widened_rows = 0;
  struct Snapshot {
    std::vector<int32_t> tables, lens, sets, sizes, split, budgets;
    std::vector<float> log_unread, lse, scores;
  };
  auto snapshot = [&](Snapshot* s) {
    LY_ASSERT_OK(d_sel_tables.Download(s->tables));
    LY_ASSERT_OK(d_sel_lens.Download(s->lens));
    LY_ASSERT_OK(d_sets.Download(s->sets));
    LY_ASSERT_OK(d_set_sizes.Download(s->sizes));
    LY_ASSERT_OK(d_split.Download(s->split));
    LY_ASSERT_OK(d_budgets.Download(s->budgets));
    LY_ASSERT_OK(d_log_unread.Download(s->log_unread));
    LY_ASSERT_OK(d_lse.Download(s->lse));
    LY_ASSERT_OK(d_scores.Download(s->scores));
  };
  for (int64_t round = 1; round <= rounds + 1; ++round) {  // one more: nothing may widen then
    SCOPED_TRACE("round " + std::to_string(round) + " of " + std::to_string(rounds));
    Snapshot before, after;
    ASSERT_NO_FATAL_FAILURE(snapshot(&before));
    wp.first_round = round == 1;
    LY_ASSERT_OK(WidenBudgets(wp, nullptr));
    std::vector<int32_t> active, budgets_now, split_now;
    LY_ASSERT_OK(d_active.Download(active));
    LY_ASSERT_OK(d_budgets.Download(budgets_now));
    LY_ASSERT_OK(d_split.Download(split_now));
    int64_t active_rows = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / kvh, g = r % kvh;
      SCOPED_TRACE("sequence " + std::to_string(b) + " kv head " + std::to_string(g));
      const float bound =
          KvHeadBound(before.lse.data() + b * h + g * group, group, before.log_unread[r]);
      const bool want =
          max_mass[b] < 1.0f && before.log_unread[r] != -INFINITY && bound > max_mass[b];
      // A bound within float rounding of the threshold may go either way.
      if (std::fabs(bound - max_mass[b]) > 1e-5f * max_mass[b]) {
        ASSERT_EQ(active[r], want ? 1 : 0) << "bound " << bound;
      }
      ASSERT_TRUE(active[r] == 0 || active[r] == 1);
      if (b == 0) {
        ASSERT_EQ(active[r], 0);
      }
      if (round > rounds) {
        ASSERT_EQ(active[r], 0) << "the planned rounds did not suffice";
      }
      const int32_t start = round == 1 ? rules[b].budget_tokens : before.budgets[r];
      ASSERT_EQ(budgets_now[r], active[r] != 0 ? 2 * start : start);
      if (active[r] == 0) {
        ASSERT_EQ(split_now[rows + r], -1);
      }
      active_rows += active[r];
      widenings[b] += active[r];
    }
    widened_rows += active_rows;
    BlockSelectParams round_sp = sp;
    round_sp.maybe_row_budgets = d_budgets.get();
    round_sp.maybe_row_active = d_active.get();
    round_sp.maybe_widen_scores = d_widen_scores.get();
    LY_ASSERT_OK(SparseBlockSelect(round_sp, nullptr));
    std::vector<float> widen_scores;
    std::vector<int32_t> reused;
    LY_ASSERT_OK(d_widen_scores.Download(widen_scores));
    LY_ASSERT_OK(d_reused.Download(reused));
    LY_ASSERT_OK(DecodeAttention(sparse, plan, nullptr));
    ASSERT_NO_FATAL_FAILURE(snapshot(&after));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / kvh, g = r % kvh, ctx = contexts[b], n = (ctx + bs - 1) / bs;
      SCOPED_TRACE("sequence " + std::to_string(b) + " kv head " + std::to_string(g));
      const auto row_of = [&](const std::vector<int32_t>& v) {
        return std::vector<int32_t>(v.begin() + r * max_blocks, v.begin() + (r + 1) * max_blocks);
      };
      const auto lse_of = [&](const std::vector<float>& v) {
        return std::vector<float>(v.begin() + b * h + g * group,
                                  v.begin() + b * h + (g + 1) * group);
      };
      if (active[r] == 0) {  // untouched, bit for bit (the NaN poison of sequence 0's LSE too)
        ASSERT_EQ(row_of(after.tables), row_of(before.tables));
        ASSERT_EQ(row_of(after.sets), row_of(before.sets));
        ASSERT_EQ(after.lens[r], before.lens[r]);
        ASSERT_EQ(after.sizes[r], before.sizes[r]);
        ASSERT_EQ(std::memcmp(&after.log_unread[r], &before.log_unread[r], sizeof(float)), 0);
        const std::vector<float> la = lse_of(after.lse), lb = lse_of(before.lse);
        ASSERT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0);
        continue;
      }
      SelectSeqRule rule = rules[b];
      rule.budget_blocks = static_cast<int32_t>(std::max<int64_t>(1, budgets_now[r] / bs));
      const float* row_scores = after.scores.data() + r * max_blocks;
      std::vector<int32_t> want;
      ASSERT_EQ(reused[r], 0);
      if (modes[r] == static_cast<int8_t>(SelectRowMode::kInherit)) {
        // Its own choice by the exact scores of its group-mean query, plus the inherited set;
        // the set itself unchanged.
        const float* exact = widen_scores.data() + r * max_blocks;
        std::vector<double> qbar(d, 0.0);
        for (int64_t hh = 0; hh < group; ++hh) {
          for (int64_t e = 0; e < d; ++e) qbar[e] += q[(b * h + g * group + hh) * d + e];
        }
        for (double& v : qbar) v /= static_cast<double>(group);
        const SelectRange range = ResolveSelectRule(rule, static_cast<int32_t>(n));
        ASSERT_NO_FATAL_FAILURE(
            ExpectExactScores(rp, qbar, b, g, ctx, range.first, range.last_begin, exact));
        const std::vector<int32_t> own = WantedSet(rule, rp, ctx, exact);
        const std::vector<int32_t> kept(
            inherited_sets.begin() + r * max_blocks,
            inherited_sets.begin() + r * max_blocks + inherited_sizes[r]);
        std::set_union(kept.begin(), kept.end(), own.begin(), own.end(), std::back_inserter(want));
        ASSERT_EQ(after.sizes[r], inherited_sizes[r]);
        ASSERT_EQ(row_of(after.sets), row_of(before.sets));
      } else {
        want = WantedSet(rule, rp, ctx, row_scores);
        ASSERT_EQ(after.sizes[r], static_cast<int32_t>(want.size()));
        for (size_t j = 0; j < want.size(); ++j) {
          ASSERT_EQ(after.sets[r * max_blocks + j], want[j]) << "set slot " << j;
        }
      }
      int64_t tokens = 0;
      std::vector<uint8_t> is_read(n, 0);
      for (size_t j = 0; j < want.size(); ++j) {
        ASSERT_EQ(after.tables[r * max_blocks + j], rp.tables[b * max_blocks + want[j]])
            << "slot " << j;
        tokens += std::min(bs, ctx - want[j] * bs);
        is_read[want[j]] = 1;
      }
      ASSERT_EQ(after.lens[r], tokens);
      ASSERT_EQ(after.split[rows + r], tokens);
      ASSERT_EQ(after.split[r], -1);
      ASSERT_NO_FATAL_FAILURE(
          ExpectLogUnread(row_scores, is_read, n, bs, ctx, after.log_unread[r]));
    }
    if (round > rounds) break;
  }
  ASSERT_GT(widened_rows, 0);  // the case must exercise widening

  // After the rounds: every bound met (or everything read), certified against the dense LSE, and
  // the widenings counted per sequence.
  std::vector<float> lse, dense_lse, log_unread;
  std::vector<SparseSeqStats> stats;
  LY_ASSERT_OK(d_lse.Download(lse));
  LY_ASSERT_OK(d_dense_lse.Download(dense_lse));
  LY_ASSERT_OK(d_log_unread.Download(log_unread));
  LY_ASSERT_OK(d_stats.Download(stats));
  int64_t read_all = 0;
  for (int64_t b = 1; b < batch; ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b));
    EXPECT_EQ(stats[b].widenings, widenings[b]);
    for (int64_t g = 0; g < kvh; ++g) {
      const int64_t r = b * kvh + g;
      const float bound = KvHeadBound(lse.data() + b * h + g * group, group, log_unread[r]);
      read_all += log_unread[r] == -INFINITY;
      if (max_mass[b] < 1.0f) {
        ASSERT_LE(bound, max_mass[b] * (1.0f + 1e-5f)) << "kv head " << g;
      }
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t i = b * h + g * group + hh;
        const double exact = 1.0 - std::exp(static_cast<double>(lse[i]) - dense_lse[i]);
        ASSERT_LE(exact, CertifiedDroppedMass(lse[i], log_unread[r]) + 1e-4)
            << "kv head " << g << " head " << hh;
      }
    }
  }
  EXPECT_EQ(stats[0].widenings, 0);
  std::printf("  %lld planned rounds, %lld rows widened over them, %lld rows read everything\n",
              static_cast<long long>(rounds), static_cast<long long>(widened_rows),
              static_cast<long long>(read_all));
}

TEST_F(CudaBlockSelectTest, WideningRoundsMeetMaxDroppedMass) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {700, 40, 5003, 20000, 333, 9001, 1, 2600, 12000, 64};
  RunWideningCase({32, 8, 128, 16, 0, 0}, contexts);  // Llama-3-8B heads
  RunWideningCase({14, 2, 64, 32, 0, 0}, contexts);   // group 7, head_dim 64
  RunWideningCase({4, 2, 64, 16, 0, 0}, contexts);    // lc20m's heads
}

// kPrhs rows: launch 1 has no anchors (every row rescored: exact scores, dilation, the PSAW
// window), launch 2 reuses the anchor where the group-mean query is unchanged and the budget
// the same, and rescores elsewhere (new queries, a changed budget), with moved PSAW windows.
// Sets, pages, lengths, anchors and bounds against the host reference of the CPU policy.
void CudaBlockSelectTest::RunPrhsCase(const SelectCase& c, const std::vector<int64_t>& contexts,
                                      bool control) {
  SCOPED_TRACE(SeedNote() + (control ? " prhs (control) heads=" : " prhs heads=") +
               std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
               " d=" + std::to_string(c.head_dim) + " bs=" + std::to_string(c.block_size));
  const int64_t batch = static_cast<int64_t>(contexts.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  const int64_t group = h / kvh;
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  const int64_t max_blocks = (max_ctx + bs - 1) / bs + 1;
  RandomPool rp;
  FillRandomPool(rng_, contexts, kvh, bs, d, max_blocks, &rp);
  std::vector<float> q = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t rows = batch * kvh;

  std::vector<SelectSeqRule> rules(batch);
  std::vector<PrhsSeqParams> prhs(batch);
  const double fractions[] = {0.0, 1.0 / 3.0, 0.5, 1.0};
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = (contexts[b] + bs - 1) / bs;
    std::uniform_int_distribution<int64_t> budget(1, std::max<int64_t>(1, n / 2 + 4));
    std::uniform_int_distribution<int> small(0, 3);
    rules[b].rule = SelectRule::kTopK;
    rules[b].budget_blocks = static_cast<int32_t>(budget(rng_));
    rules[b].sink_blocks = small(rng_);
    rules[b].local_blocks = 1 + small(rng_);
    prhs[b].dilate_fraction = fractions[small(rng_)];
    prhs[b].dilation = small(rng_);
    prhs[b].tau = 0.5;
    prhs[b].window_first_block = b % 2 == 0 ? 0 : static_cast<int32_t>(n / 4);
    prhs[b].anchor_row = static_cast<int32_t>(b * kvh);
    prhs[b].budget_tokens = static_cast<int32_t>(rules[b].budget_blocks * bs);
    const float masses[] = {1.0f, 0.05f, 0.3f, 0.7f};
    if (control) prhs[b].max_dropped_mass = masses[b % 4];
  }
  DeviceInputs in;
  LY_ASSERT_OK(Upload(rp, q, contexts, &in));
  DeviceBuffer<int32_t> d_sel_tables, d_sel_lens, d_sets, d_set_sizes, d_info, d_blocks, d_reused;
  DeviceBuffer<float> d_scores, d_exact, d_log_unread, d_anchor_q;
  DeviceBuffer<int8_t> d_modes;
  DeviceBuffer<SelectSeqRule> d_rules;
  DeviceBuffer<PrhsSeqParams> d_prhs;
  LY_ASSERT_OK(
      d_modes.Upload(std::vector<int8_t>(rows, static_cast<int8_t>(SelectRowMode::kPrhs))));
  LY_ASSERT_OK(d_sel_tables.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_sets.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_sel_lens.Allocate(rows));
  LY_ASSERT_OK(d_set_sizes.Allocate(rows));
  LY_ASSERT_OK(d_scores.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_exact.Allocate(rows * max_blocks));
  LY_ASSERT_OK(d_log_unread.Allocate(rows));
  LY_ASSERT_OK(d_reused.Allocate(rows));
  LY_ASSERT_OK(d_anchor_q.Allocate(rows * d));
  LY_ASSERT_OK(d_anchor_q.FillBytes(0xff));
  LY_ASSERT_OK(d_info.Allocate(2 * rows));
  LY_ASSERT_OK(d_info.FillBytes(0));  // no anchors
  LY_ASSERT_OK(d_blocks.Allocate(rows * kPrhsMaxAnchorBlocks));
  LY_ASSERT_OK(d_blocks.FillBytes(0xff));
  DeviceBuffer<float> d_lower;
  DeviceBuffer<int32_t> d_fallback;
  LY_ASSERT_OK(d_lower.Allocate(batch * h * max_blocks));
  LY_ASSERT_OK(d_fallback.Allocate(rows));
  BlockSelectParams sp = SparseSelectInputs(in, c, batch, max_blocks, scale);
  if (control) sp.prhs_lower = d_lower.get();
  sp.prhs_row_fallback = d_fallback.get();
  sp.search = search_;
  sp.emit = emit_;
  sp.sel_tables = d_sel_tables.get();
  sp.sel_lens = d_sel_lens.get();
  sp.maybe_sel_blocks = d_sets.get();
  sp.maybe_set_sizes = d_set_sizes.get();
  sp.scores = d_scores.get();
  sp.maybe_log_unread = d_log_unread.get();
  sp.row_modes = d_modes.get();
  sp.prhs_scores = d_exact.get();
  sp.prhs_anchor_q = d_anchor_q.get();
  sp.prhs_anchor_info = d_info.get();
  sp.prhs_anchor_blocks = d_blocks.get();
  sp.maybe_row_reused = d_reused.get();

  // The host's view of every row's anchor (as PrhsPolicy keeps it).
  struct Anchor {
    int32_t budget = 0;
    std::vector<float> qbar;
    std::vector<int32_t> blocks;
  };
  std::vector<Anchor> anchors(rows);
  auto group_mean = [&](int64_t b, int64_t g) {
    std::vector<float> qbar(d, 0.0f);
    for (int64_t hh = 0; hh < group; ++hh) {
      for (int64_t e = 0; e < d; ++e) qbar[e] += q[(b * h + g * group + hh) * d + e];
    }
    for (float& v : qbar) v *= 1.0f / static_cast<float>(group);
    return qbar;
  };
  int64_t checked_reuse = 0, checked_rescore = 0, checked_all = 0;
  int64_t controlled = 0, grown = 0, fallbacks = 0, too_close = 0;
  for (int launch = 0; launch < 2; ++launch) {
    SCOPED_TRACE("launch " + std::to_string(launch));
    if (launch == 1) {
      // Odd sequences get new queries; even ones keep theirs (reuse) unless their budget moves.
      const std::vector<float> fresh = RandomBf16Values(rng_, batch * h * d, -2.0f, 2.0f);
      for (int64_t b = 1; b < batch; b += 2) {
        std::copy_n(fresh.begin() + b * h * d, h * d, q.begin() + b * h * d);
      }
      LY_ASSERT_OK(in.q.Upload(ToBf16(q)));
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t n = (contexts[b] + bs - 1) / bs;
        prhs[b].window_first_block += static_cast<int32_t>(n / 8);
        if (b % 4 == 2) {
          ++rules[b].budget_blocks;
          prhs[b].budget_tokens = static_cast<int32_t>(rules[b].budget_blocks * bs);
        }
      }
    }
    sp.q = in.q.get();
    LY_ASSERT_OK(d_rules.Upload(rules));
    LY_ASSERT_OK(d_prhs.Upload(prhs));
    sp.seq_rules = d_rules.get();
    sp.prhs_seqs = d_prhs.get();
    LY_ASSERT_OK(d_sel_tables.FillBytes(0xff));
    LY_ASSERT_OK(d_sets.FillBytes(0xff));
    LY_ASSERT_OK(d_sel_lens.FillBytes(0xff));
    LY_ASSERT_OK(d_exact.FillBytes(0xff));
    LY_ASSERT_OK(d_scores.FillBytes(0xff));
    LY_ASSERT_OK(d_reused.FillBytes(0xff));
    LY_ASSERT_OK(d_lower.FillBytes(0xff));
    LY_ASSERT_OK(d_fallback.FillBytes(0xff));
    LY_ASSERT_OK(SparseBlockSelect(sp, nullptr));
    std::vector<float> lower;
    std::vector<int32_t> fallback_rows;
    LY_ASSERT_OK(d_lower.Download(lower));
    LY_ASSERT_OK(d_fallback.Download(fallback_rows));
    std::vector<int32_t> sel_tables, sel_lens, sets, set_sizes, info, blocks, reused_rows;
    LY_ASSERT_OK(d_reused.Download(reused_rows));
    std::vector<float> scores, exact, log_unread, anchor_q;
    LY_ASSERT_OK(d_sel_tables.Download(sel_tables));
    LY_ASSERT_OK(d_sel_lens.Download(sel_lens));
    LY_ASSERT_OK(d_sets.Download(sets));
    LY_ASSERT_OK(d_set_sizes.Download(set_sizes));
    LY_ASSERT_OK(d_scores.Download(scores));
    LY_ASSERT_OK(d_exact.Download(exact));
    LY_ASSERT_OK(d_log_unread.Download(log_unread));
    LY_ASSERT_OK(d_anchor_q.Download(anchor_q));
    LY_ASSERT_OK(d_info.Download(info));
    LY_ASSERT_OK(d_blocks.Download(blocks));
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t ctx = contexts[b], n = (ctx + bs - 1) / bs;
      const int32_t* table = rp.tables.data() + b * max_blocks;
      const SelectRange range = ResolveSelectRule(rules[b], static_cast<int32_t>(n));
      const int64_t budget = std::max<int32_t>(1, rules[b].budget_blocks);
      const int64_t wf = std::min<int64_t>(
          range.last_begin, std::max<int64_t>(range.first, prhs[b].window_first_block));
      const int64_t forced = range.first + (n - range.last_begin);
      const int64_t take = budget - forced;
      for (int64_t g = 0; g < kvh; ++g) {
        const int64_t row = b * kvh + g;
        SCOPED_TRACE("sequence " + std::to_string(b) + " (context " + std::to_string(ctx) +
                     ", budget " + std::to_string(budget) + ", window " + std::to_string(wf) +
                     ", take " + std::to_string(take) + ", fraction " +
                     std::to_string(prhs[b].dilate_fraction) + ", dilation " +
                     std::to_string(prhs[b].dilation) + ") kv head " + std::to_string(g));
        const std::vector<float> qbar = group_mean(b, g);
        Anchor& anchor = anchors[row];
        std::vector<int32_t> want;  // what the row reads
        if (budget >= n) {
          for (int64_t i = 0; i < n; ++i) want.push_back(static_cast<int32_t>(i));
          ++checked_all;
          ASSERT_EQ(reused_rows[row], 0);
        } else {
          bool reuse = false;
          if (anchor.budget == prhs[b].budget_tokens) {
            const double cosine = sparsity::Cosine(qbar.data(), anchor.qbar.data(), d);
            if (std::fabs(cosine - prhs[b].tau) < 1e-4) continue;  // too close to call
            reuse = cosine > prhs[b].tau;
          }
          ASSERT_EQ(reused_rows[row], reuse ? 1 : 0);
          std::vector<int32_t> chosen;
          if (reuse) {
            for (int32_t blk : anchor.blocks) {
              if (blk >= wf && blk < range.last_begin) chosen.push_back(blk);
            }
            ++checked_reuse;
          } else {
            const float* row_exact = exact.data() + row * max_blocks;
            if (take > 0 && take < range.last_begin - wf) {
              // The exact scores of q̄ (the GPU's own drive the reference's choice).
              const std::vector<double> qd(qbar.begin(), qbar.end());
              ASSERT_NO_FATAL_FAILURE(
                  ExpectExactScores(rp, qd, b, g, ctx, wf, range.last_begin, row_exact));
            }
            chosen = PrhsRescoreReference(row_exact, wf, range.last_begin, take,
                                          prhs[b].dilate_fraction, prhs[b].dilation);
            anchor.budget = prhs[b].budget_tokens;
            anchor.qbar = qbar;
            anchor.blocks = chosen;
            ++checked_rescore;
            // The device's anchor.
            ASSERT_EQ(info[2 * row], prhs[b].budget_tokens);
            ASSERT_EQ(info[2 * row + 1], static_cast<int32_t>(chosen.size()));
            for (size_t j = 0; j < chosen.size(); ++j) {
              ASSERT_EQ(blocks[row * kPrhsMaxAnchorBlocks + j], chosen[j]) << "anchor slot " << j;
            }
            for (int64_t e = 0; e < d; ++e) {
              ASSERT_NEAR(anchor_q[row * d + e], qbar[e], 1e-6f * (1.0f + std::fabs(qbar[e])));
            }
          }
          for (int64_t i = 0; i < range.first; ++i) want.push_back(static_cast<int32_t>(i));
          want.insert(want.end(), chosen.begin(), chosen.end());
          for (int64_t i = range.last_begin; i < n; ++i) want.push_back(static_cast<int32_t>(i));
          if (prhs[b].max_dropped_mass < 1.0f && control) {
            // Grown to the bound from the GPU's own bounds, each checked against double first.
            const float* row_box = scores.data() + row * max_blocks;
            const float* row_lower = lower.data() + (b * h + g * group) * max_blocks;
            for (int64_t i = 0; i < n; ++i) {
              const auto [bound, magnitude] = BoxBound(rp, q, b, g, i, h, scale);
              ASSERT_NEAR(row_box[i], bound, kBoxTol * magnitude + 1e-6) << "box of block " << i;
              for (int64_t hh = 0; hh < group; ++hh) {
                const auto [low, mag] = LowerBound(rp, q, b, g, hh, i, h, scale);
                ASSERT_NEAR(row_lower[hh * max_blocks + i], low, kBoxTol * mag + 1e-6)
                    << "lower bound of head " << hh << ", block " << i;
              }
            }
            std::vector<uint8_t> first_set(n, 0);
            for (const int32_t blk : want) first_set[blk] = 1;
            const PrhsGrowOutcome grow =
                PrhsGrowReference(first_set, row_box, row_lower, max_blocks, group, bs, ctx,
                                  prhs[b].max_dropped_mass, 4 * budget);
            if (grow.margin < 1e-4) {
              ++too_close;
              continue;
            }
            ASSERT_EQ(fallback_rows[row], grow.fallback ? 1 : 0);
            ++controlled;
            fallbacks += grow.fallback;
            grown += !grow.fallback && grow.read != first_set;
            want.clear();
            for (int64_t i = 0; i < n; ++i) {
              if (grow.read[i] != 0) want.push_back(static_cast<int32_t>(i));
            }
          } else {
            ASSERT_EQ(fallback_rows[row], 0);
          }
        }
        ASSERT_EQ(set_sizes[row], static_cast<int32_t>(want.size()));
        int64_t tokens = 0;
        std::vector<uint8_t> is_read(n, 0);
        for (size_t j = 0; j < want.size(); ++j) {
          ASSERT_EQ(sets[row * max_blocks + j], want[j]) << "set slot " << j;
          ASSERT_EQ(sel_tables[row * max_blocks + j], table[want[j]]) << "slot " << j;
          tokens += std::min(bs, ctx - want[j] * bs);
          is_read[want[j]] = 1;
        }
        ASSERT_EQ(sel_lens[row], tokens);
        // The certified bound: the unread blocks' key-summary bounds.
        const float* row_scores = scores.data() + row * max_blocks;
        for (int64_t i = 0; i < n; ++i) {
          if (is_read[i] != 0) continue;
          const auto [bound, magnitude] = BoxBound(rp, q, b, g, i, h, scale);
          ASSERT_NEAR(row_scores[i], bound, kBoxTol * magnitude + 1e-6) << "bound of block " << i;
        }
        ASSERT_NO_FATAL_FAILURE(ExpectLogUnread(row_scores, is_read, n, bs, ctx, log_unread[row]));
      }
    }
  }
  std::printf("  prhs rows checked (read all, rescored, reused): %lld %lld %lld\n",
              static_cast<long long>(checked_all), static_cast<long long>(checked_rescore),
              static_cast<long long>(checked_reuse));
  EXPECT_GT(checked_reuse, 0);
  EXPECT_GT(checked_rescore, 0);
  if (control) {
    std::printf("  under max_dropped_mass: %lld rows, %lld grown, %lld fell back, %lld too close\n",
                static_cast<long long>(controlled), static_cast<long long>(grown),
                static_cast<long long>(fallbacks), static_cast<long long>(too_close));
    EXPECT_GT(grown, 0);
    EXPECT_GT(fallbacks, 0);
  }
}

TEST_F(CudaBlockSelectTest, PrhsAnchorsDilationAndWindows) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {0, 1, 40, 700, 5003, 20000, 333, 1600};
  RunPrhsCase({32, 8, 128, 16, 0, 0}, contexts);  // Llama-3-8B heads
  RunPrhsCase({14, 2, 64, 32, 0, 0}, contexts);   // group 7, head_dim 64
  RunPrhsCase({4, 2, 64, 16, 0, 0}, contexts);    // lc20m's heads
}

// PrHS under max_dropped_mass < 1 on the GPU: each row's set (as above) grown until its pre-read
// bound meets the bound, or every block where it would pass 4x the budget, against the host's
// GrowPrhsToBound in double on the GPU's own bounds (box and lower, each checked in double).
TEST_F(CudaBlockSelectTest, PrhsSetsGrowToMaxDroppedMass) {
  LY_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> contexts = {0, 1, 40, 700, 5003, 20000, 333, 1600, 9000, 2500};
  RunPrhsCase({32, 8, 128, 16, 0, 0}, contexts, true);  // Llama-3-8B heads
  RunPrhsCase({14, 2, 64, 32, 0, 0}, contexts, true);   // group 7, head_dim 64
  RunPrhsCase({4, 2, 64, 16, 0, 0}, contexts, true);    // lc20m's heads
}

TEST(CudaBlockSelectPlanTest, SparseSelectNeedsItsInputs) {
  BlockSelectParams p;
  p.shape = Shape(2, 64, 8);
  EXPECT_FALSE(CanRunSparseBlockSelect(p).ok());
  EXPECT_EQ(SparseBlockSelect(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  DroppedMassParams dp;
  EXPECT_EQ(AccumulateDroppedMass(dp, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// Widening rounds' host checks (no GPU): a round needs its budgets, bounds and part lengths,
// never kPrhs inputs; WidenBudgets every pointer and sane sizes; the certified bound's formula.
TEST(CudaBlockSelectPlanTest, WideningNeedsItsInputs) {
  alignas(16) int32_t cell = 0;  // host pointers: only checked, never read
  float value = 0.0f;
  int8_t mode = 0;
  SelectSeqRule rule;
  BlockSelectParams p;
  p.shape = Shape(1, 64, 8);
  p.q = reinterpret_cast<const bf16*>(&cell);
  p.cache.kv = reinterpret_cast<bf16*>(&cell);
  p.cache.key_summary = reinterpret_cast<bf16*>(&cell);
  p.cache.num_blocks = 64;
  p.cache.num_kv_heads = 8;
  p.cache.block_size = 16;
  p.cache.head_dim = 128;
  p.block_tables = p.context_lens = &cell;
  p.sel_tables = p.sel_lens = p.maybe_sel_blocks = p.maybe_set_sizes = &cell;
  p.scores = &value;
  p.row_modes = &mode;
  p.seq_rules = &rule;
  ASSERT_TRUE(CanRunSparseBlockSelect(p).ok()) << CanRunSparseBlockSelect(p);
  p.maybe_widen_scores = &value;  // only in a round
  EXPECT_NE(CanRunSparseBlockSelect(p).message().find("widening"), std::string::npos);
  p.maybe_row_active = &cell;  // a round without budgets, bounds or part lengths
  EXPECT_NE(CanRunSparseBlockSelect(p).message().find("maybe_row_budgets"), std::string::npos);
  p.maybe_row_budgets = &cell;
  p.maybe_log_unread = &value;
  p.maybe_split_lens = &cell;
  EXPECT_TRUE(CanRunSparseBlockSelect(p).ok()) << CanRunSparseBlockSelect(p);
  p.prhs_seqs = reinterpret_cast<const PrhsSeqParams*>(&cell);
  EXPECT_FALSE(CanRunSparseBlockSelect(p).ok());

  // A hybrid step's selection (maybe_set_lens) follows the attention that gave the exact
  // scores, never in a widening round; row filters are SparseBlockSelect's only.
  p.prhs_seqs = nullptr;
  p.maybe_widen_scores = nullptr;
  p.maybe_set_lens = &cell;
  EXPECT_NE(CanRunSparseBlockSelect(p).message().find("hybrid"), std::string::npos);  // a round
  p.maybe_row_active = nullptr;
  p.maybe_row_budgets = nullptr;
  EXPECT_NE(CanRunSparseBlockSelect(p).message().find("exact_scores_given"), std::string::npos);
  p.exact_scores_given = true;
  for (const SelectRowFilter f :
       {SelectRowFilter::kAllRows, SelectRowFilter::kReadsAllRows, SelectRowFilter::kBudgetRows}) {
    p.row_filter = f;
    EXPECT_TRUE(CanRunSparseBlockSelect(p).ok()) << CanRunSparseBlockSelect(p);
  }
  p.row_filter = static_cast<SelectRowFilter>(7);
  EXPECT_NE(CanRunSparseBlockSelect(p).message().find("row_filter"), std::string::npos);
  BlockSelectParams quest = p;
  quest.row_modes = nullptr;
  quest.seq_rules = nullptr;
  quest.maybe_set_lens = nullptr;
  quest.maybe_log_unread = nullptr;
  quest.maybe_split_lens = nullptr;
  quest.row_filter = SelectRowFilter::kBudgetRows;
  EXPECT_NE(QuestBlockSelect(quest, nullptr).message().find("row_filter"), std::string::npos);

  WidenBudgetsParams w;
  EXPECT_EQ(WidenBudgets(w, nullptr).code(), absl::StatusCode::kInvalidArgument);
  w.lse = w.log_unread = w.max_mass = &value;
  w.row_budgets = w.row_active = w.part1_lens = &cell;
  SparseSeqStats stats;
  w.stats = &stats;
  w.batch = 1;
  w.num_heads = 32;
  w.num_kv_heads = 8;
  w.block_size = 16;
  EXPECT_NE(CanRunWidenBudgets(w).message().find("seq_rules"), std::string::npos);  // round 1
  w.first_round = false;
  EXPECT_TRUE(CanRunWidenBudgets(w).ok()) << CanRunWidenBudgets(w);
  w.num_heads = 30;  // not a multiple of the kv heads
  EXPECT_FALSE(CanRunWidenBudgets(w).ok());

  // U / (S + U) with S = e^lse, U = e^log_unread; nothing unread: exactly 0.
  EXPECT_FLOAT_EQ(CertifiedDroppedMass(0.0f, 0.0f), 0.5f);
  EXPECT_NEAR(CertifiedDroppedMass(std::log(3.0f), 0.0f), 0.25f, 1e-6f);
  EXPECT_EQ(CertifiedDroppedMass(5.0f, -INFINITY), 0.0f);
  const float lse[3] = {std::log(3.0f), 0.0f, std::log(9.0f)};
  EXPECT_NEAR(KvHeadBound(lse, 3, 0.0f), 0.5f, 1e-6f);  // the worst query head
}

TEST(CudaBlockSelectPlanTest, RulesResolveAsTheCpuPolicies) {
  // Quest: the sinks only before the last block, the last block always, everything within the
  // budget.
  SelectSeqRule quest{8, 2, 1, SelectRule::kQuest};
  SelectRange r = ResolveSelectRule(quest, 100);
  EXPECT_EQ(r.first, 2);
  EXPECT_EQ(r.last_begin, 99);
  EXPECT_EQ(r.take, 5);
  r = ResolveSelectRule(quest, 2);
  EXPECT_EQ(r.first, 1);
  EXPECT_EQ(r.last_begin, 1);
  r = ResolveSelectRule(quest, 6);
  EXPECT_EQ(r.take, r.last_begin - r.first);  // n <= budget: all
  // Streaming: sinks and the recent window, never a ranked block.
  SelectSeqRule streaming{10, 3, 0, SelectRule::kStreaming};
  r = ResolveSelectRule(streaming, 100);
  EXPECT_EQ(r.first, 3);
  EXPECT_EQ(r.last_begin, 93);
  EXPECT_EQ(r.take, 0);
  r = ResolveSelectRule(streaming, 2);  // all sinks
  EXPECT_EQ(r.first, 2);
  EXPECT_EQ(r.last_begin, 2);
  // LycheeDecode (AppendTopK): sinks, local window, the rest by score.
  SelectSeqRule topk{16, 1, 4, SelectRule::kTopK};
  r = ResolveSelectRule(topk, 100);
  EXPECT_EQ(r.first, 1);
  EXPECT_EQ(r.last_begin, 96);
  EXPECT_EQ(r.take, 11);
  EXPECT_EQ(ResolveSelectRule(topk, 0).take, 0);
}

}  // namespace
}  // namespace lychee::cuda
