// SPDX-License-Identifier: Apache-2.0
// Jinja parser: tokens -> Program. Operator precedence follows jinja2's parser (filters and tests
// bind tighter than arithmetic; `not` looser than comparisons; `a if c else b` loosest).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/chat_template/ast.h"

namespace lychee::jinja {

// Syntax errors are InvalidArgument "chat template syntax error at line:column: ...".
absl::StatusOr<Program> ParseTemplate(const std::string& source);

}  // namespace lychee::jinja
