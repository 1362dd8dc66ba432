// SPDX-License-Identifier: Apache-2.0
// The tile operations FlashAttention (flash_attention.h) runs per key tile: Q·Kᵀ, the online
// softmax and P·V, plus the widening of bf16 K/V rows. One table of function pointers per vector
// ISA (cpu_runtime.h): portable scalar loops, AVX2/FMA and AVX-512, each compiled through target
// attributes only, so one binary runs on every x86-64 CPU.
//
// Layouts (mp = padded rows, a multiple of kFlashRowAlign; nk <= kFlashKeyTile keys):
//   qt [d][mp]   queries transposed, pre-scaled by scale·log2(e)
//   st [nk][mp]  scores transposed (key-major), overwritten with the probabilities
//   o  [mp][d]   unnormalised output rows
//   m, l, alpha [mp]  running max (base 2), running sum, this tile's rescale factor
// krows / vrows: nk pointers to K / V rows of head_dim floats.
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/cpu/cpu_runtime.h"

namespace lychee::cpu {

inline constexpr int64_t kFlashKeyTile = 64;  // keys per tile (Bk)
inline constexpr int64_t kFlashRowAlign = 8;  // rows are padded to whole 8-float vectors
inline constexpr float kFlashNegInf = -std::numeric_limits<float>::infinity();

struct FlashTileOps {
  void (*qk)(const float* const* krows, int64_t nk, const float* qt, int64_t d, int64_t mp,
             float* st);
  void (*softmax)(float* st, int64_t nk, int64_t mp, float* m, float* l, float* alpha);
  // Output rows [0, rows) only, rounded up to a multiple of 4 (<= mp): a decode unit's padded
  // rows (a GQA group of 2 in 8 vector lanes) cost no P·V work.
  void (*pv)(const float* const* vrows, int64_t nk, const float* st, int64_t mp, int64_t rows,
             int64_t d, const float* alpha, float* o);
  // bf16 K/V rows (a bf16 cache) widened to fp32: n values.
  void (*widen)(const uint16_t* src, int64_t n, float* dst);
};

// The ops for `isa` (the vector ones need head_dim % 8 == 0; other head sizes get scalar ops).
const FlashTileOps& FlashTileOpsFor(VectorIsa isa, int64_t head_dim);

// Per ISA (flash_tiles.cc, flash_tiles_avx512.cc); FlashTileOpsFor picks among them.
extern const FlashTileOps kFlashScalarOps;
extern const FlashTileOps kFlashAvx2Ops;
extern const FlashTileOps kFlashAvx512Ops;

}  // namespace lychee::cpu
