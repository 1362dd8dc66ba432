// SPDX-License-Identifier: Apache-2.0
// FieldReader: typed, optional fields of one JSON object of an OpenAI request, with errors that
// name the field as the client spelled it ("stream_options.include_usage must be a boolean").
// A field that is absent or null is "not given" (OpenAI clients send null for unset fields).
// Numbers are lenient the way the reference servers' validators are: an integer field accepts
// 16.0, a number field accepts 1. Pure; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace lychee::openai {

// Requests are parsed into ordered_json so that key order (tool schemas) reaches the template.
using Json = nlohmann::ordered_json;

class FieldReader {
 public:
  // `object` must be a JSON object and outlive the reader; `prefix` ("stream_options.") is put
  // before field names in error messages.
  explicit FieldReader(const Json& object, std::string prefix = "")
      : object_(object), prefix_(std::move(prefix)) {}

  // The field, or nullptr when absent or null.
  const Json* Get(std::string_view name) const;
  std::string Param(std::string_view name) const { return prefix_ + std::string(name); }

  // Each leaves `out` unset when the field is not given; InvalidArgument naming the field when it
  // has the wrong type.
  absl::Status Number(std::string_view name, std::optional<double>& out) const;
  absl::Status Integer(std::string_view name, std::optional<int64_t>& out) const;
  absl::Status Bool(std::string_view name, std::optional<bool>& out) const;
  absl::Status String(std::string_view name, std::optional<std::string>& out) const;
  // Any integer that fits 64 bits, signed or not (seeds), as its two's-complement bits.
  absl::Status Seed(std::string_view name, std::optional<uint64_t>& out) const;

  // InvalidArgument unless lo <= value <= hi (lo < value when lo_open), with gRPC's message:
  // "temperature is 300, must be in [0, 100]".
  absl::Status CheckRange(std::string_view name, double value, double lo, double hi,
                          bool lo_open = false) const;

 private:
  const Json& object_;
  std::string prefix_;
};

// "string", "number", "array", ... for error messages.
std::string_view JsonTypeName(const Json& value);

}  // namespace lychee::openai
