// SPDX-License-Identifier: Apache-2.0
// tokenizer.json "normalizer" stage: NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace, Strip,
// Sequence.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; so is the result.
  virtual std::string Normalize(std::string_view text) const = 0;
};

// Builds the normalizer described by `spec` (a tokenizer.json "normalizer" value). Returns
// nullptr for JSON null. Unimplemented for unknown types; may throw nlohmann::json::exception
// on malformed JSON (the loader converts it into a Status).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& spec);

}  // namespace lychee::tokenizer_internal
