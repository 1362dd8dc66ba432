// SPDX-License-Identifier: Apache-2.0
// The selection kernel's top-k search and in-order emission (block_select.cu's SelectKernel), for
// one 512-thread CTA a row: BisectTop / RadixTop find the k-th largest image and how many equal
// to it are taken, ForEachTaken / ForEachTakenStriped give the taken elements their slots in
// index order. Templates over the CTA's shared scratch (any struct with the fields they use), and
// written only with warp and block primitives, so that select_search_host_test runs this very
// code on the CPU under a thread-per-lane emulation of them (tests/unit/kernels/simt_host.h).
#pragma once

#include <cstdint>

namespace lychee::cuda {

inline constexpr int kSelectThreads = 512;  // a row per CTA: more threads, fewer elements each
inline constexpr int kSelectCached = 16;    // images a thread keeps in registers in a search
inline constexpr int kSelectWarps = kSelectThreads / 32;
// The searches hand the rest to one warp once at most this many candidates are left.
inline constexpr int kSelectSurvivors = 256;

// The k-th largest of image(b) over [lo, hi) (1 <= k <= the number of b with image(b) > 0; 0
// marks an element that never counts): the threshold image and how many elements equal to it
// are taken (the earliest ones). Bisection over the image's 32 bits from the top: a round counts
// the elements >= prefix | bit (each warp's count in one __reduce_add_sync, the eight warps'
// through a double-buffered shared row: one barrier a round, summed by a lane each) and keeps
// the bit if at least k are; no histograms, no atomics. The rounds are latency (a barrier and
// two reductions, ~270 ns on the H100: 33 of them were ~45% of a 128K row's select), so once
// at most kSelectSurvivors candidates lie in the range the prefix leaves open, they are
// compacted into shared memory and one warp finishes the search over them alone, with no
// barriers. Every thread of the block calls it.
struct TopPick {
  uint32_t threshold;
  int equal_quota;
};
// Rows of up to kSelectCached * kSelectThreads elements (8192: a 128K context at block size 16)
// keep each thread's images in registers for every round of a search (element lo + threadIdx.x +
// j * kSelectThreads at j; 0 past hi); longer ones re-read them. Returns whether the row fits.
template <typename Image>
__device__ __forceinline__ bool CacheImages(int lo, int hi, Image image,
                                            uint32_t (&images)[kSelectCached]) {
  const bool cached = hi - lo <= kSelectCached * kSelectThreads;
#pragma unroll
  for (int j = 0; j < kSelectCached; ++j) {
    const int b = lo + static_cast<int>(threadIdx.x) + j * kSelectThreads;
    images[j] = cached && b < hi ? image(b) : 0u;
  }
  return cached;
}

// The end of a top-k search once at most kSelectSurvivors candidates lie in [prefix, prefix +
// 2^bit) and `above` elements past it: they are compacted into shared memory (in any order: only
// counts follow), then warp 0 decides bits bit - 1 .. 0 over them alone, with no barriers. An
// image of 0 never counts. Every thread of the block calls it, with its images in registers when
// `cached` (as the searches load them).
template <typename Image, typename Shared>
__device__ TopPick FinishAmongSurvivors(int k, int lo, int hi, uint32_t prefix, int bit, int above,
                                        bool cached, const uint32_t (&images)[kSelectCached],
                                        Image image, Shared& sh) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const uint64_t top = static_cast<uint64_t>(prefix) + (uint64_t{1} << bit);
  // A warp's keepers take consecutive slots from one shared atomic (one a lane, on one address,
  // would serialise).
  auto keep = [&](uint32_t u) {                               // the whole warp calls it
    const bool in_range = u != 0u && u >= prefix && u < top;  // (prefix may be 0)
    const unsigned mask = __ballot_sync(0xffffffffu, in_range);
    if (mask == 0u) return;
    int base = 0;
    if (lane == __ffs(mask) - 1) base = atomicAdd(&sh.num_survivors, __popc(mask));
    base = __shfl_sync(0xffffffffu, base, __ffs(mask) - 1);
    if (in_range) sh.survivors[base + __popc(mask & ((1u << lane) - 1u))] = u;
  };
  if (cached) {
#pragma unroll
    for (int j = 0; j < kSelectCached; ++j) keep(images[j]);
  } else {
    for (int base = lo; base < hi; base += kSelectThreads) {
      const int b = base + static_cast<int>(threadIdx.x);
      keep(b < hi ? image(b) : 0u);  // 0: not kept
    }
  }
  __syncthreads();
  if (warp == 0) {
    constexpr int kPerLane = kSelectSurvivors / 32;
    const int n = sh.num_survivors;
    uint32_t mine[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int i = lane + 32 * j;
      mine[j] = i < n ? sh.survivors[i] : 0u;  // 0: never counted (every t below is >= 1)
    }
    auto count_from = [&](uint64_t t) {  // survivors >= t, plus those above the range
      int c = 0;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) c += mine[j] >= t && lane + 32 * j < n;
      return above + static_cast<int>(__reduce_add_sync(0xffffffffu, c));
    };
    for (int b = bit - 1; b >= 0; --b) {
      const uint32_t candidate = prefix | (1u << b);
      if (count_from(candidate) >= k) prefix = candidate;
    }
    const int at_or_above = count_from(static_cast<uint64_t>(prefix) + 1u);
    if (lane == 0) {
      sh.survivors_prefix = prefix;
      sh.survivors_above = at_or_above;
    }
  }
  __syncthreads();
  const TopPick pick{sh.survivors_prefix, k - sh.survivors_above};
  __syncthreads();  // read before a later call writes them
  return pick;
}

