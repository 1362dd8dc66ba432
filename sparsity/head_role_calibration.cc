// SPDX-License-Identifier: Apache-2.0
// InheritanceRecorder: dense decode that measures inheritance costs; ChooseHeadRoles: DP +
// knapsack over them.
#include "sparsity/head_role_calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/paged_kv.h"

namespace lychee::sparsity {

InheritanceRecorder::InheritanceRecorder(int64_t num_layers, int64_t num_kv_heads,
                                         const LycheeKnobs& knobs, int64_t budget_tokens)
    : Policy(PolicyLimits{budget_tokens, 1.0}), knobs_(knobs), budget_tokens_(budget_tokens) {
  sums_.num_layers = num_layers;
  sums_.num_kv_heads = num_kv_heads;
  sums_.cost.assign(static_cast<size_t>(num_layers * num_kv_heads * num_layers), 0.0);
  sets_.resize(static_cast<size_t>(num_layers * num_kv_heads));
}

void InheritanceRecorder::Select(const DecodeQuery& query,
                                 absl::Span<const int64_t> /*budget_tokens*/,
                                 Selection* selection) {
  const PagedKvView& c = query.cache;
  const int64_t H = c.num_kv_heads, N = sums_.num_layers, l = query.layer;
  const int64_t d = c.head_dim, bs = c.block_size, pos = query.position;
  const int64_t group = query.num_heads / H;
  const bool tokens = knobs_.mode == "token";
  const int64_t units = tokens ? pos + 1 : query.num_blocks();
  // Dense: every block for every head.
  selection->Clear();
  for (int64_t g = 0; g < H; ++g) {
    for (int64_t b = 0; b < query.num_blocks(); ++b) {
      selection->blocks.push_back(static_cast<int32_t>(b));
    }
    selection->EndHead();
  }
  if (l == 0) ++sums_.steps;
  scores_.resize(static_cast<size_t>(pos + 1));
  float row[cpu::kMaxWidenedRow];  // a bf16 cache's key, widened
  cpu::CheckWidenedRowFits(d);
  for (int64_t g = 0; g < H; ++g) {
    std::vector<int32_t>& own_set = sets_[static_cast<size_t>(l * H + g)];
    LycheeTopSet(query, g, knobs_, budget_tokens_, &scratch_, &own_set);
    // The head's real attention per unit, averaged over its query heads.
    mass_.assign(static_cast<size_t>(units), 0.0);
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float* q = query.q + h * d;
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j <= pos; ++j) {
        const float* k =
            cpu::KeyRow(c, query.block_table[static_cast<size_t>(j / bs)], g, j % bs, row);
        scores_[static_cast<size_t>(j)] = cpu::Dot(q, k, d) * query.scale;
        top = std::max(top, scores_[static_cast<size_t>(j)]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j <= pos; ++j) {
        sum += std::exp(static_cast<double>(scores_[static_cast<size_t>(j)]) - top);
      }
      for (int64_t j = 0; j <= pos; ++j) {
        const double p = std::exp(static_cast<double>(scores_[static_cast<size_t>(j)]) - top) / sum;
        mass_[static_cast<size_t>(tokens ? j : j / bs)] += p / static_cast<double>(group);
      }
    }
    auto dropped = [this](const std::vector<int32_t>& set) {
      double kept = 0.0;
      for (int32_t u : set) kept += mass_[static_cast<size_t>(u)];
      return std::max(0.0, 1.0 - kept);
    };
    const double own = dropped(own_set);
    for (int64_t a = 0; a < l; ++a) {
      sums_.cost[static_cast<size_t>((l * H + g) * N + a)] +=
          dropped(sets_[static_cast<size_t>(a * H + g)]) - own;
    }
  }
}

InheritanceCosts InheritanceRecorder::MeanCosts() const {
  InheritanceCosts mean = sums_;
  if (mean.steps > 0) {
    for (double& v : mean.cost) v /= static_cast<double>(mean.steps);
  }
  return mean;
}

