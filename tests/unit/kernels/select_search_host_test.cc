// SPDX-License-Identifier: Apache-2.0
// The selection kernel's top-k searches and emissions (kernels/cuda/select_search.cuh), their
// device code run on the CPU under simt_host.h's thread-per-lane emulation of one 512-thread
// block, against a sort: BisectTop and RadixTop must find the k-th largest image and the quota of
// its ties, ForEachTaken and ForEachTakenStriped must give exactly the taken elements (every image
// above the threshold, the earliest `quota` equal to it) consecutive slots in index order. Random
// rows with many ties, rows of one value, zeros (never counted), offsets, rows within the searches'
// register cache (<= 8192 elements) and past it, k from 1 to every counted element; and a widened
// LycheeDecode sparse head's members (MarkWidenedInherit) emitted in order (EmitBits). No GPU: this
// runs wherever the CUDA preset builds, CI included.
// clang-format off
#include "tests/unit/kernels/simt_host.h"  // before the device code: it defines CUDA's names
#include "kernels/cuda/select_search.cuh"
#include "tests/unit/kernels/prhs_grow_reference.h"
// clang-format on

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "tests/util/numeric.h"

namespace lychee::cuda {
namespace {

// The fields the searches and emissions use (SelectShared's, without the kernel's others).
struct Shared {
  int warp_above[kSelectWarps], warp_equal[kSelectWarps];
  int round_counts[2][kSelectWarps];
  uint32_t digit_counts[2][kSelectWarps][8];
  uint32_t emit_masks[2][kSelectCached][kSelectWarps + 1];
  uint32_t survivors[kSelectSurvivors];
  int num_survivors;
  uint32_t survivors_prefix;
  int survivors_above;
  float warp_values[kSelectWarps];
};

enum class Search { kBisect, kRadix };
enum class Emit { kWalk, kStriped };

struct Outcome {
  TopPick pick{};
  std::vector<int> taken;  // by slot
};

// One block: the search over images[lo, hi) for k, then the emission into slots from slot0.
Outcome RunSelect(const std::vector<uint32_t>& images, int lo, int hi, int k, Search search,
                  Emit emit) {
  constexpr int kSlot0 = 3;  // slots are offset as the kernel's (the forced blocks come first)
  Shared sh{};
  Outcome out;
  std::vector<int> slots(static_cast<size_t>(hi - lo) + kSlot0, -1);
  const auto image = [&images](int b) { return images[static_cast<size_t>(b)]; };
  simt::RunBlock(kSelectThreads, [&] {
    const TopPick pick =
        search == Search::kRadix ? RadixTop(k, lo, hi, image, sh) : BisectTop(k, lo, hi, image, sh);
    if (threadIdx.x == 0) out.pick = pick;
    const auto taken = [&slots](int slot, int b) { slots[static_cast<size_t>(slot)] = b; };
    if (emit == Emit::kStriped) {
      ForEachTakenStriped(lo, hi, pick, image, kSlot0, taken, sh);
    } else {
      ForEachTaken(lo, hi, pick, image, kSlot0, taken, sh);
    }
  });
  for (int s = 0; s < kSlot0; ++s) EXPECT_EQ(slots[static_cast<size_t>(s)], -1) << "slot " << s;
  for (size_t s = kSlot0; s < slots.size() && slots[s] >= 0; ++s) out.taken.push_back(slots[s]);
  return out;
}

// The reference: the k-th largest counted image, its quota, and the taken elements in order.
Outcome Reference(const std::vector<uint32_t>& images, int lo, int hi, int k) {
  std::vector<uint32_t> counted;
  for (int b = lo; b < hi; ++b) {
    if (images[static_cast<size_t>(b)] != 0u) counted.push_back(images[static_cast<size_t>(b)]);
  }
  std::sort(counted.begin(), counted.end(), std::greater<>());
  Outcome out;
  out.pick.threshold = counted[static_cast<size_t>(k - 1)];
  const int greater = static_cast<int>(std::count_if(
      counted.begin(), counted.end(), [&](uint32_t u) { return u > out.pick.threshold; }));
  out.pick.equal_quota = k - greater;
  int equal_left = out.pick.equal_quota;
  for (int b = lo; b < hi; ++b) {
    const uint32_t u = images[static_cast<size_t>(b)];
    if (u > out.pick.threshold || (u == out.pick.threshold && equal_left-- > 0)) {
      out.taken.push_back(b);
    }
  }
  return out;
}

void Check(const std::vector<uint32_t>& images, int lo, int hi, int k, const std::string& what) {
  const Outcome want = Reference(images, lo, hi, k);
  for (const Search search : {Search::kBisect, Search::kRadix}) {
    for (const Emit emit : {Emit::kWalk, Emit::kStriped}) {
      if (emit == Emit::kStriped && hi - lo > kSelectCached * kSelectThreads) continue;
      SCOPED_TRACE(what + " n=" + std::to_string(hi - lo) + " k=" + std::to_string(k) +
                   (search == Search::kRadix ? " radix" : " bisect") +
                   (emit == Emit::kStriped ? " striped" : " walk"));
      const Outcome got = RunSelect(images, lo, hi, k, search, emit);
      ASSERT_EQ(got.pick.threshold, want.pick.threshold);
      ASSERT_EQ(got.pick.equal_quota, want.pick.equal_quota);
      ASSERT_EQ(got.taken, want.taken);
    }
  }
}

class SelectSearchHostTest : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{::lychee::testing::TestSeed()};
  void SetUp() override {
    std::printf("LYCHEE_TEST_SEED=%llu\n",
                static_cast<unsigned long long>(::lychee::testing::TestSeed()));
  }
  // Images of n elements: `distinct` values (ties when few) spread over the top `bits` bits of
  // the range above `base`, and some zeros.
  std::vector<uint32_t> Images(int n, uint32_t base, int bits, int distinct, double zeros) {
    std::uniform_int_distribution<int> pick(0, distinct - 1);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::vector<uint32_t> values(static_cast<size_t>(distinct));
    const uint64_t span = uint64_t{1} << bits;
    std::uniform_int_distribution<uint64_t> value(0, span - 1);
    for (uint32_t& v : values)
      v = static_cast<uint32_t>(std::min<uint64_t>(base + value(rng_), ~0u));
    std::vector<uint32_t> images(static_cast<size_t>(n));
    for (uint32_t& u : images)
      u = unit(rng_) < zeros ? 0u : std::max(1u, values[static_cast<size_t>(pick(rng_))]);
    return images;
  }
  int CountedIn(const std::vector<uint32_t>& images, int lo, int hi) {
    return static_cast<int>(std::count_if(images.begin() + lo, images.begin() + hi,
                                          [](uint32_t u) { return u != 0u; }));
  }
};

// Score-like rows: floats' order-preserving images share their top bits, as a row's scores do.
TEST_F(SelectSearchHostTest, RowsWithinTheRegisterCache) {
  for (const int n : {1, 31, 700, 2048, 8191, 8192}) {
    const std::vector<uint32_t> images = Images(n + 5, 0xbf000000u, 22, n / 3 + 1, 0.05);
    const int lo = 5, hi = n + 5;
    const int counted = CountedIn(images, lo, hi);
    if (counted == 0) continue;
    std::uniform_int_distribution<int> k(1, counted);
    for (const int kk : {1, k(rng_), k(rng_), k(rng_), counted}) {
      Check(images, lo, hi, kk, "scores");
    }
  }
}

TEST_F(SelectSearchHostTest, TiesAndOneValue) {
  std::vector<uint32_t> same(5000, 0x9abcdef0u);
  Check(same, 0, 5000, 1, "one value");
  Check(same, 0, 5000, 2047, "one value");
  const std::vector<uint32_t> few = Images(6000, 0x80000000u, 31, 4, 0.0);  // four values
  for (const int k : {1, 1500, 3000, 6000}) Check(few, 0, 6000, k, "four values");
  const std::vector<uint32_t> wide = Images(4000, 1u, 32, 4000, 0.3);  // the full 32 bits
  Check(wide, 0, 4000, CountedIn(wide, 0, 4000) / 2, "full range");
}

// Past kSelectCached * kSelectThreads elements the searches re-read the images each round (the
// striped emission does not apply there).
TEST_F(SelectSearchHostTest, RowsPastTheRegisterCache) {
  for (const int n : {8193, 20000}) {
    const std::vector<uint32_t> images = Images(n, 0xc0000000u, 20, n / 2, 0.02);
    Check(images, 0, n, 2046, "long");
    Check(images, 0, n, CountedIn(images, 0, n), "long, all");
  }
}

// A widened LycheeDecode sparse head: MarkWidenedInherit's members are the inherited set, the
// forced ranges and the best `take` candidates by exact score (ties to the earlier block), and
// EmitBits gives them in ascending order with their count: as the CPU's set_union of the inherited
// set and LycheeTopSet.
TEST_F(SelectSearchHostTest, WidenedInheritMembersAndEmitBits) {
  std::uniform_int_distribution<int> coin(0, 3);
  for (const int n : {1, 40, 700, 5000, 8200}) {
    for (const Search search : {Search::kBisect, Search::kRadix}) {
      std::uniform_int_distribution<int> cut(0, n);
      int first = cut(rng_), last_begin = cut(rng_);
      if (first > last_begin) std::swap(first, last_begin);
      std::uniform_int_distribution<int> takes(0, last_begin - first + 1);
      const int take = takes(rng_);
      const std::vector<uint32_t> exact = Images(n, 0x3f000000u, 24, n / 4 + 1, 0.0);
      std::vector<int32_t> inherited;
      for (int b = 0; b < n; ++b) {
        if (coin(rng_) == 0) inherited.push_back(b);
      }
      SCOPED_TRACE("n=" + std::to_string(n) + " first=" + std::to_string(first) +
                   " last_begin=" + std::to_string(last_begin) + " take=" + std::to_string(take) +
                   (search == Search::kRadix ? " radix" : " bisect"));
      // The reference: sort the candidates by (score desc, index asc), take `take`.
      std::vector<uint8_t> want(static_cast<size_t>(n), 0);
      for (const int32_t b : inherited) want[static_cast<size_t>(b)] = 1;
      for (int b = 0; b < first; ++b) want[static_cast<size_t>(b)] = 1;
      for (int b = last_begin; b < n; ++b) want[static_cast<size_t>(b)] = 1;
      std::vector<int> order;
      for (int b = first; b < last_begin; ++b) order.push_back(b);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return exact[static_cast<size_t>(a)] > exact[static_cast<size_t>(b)];
      });
      for (int i = 0; i < std::min(take, static_cast<int>(order.size())); ++i) {
        want[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
      }
      std::vector<int> want_blocks;
      for (int b = 0; b < n; ++b) {
        if (want[static_cast<size_t>(b)] != 0) want_blocks.push_back(b);
      }

      Shared sh{};
      std::vector<uint32_t> member(static_cast<size_t>((n + 31) / 32) + 1, 0xffffffffu);
      std::vector<int> out(static_cast<size_t>(n) + 1, -1);
      int count = -1;
      const auto image = [&exact](int b) { return exact[static_cast<size_t>(b)]; };
      simt::RunBlock(kSelectThreads, [&] {
        MarkWidenedInherit(
            n, first, last_begin, take, inherited.data(), static_cast<int>(inherited.size()),
            [](int, int) {}, image,
            [&](int k, int lo, int hi, auto img) {
              return search == Search::kRadix ? RadixTop(k, lo, hi, img, sh)
                                              : BisectTop(k, lo, hi, img, sh);
            },
            member.data(), sh);
        const int c = EmitBits(
            0, n, member.data(), 0, [&out](int slot, int b) { out[static_cast<size_t>(slot)] = b; },
            sh);
        if (threadIdx.x == 0) count = c;
      });
      ASSERT_EQ(count, static_cast<int>(want_blocks.size()));
      ASSERT_EQ(std::vector<int>(out.begin(), out.begin() + count), want_blocks);
      ASSERT_EQ(out[static_cast<size_t>(count)], -1);  // nothing past the count
    }
  }
}

