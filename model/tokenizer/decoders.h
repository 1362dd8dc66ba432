// SPDX-License-Identifier: Apache-2.0
// tokenizer.json "decoder" stage: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
// Sequence. Like tokenizers' decode_chain, each stage rewrites the list of token strings.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites `tokens`; the decoded text is their concatenation. Byte-producing stages
  // (ByteLevel, ByteFallback) leave raw bytes: the caller repairs invalid UTF-8 once at the end,
  // which keeps decoding of a sequence equal to the concatenation of decoding its complete-
  // character prefixes (StreamDecoder relies on that).
  virtual void DecodeChain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for JSON null; Unimplemented for unknown types; may throw nlohmann::json::exception.
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& spec);

}  // namespace lychee::tokenizer_internal
