// SPDX-License-Identifier: Apache-2.0
// Jinja filters (`x | name(args)`) and tests (`x is name(args)`) with jinja2's semantics, plus
// HF's `tojson` (json.dumps with ensure_ascii=False).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/chat_template/value.h"

namespace lychee::jinja {

// Unknown names give NotFound so the caller can report "unknown filter".
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input,
                                  const CallArgs& args);
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args);

// Python ordering (<) for numbers, strings and lists; TypeError-style status otherwise.
absl::StatusOr<int> CompareValues(const Value& a, const Value& b);

}  // namespace lychee::jinja
