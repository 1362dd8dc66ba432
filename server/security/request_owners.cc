// SPDX-License-Identifier: Apache-2.0
#include "server/security/request_owners.h"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <array>
#include <random>

namespace lychee::security {

RequestOwners::Claim& RequestOwners::Claim::operator=(Claim&& other) noexcept {
  if (this == &other) return *this;
  Release();
  owners_ = std::exchange(other.owners_, nullptr);
  id_ = std::move(other.id_);
  generation_ = other.generation_;
  return *this;
}

void RequestOwners::Claim::Release() {
  if (owners_ == nullptr) return;
  owners_->Unregister(id_, generation_);
  owners_ = nullptr;
}

RequestOwners::Claim RequestOwners::Register(const std::string& id, std::string principal) {
  Claim claim;
  std::lock_guard<std::mutex> lock(mu_);
  claim.owners_ = this;
  claim.id_ = id;
  claim.generation_ = next_generation_++;
  owners_[id] = {std::move(principal), claim.generation_};
  return claim;
}

bool RequestOwners::IsOwner(const std::string& id, std::string_view principal) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = owners_.find(id);
  return it != owners_.end() && it->second.first == principal;
}

size_t RequestOwners::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return owners_.size();
}

void RequestOwners::Unregister(const std::string& id, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = owners_.find(id);
  if (it != owners_.end() && it->second.second == generation) owners_.erase(it);
}

std::string RandomRequestId(std::string_view prefix) {
  std::array<uint64_t, 2> bits{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bits.data()), sizeof(bits)) != 1) {
    thread_local std::mt19937_64 fallback{std::random_device{}()};
    bits = {fallback(), fallback()};
  }
  return fmt::format("{}{:016x}{:016x}", prefix, bits[0], bits[1]);
}

std::string PublicModelName(std::string_view model_path) {
  while (model_path.size() > 1 && model_path.back() == '/') model_path.remove_suffix(1);
  const size_t slash = model_path.rfind('/');
  return std::string(slash == std::string_view::npos ? model_path : model_path.substr(slash + 1));
}

std::string_view RejectReasonForHttp(int http_status) {
  switch (http_status) {
    case 400:
    case 405:
      return "invalid_request";
    case 401:
      return "unauthenticated";
    case 404:
      return "not_found";
    case 409:
      return "conflict";
    case 413:
      return "too_large";
    case 415:
      return "unsupported_media_type";
    case 429:
      return "overloaded";
    case 431:
      return "header_too_large";
    case 503:
      return "unavailable";
    case 504:
      return "deadline";
    default:
      return "other";
  }
}

std::string_view RejectReasonFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return "invalid_request";
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return "unauthenticated";
    case absl::StatusCode::kNotFound:
      return "not_found";
    case absl::StatusCode::kAlreadyExists:
      return "conflict";
    case absl::StatusCode::kResourceExhausted:
      return "overloaded";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline";
    default:
      return "other";
  }
}

}  // namespace lychee::security
