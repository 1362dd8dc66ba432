// SPDX-License-Identifier: Apache-2.0
// The dropped mass of sparse decode steps on the device (block_select.h): AccumulateDroppedMass
// totals each layer's certified bounds (and audited exact masses) per sequence; WidenBudgets is
// one round of max_dropped_mass's budget doubling. Both: one warp per sequence, lanes over its
// kv heads, so the per-sequence sums need no atomics.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace lychee::cuda {
namespace {

// One warp per sequence: lanes over kv heads.
__global__ void __launch_bounds__(32)
    DroppedMassKernel(const __grid_constant__ DroppedMassParams p) {
  AllowDependentGrids();
  WaitForPriorGrids();  // (launch.cuh: before any global access)
  const int seq = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t group = p.num_heads / p.num_kv_heads;
  float max_bound = 0.0f, sum_bound = 0.0f, exact_max = 0.0f;
  long long tokens = 0, reused = 0, fallbacks = 0;
  for (int64_t g = lane; g < p.num_kv_heads; g += 32) {
    const int64_t row = seq * p.num_kv_heads + g;
    const float bound =
        KvHeadBound(p.lse + seq * p.num_heads + g * group, group, p.log_unread[row]);
    if (p.maybe_dense_lse != nullptr) {
      for (int64_t h = 0; h < group; ++h) {
        const int64_t i = seq * p.num_heads + g * group + h;
        // The sparse set is a subset of the dense one: read mass / all mass = exp(lse - dense).
        if (p.maybe_dense_lse[i] != -__int_as_float(0x7f800000)) {
          exact_max = fmaxf(exact_max, 1.0f - __expf(p.lse[i] - p.maybe_dense_lse[i]));
        }
      }
    }
    max_bound = fmaxf(max_bound, bound);
    sum_bound += bound;
    tokens += p.sel_lens[row];
    if (p.maybe_row_reused != nullptr) reused += p.maybe_row_reused[row];
    if (p.maybe_row_fallback != nullptr) fallbacks += p.maybe_row_fallback[row];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    max_bound = fmaxf(max_bound, __shfl_xor_sync(0xffffffffu, max_bound, offset));
    exact_max = fmaxf(exact_max, __shfl_xor_sync(0xffffffffu, exact_max, offset));
    sum_bound += __shfl_xor_sync(0xffffffffu, sum_bound, offset);
    tokens += __shfl_xor_sync(0xffffffffu, tokens, offset);
    reused += __shfl_xor_sync(0xffffffffu, reused, offset);
    fallbacks += __shfl_xor_sync(0xffffffffu, fallbacks, offset);
  }
  if (lane == 0) {
    SparseSeqStats& st = p.stats[seq];
    st.max_bound = fmaxf(st.max_bound, max_bound);
    st.exact_max = fmaxf(st.exact_max, exact_max);
    st.sum_bound += sum_bound;
    st.heads += p.num_kv_heads;
    st.tokens_read += tokens;
    st.reused += reused;
    st.dense_fallbacks += fallbacks;
  }
}

__global__ void __launch_bounds__(32)
    WidenBudgetsKernel(const __grid_constant__ WidenBudgetsParams p) {
  AllowDependentGrids();
  WaitForPriorGrids();  // (launch.cuh: before any global access)
  const int seq = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const float max_mass = p.max_mass[seq];
  long long widened = 0;
  for (int64_t g = lane; g < p.num_kv_heads; g += 32) {
    const int64_t row = seq * p.num_kv_heads + g;
    int64_t tokens = p.row_budgets[row];
    if (p.first_round) {  // the layer starts at the rule's budget
      const SelectSeqRule& rule = p.seq_rules[seq];
      tokens = rule.budget_tokens > 0 ? int64_t{rule.budget_tokens}
                                      : int64_t{rule.budget_blocks} * p.block_size;
    }
    const bool widen = WidenRow(max_mass, p.lse + seq * p.num_heads + g * group, group,
                                p.log_unread[row], &tokens);
    p.row_active[row] = widen ? 1 : 0;
    if (widen) {
      ++widened;
    } else {
      p.part1_lens[row] = -1;  // the next sparse attention leaves the row alone
    }
    p.row_budgets[row] = static_cast<int32_t>(tokens < (1 << 30) ? tokens : 1 << 30);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    widened += __shfl_xor_sync(0xffffffffu, widened, offset);
  }
  if (lane == 0) p.stats[seq].widenings += widened;
}

}  // namespace

absl::Status AccumulateDroppedMass(const DroppedMassParams& p, cudaStream_t stream) {
  if (p.lse == nullptr || p.log_unread == nullptr || p.sel_lens == nullptr || p.stats == nullptr) {
    return absl::InvalidArgumentError(
        "dropped mass: lse, log_unread, sel_lens and stats must be set");
  }
  if (p.batch <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.batch > 2147483647) {
    return absl::InvalidArgumentError(
        "dropped mass: sizes must be positive, heads a multiple of kv heads");
  }
  LY_CUDA_RETURN_IF_ERROR(LaunchKernel(DroppedMassKernel, dim3(static_cast<unsigned>(p.batch)),
                                       dim3(32), 0, stream, p.programmatic_launch, p));
  return absl::OkStatus();
}

absl::Status WidenBudgets(const WidenBudgetsParams& p, cudaStream_t stream) {
  LY_CUDA_RETURN_IF_NOT_OK(CanRunWidenBudgets(p));
  LY_CUDA_RETURN_IF_ERROR(LaunchKernel(WidenBudgetsKernel, dim3(static_cast<unsigned>(p.batch)),
                                       dim3(32), 0, stream, p.programmatic_launch, p));
  return absl::OkStatus();
}

}  // namespace lychee::cuda
