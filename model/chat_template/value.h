// SPDX-License-Identifier: Apache-2.0
// Value: the dynamic type of the Jinja interpreter (Python-like semantics for what templates use).
//
// Lists and dicts are shared by reference, as in Python, so `ns.x = ...` on a namespace() and
// aliasing behave like jinja2. Dicts keep insertion order because tojson output must match
// Python's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lychee::jinja {

class Value;
using ValueList = std::vector<Value>;

// Insertion-ordered string-keyed map; linear lookup is fine for the small dicts templates use.
class ValueDict {
 public:
  const Value* Find(std::string_view key) const;
  Value* Find(std::string_view key);
  void Set(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const;  // defined below Value: clang needs Value complete here
  int depth() const { return depth_; }
  void Clear();

  // A namespace() object: attributes are assignable with `set ns.attr = ...`.
  bool is_namespace = false;

 private:
  std::vector<std::pair<std::string, Value>> items_;
  int depth_ = 1;
};

// Arguments of a call: positional then keyword, as written in the template.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at position `index` or named `name`; nullptr when absent.
  const Value* Get(size_t index, std::string_view name) const;
};

using Function = std::function<absl::StatusOr<Value>(const CallArgs& args)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;                                   // undefined
  Value(bool b) : kind_(Kind::kBool), int_(b) {}       // NOLINT
  Value(int v) : kind_(Kind::kInt), int_(v) {}         // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}     // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}  // NOLINT
  Value(std::string s)                                 // NOLINT
      : kind_(Kind::kString), str_(std::make_shared<const std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  Value(ValueList list);                           // NOLINT

  // A Python tuple: a list that prints as "(a, b)".
  static Value Tuple(ValueList items);
  static Value None();
  // An undefined value that remembers the name it came from, for error messages.
  static Value Undefined(std::string hint);
  static Value NewDict();
  static Value NewFunction(Function fn);
  static Value FromJson(const nlohmann::json& j);
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // Python numbers: bools count, as isinstance(True, int) does.
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  bool is_tuple() const { return is_list() && tuple_; }

  bool bool_value() const { return int_ != 0; }
  int64_t int_value() const { return int_; }  // also for bool
  double float_value() const { return is_float() ? float_ : static_cast<double>(int_); }
  // The string; for undefined, the error message to report when it is used.
  const std::string& str() const { return str_ ? *str_ : EmptyString(); }
  ValueList& list() const { return *list_; }
  ValueDict& dict() const { return *dict_; }
  const Function& function() const { return *fn_; }

  // Python truthiness; undefined is falsy.
  bool Truthy() const;
  // Python str() as Jinja prints it; undefined prints as "".
  std::string Str() const;
  // Python repr(), used for containers inside str().
  std::string Repr() const { return ReprAt(0); }
  // Python ==, with 1 == 1.0 == True.
  bool Equals(const Value& other) const { return EqualsAt(other, 0); }
  // Nesting depth: 0 for scalars, 1 + the deepest element for lists and dicts (an upper bound
  // for dicts, which namespaces can mutate). Bounded by the evaluator to keep recursion safe.
  int depth() const;
  // Python type name for error messages.
  const char* TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  int list_depth_ = 0;
  int64_t int_ = 0;
  double float_ = 0;
  static const std::string& EmptyString();
  // `level` bounds recursion: a namespace can contain itself.
  std::string ReprAt(int level) const;
  bool EqualsAt(const Value& other, int level) const;

  // Shared so that copying values (every variable lookup does) never copies message text.
  std::shared_ptr<const std::string> str_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<const Function> fn_;
};

// Python's repr() of a float: shortest round-trip digits, "1.0", "1e-05", "1e+16".
std::string PyFloatRepr(double d);

inline size_t ValueDict::size() const { return items_.size(); }
inline void ValueDict::Clear() { items_.clear(); }

}  // namespace lychee::jinja