template <typename Image, typename Shared>
__device__ TopPick BisectTop(int k, int lo, int hi, Image image, Shared& sh) {
  static_assert(kSelectWarps <= 32, "a lane sums each warp's count");
  static_assert(kSelectSurvivors % 32 == 0, "survivors spread evenly over a warp");
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  uint32_t images[kSelectCached];
  const bool cached = CacheImages(lo, hi, image, images);
  if (threadIdx.x == 0) sh.num_survivors = 0;  // published by the first round's barrier
  // Elements >= t over the block; every thread gets the same total.
  int round = 0;
  auto count_at_least = [&](uint32_t t) {
    int c = 0;
    if (cached) {
#pragma unroll
      for (int j = 0; j < kSelectCached; ++j) c += images[j] >= t;
    } else {
#pragma unroll 8
      for (int b = lo + static_cast<int>(threadIdx.x); b < hi; b += kSelectThreads) {
        c += image(b) >= t;
      }
    }
    c = __reduce_add_sync(0xffffffffu, c);
    int* row = sh.round_counts[round & 1];
    ++round;
    if (lane == 0) row[warp] = c;
    __syncthreads();
    return static_cast<int>(__reduce_add_sync(0xffffffffu, lane < kSelectWarps ? row[lane] : 0));
  };
  // The answer lies in [prefix, prefix + 2^(bit + 1)) (64-bit: the top end may be 2^32);
  // `above` elements lie at or past its top end, `at_least_prefix` at or past prefix (unknown
  // until a round tells).
  uint32_t prefix = 0;
  int above = 0;
  int at_least_prefix = 0x7fffffff;
  int bit = 31;
  for (; bit >= 0; --bit) {
    const uint32_t candidate = prefix | (1u << bit);
    const int c = count_at_least(candidate);
    if (c >= k) {
      prefix = candidate;
      at_least_prefix = c;
    } else {
      above = c;
    }
    if (bit > 0 && at_least_prefix - above <= kSelectSurvivors) break;
  }
  if (bit < 0) {
    const int at_or_above =
        prefix == 0xffffffffu ? 0 : count_at_least(prefix + 1u);  // elements above prefix
    __syncthreads();  // the rows are read before a later call writes them
    return TopPick{prefix, k - at_or_above};
  }
  return FinishAmongSurvivors(k, lo, hi, prefix, bit, above, cached, images, image, sh);
}

