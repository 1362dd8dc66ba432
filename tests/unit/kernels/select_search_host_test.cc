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

}  // namespace
}  // namespace lychee::cuda
