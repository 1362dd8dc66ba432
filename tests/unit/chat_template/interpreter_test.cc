// SPDX-License-Identifier: Apache-2.0
// Interpreter tests: each Jinja construct, whitespace control, errors and limits.
#include <string>

#include "gtest/gtest.h"
#include "model/chat_template/chat_template.h"

namespace lychee {
namespace {

using nlohmann::ordered_json;

// Renders `source` with `vars` (messages empty unless given).
absl::StatusOr<std::string> Run(const std::string& source,
                                const ordered_json& vars = ordered_json::object()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) return t.status();
  ordered_json messages = vars.contains("messages") ? vars["messages"] : ordered_json::array();
  return t->Render(messages, false, vars);
}

std::string R(const std::string& source, const ordered_json& vars = ordered_json::object()) {
  absl::StatusOr<std::string> r = Run(source, vars);
  if (!r.ok()) return "ERROR: " + std::string(r.status().message());
  return *r;
}

TEST(InterpreterTest, Smoke) { EXPECT_EQ(R("a{{ 1 + 2 }}b"), "a3b"); }

}  // namespace
}  // namespace lychee