// The same pick as BisectTop, by a radix search over the bits where the images differ
// (SelectSearch::kRadix): a first round finds the largest and smallest image (the bits above
// their highest differing bit are everyone's), then each round tallies the elements still in the
// open range by their next 4-bit digit and keeps the digit where the count from the top reaches
// k. A thread tallies into four 32-bit words of four 8-bit counters (no atomics, no local
// memory), widened to 16-bit fields for one __reduce_add_sync per pair of digits; the warps' rows
// meet in a double-buffered shared table: one barrier a round. Once at most kSelectSurvivors
// candidates lie in the open range (after 1-3 digit rounds for a 128K row's scores in a host
// simulation), they are compacted into shared memory and one warp finishes alone, as in
// BisectTop. Not yet measured on a GPU: BlockSelectParams::search picks it for a same-run
// comparison (cuda_sparse_attention_bench), and the tests run both. Every thread calls it.
// Rows of fewer than 65536 elements, fewer than 255 a thread (block_select.cu checks its limit).
template <typename Image, typename Shared>
__device__ TopPick RadixTop(int k, int lo, int hi, Image image, Shared& sh) {
  static_assert(kSelectWarps == 16, "a lane sums the digit rows of four warps");
  static_assert(kSelectSurvivors % 32 == 0, "survivors spread evenly over a warp");
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  uint32_t images[kSelectCached];
  const bool cached = CacheImages(lo, hi, image, images);
  if (threadIdx.x == 0) sh.num_survivors = 0;  // published by the first round's barrier
  int round = 0;
  // Round 0: the largest and smallest counted image and how many count.
  uint32_t largest = 0u, smallest = ~0u;
  int counted = 0;
  {
    auto see = [&](uint32_t u) {
      largest = max(largest, u);
      smallest = u != 0u ? min(smallest, u) : smallest;
      counted += u != 0u;
    };
    if (cached) {
#pragma unroll
      for (int j = 0; j < kSelectCached; ++j) see(images[j]);
    } else {
      for (int b = lo + static_cast<int>(threadIdx.x); b < hi; b += kSelectThreads) see(image(b));
    }
    largest = __reduce_max_sync(0xffffffffu, largest);
    smallest = __reduce_min_sync(0xffffffffu, smallest);
    counted = __reduce_add_sync(0xffffffffu, counted);
    uint32_t(*table)[8] = sh.digit_counts[round++ & 1];
    if (lane == 0) {
      table[warp][0] = largest;
      table[warp][1] = smallest;
      table[warp][2] = static_cast<uint32_t>(counted);
    }
    __syncthreads();
    const bool has = lane < kSelectWarps;
    largest = __reduce_max_sync(0xffffffffu, has ? table[lane][0] : 0u);
    smallest = __reduce_min_sync(0xffffffffu, has ? table[lane][1] : ~0u);
    counted = static_cast<int>(__reduce_add_sync(0xffffffffu, has ? table[lane][2] : 0u));
  }
  if (largest == smallest) {  // every counted image is the same: the first k of them
    __syncthreads();          // the table is read before a later call writes it
    return TopPick{largest, k};
  }
  // The answer lies in [prefix, prefix + 2^shift); `above` elements lie past its top end.
  int shift = 32 - __clz(largest ^ smallest);
  uint32_t prefix = shift == 32 ? 0u : largest & (~0u << shift);
  int above = 0;
  int in_range = counted;
  while (shift > 0 && in_range > kSelectSurvivors) {
    const uint32_t high = shift == 32 ? 0u : ~0u << shift;  // the decided bits
    const int digit_bits = min(4, shift);
    const int digit_shift = shift - digit_bits;
    const uint32_t digit_mask = (1u << digit_bits) - 1u;
    uint32_t tallies[4] = {0u, 0u, 0u, 0u};  // digits 4q .. 4q + 3, a byte each
    auto tally = [&](uint32_t u) {
      const bool in = u != 0u && ((u ^ prefix) & high) == 0u;
      const uint32_t d = (u >> digit_shift) & digit_mask;
      const uint32_t one = in ? 1u << (8u * (d & 3u)) : 0u;
#pragma unroll
      for (uint32_t q = 0; q < 4; ++q) tallies[q] += (d >> 2) == q ? one : 0u;
    };
    if (cached) {
#pragma unroll
      for (int j = 0; j < kSelectCached; ++j) tally(images[j]);
    } else {
#pragma unroll 4
      for (int b = lo + static_cast<int>(threadIdx.x); b < hi; b += kSelectThreads) tally(image(b));
    }
    // Word 2q holds digits 4q and 4q + 2 in 16-bit fields, word 2q + 1 digits 4q + 1 and 4q + 3.
    uint32_t words[8];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      words[2 * q] = __reduce_add_sync(0xffffffffu, tallies[q] & 0x00ff00ffu);
      words[2 * q + 1] = __reduce_add_sync(0xffffffffu, (tallies[q] >> 8) & 0x00ff00ffu);
    }
    uint32_t(*table)[8] = sh.digit_counts[round++ & 1];
    uint32_t word = 0;  // words[lane] by constant indices (a dynamic one would spill them)
#pragma unroll
    for (int w = 0; w < 8; ++w) word = lane == w ? words[w] : word;
    if (lane < 8) table[warp][lane] = word;
    __syncthreads();
    // Lane l sums word l % 8 of warps l / 8, + 4, + 8, + 12; then over the four lane groups.
    uint32_t total = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) total += table[lane / 8 + 4 * i][lane % 8];
    total += __shfl_xor_sync(0xffffffffu, total, 8);
    total += __shfl_xor_sync(0xffffffffu, total, 16);
    int counts[16];
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t v = __shfl_sync(0xffffffffu, total, w);
      const int base = 4 * (w / 2) + w % 2;
      counts[base] = static_cast<int>(v & 0xffffu);
      counts[base + 2] = static_cast<int>(v >> 16);
    }
    // The highest digit whose count from the top reaches k (digit 0 at the latest: k is within
    // the range's elements and those above it).
    int digit = 0;
    bool found = false;
