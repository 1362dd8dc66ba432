// SPDX-License-Identifier: Apache-2.0
// Evaluator: renders a parsed Program against variables. Scoping follows jinja2 closely enough for
// chat templates: `set` inside a for loop stays in the loop (hence namespace()), macros see the
// template's top-level names, lists/dicts are shared by reference.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/chat_template/ast.h"
#include "model/chat_template/value.h"

namespace lychee::jinja {

// Bounds that keep a hostile or buggy template from hanging or exhausting the server.
struct RenderLimits {
  int max_depth = 256;                       // nested statements, expressions and macro calls
  size_t max_output_bytes = 16u << 20;       // all text produced, macro results included
  int64_t max_loop_iterations = 10'000'000;  // summed over all loops
  int max_value_depth = 128;                 // nesting of lists/dicts, inputs included
};

// `variables` is a dict Value; global functions (range, namespace, ...) are added underneath it.
// Errors are InvalidArgument ("chat template error at line:column: ..."); raise_exception(msg)
// yields InvalidArgument(msg) exactly; exceeded limits are ResourceExhausted.
absl::StatusOr<std::string> RenderProgram(const Program& program, const Value& variables,
                                          const RenderLimits& limits);

}  // namespace lychee::jinja
