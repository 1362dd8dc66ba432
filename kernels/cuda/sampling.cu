// SPDX-License-Identifier: Apache-2.0
// The sampling kernel (sampling.h): one thread block per row, every stage a block-wide pass over
// the row (L2-resident after the first). Order per row, as engine/sampler.cc and
// engine/live_request.cc: raw statistics and top-N logprobs (rows that ask) → penalties in place
// → greedy argmax, or temperature → top-k → top-p → min-p → Gumbel-max draw → the chosen token's
// raw logprob → (tests) the processed logits.
//
// Keys: a usable value v (not NaN, not -inf; -0 folded into +0 as the CPU's == does) of token i
// orders as the 64-bit key (ordered bits of v) << 32 | (2^32 - 1 - i): larger key = earlier in
// the CPU's order (larger value, then lower id). A kept set "key >= T" is a prefix of that order;
// T = 0 keeps every usable token.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sampling.h"

namespace lychee::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBuckets = 256;  // 8-bit radix digits
constexpr int kNoToken = 0x7fffffff;

struct Smem {
  unsigned int count[kBuckets];
  unsigned long long mass[kBuckets];  // 2^62-scaled probability (MassSelect)
  float red_f[kWarps];
  double red_d[kWarps];
  float arg_value[kWarps];
  int32_t arg_index[kWarps];
  // Warp 0's radix decisions, broadcast.
  uint64_t prefix;
  uint64_t above;
  unsigned int remaining;
  unsigned int bucket_count;
  int found;
  // Top-N logprobs.
  uint64_t top_key[kMaxTopLogprobs];
  int32_t top_id[kMaxTopLogprobs];
  unsigned int top_n;
  float token_raw;
};

__device__ __forceinline__ bool Usable(float x) { return !isnan(x) && x != -CUDART_INF_F; }