#pragma unroll
    for (int d = 15; d > 0; --d) {
      if (!found && above + counts[d] >= k) {
        digit = d;
        found = true;
      }
      if (!found) above += counts[d];
    }
#pragma unroll
    for (int d = 0; d < 16; ++d) in_range = d == digit ? counts[d] : in_range;
    prefix |= static_cast<uint32_t>(digit) << digit_shift;
    shift = digit_shift;
  }
  if (shift == 0) {
    __syncthreads();  // the table is read before a later call writes it
    return TopPick{prefix, k - above};
  }
  return FinishAmongSurvivors(k, lo, hi, prefix, /*bit=*/shift, above, cached, images, image, sh);
}

// Calls taken(slot, b) for each b of [lo, hi) that `pick` takes (image above the threshold, or
// equal to it and among the first equal_quota such), slots from slot0 in index order. Warp w owns
// a contiguous range and walks it 32 at a time, a lane per element (conflict-free shared reads):
// first its counts, then, with the warps before it counted, slots from ballots. Every thread of
// the block calls it; image() must not change meanwhile.
template <typename Image, typename Taken, typename Shared>
__device__ void ForEachTaken(int lo_all, int hi_all, TopPick pick, Image image, int slot0,
                             Taken taken, Shared& sh) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int per = (hi_all - lo_all + kSelectWarps - 1) / kSelectWarps;
  const int lo = min(hi_all, lo_all + warp * per);
  const int hi = min(hi_all, lo + per);
  const unsigned lanes_below = (1u << lane) - 1u;
  int above = 0, equal = 0;
  for (int b = lo + lane; b < hi; b += 32) {
    const uint32_t u = image(b);
    above += u > pick.threshold;
    equal += u == pick.threshold;
  }
  above = __reduce_add_sync(0xffffffffu, above);
  equal = __reduce_add_sync(0xffffffffu, equal);
  if (lane == 0) {
    sh.warp_above[warp] = above;
    sh.warp_equal[warp] = equal;
  }
  __syncthreads();
  // The ties taken before this warp's range, and this warp's first output slot.
  int equal_rank = 0, slot = slot0;
  for (int w = 0; w < warp; ++w) {
    const int eq = sh.warp_equal[w];
    slot += sh.warp_above[w] + min(eq, max(0, pick.equal_quota - equal_rank));
    equal_rank += eq;
  }
  for (int base = lo; base < hi; base += 32) {
    const int b = base + lane;
    const uint32_t u = b < hi ? image(b) : 0u;
    const bool eq = b < hi && u == pick.threshold;
    const unsigned eq_mask = __ballot_sync(0xffffffffu, eq);
    const bool take =
        b < hi && (u > pick.threshold ||
                   (eq && equal_rank + __popc(eq_mask & lanes_below) < pick.equal_quota));
    const unsigned take_mask = __ballot_sync(0xffffffffu, take);
    if (take) taken(slot + __popc(take_mask & lanes_below), b);
    slot += __popc(take_mask);
    equal_rank += __popc(eq_mask);
  }
  __syncthreads();
}

