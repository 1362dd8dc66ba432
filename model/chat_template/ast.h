// SPDX-License-Identifier: Apache-2.0
// Jinja syntax tree: expressions (Expr) and statements (Node). One generic node shape per family
// keeps the parser and evaluator short; the meaning of each field depends on `kind`.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/chat_template/value.h"

namespace lychee::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // args: items
    kTuple,      // args: items (evaluates to a list)
    kDict,       // args: key0, value0, key1, value1, ...
    kAttr,       // args[0].name
    kItem,       // args[0][args[1]]
    kSlice,      // args[0][args[1]:args[2]:args[3]]; missing parts are nullptr
    kCall,       // args[0](args[1..], kwargs)
    kFilter,     // args[0] | name(args[1..], kwargs); args[0] is nullptr inside {% filter %}
    kTest,       // args[0] is [not] name(args[1..]); `negated` for "is not"
    kUnary,      // name in {"-", "+", "not"}; args[0]
    kBinary,     // args[0] name args[1]; arithmetic, comparison, "in", "not in", "~"
    kAnd,        // args[0] and args[1]
    kOr,         // args[0] or args[1]
    kCondition,  // args[0] if args[1] else args[2] (args[2] may be nullptr)
  };

  Kind kind = Kind::kLiteral;
  int line = 0;
  int column = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // conditions[i] -> bodies[i]; bodies.back() is the else branch when
                   // bodies.size() > conditions.size()
    kFor,          // for targets in expr [if condition]: bodies[0], else bodies[1]
    kSet,          // set targets = expr, or set name.attr = expr (attr non-empty)
    kSetBlock,     // set targets[0] %}bodies[0]{% endset
    kMacro,        // macro name(params) bodies[0]
    kCallBlock,    // call(params) expr: bodies[0] is `caller`
    kFilterBlock,  // filter expr (a kFilter chain with a nullptr input): bodies[0]
    kScope,        // bodies[0] rendered as is ({% generation %})
    kBreak,
    kContinue,
  };

  Kind kind = Kind::kText;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;  // kFor inline filter
  std::vector<ExprPtr> conditions;
  std::vector<NodeList> bodies;
  std::vector<std::string> targets;
  std::string name;  // kMacro name; kSet namespace name when attr is set
  std::string attr;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro / caller parameters and defaults
};

// A parsed template.
struct Program {
  NodeList body;
};

}  // namespace lychee::jinja
