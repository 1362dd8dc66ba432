// SPDX-License-Identifier: Apache-2.0
// Synthetic models: real architectures with random weights, named `synthetic:<name>`, so that
// speed is measured at a real size without a download (`--model synthetic:llama-3-8b`). Only
// the config lives here; a backend fills the weights (CudaWeights::Synthetic).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace lychee {

inline constexpr std::string_view kSyntheticPrefix = "synthetic:";

bool IsSyntheticModel(std::string_view model);

// The names SyntheticModelConfig knows, e.g. "synthetic:llama-3-8b".
std::vector<std::string> SyntheticModelNames();

// The config of `model` ("synthetic:llama-3-8b": 32 layers, hidden 4096, 32 q / 8 KV heads,
// head_dim 128, FFN 14336, vocab 128256, rope theta 500000 with llama3 scaling, 128K positions),
// or NotFound listing the known names.
absl::StatusOr<ModelConfig> SyntheticModelConfig(std::string_view model);

}  // namespace lychee
