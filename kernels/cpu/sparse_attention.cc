// SPDX-License-Identifier: Apache-2.0
// Block score bounds from the key summaries (box and ball), and sparse decode attention with the
// certified dropped-mass bound. The read loop mirrors PagedAttention's so that a selection of
// every block (or every position) reproduces it.
//
// Rounding. A kernel scores a key as fl(Dot(q, k)) · scale in fp32; its error is at most
// (d + 2)·ε·scale·Σ_e |q_e·k_e| (ε = float epsilon, d = head_dim; Dot sums four partial chains,
// the scale multiply adds one more rounding). Every bound below adds (or subtracts) that slack
// with Σ|q_e·k_e| bounded from the block's summary, so each holds both for the exact score
// scale·q·k and for the fp32 score. The δ certificate then lowers the read mass by the same
// per-block slack, accumulates in double with a margin for double's own rounding, and rounds the
// result up to float.
#include "kernels/cpu/sparse_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/paged_kv.h"

namespace lychee::cpu {
namespace {

constexpr double kFloatEps = std::numeric_limits<float>::epsilon();
constexpr double kDoubleEps = std::numeric_limits<double>::epsilon();

float RoundUp(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

float RoundDown(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) > x) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return f;
}

// A block's score range in double, with `mag` >= Σ_e |q_e·k_e| for every key of the block (the
// smaller of the two summaries' bounds), for the read mass's rounding slack.
struct RangeD {
  double lower, upper, mag;
};

double ScoreSlack(int64_t d, double mag) { return static_cast<double>(d + 2) * kFloatEps * mag; }

RangeD BoxRange(const float* q, const float* lo, const float* hi, int64_t d, double scale) {
  double up = 0.0, down = 0.0, mag = 0.0;
  for (int64_t e = 0; e < d; ++e) {
    const double a = static_cast<double>(q[e]) * lo[e];
    const double b = static_cast<double>(q[e]) * hi[e];
    up += std::max(a, b);
    down += std::min(a, b);
    mag += std::max(std::abs(a), std::abs(b));
  }
  const double slack = ScoreSlack(d, mag);
  return {(down - slack) * scale, (up + slack) * scale, mag};
}

// ‖k‖ <= ‖c‖ + r for every key of the ball, so Σ|q_e·k_e| <= ‖q‖·‖k‖ <= ‖q‖·(‖c‖ + r).
RangeD BallRange(const float* q, double q_norm, const float* c, double r, int64_t d, double scale) {
  double qc = 0.0, c2 = 0.0;
  for (int64_t e = 0; e < d; ++e) {
    qc += static_cast<double>(q[e]) * c[e];
    c2 += static_cast<double>(c[e]) * c[e];
  }
  const double mag = q_norm * (std::sqrt(c2) + r);
  // Double's own rounding of qc and the norms is ~d·2^-53·mag: covered many times by the slack.
  const double slack = ScoreSlack(d, mag);
  const double reach = q_norm * r;
  return {(qc - reach - slack) * scale, (qc + reach + slack) * scale, mag};
}

double Norm(const float* q, int64_t d) {
  double s = 0.0;
  for (int64_t e = 0; e < d; ++e) s += static_cast<double>(q[e]) * q[e];
  // Rounded up a little: the ball's reach must not shrink.
  return std::sqrt(s) * (1.0 + 4.0 * kDoubleEps * static_cast<double>(d + 2));
}

// min(box, ball) for the upper bound, max for the lower, the smaller magnitude.
RangeD Range(const float* q, double q_norm, const PagedKvView& c, int64_t block, int64_t kvh,
             double scale) {
  const int64_t d = c.head_dim;
  RangeD r = BoxRange(q, c.KeyMin(block, kvh), c.KeyMax(block, kvh), d, scale);
  if (c.key_ball != nullptr) {
    const float* centroid = c.KeyCentroid(block, kvh);
    const RangeD b = BallRange(q, q_norm, centroid, centroid[d], d, scale);
    r.lower = std::max(r.lower, b.lower);
    r.upper = std::min(r.upper, b.upper);
    r.mag = std::min(r.mag, b.mag);
  }
  return r;
}

}  // namespace

float BlockScoreBound(const float* q, const float* lo, const float* hi, int64_t head_dim,
                      float scale) {
  return RoundUp(BoxRange(q, lo, hi, head_dim, scale).upper);
}

