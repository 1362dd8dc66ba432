// SPDX-License-Identifier: Apache-2.0
// Chunked paged prefill attention (kernels/cuda/prefill_attention.h) against cpu::PagedAttention:
// several chunks in one launch (start positions 0, 17, 700, 1000; sizes 1, 15, 64, 65, 300),
// GQA groups 1, 4, 7, 8, head_dim 64/128, block_size 16/32/64, shuffled non-contiguous block
// tables, q inside a wider (fused QKV-like) row whose other columns are NaN, every pool slot that
// must not be read holding NaN, outputs poisoned before each launch, and a captured CUDA graph
// replayed with a different tile list. CanImplement / tile-list tests are host logic and run
// without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_kv.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/prefill_attention.h"
#include "kvcache/paged_kv_view.h"
#include "tests/unit/kernels/cuda_test_util.h"
#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

using ::lychee::cuda::testing::CudaKernelTest;
using ::lychee::cuda::testing::RandomBf16Values;
using ::lychee::testing::RelativeL2;

PrefillAttentionShape LlamaShape() {
  PrefillAttentionShape s;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  s.num_chunks = 4;
  s.max_blocks_per_seq = 256;
  s.num_tiles = 40;
  return s;
}

// ---- Host logic (no GPU needed) ---------------------------------------------------------------

TEST(CudaPrefillAttentionPlanTest, CanImplementNamesWhatIsUnsupported) {
  EXPECT_TRUE(CanImplementPrefillAttention(LlamaShape()).ok());
  struct Bad {
    const char* what;
    void (*mutate)(PrefillAttentionShape&);
  };
  const Bad bad[] = {
      {"head_dim", [](PrefillAttentionShape& s) { s.head_dim = 96; }},
      {"head_dim", [](PrefillAttentionShape& s) { s.head_dim = 256; }},
      {"block_size", [](PrefillAttentionShape& s) { s.block_size = 8; }},
      {"block_size", [](PrefillAttentionShape& s) { s.block_size = 128; }},
      {"multiple", [](PrefillAttentionShape& s) { s.num_kv_heads = 5; }},
      {"positive", [](PrefillAttentionShape& s) { s.num_heads = 0; }},
      {"positive", [](PrefillAttentionShape& s) { s.num_kv_heads = -1; }},
      {"positive", [](PrefillAttentionShape& s) { s.num_chunks = 0; }},
      {"positive", [](PrefillAttentionShape& s) { s.max_blocks_per_seq = 0; }},
      {"positive", [](PrefillAttentionShape& s) { s.num_tiles = 0; }},
      {"grid", [](PrefillAttentionShape& s) { s.num_tiles = 70000; }},
      {"int32", [](PrefillAttentionShape& s) { s.max_blocks_per_seq = int64_t{1} << 28; }},
  };
  for (const Bad& b : bad) {
    PrefillAttentionShape s = LlamaShape();
    b.mutate(s);
    const absl::Status st = CanImplementPrefillAttention(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << b.what;
    EXPECT_NE(std::string(st.message()).find(b.what), std::string::npos) << st;
  }
  // Any integer GQA group: 1..8, 7 (7 q heads / 1 kv head), 16, 32.
  for (const int64_t kv : {1, 2, 4, 8, 16, 32}) {
    PrefillAttentionShape s = LlamaShape();
    s.num_kv_heads = kv;
    EXPECT_TRUE(CanImplementPrefillAttention(s).ok()) << "kv_heads " << kv;
  }
  PrefillAttentionShape seven = LlamaShape();
  seven.num_heads = 7;
  seven.num_kv_heads = 1;
  EXPECT_TRUE(CanImplementPrefillAttention(seven).ok());
}

// Random chunks: the tiles of each cover its rows exactly once, in order, contiguous, with
// consistent positions; all tiles but the last of a chunk are full.
TEST(CudaPrefillAttentionPlanTest, TilesCoverEachChunkExactly) {
  const uint64_t seed = ::lychee::testing::TestSeed();
  std::printf("seed %llu (replay: LYCHEE_TEST_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> size_dist(1, 1000), start_dist(0, 100000),
      count_dist(1, 20);
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE("LYCHEE_TEST_SEED=" + std::to_string(seed) + " trial " + std::to_string(trial));
    std::vector<PrefillTile> tiles;
    struct Chunk {
      int32_t row_begin, rows, start;
    };
    std::vector<Chunk> chunks(count_dist(rng));
    int32_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      chunks[c] = {row, size_dist(rng), start_dist(rng)};
      AppendPrefillTiles(static_cast<int32_t>(c), row, chunks[c].rows, chunks[c].start, &tiles);
      row += chunks[c].rows;
    }
    size_t t = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const Chunk& ch = chunks[c];
      const size_t want = (ch.rows + kPrefillTileRows - 1) / kPrefillTileRows;
      int32_t next = ch.row_begin;
      for (size_t i = 0; i < want; ++i, ++t) {
        ASSERT_LT(t, tiles.size());
        const PrefillTile& tile = tiles[t];
        EXPECT_EQ(tile.chunk, static_cast<int32_t>(c));
        EXPECT_EQ(tile.row_begin, next);
        ASSERT_GE(tile.num_rows, 1);
        ASSERT_LE(tile.num_rows, kPrefillTileRows);
        if (i + 1 < want) {
          EXPECT_EQ(tile.num_rows, kPrefillTileRows);
        }
        EXPECT_EQ(tile.first_position, ch.start + (tile.row_begin - ch.row_begin));
        next += tile.num_rows;
      }
      EXPECT_EQ(next, ch.row_begin + ch.rows);  // exactly covered
    }
    EXPECT_EQ(t, tiles.size());
  }
  std::vector<PrefillTile> none;
  AppendPrefillTiles(0, 0, 0, 5, &none);
  EXPECT_TRUE(none.empty());
}

