// SPDX-License-Identifier: Apache-2.0
// Chunked causal paged prefill attention (prefill_attention.h): flash-attention 2 on mma.sync
// m16n8k16 (bf16 in, fp32 accumulate), fp32 online softmax.
//
// CTA (q head, tile), 128 threads = 4 warps; warp w owns query rows [16w, 16w + 16) of the tile.
// Shared memory: Q [64][D], K [2][64][D], V [2][64][D] bf16 (80 KiB for D = 128, 40 KiB for 64),
// rows of 16-byte chunks XOR-swizzled by (row % 8) so that ldmatrix and cp.async are free of
// bank conflicts. Key tiles of 64 positions (a whole number of pages for block sizes 16/32/64)
// are gathered page by page with cp.async into the idle buffer while the other one is computed;
// key slots past the tile's last query position are zero-filled, never read, so whatever the
// pool holds there (NaN in the tests) cannot reach the result.
//
// Per warp and key tile: S[16][64] = Q·Kᵀ with Q's A fragments kept in registers for the whole
// CTA, K's B fragments from ldmatrix; scores scaled into log2 units, the causal mask applied only
// when the key tile reaches past the warp's first position (a select, so a masked score never
// depends on the key's value); running max / sum per row (each thread holds 2 rows, reduced over
// its quad); P rounded to bf16 reuses S's accumulator layout as P·V's A fragment, V's B fragments
// come from ldmatrix.trans. A warp whose rows all precede a key tile skips it. The epilogue
// normalises O, stages it through the (then unused) Q buffer and writes 16-byte rows.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/prefill_attention.h"

namespace lychee::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps x 16 query rows = kPrefillTileRows
constexpr int kRows = kPrefillTileRows;
constexpr int kKeys = 64;  // keys per K/V tile: a whole number of pages
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kRows == (kThreads / 32) * 16, "one m16 row block per warp");

template <int D>
struct PrefillConfig {
  static constexpr int kChunks = D / 8;   // 16-byte chunks per row
  static constexpr int kKSteps = D / 16;  // k steps of Q·Kᵀ
  static constexpr int kDTiles = D / 8;   // n tiles of P·V
  static constexpr int kTileElems = kKeys * D;
  static constexpr int kSmemBytes = (kRows * D + 4 * kTileElems) * 2;  // Q, K x2, V x2
  static constexpr int kRowStep = kThreads / kChunks;                  // rows per load iteration
  static_assert(kRowStep % 8 == 0 && kKeys % kRowStep == 0 && kRows % kRowStep == 0, "loads");
};

