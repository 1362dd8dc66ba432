// SPDX-License-Identifier: Apache-2.0
// Jinja sources of the built-in fallback chat templates. Copies live in
// tests/golden/chat_template/templates/ so the golden generator renders them through transformers.
#pragma once

#include <string_view>

namespace lychee::jinja {

// nullptr for an unknown name.
const char* BuiltInTemplateSource(std::string_view name);

}  // namespace lychee::jinja
