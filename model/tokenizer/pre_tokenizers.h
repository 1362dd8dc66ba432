// SPDX-License-Identifier: Apache-2.0
// tokenizer.json "pre_tokenizer" stage: Split (regex or string), ByteLevel, Metaspace, Digits,
// Sequence. Each stage refines a list of pieces; the BPE model then encodes every piece alone.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits/rewrites `pieces` in place. `first_segment` is true when the pieces come from the
  // start of the input (not after an added token); Metaspace's prepend_scheme "first" uses it.
  virtual void PreTokenize(std::vector<std::string>& pieces, bool first_segment) const = 0;
};

// Builds the pre-tokenizer described by `spec`; nullptr for JSON null. Unimplemented for
// unknown types; may throw nlohmann::json::exception on malformed JSON.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& spec);

// GPT-2's byte-to-unicode table: every byte maps to a printable character (as UTF-8).
const std::vector<std::string>& ByteToUnicode();

}  // namespace lychee::tokenizer_internal