__device__ __forceinline__ uint32_t OrderedBits(float v) {
  const uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float FromOrderedBits(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) != 0 ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ uint64_t Key(float v, int64_t i) {
  return (static_cast<uint64_t>(OrderedBits(v)) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

// Bits above `shift + 8` (the digits already decided).
__device__ __forceinline__ uint64_t HighMask(int shift) {
  return shift + 8 >= 64 ? 0ull : (~0ull << (shift + 8));
}

// ---- Block reductions (every thread of the block calls them; every thread gets the result) -----

__device__ __forceinline__ float BlockMax(float v, Smem& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) sm.red_f[warp] = v;
  __syncthreads();
  v = lane < kWarps ? sm.red_f[lane] : -CUDART_INF_F;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ double BlockSum(double v, Smem& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sm.red_d[warp] = v;
  __syncthreads();
  v = lane < kWarps ? sm.red_d[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// (value, index) beats `b`: larger value, then lower index; NaN never wins.
__device__ __forceinline__ bool Beats(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

// Index of the best (value, index) over the block; kNoToken when no thread had a candidate
// (threads without one pass value -inf, index kNoToken).
__device__ __forceinline__ int32_t BlockArgmax(float v, int32_t i, Smem& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (Beats(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  __syncthreads();
  if (lane == 0) {
    sm.arg_value[warp] = v;
    sm.arg_index[warp] = i;
  }
  __syncthreads();
  v = lane < kWarps ? sm.arg_value[lane] : -CUDART_INF_F;
  i = lane < kWarps ? sm.arg_index[lane] : kNoToken;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (Beats(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  return i;
}

// Adds one to count[bucket] for every lane with a bucket >= 0, one atomic per distinct bucket of
// the warp (logits crowd into few buckets of the top digits). All 32 lanes must call it: loops
// around it run warp-uniform trip counts (WarpLoop).
__device__ __forceinline__ void CountInBucket(int bucket, Smem& sm) {
  const unsigned peers = __match_any_sync(0xffffffffu, bucket);
  if (bucket >= 0 && static_cast<int>(threadIdx.x % 32) == __ffs(peers) - 1) {
    atomicAdd(&sm.count[bucket], static_cast<unsigned>(__popc(peers)));
  }
}

// First index of this thread in a loop whose trip count is the same for the whole warp (lanes
// past the end see i >= n and take no element).
__device__ __forceinline__ int64_t WarpLoopStart() { return threadIdx.x; }
__device__ __forceinline__ bool WarpLoopGoes(int64_t i, int64_t n) {
  return i - static_cast<int64_t>(threadIdx.x % 32) < n;
}

// ---- Radix select -----------------------------------------------------------------------------

// Among the elements i in [0, n) for which key_of(i, &key) holds and whose key equals `prefix`
// above bit `shift` (64: no constraint), finds T such that exactly `rank` (>= 1) of them have
// key >= T; T is the rank-th key itself, or a prefix with zero low bits once a whole bucket is
// taken. Returns false when fewer than `rank` such elements exist.
template <typename KeyOf>
__device__ bool RadixSelect(const KeyOf& key_of, int64_t n, unsigned rank, uint64_t prefix,
                            int shift, Smem& sm, uint64_t* threshold) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  unsigned remaining = rank;
  for (shift -= 8; shift >= 0; shift -= 8) {
    const uint64_t hi = HighMask(shift);
    for (int b = threadIdx.x; b < kBuckets; b += kThreads) sm.count[b] = 0;
    __syncthreads();
    for (int64_t i = WarpLoopStart(); WarpLoopGoes(i, n); i += kThreads) {
      uint64_t key = 0;
      const bool valid = i < n && key_of(i, &key) && ((key ^ prefix) & hi) == 0;
      CountInBucket(valid ? static_cast<int>((key >> shift) & 0xffu) : -1, sm);
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns buckets 255 - 8l down to 248 - 8l: lanes in descending key order.
      unsigned c[8];
      unsigned sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        c[j] = sm.count[kBuckets - 1 - 8 * lane - j];
        sum += c[j];
      }
      unsigned incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o *= 2) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const unsigned ballot = __ballot_sync(0xffffffffu, incl >= remaining);
      if (ballot == 0) {
        if (lane == 0) sm.found = 0;
      } else if (lane == __ffs(ballot) - 1) {
        // The crossing bucket of this lane (static indices only: c stays in registers).
        unsigned cum = incl - sum, chosen_count = c[7];
        int chosen = 7;
        bool done = false;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (done) continue;
          if (cum + c[j] >= remaining) {
            done = true;
            chosen = j;
            chosen_count = c[j];
          } else if (j < 7) {
            cum += c[j];
          }
        }
        const uint64_t bucket = static_cast<uint64_t>(kBuckets - 1 - 8 * lane - chosen);
        sm.prefix = (prefix & hi) | (bucket << shift);
        sm.remaining = remaining - cum;
        sm.bucket_count = chosen_count;
        sm.found = 1;
      }
    }
    __syncthreads();
    if (sm.found == 0) return false;
    prefix = sm.prefix;
    remaining = sm.remaining;
    if (remaining == sm.bucket_count) break;  // the whole bucket is in: lower bits stay zero
  }
  *threshold = prefix;
  return true;
}

// Probability mass as 2^62-scaled integers: bucket sums are then exact and independent of the
// order of the atomics, so a row's cut (and token) is the same in any batch. A float
// probability keeps its value to 2^-62 (the CPU sums them in double).
constexpr double kMassScale = 4611686018427387904.0;  // 2^62

__device__ __forceinline__ uint64_t FixedMass(float prob) {
  return __double2ull_rn(static_cast<double>(prob) * kMassScale);
}

// Top-p: the smallest prefix of the order (over the elements key_prob accepts) whose mass
// reaches top_p, as the threshold key; 0 when the whole candidate set is needed. key_prob(i,
// &key, &prob) gives each candidate's key and float probability; prob_of(v) the probability of a
// value (ties share it).
template <typename KeyProbOf, typename ProbOfValue>
__device__ uint64_t MassSelect(const KeyProbOf& key_prob, const ProbOfValue& prob_of, int64_t n,
                               float top_p, Smem& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const uint64_t target = __double2ull_rn(static_cast<double>(top_p) * kMassScale);
  uint64_t prefix = 0;
  uint64_t above = 0;
  unsigned count = 0;
  // The value digits: a bucket of one element, or the value itself, decides.
  for (int shift = 56; shift >= 32; shift -= 8) {
    const uint64_t hi = HighMask(shift);
    for (int b = threadIdx.x; b < kBuckets; b += kThreads) {
      sm.count[b] = 0;
      sm.mass[b] = 0;
    }
    __syncthreads();
    for (int64_t i = WarpLoopStart(); WarpLoopGoes(i, n); i += kThreads) {
      uint64_t key = 0;
      float prob = 0.0f;
      const bool valid = i < n && key_prob(i, &key, &prob) && ((key ^ prefix) & hi) == 0;
      const int bucket = valid ? static_cast<int>((key >> shift) & 0xffu) : -1;
      CountInBucket(bucket, sm);
      if (valid) {
        atomicAdd(&sm.mass[bucket], static_cast<unsigned long long>(FixedMass(prob)));
      }
    }
    __syncthreads();
    if (warp == 0) {
      uint64_t ms[8];
      unsigned cs[8];
      uint64_t sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int b = kBuckets - 1 - 8 * lane - j;
        ms[j] = sm.mass[b];
        cs[j] = sm.count[b];
        sum += ms[j];
      }
      uint64_t incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o *= 2) {
        const uint64_t t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const unsigned ballot = __ballot_sync(0xffffffffu, above + incl >= target);
      if (ballot == 0) {
        if (lane == 0) sm.found = 0;
      } else if (lane == __ffs(ballot) - 1) {
        // The crossing bucket of this lane (static indices only: registers).
        uint64_t cum = above + incl - sum;
        int chosen = 7;
        unsigned chosen_count = cs[7];
        bool done = false;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (done) continue;
          if (cum + ms[j] >= target) {
            done = true;
            chosen = j;
            chosen_count = cs[j];
          } else if (j < 7) {
            cum += ms[j];
          }
        }
        const uint64_t bucket = static_cast<uint64_t>(kBuckets - 1 - 8 * lane - chosen);
        sm.prefix = (prefix & hi) | (bucket << shift);
        sm.above = cum;
        sm.bucket_count = chosen_count;
        sm.found = 1;
      }
    }
    __syncthreads();
    // No crossing at the top level: the candidates' mass stays below top_p (rounding of a
    // top_p near 1), so all of them are kept, as the CPU's loop that never breaks.
    if (sm.found == 0) return prefix;
    prefix = sm.prefix;
    above = sm.above;
    count = sm.bucket_count;
    if (count <= 1) return prefix;
  }
  // `count` tokens share the crossing value: keep the lowest ids among them, as many as the
  // running sum needs.
  const uint64_t m = FixedMass(prob_of(FromOrderedBits(static_cast<uint32_t>(prefix >> 32))));
  uint64_t need = count;
  if (m > 0 && target > above) need = (target - above + m - 1) / m;
  if (need < 1) need = 1;
  if (need >= count) return prefix;
  uint64_t t = prefix;
  const auto key_of = [&key_prob](int64_t i, uint64_t* key) {
    float unused = 0.0f;
    return key_prob(i, key, &unused);
  };
  if (!RadixSelect(key_of, n, static_cast<unsigned>(need), prefix, 32, sm, &t)) return prefix;
  return t;
}

// ---- The kernel -------------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) SampleKernel(const __grid_constant__ SampleParams p) {
  __shared__ Smem sm;
  const int64_t row = blockIdx.x;
  const SamplingRow rp = p.row_params[row];
  const int64_t n = p.vocab;
  float* logits = p.logits + row * (p.row_stride != 0 ? p.row_stride : p.vocab);
  const int tid = static_cast<int>(threadIdx.x);

  // (1) Raw statistics for the logprobs: log Z over usable logits, and the top-N.
  const int top_n = rp.top_logprobs < 0
                        ? 0
                        : (rp.top_logprobs > kMaxTopLogprobs ? kMaxTopLogprobs : rp.top_logprobs);
  float raw_max = -CUDART_INF_F;
  double log_z = 0.0;
  if (rp.want_logprob != 0 || top_n > 0) {
    float m = -CUDART_INF_F;
    for (int64_t i = tid; i < n; i += kThreads) {
      const float x = logits[i];
      if (Usable(x)) m = fmaxf(m, x);
    }
    raw_max = BlockMax(m, sm);
    if (raw_max != -CUDART_INF_F && raw_max != CUDART_INF_F) {
      double s = 0.0;
      for (int64_t i = tid; i < n; i += kThreads) {
        const float x = logits[i];
        if (Usable(x)) s += static_cast<double>(expf(x - raw_max));
      }
      log_z = static_cast<double>(raw_max) + log(BlockSum(s, sm));
    }
  }
  // log-softmax of a raw value; with +inf logits, 0 for them and -inf for the rest (as
  // TopLogprobs reports them).
  const auto raw_logprob = [raw_max, log_z](float x) -> float {
    if (raw_max == CUDART_INF_F) return x == CUDART_INF_F ? 0.0f : -CUDART_INF_F;
    if (raw_max == -CUDART_INF_F) return -CUDART_INF_F;
    return static_cast<float>(static_cast<double>(x) - log_z);
  };
  if (top_n > 0) {
    const auto raw_key = [logits](int64_t i, uint64_t* key) {
      const float x = logits[i];
      if (!Usable(x)) return false;
      *key = Key(x, i);
      return true;
    };
    uint64_t t = 0;
    if (!RadixSelect(raw_key, n, static_cast<unsigned>(top_n), 0, 64, sm, &t)) t = 0;
    if (tid == 0) sm.top_n = 0;
    __syncthreads();
    for (int64_t i = tid; i < n; i += kThreads) {
      uint64_t key = 0;
      if (raw_key(i, &key) && key >= t) {
        const unsigned slot = atomicAdd(&sm.top_n, 1u);
        if (slot < static_cast<unsigned>(kMaxTopLogprobs)) {
          sm.top_key[slot] = key;
          sm.top_id[slot] = static_cast<int32_t>(i);
        }
      }
    }
    __syncthreads();
    if (tid == 0) {
      const int got = sm.top_n < static_cast<unsigned>(top_n) ? static_cast<int>(sm.top_n) : top_n;
      for (int a = 1; a < got; ++a) {  // insertion sort, best first
        const uint64_t k = sm.top_key[a];
        const int32_t id = sm.top_id[a];
        int b = a - 1;
        for (; b >= 0 && sm.top_key[b] < k; --b) {
          sm.top_key[b + 1] = sm.top_key[b];
          sm.top_id[b + 1] = sm.top_id[b];
        }
        sm.top_key[b + 1] = k;
        sm.top_id[b + 1] = id;
      }
      TopLogprobEntry* out = p.out_top + row * kMaxTopLogprobs;
      for (int j = 0; j < kMaxTopLogprobs; ++j) {
        out[j] = j < got ? TopLogprobEntry{sm.top_id[j], raw_logprob(logits[sm.top_id[j]])}
                         : TopLogprobEntry{-1, 0.0f};
      }
    }
  } else if (tid < kMaxTopLogprobs) {
    p.out_top[row * kMaxTopLogprobs + tid] = TopLogprobEntry{-1, 0.0f};
  }
  __syncthreads();  // the top-N read raw logits that the penalties below overwrite

  // (2) Penalties in place; the raw values of the touched tokens go to the workspace.
  int64_t pen_begin = rp.penalty_begin, pen_count = rp.penalty_count;
  if (pen_begin < 0 || pen_count < 0 || pen_begin + pen_count > p.penalty_capacity) pen_count = 0;
  float* saved = static_cast<float*>(p.workspace) + pen_begin;
  const int32_t* pen_ids = p.penalty_ids + pen_begin;
  if (pen_count > 0) {
    const bool repetition = rp.repetition_penalty != 1.0f;
    const bool occurrence = rp.presence_penalty != 0.0f || rp.frequency_penalty != 0.0f;
    const int32_t* pen_counts = p.penalty_counts + pen_begin;
    for (int64_t j = tid; j < pen_count; j += kThreads) {
      const int32_t id = pen_ids[j];
      if (id < 0 || id >= n) continue;
      float x = logits[id];
      saved[j] = x;
      if (repetition) {
        x = x > 0.0f ? __fdiv_rn(x, rp.repetition_penalty) : __fmul_rn(x, rp.repetition_penalty);
      }
      const int32_t c = pen_counts[j];
      if (occurrence && c > 0) {
        // x -= frequency * count + presence, rounded step by step like the CPU (no FMA).
        x = __fsub_rn(x, __fadd_rn(__fmul_rn(rp.frequency_penalty, static_cast<float>(c)),
                                   rp.presence_penalty));
      }
      logits[id] = x;
    }
  }
  __syncthreads();

  // (3) The token.
  int32_t token = 0;
  const bool greedy = rp.temperature < kGreedyTemperature || rp.top_k == 1;
  // Random rows' state, kept for the processed-logits pass.
  float inv_t = 1.0f, max_s = -CUDART_INF_F, min_p_threshold = 0.0f;
  uint64_t threshold = 0;
  double min_p_total = 1.0;
  const bool use_min_p = rp.min_p > 0.0f;
  const auto scaled = [logits, &inv_t](int64_t i) {
    const float x = logits[i];
    return isnan(x) ? -CUDART_INF_F : __fmul_rn(x, inv_t);
  };
  const auto weight = [&max_s](float s) -> float {  // unnormalised probability, as the CPU
    if (max_s == CUDART_INF_F) return s == CUDART_INF_F ? 1.0f : 0.0f;
    return expf(s - max_s);
  };
  const auto kept = [&](int64_t i, float* s_out) {
    const float s = scaled(i);
    if (!Usable(s) || Key(s, i) < threshold) return false;
    if (use_min_p &&
        static_cast<float>(static_cast<double>(weight(s)) / min_p_total) < min_p_threshold) {
      return false;
    }
    *s_out = s;
    return true;
  };
  if (greedy) {
    float best_v = -CUDART_INF_F;
    int32_t best_i = kNoToken;
    for (int64_t i = tid; i < n; i += kThreads) {
      const float x = logits[i];
      if (Beats(x, static_cast<int32_t>(i), best_v, best_i)) {
        best_v = x;
        best_i = static_cast<int32_t>(i);
      }
    }
    token = BlockArgmax(best_v, best_i, sm);
    if (token == kNoToken) token = 0;
  } else {
    inv_t = __fdiv_rn(1.0f, rp.temperature);
    float m = -CUDART_INF_F;
    for (int64_t i = tid; i < n; i += kThreads) m = fmaxf(m, scaled(i));
    max_s = BlockMax(m, sm);
    if (max_s != -CUDART_INF_F) {  // else nothing is usable: token 0, as the CPU's Argmax
      const auto usable_key = [&scaled](int64_t i, uint64_t* key) {
        const float s = scaled(i);
        if (!Usable(s)) return false;
        *key = Key(s, i);
        return true;
      };
      // Top-k.
      if (rp.top_k > 0 && rp.top_k < n) {
        uint64_t t = 0;
        if (RadixSelect(usable_key, n, static_cast<unsigned>(rp.top_k), 0, 64, sm, &t)) {
          threshold = t;
        }
      }
      // Top-p over the softmax of what top-k kept.
      if (rp.top_p < 1.0f) {
        double s = 0.0;
        for (int64_t i = tid; i < n; i += kThreads) {
          uint64_t key = 0;
          if (usable_key(i, &key) && key >= threshold) s += static_cast<double>(weight(scaled(i)));
        }
        const double total = BlockSum(s, sm);
        const uint64_t k_threshold = threshold;
        const auto key_prob = [&usable_key, &weight, &scaled, k_threshold, total](
                                  int64_t i, uint64_t* key, float* prob) {
          if (!usable_key(i, key) || *key < k_threshold) return false;
          *prob = static_cast<float>(static_cast<double>(weight(scaled(i))) / total);
          return true;
        };
        const auto prob_of = [&weight, total](float v) {
          return static_cast<float>(static_cast<double>(weight(v)) / total);
        };
        const uint64_t t = MassSelect(key_prob, prob_of, n, rp.top_p, sm);
        if (t > threshold) threshold = t;
      }
      // Min-p over the softmax of what top-k and top-p kept: p >= min_p * p_max, where p_max is
      // the top token's probability 1 / total.
      if (use_min_p) {
        double s = 0.0;
        for (int64_t i = tid; i < n; i += kThreads) {
          uint64_t key = 0;
          if (usable_key(i, &key) && key >= threshold) s += static_cast<double>(weight(scaled(i)));
        }
        min_p_total = BlockSum(s, sm);
        min_p_threshold = __fmul_rn(rp.min_p, static_cast<float>(1.0 / min_p_total));
      }
      // The draw: Gumbel-max over the kept tokens, argmax of log w_i - log E_i with E_i ~ Exp(1)
      // from (seed, step, i), which picks i with probability w_i / sum(w).
      // Threads take neighbouring pairs of tokens: one Philox block serves both.
      float best_g = -CUDART_INF_F;
      int32_t best_i = kNoToken;
      for (int64_t pair = tid; 2 * pair < n; pair += kThreads) {
        float s[2] = {0.0f, 0.0f};
        bool keep[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) keep[h] = 2 * pair + h < n && kept(2 * pair + h, &s[h]);
        if (!keep[0] && !keep[1]) continue;
        const Philox4 r =
            Philox4x32_10(static_cast<uint32_t>(pair), static_cast<uint32_t>(rp.step),
                          static_cast<uint32_t>(rp.step >> 32), 0u, static_cast<uint32_t>(rp.seed),
                          static_cast<uint32_t>(rp.seed >> 32));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (!keep[h]) continue;
          // As SampleUniformBits(seed, step, 2 * pair + h).
          const uint64_t bits = ((static_cast<uint64_t>(r.v[2 * h]) << 32) | r.v[2 * h + 1]) >> 11;
          const float u = static_cast<float>(bits) * 0x1.0p-53f;
          const float e = -log1pf(-u);  // Exp(1), precise near 0; u rounding to 1 gives +inf
          const float log_w =
              max_s == CUDART_INF_F ? (s[h] == CUDART_INF_F ? 0.0f : -CUDART_INF_F) : s[h] - max_s;
          const float g = log_w - logf(e);
          const int32_t id = static_cast<int32_t>(2 * pair + h);
          if (Beats(g, id, best_g, best_i)) {
            best_g = g;
            best_i = id;
          }
        }
      }
      token = BlockArgmax(best_g, best_i, sm);
      if (token == kNoToken) token = 0;
    }
  }

  // (4) Outputs: the token and its raw logprob (the penalised tokens' raw values were saved).
  if (rp.want_logprob != 0) {
    if (tid == 0) sm.token_raw = logits[token];
    __syncthreads();
    for (int64_t j = tid; j < pen_count; j += kThreads) {
      if (pen_ids[j] == token) sm.token_raw = saved[j];  // ids are distinct: one writer at most
    }
    __syncthreads();
  }
  if (tid == 0) {
    p.out_tokens[row] = token;
    p.out_logprobs[row] = rp.want_logprob != 0 ? raw_logprob(sm.token_raw) : 0.0f;
  }

  // (5) Tests: the CPU Sampler's processed logits (random rows; greedy rows stop at penalties).
  if (p.write_processed && !greedy) {
    __syncthreads();  // token_raw and the draw read the row above
    for (int64_t i = tid; i < n; i += kThreads) {
      float s = 0.0f;
      // With nothing usable the scaled row is all -inf already.
      logits[i] = max_s != -CUDART_INF_F && kept(i, &s) ? s : -CUDART_INF_F;
    }
  }
}

}  // namespace

absl::Status Sample(const SampleParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanImplementSample(p));
  SampleKernel<<<dim3(static_cast<unsigned>(p.rows)), kThreads, 0, stream>>>(p);
  LY_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace lychee::cuda