template <int D>
__global__ void __launch_bounds__(kThreads)
    PrefillAttentionKernel(const __grid_constant__ PrefillAttentionParams p) {
  using Cfg = PrefillConfig<D>;
  extern __shared__ uint4 smem_raw[];
  bf16* s_q = reinterpret_cast<bf16*>(smem_raw);
  bf16* s_k = s_q + kRows * D;            // [2][kKeys][D]
  bf16* s_v = s_k + 2 * Cfg::kTileElems;  // [2][kKeys][D]

  const PrefillAttentionShape& s = p.shape;
  const int head = blockIdx.x;
  const PrefillTile tile = p.tiles[blockIdx.y];
  const int num_rows = tile.num_rows < kRows ? tile.num_rows : kRows;
  if (num_rows <= 0 || tile.first_position < 0) return;  // uniform over the CTA
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  const int kv_head = head / group;
  const int64_t max_tokens = s.max_blocks_per_seq * s.block_size;
  const int64_t last64 = static_cast<int64_t>(tile.first_position) + num_rows - 1;
  const int last_pos = static_cast<int>(last64 < max_tokens ? last64 : max_tokens - 1);
  const int num_kv_tiles = last_pos / kKeys + 1;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  // Loads: thread t moves chunk t % kChunks of rows t / kChunks + it * kRowStep; kRowStep is a
  // multiple of 8, so every row it touches has the same swizzle and the shared offsets of its
  // iterations differ by constants.
  const int ld_chunk = threadIdx.x % Cfg::kChunks;
  const int ld_row = threadIdx.x / Cfg::kChunks;
  const int ld_smem = Swz<D>(ld_row, ld_chunk);

  // Q rows of the tile (rows past num_rows zero-filled): cp.async group 0.
  const int64_t q_stride = p.q_row_stride == 0 ? s.num_heads * D : p.q_row_stride;
  {
    const uint32_t dst = SmemAddr(s_q + ld_smem);
    const bf16* src =
        p.q + static_cast<int64_t>(tile.row_begin) * q_stride + head * D + ld_chunk * 8;
#pragma unroll
    for (int it = 0; it < kRows / Cfg::kRowStep; ++it) {
      const int r = ld_row + it * Cfg::kRowStep;
      const bool valid = r < num_rows;
      CpAsync16(dst + it * Cfg::kRowStep * D * 2, valid ? src + r * q_stride : p.q, valid);
    }
  }
  CpAsyncCommit();

  // K/V tile loader: key r of tile kt is position kt * kKeys + r, in page
  // table[pos / block_size] at slot pos % block_size; positions past last_pos are zero-filled.
  const int32_t* table = p.block_tables + static_cast<int64_t>(tile.chunk) * s.max_blocks_per_seq;
  const int bs_shift = __ffs(static_cast<int>(s.block_size)) - 1;
  const int bs_mask = static_cast<int>(s.block_size) - 1;
  const int64_t block_stride = p.cache.block_stride();
  const int64_t kv_stride = p.cache.kv_stride();
  const bf16* k_head = p.cache.kv + kv_head * p.cache.head_stride() + ld_chunk * 8;
  const uint32_t k_ld_dst = SmemAddr(s_k + ld_smem);
  const uint32_t v_ld_dst = SmemAddr(s_v + ld_smem);
  auto load_kv = [&](int kt, int buf) {
#pragma unroll
    for (int it = 0; it < kKeys / Cfg::kRowStep; ++it) {
      const int pos = kt * kKeys + ld_row + it * Cfg::kRowStep;
      const bool valid = pos <= last_pos;
      const bf16* src = p.cache.kv;
      if (valid) {
        const int64_t page = __ldg(table + (pos >> bs_shift));
        src = k_head + page * block_stride + (pos & bs_mask) * D;
      }
      const uint32_t off = (buf * Cfg::kTileElems + it * Cfg::kRowStep * D) * 2;
      CpAsync16(k_ld_dst + off, src, valid);
      CpAsync16(v_ld_dst + off, valid ? src + kv_stride : src, valid);
    }
  };
  load_kv(0, 0);
  CpAsyncCommit();

  // Q's A fragments, held for the whole CTA.
  CpAsyncWait<1>();
  __syncthreads();
  const int warp_row0 = warp * 16;
  uint32_t qf[Cfg::kKSteps][4];
#pragma unroll
  for (int kk = 0; kk < Cfg::kKSteps; ++kk) {
    Ldmatrix4(qf[kk], SmemAddr(s_q + Swz<D>(warp_row0 + (lane & 15), kk * 2 + (lane >> 4))));
  }

  // ldmatrix addresses of K (x4: keys +0..7 / +8..15 by lane bit 4, d chunk +0 / +1 by lane
  // bit 3) and V (.trans; keys by lane bit 3, d chunk by lane bit 4). Chunk 2c + b of a row r
  // sits at chunk (2c + b) ^ (r & 7) = (2c & 8) + ((2c & 6) ^ (b ^ (r & 7))), so 4 bases per
  // matrix cover every chunk pair, the rest are constant offsets.
  uint32_t k_ld[4], v_ld[4];
  {
    const int k_row = (lane & 7) + ((lane >> 4) << 3);
    const int k_sw = ((lane >> 3) & 1) ^ (lane & 7);
    const int v_row = (lane & 7) + (((lane >> 3) & 1) << 3);
    const int v_sw = (lane >> 4) ^ (lane & 7);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      k_ld[c] = SmemAddr(s_k + k_row * D + (((2 * c) ^ k_sw) << 3));
      v_ld[c] = SmemAddr(s_v + v_row * D + (((2 * c) ^ v_sw) << 3));
    }
  }

  const float kNegInf = -__int_as_float(0x7f800000);
  const float scale_log2 = p.scale * kLog2e;
  // This thread's rows: warp_row0 + lane / 4 (fragment elements 0, 1) and + 8 (elements 2, 3).
  const int pos_lo = tile.first_position + warp_row0 + lane / 4;
  const int pos_hi = pos_lo + 8;
  const int warp_first = tile.first_position + warp_row0;
  const int warp_last = warp_first + 15;
  const bool warp_active = warp_row0 < num_rows;
  float o[Cfg::kDTiles][4];