// ForEachTaken for ranges of at most kSelectCached * kSelectThreads elements (SelectEmit::
// kStriped), without the walk: element b = lo + j * kSelectThreads + threadIdx.x is chunk j,
// warp threadIdx.x / 32, lane threadIdx.x % 32, so (chunk, warp, lane) order is index order. One
// pass ballots every chunk's above / equal flags into a shared table, one barrier, then lane j of
// every warp counts chunk j's flags in the warps before it and in all warps, a shuffle scan over
// the chunks' totals gives each (chunk, warp) its first slot, and every thread emits its taken
// elements from registers. Two barriers, no serial per-warp prefix. image() is read before the
// first barrier only, so taken() may change it.
template <typename Image, typename Taken, typename Shared>
__device__ void ForEachTakenStriped(int lo, int hi, TopPick pick, Image image, int slot0,
                                    Taken taken, Shared& sh) {
  static_assert(kSelectCached <= 32, "a lane per chunk");
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const unsigned lanes_below = (1u << lane) - 1u;
#pragma unroll
  for (int j = 0; j < kSelectCached; ++j) {
    const int b = lo + j * kSelectThreads + static_cast<int>(threadIdx.x);
    const uint32_t u = b < hi ? image(b) : 0u;
    const unsigned above = __ballot_sync(0xffffffffu, b < hi && u > pick.threshold);
    const unsigned equal = __ballot_sync(0xffffffffu, b < hi && u == pick.threshold);
    if (lane == 0) {
      sh.emit_masks[0][j][warp] = above;
      sh.emit_masks[1][j][warp] = equal;
    }
  }
  __syncthreads();
  // Lane j: chunk j's flags in the warps before this one, and in all warps.
  int above_before = 0, equal_before = 0, above_total = 0, equal_total = 0;
  if (lane < kSelectCached) {
    for (int w = 0; w < kSelectWarps; ++w) {
      const int a = __popc(sh.emit_masks[0][lane][w]);
      const int e = __popc(sh.emit_masks[1][lane][w]);
      above_before += w < warp ? a : 0;
      equal_before += w < warp ? e : 0;
      above_total += a;
      equal_total += e;
    }
  }
  int above_scan = above_total, equal_scan = equal_total;  // inclusive over chunks
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int a = __shfl_up_sync(0xffffffffu, above_scan, offset);
    const int e = __shfl_up_sync(0xffffffffu, equal_scan, offset);
    if (lane >= offset) {
      above_scan += a;
      equal_scan += e;
    }
  }
  above_before += above_scan - above_total;  // the chunks before, then the warps before in it
  equal_before += equal_scan - equal_total;
#pragma unroll
  for (int j = 0; j < kSelectCached; ++j) {
    const int b = lo + j * kSelectThreads + static_cast<int>(threadIdx.x);
    const unsigned above = sh.emit_masks[0][j][warp];
    const unsigned equal = sh.emit_masks[1][j][warp];
    const int above_rank = __shfl_sync(0xffffffffu, above_before, j) + __popc(above & lanes_below);
    const int equal_rank = __shfl_sync(0xffffffffu, equal_before, j) + __popc(equal & lanes_below);
    const bool is_above = ((above >> lane) & 1u) != 0u;
    const bool is_equal = ((equal >> lane) & 1u) != 0u;
    if (is_above || (is_equal && equal_rank < pick.equal_quota)) {
      taken(slot0 + above_rank + min(equal_rank, pick.equal_quota), b);
    }
  }
  __syncthreads();  // the table is read before a later call writes it
}

