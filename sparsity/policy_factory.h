// SPDX-License-Identifier: Apache-2.0
// MakePolicy: the one place that maps a request's PolicySpec to a Policy and validates it.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/request.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

// What policies may need of the model, fixed when the engine loads it.
struct PolicyContext {
  int64_t block_size = 16;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  bool sliding_window = false;  // sparse policies are refused for sliding-window models
  // LycheeDecode's head-role mask (lychee_head_roles.json); null: `lychee` is refused.
  std::shared_ptr<const HeadRoles> head_roles;
};

// The policy names requests may use, as one comma-separated string
// ("dense, streaming, quest, lychee, prhs").
const char* AvailablePolicies();

// Checks `spec` against `context`: a known name, budget_tokens >= block_size for sparse
// policies, max_dropped_mass and audit_rate in [0, 1], each policy's knobs in range, lychee only
// with a head-role mask. InvalidArgument (FailedPrecondition for a missing mask) naming the
// field otherwise.
absl::Status ValidatePolicySpec(const PolicySpec& spec, const PolicyContext& context);

// The Policy for `spec` (validated as above), or nullptr for "dense": dense requests have no
// policy object and take the dense kernels.
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const PolicySpec& spec,
                                                   const PolicyContext& context);

}  // namespace lychee::sparsity
