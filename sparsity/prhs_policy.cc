// SPDX-License-Identifier: Apache-2.0
// PrhsPolicy: CIS anchors with dilation, PSAW windows, and the pre-read dropped-mass bound.
#include "sparsity/prhs_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/sparse_attention.h"
#include "sparsity/block_scoring.h"

namespace lychee::sparsity {

PrhsPolicy::PrhsPolicy(const PolicyLimits& limits, const PrhsKnobs& knobs)
    : Policy(limits), knobs_(knobs) {}

int64_t PrhsPolicy::PsawWindowStart(const PrhsKnobs& knobs, int64_t layer, int64_t num_layers,
                                    int64_t tokens) {
  const int64_t ls = knobs.psaw_start_layer;
  if (knobs.psaw_phi >= 1.0 || layer < ls || num_layers <= ls) return 0;
  const double x =
      knobs.psaw_alpha * static_cast<double>(layer - ls) / static_cast<double>(num_layers - ls);
  return static_cast<int64_t>(
      std::floor((1.0 - std::pow(knobs.psaw_phi, x)) * static_cast<double>(tokens)));
}

PrhsPolicy::Anchor& PrhsPolicy::AnchorFor(int64_t layer, int64_t kv_head, int64_t kv_heads) {
  const size_t index = static_cast<size_t>(layer * kv_heads + kv_head);
  if (anchors_.size() <= index) anchors_.resize(static_cast<size_t>((layer + 1) * kv_heads));
  return anchors_[index];
}

void PrhsPolicy::Rescore(const DecodeQuery& query, int64_t kv_head, int64_t budget_blocks,
                         std::vector<int32_t>* chosen) {
  chosen->clear();
  if (budget_blocks <= 0) return;
  const int64_t n = query.num_blocks();
  scores_.resize(static_cast<size_t>(n));
  ExactBlockScores(query, kv_head, qbar_.data(), scores_.data());
  order_.clear();
  for (int64_t b = 0; b < n; ++b) {
    if (candidate_[static_cast<size_t>(b)] != 0) order_.push_back(static_cast<int32_t>(b));
  }
  std::sort(order_.begin(), order_.end(), [this](int32_t a, int32_t b) {
    const float sa = scores_[static_cast<size_t>(a)], sb = scores_[static_cast<size_t>(b)];
    return sa != sb ? sa > sb : a < b;
  });
  in_set_.assign(static_cast<size_t>(n), 0);
  int64_t count = 0;
  auto add = [&](int64_t b) {
    if (count >= budget_blocks || b < 0 || b >= n) return;
    const size_t bi = static_cast<size_t>(b);
    if (candidate_[bi] == 0 || in_set_[bi] != 0) return;
    in_set_[bi] = 1;
    ++count;
  };
  // The top `dilate_fraction` of the anchor's blocks bring their ±dilation neighbours along.
  const int64_t widened =
      static_cast<int64_t>(std::ceil(knobs_.dilate_fraction * static_cast<double>(budget_blocks)));
  for (size_t i = 0; i < order_.size() && count < budget_blocks; ++i) {
    const int64_t b = order_[i];
    add(b);
    if (static_cast<int64_t>(i) < widened) {
      for (int64_t r = 1; r <= knobs_.dilation; ++r) {
        add(b - r);
        add(b + r);
      }
    }
  }
  for (int64_t b = 0; b < n; ++b) {
    if (in_set_[static_cast<size_t>(b)] != 0) chosen->push_back(static_cast<int32_t>(b));
  }
}

bool PrhsPolicy::GrowToBound(const DecodeQuery& query, int64_t kv_head, int64_t cap_blocks,
                             std::vector<int32_t>* set) {
  const int64_t n = query.num_blocks();
  const int64_t bs = query.cache.block_size;
  const int64_t group = query.num_heads / query.cache.num_kv_heads;
  in_set_.assign(static_cast<size_t>(n), 0);
  for (int32_t b : *set) in_set_[static_cast<size_t>(b)] = 1;
  auto keys_in = [&](int64_t b) {
    return static_cast<double>(std::min(bs, query.position + 1 - b * bs));
  };
  auto worst_bound = [&]() {
    double worst = 0.0;
    for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
      const float* ub = ub_.data() + h * n;
      const float* lb = lb_.data() + h * n;
      const double top = *std::max_element(ub, ub + n);  // common scale: no overflow
      double unread = 0.0, read = 0.0;
      for (int64_t b = 0; b < n; ++b) {
        if (in_set_[static_cast<size_t>(b)] != 0) {
          read += keys_in(b) * std::exp(static_cast<double>(lb[b]) - top);
        } else {
          unread += keys_in(b) * std::exp(static_cast<double>(ub[b]) - top);
        }
      }
      if (unread > 0.0) worst = std::max(worst, unread / (unread + read));
    }
    return worst;
  };
  int64_t size = static_cast<int64_t>(set->size());
  while (worst_bound() > limits().max_dropped_mass) {
    if (size >= n) break;  // unreachable: everything read bounds δ by 0
    // Add the unread blocks of the highest bound, a quarter of the set at a time.
    const int64_t step = std::max<int64_t>(1, size / 4);
    if (size + step > cap_blocks) return false;
    order_.clear();
    for (int64_t b = 0; b < n; ++b) {
      if (in_set_[static_cast<size_t>(b)] == 0) order_.push_back(static_cast<int32_t>(b));
    }
    auto group_ub = [&](int32_t b) {
      float u = -std::numeric_limits<float>::infinity();
      for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
        u = std::max(u, ub_[static_cast<size_t>(h * n + b)]);
      }
      return u;
    };
    const int64_t take = std::min<int64_t>(step, static_cast<int64_t>(order_.size()));
    std::partial_sort(order_.begin(), order_.begin() + take, order_.end(),
                      [&](int32_t a, int32_t b) {
                        const float ua = group_ub(a), ub = group_ub(b);
                        return ua != ub ? ua > ub : a < b;
                      });
    for (int64_t i = 0; i < take; ++i) in_set_[static_cast<size_t>(order_[i])] = 1;
    size += take;
  }
  set->clear();
  for (int64_t b = 0; b < n; ++b) {
    if (in_set_[static_cast<size_t>(b)] != 0) set->push_back(static_cast<int32_t>(b));
  }
  return true;
}

