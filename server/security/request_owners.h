// SPDX-License-Identifier: Apache-2.0
// Requests belong to their caller. RequestOwners records, for each live request id, the
// principal that started it, so that an Abort (gRPC) only reaches requests of the same principal:
//   - with API keys, the principal is the key ("key#N", api_keys.h): any connection presenting
//     the same key may abort the requests started with it;
//   - without keys, it is the connection: "grpc:<peer>" (gRPC's peer string, address and port)
//     or "http:<address>:<port>". A client can then abort only what it started on the same
//     connection, and HTTP requests are never reachable from gRPC.
// An Abort of an id the caller does not own is ignored exactly as an unknown id is, so a caller
// cannot learn which ids are live.
//
// RandomRequestId gives server-assigned ids that cannot be guessed (128 random bits).
// RejectReason* name why a request was refused, for lychee_request_rejected_total{reason} and
// the info log line both front ends write.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"

namespace lychee::security {

class RequestOwners {
 public:
  // Releases its claim when destroyed (the request has ended). Movable.
  class Claim {
   public:
    Claim() = default;
    Claim(Claim&& other) noexcept { *this = std::move(other); }
    Claim& operator=(Claim&& other) noexcept;
    ~Claim() { Release(); }
    void Release();

   private:
    friend class RequestOwners;
    RequestOwners* owners_ = nullptr;
    std::string id_;
    uint64_t generation_ = 0;
  };

  // Records `principal` as the owner of `id` until the returned claim is released. A later claim
  // of the same id (the id was reused after its request ended) replaces an earlier one.
  [[nodiscard]] Claim Register(const std::string& id, std::string principal);
  // Whether `principal` owns the live request `id`.
  bool IsOwner(const std::string& id, std::string_view principal) const;
  size_t size() const;

 private:
  void Unregister(const std::string& id, uint64_t generation);

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::pair<std::string, uint64_t>> owners_;  // id → owner, gen
  uint64_t next_generation_ = 1;
};

// `prefix` followed by 32 hex digits from the system's random source.
std::string RandomRequestId(std::string_view prefix);

// Why a request was refused, in one small vocabulary for both front ends: invalid_request (400),
// unauthenticated (401), not_found (404), conflict (409), too_large (413),
// unsupported_media_type (415), overloaded (429),
// header_too_large (431), unavailable (503), deadline (504), other.
std::string_view RejectReasonForHttp(int http_status);
std::string_view RejectReasonFor(absl::StatusCode code);

// What clients learn of the model's location: the last path component ("/models/Qwen3-8B/" →
// "Qwen3-8B"), never the server's directory layout.
std::string PublicModelName(std::string_view model_path);

}  // namespace lychee::security
