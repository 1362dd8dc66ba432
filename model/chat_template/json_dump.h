// SPDX-License-Identifier: Apache-2.0
// Python json.dumps() for Values, because HF's `tojson` filter is
// json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...) and prompts must
// match it byte for byte (", " and ": " separators, "," at line ends when indented, raw non-ASCII).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/chat_template/value.h"

namespace lychee::jinja {

struct JsonDumpOptions {
  int indent = -1;  // < 0: single line (Python indent=None)
  // Python's defaults: (", ", ": ") without indent, (",", ": ") with one.
  std::string item_separator;
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};

absl::StatusOr<std::string> PyJsonDumps(const Value& value, JsonDumpOptions options);

}  // namespace lychee::jinja
