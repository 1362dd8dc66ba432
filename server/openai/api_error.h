// SPDX-License-Identifier: Apache-2.0
// Errors of the OpenAI-compatible gateway: absl::Status inside (STYLE.md habit 10), OpenAI's error
// JSON outside. A status may carry the request field it is about ("param") and a specific error
// code ("model_not_found") as payloads, so validation code returns plain absl::Status values and
// only the edge turns them into
//
//   {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
//              "code": 400}}
//
// HTTP status by canonical code: InvalidArgument/OutOfRange/FailedPrecondition 400, NotFound 404,
// AlreadyExists/Aborted 409, ResourceExhausted 429 (engine queue full), Cancelled 499,
// Unimplemented 501, Unavailable 503 (draining), DeadlineExceeded 504, the rest 500.
// "type" follows OpenAI's names (invalid_request_error, rate_limit_error, server_error, ...);
// "code" is the specific code when one is set, else the HTTP status as a number (as vLLM does).
//
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/http_status.h"
#include "nlohmann/json.hpp"
#include "server/http/http_types.h"

namespace lychee::openai {

// InvalidArgument about request field `param` (e.g. "temperature", "messages[1].content").
absl::Status InvalidParam(std::string_view param, std::string_view message);
// The same status with `param` / `code` attached (replacing earlier ones).
absl::Status WithParam(absl::Status status, std::string_view param);
absl::Status WithCode(absl::Status status, std::string_view code);

// The attached param, or else the field an engine message starts with ("max_tokens: must be
// ..." → "max_tokens", "prompt[3]: ..." → "prompt"); "" when none.
std::string ParamOf(const absl::Status& status);
std::string CodeOf(const absl::Status& status);

std::string_view ErrorTypeFor(int http_status);

// {"error": {...}} for a non-OK status.
nlohmann::ordered_json ErrorJson(const absl::Status& status);
// The same for a response with `http_status` (which gives "type" and the default "code").
nlohmann::ordered_json ErrorJsonWithStatus(const absl::Status& status, int http_status);
// ErrorJson as a complete HTTP response with the mapped status; 429 and 503 carry
// `Retry-After: 1`.
http::HttpResponse ErrorResponse(const absl::Status& status);
// 415 Unsupported Media Type for `status` (no canonical code maps to it), "type"
// invalid_request_error and "code" unsupported_media_type.
http::HttpResponse UnsupportedMediaType(const absl::Status& status);

// JSON text for the wire: invalid UTF-8 (a token that is half a character) is replaced, never
// thrown on.
std::string Dump(const nlohmann::json& value);
std::string Dump(const nlohmann::ordered_json& value);

}  // namespace lychee::openai
