// SPDX-License-Identifier: Apache-2.0
// The token ids that end generation for a model: config.json's eos_token_id, generation_config.
// json's eos_token_id (int or list; the file is optional) and the tokenizer's EOS tokens, in that
// order, without duplicates. Hugging Face's generate() stops on the same set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {

// InvalidArgument naming the file when generation_config.json is malformed.
absl::StatusOr<std::vector<int32_t>> CollectEosTokenIds(const std::string& model_dir,
                                                        const ModelConfig& config,
                                                        const Tokenizer& tokenizer);

}  // namespace lychee
