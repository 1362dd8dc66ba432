// SPDX-License-Identifier: Apache-2.0
// HttpRequest header lookup and the JSON error body (see http_types.h).
#include "server/http/http_types.h"

#include <nlohmann/json.hpp>

namespace lychee::http {
namespace {
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}
}  // namespace

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

HttpResponse JsonError(int status, std::string_view type, std::string_view message) {
  nlohmann::json body = {
      {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  // Invalid UTF-8 (e.g. echoed from a bad request target) is replaced, not thrown on.
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return response;
}

}  // namespace lychee::http
