// SPDX-License-Identifier: Apache-2.0
#include "server/security/api_keys.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstddef>

namespace lychee::security {
namespace {

std::array<unsigned char, 32> Digest(std::string_view text) {
  std::array<unsigned char, 32> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

bool IsValidApiKey(std::string_view key) {
  if (key.empty() || key.size() > 4096) return false;
  for (const char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
  digests_.reserve(keys.size());
  for (const std::string& key : keys) digests_.push_back(Digest(key));
}

std::optional<std::string> ApiKeys::Check(std::string_view token) const {
  const std::array<unsigned char, 32> presented = Digest(token);
  size_t match = 0;  // 1 + the index of the matching key; every key is compared
  for (size_t i = 0; i < digests_.size(); ++i) {
    const int differs = CRYPTO_memcmp(presented.data(), digests_[i].data(), presented.size());
    const size_t is_match = static_cast<size_t>(differs == 0);
    match |= is_match * (i + 1) * static_cast<size_t>(match == 0);
  }
  if (match == 0) return std::nullopt;
  return fmt::format("key#{}", match - 1);
}

std::optional<std::string> ApiKeys::CheckAuthorization(std::string_view header_value) const {
  constexpr std::string_view kScheme = "bearer ";
  std::string_view value = Trim(header_value);
  if (value.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = value[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != kScheme[i]) return std::nullopt;
  }
  return Check(Trim(value.substr(kScheme.size())));
}

absl::StatusOr<std::vector<std::string>> ParseApiKeyFile(std::string_view text) {
  std::vector<std::string> keys;
  size_t line_number = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = Trim(text.substr(0, eol));
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    if (!IsValidApiKey(line)) {
      return absl::InvalidArgumentError(fmt::format(
          "line {}: an API key must be 1 to 4096 printable ASCII characters without blanks",
          line_number));
    }
    keys.emplace_back(line);
  }
  return keys;
}

}  // namespace lychee::security