#pragma unroll
  for (int n = 0; n < Cfg::kDTiles; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
  }
  float m[2] = {kNegInf, kNegInf};
  float l[2] = {0.0f, 0.0f};  // this thread's partial row sums; reduced over the quad at the end

  for (int kt = 0; kt < num_kv_tiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < num_kv_tiles) load_kv(kt + 1, buf ^ 1);
    CpAsyncCommit();  // possibly empty: keeps the group count uniform
    CpAsyncWait<1>();
    __syncthreads();

    const int key0 = kt * kKeys;
    if (warp_active && key0 <= warp_last) {
      const uint32_t buf_off = buf * Cfg::kTileElems * 2;

      // S = Q·Kᵀ: 8 n tiles of 8 keys.
      float sc[kKeys / 8][4];
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[n][e] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < Cfg::kKSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < kKeys / 16; ++np) {
          uint32_t b[4];
          Ldmatrix4(b, k_ld[kk & 3] + buf_off + (np * 16 * D + (kk >> 2) * 64) * 2);
          Mma16816(sc[2 * np], qf[kk], b[0], b[1]);
          Mma16816(sc[2 * np + 1], qf[kk], b[2], b[3]);
        }
      }

      // Scale into log2 units, mask on the diagonal, running max.
      const bool diagonal = key0 + kKeys - 1 > warp_first;
      float mx[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float v = sc[n][e] * scale_log2;
          if (diagonal) {
            const int key = key0 + n * 8 + 2 * (lane & 3) + (e & 1);
            if (key > (e < 2 ? pos_lo : pos_hi)) v = kNegInf;
          }
          sc[n][e] = v;
          mx[e >> 1] = fmaxf(mx[e >> 1], v);
        }
      }
      float base[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        const float m_new = fmaxf(m[i], mx[i]);
        base[i] = m_new == kNegInf ? 0.0f : m_new;  // a row with nothing seen yet
        const float corr = exp2f(m[i] - base[i]);   // m == -inf gives 0
        m[i] = m_new;
        l[i] *= corr;
#pragma unroll
        for (int n = 0; n < Cfg::kDTiles; ++n) {
          o[n][2 * i] *= corr;
          o[n][2 * i + 1] *= corr;
        }
      }
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float prob = exp2f(sc[n][e] - base[e >> 1]);  // -inf gives 0
          sc[n][e] = prob;
          l[e >> 1] += prob;
        }
      }

      // O += P·V: S's accumulators of key tiles 2j, 2j + 1 form P's A fragment of k step j.
#pragma unroll
      for (int j = 0; j < kKeys / 16; ++j) {
        const uint32_t a[4] = {PackBf16(sc[2 * j][0], sc[2 * j][1]),
                               PackBf16(sc[2 * j][2], sc[2 * j][3]),
                               PackBf16(sc[2 * j + 1][0], sc[2 * j + 1][1]),
                               PackBf16(sc[2 * j + 1][2], sc[2 * j + 1][3])};
#pragma unroll
        for (int dp = 0; dp < Cfg::kDTiles / 2; ++dp) {
          uint32_t b[4];
          Ldmatrix4Trans(b, v_ld[dp & 3] + buf_off + (j * 16 * D + (dp >> 2) * 64) * 2);
          Mma16816(o[2 * dp], a, b[0], b[1]);
          Mma16816(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with `buf` before the next iteration refills it
  }

  if (!warp_active) return;  // no barrier follows
  // Normalise, stage this warp's 16 rows in its own rows of the Q buffer, write 16-byte chunks.
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    inv[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
  }
  const int row_lo = warp_row0 + lane / 4;
#pragma unroll
  for (int n = 0; n < Cfg::kDTiles; ++n) {
    const int col = 2 * (lane & 3);
    *reinterpret_cast<__nv_bfloat162*>(s_q + Swz<D>(row_lo, n) + col) =
        __floats2bfloat162_rn(o[n][0] * inv[0], o[n][1] * inv[0]);
    *reinterpret_cast<__nv_bfloat162*>(s_q + Swz<D>(row_lo + 8, n) + col) =
        __floats2bfloat162_rn(o[n][2] * inv[1], o[n][3] * inv[1]);
  }
  __syncwarp();
  const int64_t out_stride = s.num_heads * D;
#pragma unroll
  for (int it = 0; it < 16 * Cfg::kChunks / 32; ++it) {
    const int i = it * 32 + lane;
    const int r = warp_row0 + i / Cfg::kChunks;
    const int c = i % Cfg::kChunks;
    if (r < num_rows) {
      *reinterpret_cast<uint4*>(p.out + (static_cast<int64_t>(tile.row_begin) + r) * out_stride +
                                head * D + c * 8) =
          *reinterpret_cast<const uint4*>(s_q + Swz<D>(r, c));
    }
  }
}

template <int D>
absl::Status Launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  constexpr int kSmem = PrefillConfig<D>::kSmemBytes;
  // Above 48 KiB of dynamic shared memory needs the opt-in; a host-side attribute, no stream op,
  // so it is legal while a stream is being captured.
  LY_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PrefillAttentionKernel<D>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>(p.shape.num_heads),
                  static_cast<unsigned>(p.shape.num_tiles));
  PrefillAttentionKernel<D><<<grid, kThreads, kSmem, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status PrefillAttention(const PrefillAttentionParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunPrefillAttention(p));
  return DispatchHeadDim(p.shape.head_dim, [&](auto head_dim) {
    return Launch<decltype(head_dim)::value>(p, stream);
  });
}

}  // namespace lychee::cuda
