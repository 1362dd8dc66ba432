// SPDX-License-Identifier: Apache-2.0
// Host-side validation and workspace sizing of the sampling kernel (sampling.h). Plain C++ so
// that CI without a GPU runs it; Sample() calls CanImplementSample before enqueuing anything.
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/sampling.h"

namespace lychee::cuda {
namespace {

constexpr int64_t kMaxInt32 = 2147483647;

}  // namespace

size_t SampleWorkspaceBytes(int64_t penalty_capacity) {
  const size_t entries = penalty_capacity > 0 ? static_cast<size_t>(penalty_capacity) : 0;
  const size_t bytes = entries * sizeof(float);
  return bytes < 16 ? 16 : (bytes + 15) / 16 * 16;
}

absl::Status CanImplementSample(const SampleParams& p) {
  auto null = [](const char* name) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is null"));
  };
  if (p.logits == nullptr) return null("logits");
  if (p.row_params == nullptr) return null("row_params");
  if (p.out_tokens == nullptr) return null("out_tokens");
  if (p.out_logprobs == nullptr) return null("out_logprobs");
  if (p.out_top == nullptr) return null("out_top");
  if (p.workspace == nullptr) return null("workspace");
  if (p.rows <= 0 || p.rows > kMaxInt32) {
    return absl::InvalidArgumentError(absl::StrCat("rows must be in [1, 2^31), got ", p.rows));
  }
  // Token ids travel as int32 and the radix keys hold 32 bits of id.
  if (p.vocab <= 0 || p.vocab > kMaxInt32) {
    return absl::InvalidArgumentError(absl::StrCat("vocab must be in [1, 2^31), got ", p.vocab));
  }
  if (p.row_stride != 0 && p.row_stride < p.vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_stride ", p.row_stride, " < vocab ", p.vocab));
  }
  if (p.penalty_capacity < 0 || p.penalty_capacity > kMaxInt32) {
    return absl::InvalidArgumentError(
        absl::StrCat("penalty_capacity must be in [0, 2^31), got ", p.penalty_capacity));
  }
  if (p.penalty_capacity > 0 && (p.penalty_ids == nullptr || p.penalty_counts == nullptr)) {
    return absl::InvalidArgumentError(
        "penalty_ids and penalty_counts are needed when "
        "penalty_capacity > 0");
  }
  if (p.workspace_bytes < SampleWorkspaceBytes(p.penalty_capacity)) {
    return absl::InvalidArgumentError(
        absl::StrCat("workspace of ", p.workspace_bytes, " bytes, need ",
                     SampleWorkspaceBytes(p.penalty_capacity), " (SampleWorkspaceBytes)"));
  }
  return absl::OkStatus();
}

}  // namespace lychee::cuda
