// SPDX-License-Identifier: Apache-2.0
// Scoring and top-k helpers shared by the selecting policies (quest, lychee, prhs): the GQA
// group-mean query, exact per-block and per-token scores of one kv head, and the top-k of
// candidate blocks or tokens around forced sink and local ranges.
//
// Scores are raw logits q̄·k (no scale, no softmax): only their order matters for selection.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

// out[e] = mean over the group's query heads of q[h][e]: LycheeDecode's selection query
// (ALGORITHMS.md §1.3, one set per kv head).
void GroupMeanQuery(const DecodeQuery& query, int64_t kv_head, float* out);

// out[b] = max over the keys of logical block b (at or before query.position) of q̄·k, for
// b < query.num_blocks(): LycheeDecode's block score (max-pooled logits).
void ExactBlockScores(const DecodeQuery& query, int64_t kv_head, const float* qbar, float* out);

// out[j] = q̄·k_j for every position j <= query.position (token mode).
void ExactTokenScores(const DecodeQuery& query, int64_t kv_head, const float* qbar, float* out);

// Appends to `out`, ascending, the indices [0, forced_first) and [n - forced_last, n) plus the
// best-scoring others (ties: the earlier index) until `budget` indices are chosen (or all n).
// `candidate` (may be empty) excludes indices whose flag is 0 from the scored part (PSAW
// windows); forced ranges are taken regardless. `order` is scratch.
void AppendTopK(absl::Span<const float> scores, int64_t forced_first, int64_t forced_last,
                int64_t budget, absl::Span<const uint8_t> candidate, std::vector<int32_t>* order,
                std::vector<int32_t>* out);

// Cosine similarity of two vectors (0 when either is zero).
float Cosine(const float* a, const float* b, int64_t n);

}  // namespace lychee::sparsity
