// SPDX-License-Identifier: Apache-2.0
// MakePolicy / ValidatePolicySpec: name lookup and field checks.
#include "sparsity/policy_factory.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "sparsity/quest_policy.h"
#include "sparsity/streaming_policy.h"

namespace lychee::sparsity {

const char* AvailablePolicies() { return "dense, streaming, quest"; }

absl::Status ValidatePolicySpec(const PolicySpec& spec, int64_t block_size) {
  if (spec.name != "dense" && spec.name != "streaming" && spec.name != "quest") {
    return absl::InvalidArgumentError(absl::StrCat("policy.name: unknown sparsity policy '",
                                                   spec.name, "' (available: ", AvailablePolicies(),
                                                   ")"));
  }
  if (!(spec.max_dropped_mass >= 0.0 && spec.max_dropped_mass <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.max_dropped_mass: ", spec.max_dropped_mass, " is not in [0, 1]"));
  }
  if (spec.name != "dense" && spec.budget_tokens < block_size) {
    return absl::InvalidArgumentError(absl::StrCat("policy.budget_tokens: ", spec.budget_tokens,
                                                   " is below the KV block size ", block_size,
                                                   " (selection is per block)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const PolicySpec& spec, int64_t block_size) {
  LY_RETURN_IF_ERROR(ValidatePolicySpec(spec, block_size));
  const PolicyLimits limits{spec.budget_tokens, spec.max_dropped_mass};
  if (spec.name == "streaming") return std::make_unique<StreamingPolicy>(limits);
  if (spec.name == "quest") return std::make_unique<QuestPolicy>(limits);
  return std::unique_ptr<Policy>();
}

}  // namespace lychee::sparsity
