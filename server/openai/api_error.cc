// SPDX-License-Identifier: Apache-2.0
// OpenAI error JSON from absl::Status (see api_error.h).
#include "server/openai/api_error.h"

#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace lychee::openai {
namespace {

constexpr char kParamUrl[] = "lychee.openai/param";
constexpr char kCodeUrl[] = "lychee.openai/code";

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status WithPayload(absl::Status status, const char* url, std::string_view value) {
  if (status.ok()) return status;
  status.SetPayload(url, absl::Cord(Absl(value)));
  return status;
}

std::optional<std::string> Payload(const absl::Status& status, const char* url) {
  auto payload = status.GetPayload(url);  // absl::optional (not std:: in this Abseil)
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

bool IsFieldChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.';
}

}  // namespace

absl::Status InvalidParam(std::string_view param, std::string_view message) {
  return WithParam(absl::InvalidArgumentError(Absl(message)), param);
}

absl::Status WithParam(absl::Status status, std::string_view param) {
  return WithPayload(std::move(status), kParamUrl, param);
}

absl::Status WithCode(absl::Status status, std::string_view code) {
  return WithPayload(std::move(status), kCodeUrl, code);
}

std::string ParamOf(const absl::Status& status) {
  if (std::optional<std::string> param = Payload(status, kParamUrl)) return *param;
  if (status.code() != absl::StatusCode::kInvalidArgument) return "";
  // The engine's messages start with the field: "max_tokens: must be ...", "prompt[3]: ...".
  const std::string_view message(status.message().data(), status.message().size());
  const size_t colon = message.find(':');
  if (colon == std::string_view::npos || colon == 0) return "";
  std::string_view field = message.substr(0, colon);
  if (const size_t bracket = field.find('['); bracket != std::string_view::npos) {
    field = field.substr(0, bracket);
  }
  for (const char c : field) {
    if (!IsFieldChar(c)) return "";
  }
  return std::string(field);
}

std::string CodeOf(const absl::Status& status) { return Payload(status, kCodeUrl).value_or(""); }

std::string_view ErrorTypeFor(int http_status) {
  switch (http_status) {
    case 400:
    case 404:
    case 409:
    case 415:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 429:
      return "rate_limit_error";
    case 499:
      return "cancelled";
    case 501:
      return "not_implemented_error";
    case 503:
      return "service_unavailable_error";
    case 504:
      return "timeout_error";
    default:
      return "server_error";
  }
}

nlohmann::ordered_json ErrorJson(const absl::Status& status) {
  return ErrorJsonWithStatus(status, HttpStatusFor(status.code()));
}

http::HttpResponse UnsupportedMediaType(const absl::Status& status) {
  http::HttpResponse response;
  response.status = 415;
  response.content_type = "application/json";
  response.body = Dump(ErrorJsonWithStatus(WithCode(status, "unsupported_media_type"), 415));
  return response;
}

nlohmann::ordered_json ErrorJsonWithStatus(const absl::Status& status, int http_status) {
  using Json = nlohmann::ordered_json;
  const std::string param = ParamOf(status);
  const std::string code = CodeOf(status);
  Json error = Json::object();
  error["message"] = std::string(status.message());
  error["type"] = ErrorTypeFor(http_status);
  error["param"] = param.empty() ? Json(nullptr) : Json(param);
  error["code"] = code.empty() ? Json(http_status) : Json(code);
  Json body = Json::object();
  body["error"] = std::move(error);
  return body;
}

http::HttpResponse ErrorResponse(const absl::Status& status) {
  http::HttpResponse response;
  response.status = HttpStatusFor(status.code());
  response.content_type = "application/json";
  response.body = Dump(ErrorJson(status));
  // Overload (queue full, too many in flight) and draining are temporary: say when to retry.
  if (response.status == 429 || response.status == 503) {
    response.headers.emplace_back("Retry-After", "1");
  }
  return response;
}

std::string Dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Dump(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace lychee::openai