// Larger float -> larger uint32 (NaN is not expected: the summaries hold written keys).
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool TestBit(const uint32_t* bits, int b) {
  return ((bits[b >> 5] >> (b & 31)) & 1u) != 0;
}
__device__ __forceinline__ void SetBit(uint32_t* bits, int b) {
  atomicOr(&bits[b >> 5], 1u << (b & 31));
}

// The members of `bits` in [lo, hi), in index order, as slots slot0, slot0 + 1, ...; returns
// how many (every thread). ForEachTaken's pick of every member (image 1 above threshold 0), its
// per-warp counts summed. Every thread of the block calls it.
template <typename Emit, typename Shared>
__device__ int EmitBits(int lo, int hi, const uint32_t* bits, int slot0, Emit emit, Shared& sh) {
  const auto image = [&](int b) { return TestBit(bits, b) ? 1u : 0u; };
  ForEachTaken(lo, hi, TopPick{0u, 0}, image, slot0, emit, sh);
  int members = 0;
  for (int w = 0; w < kSelectWarps; ++w) members += sh.warp_above[w];
  __syncthreads();  // read before a later call writes them
  return members;
}

// The members of a widened LycheeDecode sparse head (LycheePolicy::Select under a widened
// budget), as n bits in `member`: the `inherited_count` blocks it inherited, the forced ranges
// [0, first) and [last_begin, n), and the best `take` candidates of [first, last_begin) by
// image(b) (its own group-mean query's exact scores), ties to the earlier block. stage(lo, hi)
// makes image valid over the candidates (a barrier follows it); search(k, lo, hi, image) is one
// of the searches above. Every thread of the block calls it; `member` is complete on return.
template <typename Stage, typename Image, typename Search, typename Shared>
__device__ void MarkWidenedInherit(int n, int first, int last_begin, int take,
                                   const int32_t* inherited, int inherited_count, Stage stage,
                                   Image image, Search search, uint32_t* member, Shared& sh) {
  for (int w = threadIdx.x; w < (n + 31) / 32; w += kSelectThreads) member[w] = 0u;
  __syncthreads();
  for (int i = threadIdx.x; i < inherited_count; i += kSelectThreads) SetBit(member, inherited[i]);
  for (int b = threadIdx.x; b < first; b += kSelectThreads) SetBit(member, b);
  for (int b = last_begin + threadIdx.x; b < n; b += kSelectThreads) SetBit(member, b);
  if (take >= last_begin - first) {
    for (int b = first + threadIdx.x; b < last_begin; b += kSelectThreads) SetBit(member, b);
  } else if (take > 0) {
    stage(first, last_begin);
    __syncthreads();
    const TopPick pick = search(take, first, last_begin, image);
    ForEachTaken(
        first, last_begin, pick, image, 0, [&](int, int b) { SetBit(member, b); }, sh);
  }
  __syncthreads();  // every member is in
}

// The block's sum and maximum of one value a thread: each warp's by shuffles, then the warps'
// in a fixed order, so every thread gets the same bits. Every thread of the block calls them.
template <typename Shared>
__device__ float BlockSum(float v, Shared& sh) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) sh.warp_values[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kSelectWarps; ++w) total += sh.warp_values[w];
  __syncthreads();  // read before a later call writes them
  return total;
}
template <typename Shared>
__device__ float BlockMax(float v, Shared& sh) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  if (threadIdx.x % 32 == 0) sh.warp_values[threadIdx.x / 32] = v;
  __syncthreads();
  float m = sh.warp_values[0];
  for (int w = 1; w < kSelectWarps; ++w) m = fmaxf(m, sh.warp_values[w]);
  __syncthreads();
  return m;
}