BlockScoreRange BlockScoreRangeOf(const float* q, const PagedKvView& cache, int64_t block,
                                  int64_t kv_head, float scale) {
  const RangeD r = Range(q, Norm(q, cache.head_dim), cache, block, kv_head, scale);
  return {RoundDown(r.lower), RoundUp(r.upper)};
}

void BlockScoreBounds(const BlockScoreBoundsParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t group = p.num_heads / c.num_kv_heads;
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const float* q = p.q + h * d;
    const double q_norm = Norm(q, d);
    const int64_t kvh = h / group;
    float* out = p.out + h * p.num_blocks;
    float* lower = p.lower == nullptr ? nullptr : p.lower + h * p.num_blocks;
    for (int64_t b = 0; b < p.num_blocks; ++b) {
      const RangeD r = Range(q, q_norm, c, p.block_table[b], kvh, p.scale);
      out[b] = RoundUp(r.upper);
      if (lower != nullptr) lower[b] = RoundDown(r.lower);
    }
  }
}

void SparseDecodeAttention(const SparseDecodeAttentionParams& p) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t bs = c.block_size;
  const int64_t group = p.num_heads / c.num_kv_heads;
  const int64_t pos = p.position;
  const int64_t num_blocks = pos / bs + 1;
  auto keys_in = [&](int64_t b) { return std::min(bs, pos + 1 - b * bs); };
  float row[kMaxWidenedRow];  // one K or V row of a bf16 cache, widened
  CheckWidenedRowFits(d);
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const float* q = p.q + h * d;
    const int64_t kvh = h / group;
    if (p.kv_head_mask != nullptr && p.kv_head_mask[kvh] == 0) continue;
    const int32_t* sel = p.selected + p.selected_offsets[kvh];
    const int64_t num_sel = p.selected_offsets[kvh + 1] - p.selected_offsets[kvh];
    float* scores = p.scratch;

    // Calls fn(logical block, first slot, run) for the read keys in ascending position order:
    // whole selected blocks, or runs of consecutive selected positions within one block.
    auto for_each_run = [&](auto&& fn) {
      if (!p.token_level) {
        for (int64_t i = 0; i < num_sel; ++i)
          fn(static_cast<int64_t>(sel[i]), int64_t{0}, keys_in(sel[i]));
        return;
      }
      for (int64_t i = 0; i < num_sel;) {
        const int64_t first = sel[i];
        const int64_t b = first / bs;
        int64_t run = 1;
        while (i + run < num_sel && sel[i + run] == first + run && (first + run) / bs == b) ++run;
        fn(b, first - b * bs, run);
        i += run;
      }
    };

    // Scores of the read keys, in position order.
    float max_score = -std::numeric_limits<float>::infinity();
    int64_t n_read = 0;
    for_each_run([&](int64_t b, int64_t slot, int64_t run) {
      for (int64_t r = 0; r < run; ++r) {
        const float* k = KeyRow(c, p.block_table[b], kvh, slot + r, row);
        const float sc = Dot(q, k, d) * p.scale;
        scores[n_read++] = sc;
        max_score = std::max(max_score, sc);
      }
    });

    // The read keys' normaliser relative to their max: exactly PagedAttention's softmax (float),
    // and beside it the certificate's lower bound of the exact read mass (double): each key's
    // term lowered by its block's worst score rounding.
    const double q_norm = Norm(q, d);
    const double m = static_cast<double>(max_score);
    float sum = 0.0f;
    double read_low = 0.0;
    {
      int64_t j = 0, slack_block = -1;
      double shrink = 1.0;
      for_each_run([&](int64_t b, int64_t /*slot*/, int64_t run) {
        if (b != slack_block) {
          const RangeD r = Range(q, q_norm, c, p.block_table[b], kvh, p.scale);
          shrink = std::exp(-ScoreSlack(d, r.mag) * p.scale);
          slack_block = b;
        }
        double block_sum = 0.0;
        for (int64_t r = 0; r < run; ++r, ++j) {
          block_sum += std::exp(static_cast<double>(scores[j]) - m);
          scores[j] = std::exp(scores[j] - max_score);
          sum += scores[j];
        }
        read_low += block_sum * shrink;
      });
    }
    read_low *= 1.0 - static_cast<double>(n_read + 8) * kDoubleEps;

    // The unread keys' bounded mass on the same scale: a merge walk of the blocks against the
    // ascending selection, counting each block's read keys.
    double unread_mass = 0.0;
    int64_t unread_terms = 0;
    for (int64_t b = 0, i = 0; b < num_blocks; ++b) {
      int64_t read = 0;
      if (p.token_level) {
        while (i < num_sel && sel[i] / bs == b) ++read, ++i;
      } else if (i < num_sel && sel[i] == b) {
        read = keys_in(b);
        ++i;
      }
      const int64_t unread = keys_in(b) - read;
      if (unread <= 0) continue;
      const RangeD r = Range(q, q_norm, c, p.block_table[b], kvh, p.scale);
      unread_mass += static_cast<double>(unread) * std::exp(r.upper - m);
      ++unread_terms;
    }
    float delta = 0.0f;
    if (unread_terms > 0) {
      const double unread_high =
          unread_mass * (1.0 + static_cast<double>(unread_terms + 8) * kDoubleEps);
      const double total = read_low + unread_high;
      if (n_read == 0 || !std::isfinite(total)) {
        delta = 1.0f;
      } else {
        // Something was skipped: never certify exactly 0.
        delta = std::min(1.0f, std::max(std::numeric_limits<float>::denorm_min(),
                                        RoundUp(unread_high / total * (1.0 + 4.0 * kDoubleEps))));
      }
    }
    p.dropped_mass[h] = delta;

    float* out = p.out + h * d;
    std::fill(out, out + d, 0.0f);
    int64_t j = 0;
    for_each_run([&](int64_t b, int64_t slot, int64_t run) {
      for (int64_t r = 0; r < run; ++r) {
        const float w = scores[j++];
        const float* vj = ValueRow(c, p.block_table[b], kvh, slot + r, row);
        for (int64_t e = 0; e < d; ++e) out[e] += w * vj[e];
      }
    });
    // No key read (an empty selection): the output stays zero and everything was dropped.
    if (n_read > 0) {
      const float inv_sum = 1.0f / sum;
      for (int64_t e = 0; e < d; ++e) out[e] *= inv_sum;
    }
  }
}