// PrHS's control in advance on the GPU (GrowPrhsToBound) against the host's reading of it in
// double: the same final set, count and fallback, over rows whose first set is a random part of
// the blocks, bounds of group heads (lower <= upper <= the kv head's box) spread wide enough that
// some rows meet the bound at once, some grow a few quarters and some give up at the cap.
TEST_F(SelectSearchHostTest, PrhsSetsGrowToTheirBoundAsTheReference) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int grew = 0, fell_back = 0, met = 0, compared = 0;
  for (const int n : {1, 37, 700, 3000, 8200}) {
    for (const int group : {1, 4}) {
      for (const double max_mass : {0.02, 0.3, 0.8}) {
        const int64_t bs = 16, ctx = int64_t{n} * bs - (n % 3);  // a partial last block
        const float spread = 1.0f + 4.0f * static_cast<float>(unit(rng_));
        std::vector<float> box(static_cast<size_t>(n), -INFINITY);
        std::vector<float> lower(static_cast<size_t>(group * n));
        for (int h = 0; h < group; ++h) {
          for (int b = 0; b < n; ++b) {
            const float upper = spread * normal(rng_);
            lower[static_cast<size_t>(h * n + b)] = upper - std::fabs(spread * normal(rng_));
            box[static_cast<size_t>(b)] = std::max(box[static_cast<size_t>(b)], upper);
          }
        }
        std::vector<uint8_t> read(static_cast<size_t>(n), 0);
        const double density = 0.02 + 0.3 * unit(rng_);
        for (uint8_t& r : read) r = unit(rng_) < density ? 1 : 0;
        read[static_cast<size_t>(n - 1)] = 1;  // the query's own block is always read
        const int count = static_cast<int>(std::count(read.begin(), read.end(), 1));
        const int cap = 4 * count;
        const PrhsGrowOutcome want =
            PrhsGrowReference(read, box.data(), lower.data(), n, group, bs, ctx, max_mass, cap);
        SCOPED_TRACE("n=" + std::to_string(n) + " group=" + std::to_string(group) +
                     " max_mass=" + std::to_string(max_mass) + " count=" + std::to_string(count));
        if (want.margin < 1e-4) continue;  // float sums may decide it the other way

        Shared sh{};
        std::vector<uint32_t> member(static_cast<size_t>((n + 31) / 32), 0u);
        for (int b = 0; b < n; ++b) {
          if (read[static_cast<size_t>(b)] != 0)
            member[static_cast<size_t>(b / 32)] |= 1u << (b % 32);
        }
        std::vector<uint32_t> grown(member.size(), 0u);
        int result = -2;
        simt::RunBlock(kSelectThreads, [&] {
          const int r = GrowPrhsToBound(
              n, group, static_cast<float>(max_mass), cap,
              [&](int b) { return box[static_cast<size_t>(b)]; },
              [&](int h, int b) { return lower[static_cast<size_t>(h * n + b)]; },
              [&](int b) { return static_cast<float>(std::min<int64_t>(bs, ctx - b * bs)); },
              member.data(), grown.data(), count, sh);
          if (threadIdx.x == 0) result = r;
        });
        ++compared;
        for (const uint32_t w : grown) ASSERT_EQ(w, 0u);  // scratch left clean
        if (want.fallback) {
          ASSERT_EQ(result, -1);
          ++fell_back;
          continue;
        }
        const int want_count = static_cast<int>(std::count(want.read.begin(), want.read.end(), 1));
        ASSERT_EQ(result, want_count);
        for (int b = 0; b < n; ++b) {
          const bool got = ((member[static_cast<size_t>(b / 32)] >> (b % 32)) & 1u) != 0u;
          ASSERT_EQ(got, want.read[static_cast<size_t>(b)] != 0) << "block " << b;
        }
        (want_count > count ? grew : met) += 1;
      }
    }
  }
  std::printf("prhs rows compared %d: met at once %d, grew %d, fell back %d\n", compared, met, grew,
              fell_back);
  EXPECT_GT(grew, 0);
  EXPECT_GT(fell_back, 0);
  EXPECT_GT(met, 0);
}

}  // namespace
}  // namespace lychee::cuda
