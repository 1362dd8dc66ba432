// SPDX-License-Identifier: Apache-2.0
// Typed request fields (see json_fields.h).
#include "server/openai/json_fields.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "server/openai/api_error.h"

namespace lychee::openai {

std::string_view JsonTypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::binary:
      return "binary";
    case Json::value_t::discarded:
      return "invalid";
  }
  return "invalid";
}

const Json* FieldReader::Get(std::string_view name) const {
  const auto it = object_.find(std::string(name));
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

namespace {
absl::Status WrongType(const std::string& param, std::string_view expected, const Json& value) {
  return InvalidParam(param,
                      fmt::format("{} must be {}, got {}", param, expected, JsonTypeName(value)));
}
}  // namespace

absl::Status FieldReader::Number(std::string_view name, std::optional<double>& out) const {
  const Json* value = Get(name);
  if (value == nullptr) return absl::OkStatus();
  if (!value->is_number()) return WrongType(Param(name), "a number", *value);
  out = value->get<double>();
  return absl::OkStatus();
}

absl::Status FieldReader::Integer(std::string_view name, std::optional<int64_t>& out) const {
  const Json* value = Get(name);
  if (value == nullptr) return absl::OkStatus();
  if (value->is_number_unsigned()) {
    const uint64_t v = value->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidParam(Param(name), fmt::format("{} is {}, too large", Param(name), v));
    }
    out = static_cast<int64_t>(v);
    return absl::OkStatus();
  }
  if (value->is_number_integer()) {
    out = value->get<int64_t>();
    return absl::OkStatus();
  }
  if (value->is_number_float()) {
    const double v = value->get<double>();
    // 16.0 is 16; 16.5 is not an integer. Bounds keep the cast defined.
    if (std::floor(v) == v && std::abs(v) < 9.0e18) {
      out = static_cast<int64_t>(v);
      return absl::OkStatus();
    }
  }
  return WrongType(Param(name), "an integer", *value);
}

absl::Status FieldReader::Bool(std::string_view name, std::optional<bool>& out) const {
  const Json* value = Get(name);
  if (value == nullptr) return absl::OkStatus();
  if (!value->is_boolean()) return WrongType(Param(name), "a boolean", *value);
  out = value->get<bool>();
  return absl::OkStatus();
}

absl::Status FieldReader::String(std::string_view name, std::optional<std::string>& out) const {
  const Json* value = Get(name);
  if (value == nullptr) return absl::OkStatus();
  if (!value->is_string()) return WrongType(Param(name), "a string", *value);
  out = value->get<std::string>();
  return absl::OkStatus();
}

absl::Status FieldReader::Seed(std::string_view name, std::optional<uint64_t>& out) const {
  const Json* value = Get(name);
  if (value == nullptr) return absl::OkStatus();
  if (value->is_number_unsigned()) {
    out = value->get<uint64_t>();
    return absl::OkStatus();
  }
  if (value->is_number_integer()) {
    out = static_cast<uint64_t>(value->get<int64_t>());
    return absl::OkStatus();
  }
  std::optional<int64_t> integral;
  if (absl::Status st = Integer(name, integral); !st.ok()) return st;
  out = static_cast<uint64_t>(*integral);
  return absl::OkStatus();
}

absl::Status FieldReader::CheckRange(std::string_view name, double value, double lo, double hi,
                                     bool lo_open) const {
  const bool ok = std::isfinite(value) && (lo_open ? value > lo : value >= lo) && value <= hi;
  if (ok) return absl::OkStatus();
  return InvalidParam(Param(name), fmt::format("{} is {}, must be in {}{}, {}]", Param(name), value,
                                               lo_open ? "(" : "[", lo, hi));
}

}  // namespace lychee::openai