TEST(CudaPrefillAttentionPlanTest, CanRunChecksParams) {
  PrefillAttentionParams p;
  p.shape = LlamaShape();
  p.q = reinterpret_cast<const bf16*>(uintptr_t{4096});
  p.cache = PagedKvBf16{reinterpret_cast<bf16*>(uintptr_t{8192}), nullptr, 100, 8, 16, 128};
  p.block_tables = reinterpret_cast<const int32_t*>(uintptr_t{64});
  p.tiles = reinterpret_cast<const PrefillTile*>(uintptr_t{128});
  p.out = reinterpret_cast<bf16*>(uintptr_t{16384});
  p.scale = 0.088f;
  EXPECT_TRUE(CanRunPrefillAttention(p).ok()) << CanRunPrefillAttention(p);
  p.q_row_stride = 32 * 128 + 2 * 8 * 128;  // q inside a fused QKV row
  EXPECT_TRUE(CanRunPrefillAttention(p).ok());
  PrefillAttentionParams bad = p;
  bad.q_row_stride = 32 * 128 - 8;  // narrower than the heads
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.q_row_stride = 32 * 128 + 4;  // rows not 16-byte aligned
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.cache.block_size = 32;
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.q = reinterpret_cast<const bf16*>(uintptr_t{4098});
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.out = reinterpret_cast<bf16*>(uintptr_t{16392});
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.scale = 0.0f;
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  bad = p;
  bad.tiles = nullptr;
  EXPECT_FALSE(CanRunPrefillAttention(bad).ok());
  // The launcher validates before it touches the device.
  EXPECT_EQ(PrefillAttention(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// ---- Against the CPU reference (GPU) ----------------------------------------------------------

struct AttnCase {
  int64_t num_heads, num_kv_heads, head_dim, block_size;
};

// A chunk: `rows` new queries at positions start .. start + rows - 1 of its own sequence.
struct ChunkSpec {
  int64_t start, rows;
};

class CudaPrefillAttentionTest : public CudaKernelTest {
 protected:
  // graph: capture the launch with a decoy tile list on the device (same count), then store the
  // real tiles at the same address and replay.
  void RunCase(const AttnCase& c, const std::vector<ChunkSpec>& chunks, bool graph = false);
};

void CudaPrefillAttentionTest::RunCase(const AttnCase& c, const std::vector<ChunkSpec>& chunks,
                                       bool graph) {
  SCOPED_TRACE(SeedNote() + " heads=" + std::to_string(c.num_heads) + "/" +
               std::to_string(c.num_kv_heads) + " d=" + std::to_string(c.head_dim) +
               " bs=" + std::to_string(c.block_size) + (graph ? " graph" : ""));
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  const int64_t d = c.head_dim, bs = c.block_size, kvh = c.num_kv_heads, h = c.num_heads;
  int64_t max_len = 0, total_rows = 0, total_pages = 0;
  for (const ChunkSpec& ch : chunks) {
    max_len = std::max(max_len, ch.start + ch.rows);
    total_rows += ch.rows;
    total_pages += (ch.start + ch.rows + bs - 1) / bs;
  }
  const int64_t max_blocks = (max_len + bs - 1) / bs + 2;  // wider than needed: padding columns

  // Physical blocks: a random permutation over all sequences' pages plus spare blocks.
  const int64_t num_blocks = total_pages + 5;
  std::vector<int32_t> perm(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng_);
  std::vector<int32_t> tables(num_chunks * max_blocks, -1);  // -1: never read
  int64_t next = 0;
  for (int64_t b = 0; b < num_chunks; ++b) {
    const int64_t len = chunks[b].start + chunks[b].rows;
    for (int64_t page = 0; page < (len + bs - 1) / bs; ++page) {
      tables[b * max_blocks + page] = perm[next++];
    }
  }

  // Pool: NaN everywhere, then random bf16 keys and values in the slots of positions
  // 0 .. start + rows - 1 of each sequence (cached context and the chunk's own K/V), so a read
  // of an unused slot or of one past the sequence's last position shows up as NaN.
  PagedKvBf16 shape{nullptr, nullptr, num_blocks, kvh, bs, d};
  std::vector<float> pool(num_blocks * shape.block_stride(),
                          std::numeric_limits<float>::quiet_NaN());
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (int64_t b = 0; b < num_chunks; ++b) {
    for (int64_t pos = 0; pos < chunks[b].start + chunks[b].rows; ++pos) {
      const int64_t block = tables[b * max_blocks + pos / bs];
      for (int64_t half = 0; half < 2; ++half) {
        for (int64_t g = 0; g < kvh; ++g) {
          float* row = pool.data() + block * shape.block_stride() + half * shape.kv_stride() +
                       g * shape.head_stride() + (pos % bs) * d;
          for (int64_t e = 0; e < d; ++e) row[e] = RoundToBf16(uni(rng_));
        }
      }
    }
  }

  // Queries inside a wider row (a fused QKV buffer: q, then k and v), the columns past the q
  // heads NaN so a read beyond the heads shows. Spread enough that softmax is far from uniform.
  const int64_t q_width = h * d;
  const int64_t q_stride = q_width + 2 * kvh * d;
  std::vector<float> q_dense = RandomBf16Values(rng_, total_rows * q_width, -2.0f, 2.0f);
  std::vector<float> q_rows(total_rows * q_stride, std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < total_rows; ++r) {
    std::copy(q_dense.begin() + r * q_width, q_dense.begin() + (r + 1) * q_width,
              q_rows.begin() + r * q_stride);
  }

  // Tiles: the chunks' rows laid out one after another.
  std::vector<PrefillTile> tiles;
  std::vector<int64_t> row_begin(num_chunks);
  int64_t row = 0;
  for (int64_t b = 0; b < num_chunks; ++b) {
    row_begin[b] = row;
    AppendPrefillTiles(static_cast<int32_t>(b), static_cast<int32_t>(row),
                       static_cast<int32_t>(chunks[b].rows), static_cast<int32_t>(chunks[b].start),
                       &tiles);
    row += chunks[b].rows;
  }
  // Tile order must not matter: shuffle it.
  std::shuffle(tiles.begin(), tiles.end(), rng_);

  PrefillAttentionShape s;
  s.num_heads = h;
  s.num_kv_heads = kvh;
  s.head_dim = d;
  s.block_size = bs;
  s.num_chunks = num_chunks;
  s.max_blocks_per_seq = max_blocks;
  s.num_tiles = static_cast<int64_t>(tiles.size());
  LY_ASSERT_OK(CanImplementPrefillAttention(s));

  DeviceBuffer<bf16> d_q, d_pool, d_out;
  DeviceBuffer<int32_t> d_tables;
  DeviceBuffer<PrefillTile> d_tiles;
  LY_ASSERT_OK(d_q.Upload(ToBf16(q_rows)));
  LY_ASSERT_OK(d_pool.Upload(ToBf16(pool)));
  LY_ASSERT_OK(d_tables.Upload(tables));
  LY_ASSERT_OK(d_out.Allocate(total_rows * q_width));
  LY_ASSERT_OK(d_out.FillBytes(0xff));

  PrefillAttentionParams p;
  p.q = d_q.get();
  p.q_row_stride = q_stride;
  p.cache = shape;
  p.cache.kv = d_pool.get();
  p.block_tables = d_tables.get();
  p.out = d_out.get();
  p.shape = s;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  if (graph) {
    // Decoy: the same number of tiles, all of chunk 0's first tile.
    LY_ASSERT_OK(d_tiles.Upload(std::vector<PrefillTile>(tiles.size(), tiles.front())));
    p.tiles = d_tiles.get();
    cudaStream_t stream;
    LY_ASSERT_OK(CudaStatus(cudaStreamCreate(&stream), "cudaStreamCreate"));
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    LY_ASSERT_OK(CudaStatus(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                            "cudaStreamBeginCapture"));
    const absl::Status launched = PrefillAttention(p, stream);
    LY_ASSERT_OK(CudaStatus(cudaStreamEndCapture(stream, &g), "cudaStreamEndCapture"));
    LY_ASSERT_OK(launched);
    LY_ASSERT_OK(CudaStatus(cudaGraphInstantiate(&exec, g, 0), "cudaGraphInstantiate"));
    LY_ASSERT_OK(d_tiles.Write(tiles));  // the real tiles, after capture, same address
    LY_ASSERT_OK(CudaStatus(cudaGraphLaunch(exec, stream), "cudaGraphLaunch"));
    LY_ASSERT_OK(CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
    cudaStreamDestroy(stream);
  } else {
    LY_ASSERT_OK(d_tiles.Upload(tiles));
    p.tiles = d_tiles.get();
    LY_ASSERT_OK(PrefillAttention(p, nullptr));
  }
  std::vector<bf16> out_raw;
  LY_ASSERT_OK(d_out.Download(out_raw));
  const std::vector<float> out = ToFloat(out_raw);

  // CPU reference, one chunk at a time.
  PagedKvView view{pool.data(), nullptr, num_blocks, kvh, bs, d};
  std::vector<float> scratch(max_len + 1);
  for (int64_t b = 0; b < num_chunks; ++b) {
    SCOPED_TRACE("chunk " + std::to_string(b) + " start " + std::to_string(chunks[b].start) +
                 " rows " + std::to_string(chunks[b].rows));
    const int64_t n = chunks[b].rows;
    std::vector<float> want(n * q_width);
    cpu::PagedAttentionParams r;
    r.q = q_dense.data() + row_begin[b] * q_width;
    r.cache = view;
    r.block_table = tables.data() + b * max_blocks;
    r.out = want.data();
    r.scratch = scratch.data();
    r.num_queries = n;
    r.num_heads = h;
    r.num_table_blocks = max_blocks;
    r.query_start = chunks[b].start;
    r.scale = p.scale;
    cpu::PagedAttention(r);
    const float* got = out.data() + row_begin[b] * q_width;
    int64_t non_finite = 0;
    for (int64_t i = 0; i < n * q_width; ++i) non_finite += std::isfinite(got[i]) ? 0 : 1;
    EXPECT_EQ(non_finite, 0);
    EXPECT_LT(RelativeL2(got, want.data(), want.size()), 2e-2);
  }
}

// The mix an engine step sees: a one-token chunk, short chunks after cached context, exactly one
// tile, one tile plus a row, and 300 new queries after 700 cached tokens.
const std::vector<ChunkSpec> kMixedChunks = {{0, 1},     {17, 15}, {0, 64},   {1000, 65},
                                             {700, 300}, {0, 300}, {1000, 1}, {5, 64}};

TEST_F(CudaPrefillAttentionTest, MixedChunksMatchCpu) {
  LY_SKIP_WITHOUT_GPU();
  RunCase({32, 8, 128, 16}, kMixedChunks);  // Llama-3-8B: group 4
}

TEST_F(CudaPrefillAttentionTest, GqaGroupsHeadDimsAndBlockSizes) {
  LY_SKIP_WITHOUT_GPU();
  const AttnCase cases[] = {
      {8, 8, 64, 32},    // group 1, head_dim 64
      {7, 1, 128, 64},   // group 7: 7 q heads on 1 kv head
      {32, 4, 64, 16},   // group 8
      {16, 4, 128, 32},  // group 4
      {4, 2, 128, 64},   // group 2
  };
  for (const AttnCase& c : cases) RunCase(c, kMixedChunks);
}

TEST_F(CudaPrefillAttentionTest, RandomChunks) {
  LY_SKIP_WITHOUT_GPU();
  // Sizes bounded so that the single-threaded CPU reference stays within seconds.
  std::uniform_int_distribution<int64_t> rows(1, 200), start(0, 1200), count(1, 5);
  std::uniform_int_distribution<int> pick(0, 2), pick2(0, 1);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<ChunkSpec> chunks(count(rng_));
    for (ChunkSpec& ch : chunks) ch = {trial % 2 == 0 ? 0 : start(rng_), rows(rng_)};
    const int64_t block_sizes[] = {16, 32, 64};
    const int64_t kv_heads[] = {1, 2};
    const int64_t groups[] = {1, 4, 7};
    const int64_t kv = kv_heads[pick2(rng_)];
    RunCase({kv * groups[pick(rng_)], kv, pick(rng_) == 0 ? 64 : 128, block_sizes[pick(rng_)]},
            chunks);
  }
}

TEST_F(CudaPrefillAttentionTest, CapturedGraphReadsTilesAtReplay) {
  LY_SKIP_WITHOUT_GPU();
  RunCase({32, 8, 128, 16}, {{0, 130}, {700, 300}, {3, 1}}, /*graph=*/true);
}

}  // namespace
}  // namespace lychee::cuda