namespace {

// Per column: best[k] = the least cost with k retrieval layers (layer 0 included), and the
// layers achieving it.
struct ColumnChoices {
  std::vector<double> best;                  // [k], k = 1 .. N (index 0 unused)
  std::vector<std::vector<int64_t>> layers;  // [k] the retrieval layers
};

ColumnChoices ChooseColumn(const InheritanceCosts& costs, int64_t h) {
  const int64_t N = costs.num_layers;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // seg(a, b): layers strictly between retrieval layers a < b read a's set (b = N: the tail).
  auto seg = [&](int64_t a, int64_t b) {
    double s = 0.0;
    for (int64_t m = a + 1; m < b; ++m) s += costs.Cost(m, h, a);
    return s;
  };
  // f[k][b]: least cost of layers < b with b the k-th retrieval layer; from[k][b]: the previous.
  std::vector<std::vector<double>> f(static_cast<size_t>(N + 1),
                                     std::vector<double>(static_cast<size_t>(N), kInf));
  std::vector<std::vector<int64_t>> from(static_cast<size_t>(N + 1),
                                         std::vector<int64_t>(static_cast<size_t>(N), -1));
  f[1][0] = 0.0;
  for (int64_t k = 2; k <= N; ++k) {
    for (int64_t b = k - 1; b < N; ++b) {
      for (int64_t a = k - 2; a < b; ++a) {
        const double prev = f[static_cast<size_t>(k - 1)][static_cast<size_t>(a)];
        if (prev == kInf) continue;
        const double v = prev + seg(a, b);
        if (v < f[static_cast<size_t>(k)][static_cast<size_t>(b)]) {
          f[static_cast<size_t>(k)][static_cast<size_t>(b)] = v;
          from[static_cast<size_t>(k)][static_cast<size_t>(b)] = a;
        }
      }
    }
  }
  ColumnChoices out;
  out.best.assign(static_cast<size_t>(N + 1), kInf);
  out.layers.resize(static_cast<size_t>(N + 1));
  for (int64_t k = 1; k <= N; ++k) {
    int64_t last = -1;
    for (int64_t b = 0; b < N; ++b) {
      const double v = f[static_cast<size_t>(k)][static_cast<size_t>(b)];
      if (v == kInf) continue;
      const double total = v + seg(b, N);
      if (total < out.best[static_cast<size_t>(k)]) {
        out.best[static_cast<size_t>(k)] = total;
        last = b;
      }
    }
    for (int64_t kk = k, b = last; kk >= 1 && b >= 0;
         b = from[static_cast<size_t>(kk)][static_cast<size_t>(b)], --kk) {
      out.layers[static_cast<size_t>(k)].push_back(b);
    }
  }
  return out;
}

}  // namespace

HeadRoles ChooseHeadRoles(const InheritanceCosts& costs, int64_t num_retrieval) {
  const int64_t N = costs.num_layers, H = costs.num_kv_heads;
  const int64_t total = std::clamp<int64_t>(num_retrieval, H, N * H);
  std::vector<ColumnChoices> columns;
  for (int64_t h = 0; h < H; ++h) columns.push_back(ChooseColumn(costs, h));
  // Knapsack: g[h][t] = least cost of columns < h using t retrieval heads; pick[h][t] = k of h-1.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> g(static_cast<size_t>(H + 1),
                                     std::vector<double>(static_cast<size_t>(total + 1), kInf));
  std::vector<std::vector<int64_t>> pick(static_cast<size_t>(H + 1),
                                         std::vector<int64_t>(static_cast<size_t>(total + 1), 0));
  g[0][0] = 0.0;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t <= total; ++t) {
      const double base = g[static_cast<size_t>(h)][static_cast<size_t>(t)];
      if (base == kInf) continue;
      for (int64_t k = 1; k <= N && t + k <= total; ++k) {
        const double v = base + columns[static_cast<size_t>(h)].best[static_cast<size_t>(k)];
        if (v < g[static_cast<size_t>(h + 1)][static_cast<size_t>(t + k)]) {
          g[static_cast<size_t>(h + 1)][static_cast<size_t>(t + k)] = v;
          pick[static_cast<size_t>(h + 1)][static_cast<size_t>(t + k)] = k;
        }
      }
    }
  }
  HeadRoles roles(N, H);
  for (int64_t h = H, t = total; h > 0; --h) {
    const int64_t k = pick[static_cast<size_t>(h)][static_cast<size_t>(t)];
    for (int64_t layer : columns[static_cast<size_t>(h - 1)].layers[static_cast<size_t>(k)]) {
      roles.set_retrieval(layer, h - 1, true);
    }
    t -= k;
  }
  return roles;
}

double TotalInheritanceCost(const InheritanceCosts& costs, const HeadRoles& roles) {
  double total = 0.0;
  for (int64_t h = 0; h < costs.num_kv_heads; ++h) {
    int64_t source = 0;
    for (int64_t l = 1; l < costs.num_layers; ++l) {
      if (roles.retrieval(l, h)) {
        source = l;
      } else {
        total += costs.Cost(l, h, source);
      }
    }
  }
  return total;
}

}  // namespace lychee::sparsity