void PrhsPolicy::Select(const DecodeQuery& query, absl::Span<const int64_t> budget_tokens,
                        Selection* selection) {
  const int64_t bs = query.cache.block_size;
  const int64_t n = query.num_blocks();
  const int64_t kv_heads = query.cache.num_kv_heads;
  const int64_t d = query.cache.head_dim;
  const int64_t sink_blocks = std::min(n, (knobs_.sink_tokens + bs - 1) / bs);
  const int64_t local_blocks = 1 + (std::max<int64_t>(0, knobs_.local_tokens - 1) + bs - 1) / bs;
  const int64_t local_first = std::max(sink_blocks, n - local_blocks);
  const int64_t num_layers = std::max(query.num_layers, query.layer + 1);
  const int64_t window_start = PsawWindowStart(knobs_, query.layer, num_layers, query.position + 1);
  candidate_.assign(static_cast<size_t>(n), 0);
  for (int64_t b = sink_blocks; b < local_first; ++b) {
    candidate_[static_cast<size_t>(b)] = (b + 1) * bs > window_start ? 1 : 0;
  }
  const int64_t forced = sink_blocks + (n - local_first);
  pending_.resize(static_cast<size_t>(kv_heads));
  has_pending_.assign(static_cast<size_t>(kv_heads), 0);
  reused_.assign(static_cast<size_t>(kv_heads), 0);
  fallback_.assign(static_cast<size_t>(kv_heads), 0);
  qbar_.resize(static_cast<size_t>(d));
  const bool control = limits().max_dropped_mass < 1.0;
  bool bounds_ready = false;
  selection->Clear();
  for (int64_t g = 0; g < kv_heads; ++g) {
    const size_t gi = static_cast<size_t>(g);
    const int64_t budget_blocks = std::max<int64_t>(1, budget_tokens[gi] / bs);
    set_.clear();
    if (budget_blocks >= n) {
      for (int64_t b = 0; b < n; ++b) set_.push_back(static_cast<int32_t>(b));
    } else {
      GroupMeanQuery(query, g, qbar_.data());
      Anchor& anchor = AnchorFor(query.layer, g, kv_heads);
      chosen_.clear();
      if (anchor.valid && anchor.budget == budget_tokens[gi] &&
          Cosine(qbar_.data(), anchor.q.data(), d) > knobs_.tau) {
        for (int32_t b : anchor.blocks) {
          if (b < n && candidate_[static_cast<size_t>(b)] != 0) chosen_.push_back(b);
        }
        reused_[gi] = 1;
      } else {
        Rescore(query, g, budget_blocks - forced, &chosen_);
        Anchor& next = pending_[gi];
        next.valid = true;
        next.budget = budget_tokens[gi];
        next.q.assign(qbar_.begin(), qbar_.end());
        next.blocks = chosen_;
        has_pending_[gi] = 1;
      }
      for (int64_t b = 0; b < sink_blocks; ++b) set_.push_back(static_cast<int32_t>(b));
      set_.insert(set_.end(), chosen_.begin(), chosen_.end());
      for (int64_t b = local_first; b < n; ++b) set_.push_back(static_cast<int32_t>(b));
      if (control) {
        if (!bounds_ready) {
          ub_.resize(static_cast<size_t>(query.num_heads * n));
          lb_.resize(static_cast<size_t>(query.num_heads * n));
          cpu::BlockScoreBoundsParams sp;
          sp.q = query.q;
          sp.cache = query.cache;
          sp.block_table = query.block_table.data();
          sp.out = ub_.data();
          sp.num_heads = query.num_heads;
          sp.num_blocks = n;
          sp.scale = query.scale;
          sp.lower = lb_.data();
          cpu::BlockScoreBounds(sp);
          bounds_ready = true;
        }
        if (!GrowToBound(query, g, 4 * budget_blocks, &set_)) {
          set_.clear();
          for (int64_t b = 0; b < n; ++b) set_.push_back(static_cast<int32_t>(b));
          fallback_[gi] = 1;
        }
      }
    }
    selection->blocks.insert(selection->blocks.end(), set_.begin(), set_.end());
    selection->EndHead();
  }
}

void PrhsPolicy::AfterAttention(const DecodeQuery& query,
                                absl::Span<const float> /*head_dropped_mass*/) {
  const int64_t kv_heads = query.cache.num_kv_heads;
  for (int64_t g = 0; g < kv_heads; ++g) {
    const size_t gi = static_cast<size_t>(g);
    if (has_pending_[gi] != 0) std::swap(AnchorFor(query.layer, g, kv_heads), pending_[gi]);
    ++counters_.head_selections;
    counters_.reused += reused_[gi];
    counters_.dense_fallbacks += fallback_[gi];
  }
}

}  // namespace lychee::sparsity
