// SPDX-License-Identifier: Apache-2.0
// ApiKeys: the bearer tokens a client must present (HTTP `Authorization: Bearer <key>`, gRPC
// metadata `authorization: Bearer <key>`), as vLLM's --api-key. Several keys may be valid at once
// (rotation); each has a principal name, "key#N" (N is its position in the configuration), which
// owns the requests started with it and appears in logs instead of the key.
//
// The check hashes the presented token with SHA-256 and compares the digest against every
// configured key's digest with CRYPTO_memcmp, without stopping at a match: its time depends on
// neither the key's length nor how many leading bytes match, nor which key matched.
//
// Immutable after construction; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::security {

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: authentication is off
  explicit ApiKeys(const std::vector<std::string>& keys);

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }

  // The principal ("key#N") of `token`, or nullopt when it is no configured key.
  std::optional<std::string> Check(std::string_view token) const;
  // Same for an `Authorization` header value: "Bearer <token>" (scheme case-insensitive).
  std::optional<std::string> CheckAuthorization(std::string_view header_value) const;

 private:
  std::vector<std::array<unsigned char, 32>> digests_;
};

// The keys of a key file: one per line; surrounding blanks are trimmed, empty lines and lines
// starting with '#' skipped. InvalidArgument when a key contains blanks or control characters.
absl::StatusOr<std::vector<std::string>> ParseApiKeyFile(std::string_view text);

// A key as it may appear in a header: printable ASCII without blanks, 1..4096 bytes.
bool IsValidApiKey(std::string_view key);

}  // namespace lychee::security