// PrHS's accuracy control in advance (PrhsPolicy::GrowToBound) as the GPU runs it, for one row
// of n blocks whose set is `member` (bits over [0, n), `count` of them). While the pre-read bound
//   δ_pre = U / (U + min_h L_h),  U = Σ_{b unread} t_b·e^{box(b)},  L_h = Σ_{b read}
//   t_b·e^{lower(h, b)}
// (t_b = tokens(b), the block's keys; box(b) the kv head's box bound, max over its query heads,
// the very bound the certified dropped mass puts on the unread keys, so that δ_pre meeting
// max_mass means the certified bound after reading meets it too: the keys read have at least
// L_h of mass; lower(h, b) query head h's lower bound) exceeds max_mass, the unread blocks of the
// highest box bound (ties to the earlier block) join the set, a quarter of it at a time. Returns
// the final count, or -1 when the set would pass cap_blocks (the row then reads everything, a
// dense fallback, as the CPU's). The CPU's bound takes each head's own upper bound and the
// ball bounds too (tighter): the GPU's is never below it for the same set, so it may grow more.
// The steps add the unread blocks in one fixed order, so each step's set is the first set plus a
// prefix of that order, and δ_pre only falls as blocks join (U loses, every L_h gains): the
// largest set the steps can reach decides a fallback alone, and is tried first (a hopeless row
// then costs one step, not six). `grown` is scratch bits over [0, n), zero on entry and on
// return. Every thread of the block calls it; `member` is complete on return.
template <typename Box, typename Lower, typename Tokens, typename Shared>
__device__ int GrowPrhsToBound(int n, int group, float max_mass, int cap_blocks, Box box,
                               Lower lower, Tokens tokens, uint32_t* member, uint32_t* grown,
                               int count, Shared& sh) {
  const float kNegInf = -__int_as_float(0x7f800000);
  float top = kNegInf;  // a common shift: every term is at most tokens(b)
  for (int b = threadIdx.x; b < n; b += kSelectThreads) top = fmaxf(top, box(b));
  top = BlockMax(top, sh);
  if (top == kNegInf) return count;
  const int words = (n + 31) / 32;
  const auto is_read = [&](int b) { return TestBit(member, b) || TestBit(grown, b); };
  // Whether the bound of member ∪ grown meets max_mass.
  const auto meets = [&]() {
    float unread = 0.0f;
    for (int b = threadIdx.x; b < n; b += kSelectThreads) {
      if (!is_read(b)) unread += tokens(b) * expf(box(b) - top);
    }
    unread = BlockSum(unread, sh);
    if (unread == 0.0f) return true;
    float least_read = __int_as_float(0x7f800000);
    for (int h = 0; h < group; ++h) {
      float read = 0.0f;
      for (int b = threadIdx.x; b < n; b += kSelectThreads) {
        if (is_read(b)) read += tokens(b) * expf(lower(h, b) - top);
      }
      least_read = fminf(least_read, BlockSum(read, sh));
    }
    return unread / (unread + least_read) <= max_mass;
  };
  // grown = the `take` unread blocks (not in member) of the highest box bound.
  const auto mark_next = [&](int take) {
    const auto image = [&](int b) { return TestBit(member, b) ? 0u : OrderedBits(box(b)); };
    const TopPick pick = BisectTop(take, 0, n, image, sh);
    ForEachTaken(
        0, n, pick, image, 0, [&](int, int b) { SetBit(grown, b); }, sh);
  };
  const auto clear_grown = [&](bool keep) {
    for (int w = threadIdx.x; w < words; w += kSelectThreads) {
      if (keep) member[w] |= grown[w];
      grown[w] = 0u;
    }
    __syncthreads();
  };
  int last = count;  // the largest set the steps reach short of the cap
  while (last < n && last + max(1, last / 4) <= cap_blocks) last += min(max(1, last / 4), n - last);
  if (last < n && last > count) {
    mark_next(last - count);
    const bool reachable = meets();
    clear_grown(false);
    if (!reachable) return -1;
  }
  while (count < n && !meets()) {
    const int step = max(1, count / 4);
    if (count + step > cap_blocks) return -1;
    const int take = min(step, n - count);
    mark_next(take);
    clear_grown(true);
    count += take;
  }
  return count;
}

}  // namespace lychee::cuda