std::string SelectionError(const SparseDecodeAttentionParams& p) {
  const int64_t kv_heads = p.cache.num_kv_heads;
  const int64_t limit = p.token_level ? p.position + 1 : p.position / p.cache.block_size + 1;
  if (p.selected_offsets[0] != 0) return "offsets[0] is not 0";
  for (int64_t g = 0; g < kv_heads; ++g) {
    const int64_t begin = p.selected_offsets[g], end = p.selected_offsets[g + 1];
    if (end < begin) return "kv head " + std::to_string(g) + ": offsets decrease";
    for (int64_t i = begin; i < end; ++i) {
      const int64_t id = p.selected[i];
      if (id < 0 || id >= limit) {
        return "kv head " + std::to_string(g) + ": " + (p.token_level ? "position " : "block ") +
               std::to_string(id) + " is outside [0, " + std::to_string(limit) + ")";
      }
      if (i > begin && p.selected[i - 1] >= id) {
        return "kv head " + std::to_string(g) + ": not strictly ascending at " +
               std::to_string(p.selected[i - 1]) + ", " + std::to_string(id);
      }
    }
  }
  return "";
}

void ExactDroppedMass(const SparseDecodeAttentionParams& p, double* exact) {
  const PagedKvView& c = p.cache;
  const int64_t d = c.head_dim;
  const int64_t bs = c.block_size;
  const int64_t group = p.num_heads / c.num_kv_heads;
  std::vector<double> scores(static_cast<size_t>(p.position + 1));
  float row[kMaxWidenedRow];
  CheckWidenedRowFits(d);
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const float* q = p.q + h * d;
    const int64_t kvh = h / group;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j <= p.position; ++j) {
      const float* k = KeyRow(c, p.block_table[j / bs], kvh, j % bs, row);
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(q[e]) * k[e];
      scores[static_cast<size_t>(j)] = dot * p.scale;
      m = std::max(m, scores[static_cast<size_t>(j)]);
    }
    const int32_t* sel = p.selected + p.selected_offsets[kvh];
    const int64_t num_sel = p.selected_offsets[kvh + 1] - p.selected_offsets[kvh];
    double all = 0.0, unread = 0.0;  // summed apart: no cancellation for a tiny δ
    for (int64_t j = 0, i = 0; j <= p.position; ++j) {
      const double w = std::exp(scores[static_cast<size_t>(j)] - m);
      all += w;
      const int64_t id = p.token_level ? j : j / bs;
      while (i < num_sel && sel[i] < id) ++i;
      if (i >= num_sel || sel[i] != id) unread += w;
    }
    exact[h] = unread / all;
  }
}

}  // namespace lychee::cpu
