// SPDX-License-Identifier: Apache-2.0
// MakePolicy / ValidatePolicySpec: name lookup and field checks.
#include "sparsity/policy_factory.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "sparsity/lychee_policy.h"
#include "sparsity/prhs_policy.h"
#include "sparsity/quest_policy.h"
#include "sparsity/streaming_policy.h"

namespace lychee::sparsity {

namespace {

bool Known(const std::string& name) {
  return name == "dense" || name == "streaming" || name == "quest" || name == "lychee" ||
         name == "prhs";
}

absl::Status InRange(const char* field, double value, double lo, double hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("policy.", field, ": ", value, " is not in [", lo, ", ", hi, "]"));
}

absl::Status AtLeast(const char* field, int64_t value, int64_t lo) {
  if (value >= lo) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("policy.", field, ": ", value, " is below ", lo));
}

absl::Status ValidateLychee(const LycheeKnobs& k, const PolicyContext& context) {
  if (k.mode != "block" && k.mode != "token") {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.lychee.mode: '", k.mode, "' is not 'block' or 'token'"));
  }
  LY_RETURN_IF_ERROR(AtLeast("lychee.sink_tokens", k.sink_tokens, 0));
  LY_RETURN_IF_ERROR(AtLeast("lychee.local_tokens", k.local_tokens, 1));
  LY_RETURN_IF_ERROR(AtLeast("lychee.correction_interval", k.correction_interval, 0));
  if (context.head_roles == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("policy 'lychee' needs a head-role mask for this model: none was loaded (put ",
                     kHeadRolesFileName,
                     " made by lychee-calibrate in the model folder, or start the server with "
                     "--head-roles FILE)"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePrhs(const PrhsKnobs& k) {
  LY_RETURN_IF_ERROR(InRange("prhs.tau", k.tau, -1.0, 1.0));
  LY_RETURN_IF_ERROR(AtLeast("prhs.dilation", k.dilation, 0));
  LY_RETURN_IF_ERROR(InRange("prhs.dilate_fraction", k.dilate_fraction, 0.0, 1.0));
  LY_RETURN_IF_ERROR(AtLeast("prhs.sink_tokens", k.sink_tokens, 0));
  LY_RETURN_IF_ERROR(AtLeast("prhs.local_tokens", k.local_tokens, 1));
  LY_RETURN_IF_ERROR(AtLeast("prhs.psaw_start_layer", k.psaw_start_layer, 0));
  if (!(k.psaw_phi > 0.0 && k.psaw_phi <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.prhs.psaw_phi: ", k.psaw_phi, " is not in (0, 1]"));
  }
  return InRange("prhs.psaw_alpha", k.psaw_alpha, 0.0, 1e6);
}

}  // namespace

const char* AvailablePolicies() { return "dense, streaming, quest, lychee, prhs"; }

absl::Status ValidatePolicySpec(const PolicySpec& spec, const PolicyContext& context) {
  if (!Known(spec.name)) {
    return absl::InvalidArgumentError(absl::StrCat("policy.name: unknown sparsity policy '",
                                                   spec.name, "' (available: ", AvailablePolicies(),
                                                   ")"));
  }
  LY_RETURN_IF_ERROR(InRange("max_dropped_mass", spec.max_dropped_mass, 0.0, 1.0));
  LY_RETURN_IF_ERROR(InRange("audit_rate", spec.audit_rate, 0.0, 1.0));
  if (spec.name == "dense") return absl::OkStatus();
  if (spec.budget_tokens < context.block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.budget_tokens: ", spec.budget_tokens, " is below the KV block size ",
                     context.block_size, " (selection is per block)"));
  }
  if (context.sliding_window) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.name: '", spec.name,
                     "' is not available for this model: it has a sliding attention window, "
                     "which the sparse kernels do not apply (use 'dense')"));
  }
  if (spec.name == "lychee") return ValidateLychee(spec.lychee, context);
  if (spec.name == "prhs") return ValidatePrhs(spec.prhs);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const PolicySpec& spec,
                                                   const PolicyContext& context) {
  LY_RETURN_IF_ERROR(ValidatePolicySpec(spec, context));
  const PolicyLimits limits{spec.budget_tokens, spec.max_dropped_mass};
  if (spec.name == "streaming") return std::make_unique<StreamingPolicy>(limits);
  if (spec.name == "quest") return std::make_unique<QuestPolicy>(limits);
  if (spec.name == "lychee") {
    return std::make_unique<LycheePolicy>(limits, spec.lychee, context.head_roles);
  }
  if (spec.name == "prhs") return std::make_unique<PrhsPolicy>(limits, spec.prhs);
  return std::unique_ptr<Policy>();
}

}  // namespace lychee::sparsity
