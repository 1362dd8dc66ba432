// SPDX-License-Identifier: Apache-2.0
// MakePolicy: the one place that maps a request's PolicySpec to a Policy and validates it.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/request.h"
#include "sparsity/policy.h"

namespace lychee::sparsity {

// The policy names requests may use, as one comma-separated string ("dense, streaming, quest").
const char* AvailablePolicies();

// Checks `spec` against a KV cache of `block_size` tokens per block: a known name,
// budget_tokens >= block_size for sparse policies, max_dropped_mass in [0, 1].
// InvalidArgument naming the field otherwise.
absl::Status ValidatePolicySpec(const PolicySpec& spec, int64_t block_size);

// The Policy for `spec` (validated as above), or nullptr for "dense": dense requests have no
// policy object and take the dense kernels.
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const PolicySpec& spec, int64_t block_size);

}  // namespace lychee::sparsity
