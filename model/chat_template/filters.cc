// SPDX-License-Identifier: Apache-2.0
// Filters and tests (see filters.h).
#include "model/chat_template/filters.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "model/chat_template/builtins.h"
#include "model/chat_template/json_dump.h"
#include "model/chat_template/py_string.h"
#include "model/chat_template/utf8.h"

namespace lychee::jinja {
namespace {

absl::Status Error(const std::string& filter, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("filter '", filter, "': ", msg));
}

bool BoolArg(const CallArgs& args, size_t index, const char* name, bool fallback) {
  const Value* v = args.Get(index, name);
  return v == nullptr ? fallback : v->Truthy();
}

const Value* Arg(const CallArgs& args, size_t index, const char* name) {
  const Value* v = args.Get(index, name);
  return (v == nullptr || v->is_none()) ? nullptr : v;
}

// Follows a dotted attribute path ("function.name", "0.x") the way jinja2's make_attrgetter does.
absl::StatusOr<Value> GetPath(const Value& obj, const std::string& path) {
  Value cur = obj;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t dot = path.find('.', pos);
    const std::string part =
        path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    char* end = nullptr;
    const long long index = std::strtoll(part.c_str(), &end, 10);
    absl::StatusOr<Value> next = (!part.empty() && *end == '\0')
                                     ? GetItem(cur, Value(static_cast<int64_t>(index)))
                                     : GetItem(cur, Value(part));
    if (!next.ok()) return next.status();
    cur = std::move(*next);
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

Value Lowered(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(PyLower(v.str()));
  return v;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// jinja2's do_title: capitalize each word, words split at whitespace and -({[<.
std::string JinjaTitle(const std::string& s) {
  std::string out, word;
  for (char c : s) {
    const bool sep = std::isspace(static_cast<unsigned char>(c)) || c == '-' || c == '(' ||
                     c == '{' || c == '[' || c == '<';
    if (!sep) {
      word.push_back(c);
      continue;
    }
    out += PyCapitalize(word);
    word.clear();
    out.push_back(c);
  }
  return out + PyCapitalize(word);
}

absl::StatusOr<Value> ToJson(const Value& input, const CallArgs& args) {
  JsonDumpOptions options;
  if (const Value* indent = Arg(args, 0, "indent")) {
    if (!indent->is_int()) return Error("tojson", "indent must be an integer");
    options.indent = static_cast<int>(std::clamp<int64_t>(indent->int_value(), 0, 64));
  }
  if (const Value* seps = Arg(args, 1, "separators")) {
    if (!seps->is_list() || seps->list().size() != 2 || !seps->list()[0].is_string() ||
        !seps->list()[1].is_string()) {
      return Error("tojson", "separators must be a pair of strings");
    }
    options.item_separator = seps->list()[0].str();
    options.key_separator = seps->list()[1].str();
  }
  options.sort_keys = BoolArg(args, 2, "sort_keys", false);
  options.ensure_ascii = BoolArg(args, 3, "ensure_ascii", false);
  absl::StatusOr<std::string> s = PyJsonDumps(input, options);
  if (!s.ok()) return s.status();
  return Value(std::move(*s));
}

absl::StatusOr<Value> ToInt(const Value& input, const CallArgs& args) {
  const Value* dflt = args.Get(0, "default");
  const Value fallback = dflt ? *dflt : Value(static_cast<int64_t>(0));
  if (input.is_int() || input.is_bool()) return Value(input.int_value());
  if (input.is_float()) {
    if (!std::isfinite(input.float_value())) return fallback;
    return Value(static_cast<int64_t>(input.float_value()));
  }
  if (input.is_string()) {
    const std::string s = PyStrip(input.str(), std::nullopt, true, true);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0' && errno == 0) return Value(static_cast<int64_t>(v));
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0' && std::isfinite(d)) return Value(static_cast<int64_t>(d));
  }
  return fallback;
}

absl::StatusOr<Value> ToFloat(const Value& input, const CallArgs& args) {
  const Value* dflt = args.Get(0, "default");
  const Value fallback = dflt ? *dflt : Value(0.0);
  if (input.is_number()) return Value(input.float_value());
  if (input.is_string()) {
    const std::string s = PyStrip(input.str(), std::nullopt, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') return Value(d);
  }
  return fallback;
}

absl::StatusOr<Value> Length(const Value& input) {
  switch (input.kind()) {
    case Value::Kind::kUndefined:
      return Value(static_cast<int64_t>(0));
    case Value::Kind::kString:
      return Value(static_cast<int64_t>(PyLength(input.str())));
    case Value::Kind::kList:
      return Value(static_cast<int64_t>(input.list().size()));
    case Value::Kind::kDict:
      return Value(static_cast<int64_t>(input.dict().size()));
    default:
      return Error("length", absl::StrCat("object of type '", input.TypeName(), "' has no len()"));
  }
}

// select/reject/selectattr/rejectattr: args after the attribute are a test name and its args.
absl::StatusOr<Value> SelectOrReject(const std::string& filter, const Value& input,
                                     const CallArgs& args, bool by_attribute, bool keep) {
  absl::StatusOr<ValueList> items = Iterate(input);
  if (!items.ok()) return items.status();
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return Error(filter, "missing attribute name");
    }
    attribute = args.positional[0].str();
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return Error(filter, "test name must be a string");
    test = args.positional[next].str();
    test_args.positional.assign(args.positional.begin() + next + 1, args.positional.end());
  }
  ValueList out;
  for (const Value& item : *items) {
    Value subject = item;
    if (by_attribute) {
      absl::StatusOr<Value> v = GetPath(item, attribute);
      if (!v.ok()) return v.status();
      subject = std::move(*v);
    }
    bool pass;
    if (test.empty()) {
      pass = subject.Truthy();
    } else {
      absl::StatusOr<bool> r = ApplyTest(test, subject, test_args);
      if (!r.ok()) return r.status();
      pass = *r;
    }
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Map(const Value& input, const CallArgs& args) {
  absl::StatusOr<ValueList> items = Iterate(input);
  if (!items.ok()) return items.status();
  ValueList out;
  if (const Value* attribute = Arg(args, 99, "attribute")) {
    const Value* dflt = args.Get(99, "default");
    for (const Value& item : *items) {
      absl::StatusOr<Value> v = GetPath(item, attribute->Str());
      if (!v.ok()) return v.status();
      out.push_back(v->is_undefined() && dflt ? *dflt : std::move(*v));
    }
    return Value(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return Error("map", "expected a filter name or attribute=");
  }
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : *items) {
    absl::StatusOr<Value> v = ApplyFilter(args.positional[0].str(), item, rest);
    if (!v.ok()) return v.status();
    out.push_back(std::move(*v));
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Sort(const Value& input, const CallArgs& args) {
  absl::StatusOr<ValueList> items = Iterate(input);
  if (!items.ok()) return items.status();
  const bool reverse = BoolArg(args, 0, "reverse", false);
  const bool case_sensitive = BoolArg(args, 1, "case_sensitive", false);
  const Value* attribute = Arg(args, 2, "attribute");
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute) {
      absl::StatusOr<Value> k = GetPath(item, attribute->Str());
      if (!k.ok()) return k.status();
      key = std::move(*k);
    }
    keyed.emplace_back(Lowered(key, case_sensitive), item);
  }
  absl::Status error;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    absl::StatusOr<int> c = CompareValues(a.first, b.first);
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  if (!error.ok()) return error;
  ValueList out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value(std::move(out));
}

absl::StatusOr<Value> DictSort(const Value& input, const CallArgs& args) {
  if (!input.is_dict()) return Error("dictsort", "expected a mapping");
  const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
  const Value* by = Arg(args, 1, "by");
  const bool by_value = by && by->Str() == "value";
  const bool reverse = BoolArg(args, 2, "reverse", false);
  std::vector<std::pair<std::string, Value>> items = input.dict().items();
  absl::Status error;
  std::stable_sort(items.begin(), items.end(), [&](const auto& a, const auto& b) {
    const Value ka = Lowered(by_value ? a.second : Value(a.first), case_sensitive);
    const Value kb = Lowered(by_value ? b.second : Value(b.first), case_sensitive);
    absl::StatusOr<int> c = CompareValues(ka, kb);
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  if (!error.ok()) return error;
  ValueList out;
  for (auto& [k, v] : items) out.push_back(Value::Tuple(ValueList{Value(k), v}));
  return Value(std::move(out));
}

absl::StatusOr<Value> Unique(const Value& input, const CallArgs& args) {
  absl::StatusOr<ValueList> items = Iterate(input);
  if (!items.ok()) return items.status();
  const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
  const Value* attribute = Arg(args, 1, "attribute");
  ValueList out, seen;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute) {
      absl::StatusOr<Value> k = GetPath(item, attribute->Str());
      if (!k.ok()) return k.status();
      key = std::move(*k);
    }
    key = Lowered(key, case_sensitive);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.Equals(key); })) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Round(const Value& input, const CallArgs& args) {
  if (!input.is_number()) return Error("round", "expected a number");
  const Value* precision = Arg(args, 0, "precision");
  const int64_t p = precision && precision->is_int() ? precision->int_value() : 0;
  const std::string method = Arg(args, 1, "method") ? Arg(args, 1, "method")->Str() : "common";
  const double scale = std::pow(10.0, static_cast<double>(p));
  const double x = input.float_value() * scale;
  double r;
  if (method == "common") {
    r = std::nearbyint(x);  // Python's round() is round-half-even
  } else if (method == "ceil") {
    r = std::ceil(x);
  } else if (method == "floor") {
    r = std::floor(x);
  } else {
    return Error("round", "method must be common, ceil or floor");
  }
  return Value(r / scale);
}

absl::StatusOr<Value> Indent(const Value& input, const CallArgs& args) {
  const Value* width = Arg(args, 0, "width");
  const std::string pad =
      width == nullptr
          ? "    "
          : (width->is_string() ? width->str()
                                : std::string(std::max<int64_t>(0, width->int_value()), ' '));
  const bool first = BoolArg(args, 1, "first", false);
  const bool blank = BoolArg(args, 2, "blank", false);
  const std::vector<std::string> lines = PySplit(input.Str(), std::string("\n"), -1);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) out += "\n";
    const bool empty = PyStrip(lines[i], std::nullopt, true, true).empty();
    if ((i > 0 || first) && (blank || !empty)) out += pad;
    out += lines[i];
  }
  return Value(std::move(out));
}

}  // namespace

absl::StatusOr<int> CompareValues(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.float_value(), y = b.float_value();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    return a.int_value() < b.int_value() ? -1 : (a.int_value() > b.int_value() ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.str().compare(b.str());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list()) {
    const ValueList& x = a.list();
    const ValueList& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return CompareValues(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  if (a.is_undefined() || b.is_undefined()) return UndefinedError(a.is_undefined() ? a : b);
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input,
                                  const CallArgs& args) {
  if (name == "default" || name == "d") {
    const Value* dflt = args.Get(0, "default_value");
    const bool boolean = BoolArg(args, 1, "boolean", false);
    if (input.is_undefined() || (boolean && !input.Truthy())) return dflt ? *dflt : Value("");
    return input;
  }
  if (name == "tojson") return ToJson(input, args);
  if (name == "length" || name == "count") return Length(input);
  if (name == "safe") return input;
  if (name == "string") return Value(input.Str());
  if (name == "trim") {
    const Value* chars = Arg(args, 0, "chars");
    return Value(PyStrip(
        input.Str(), chars ? std::optional<std::string>(chars->Str()) : std::nullopt, true, true));
  }
  if (name == "upper") return Value(PyUpper(input.Str()));
  if (name == "lower") return Value(PyLower(input.Str()));
  if (name == "title") return Value(JinjaTitle(input.Str()));
  if (name == "capitalize") return Value(PyCapitalize(input.Str()));
  if (name == "escape" || name == "e" || name == "forceescape")
    return Value(HtmlEscape(input.Str()));
  if (name == "int") return ToInt(input, args);
  if (name == "float") return ToFloat(input, args);
  if (name == "abs") {
    if (input.is_float()) return Value(std::fabs(input.float_value()));
    if (input.is_number()) return Value(static_cast<int64_t>(std::llabs(input.int_value())));
    return Error(name, absl::StrCat("bad operand type for abs(): '", input.TypeName(), "'"));
  }
  if (name == "round") return Round(input, args);
  if (name == "replace") {
    const Value* from = args.Get(0, "old");
    const Value* to = args.Get(1, "new");
    if (from == nullptr || to == nullptr) return Error(name, "expected old and new strings");
    const Value* count = Arg(args, 2, "count");
    return Value(PyReplace(input.Str(), from->Str(), to->Str(), count ? count->int_value() : -1));
  }
  if (name == "join") {
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    const Value* sep = args.Get(0, "d");
    const Value* attribute = Arg(args, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items->size(); ++i) {
      if (i && sep) out += sep->Str();
      if (attribute) {
        absl::StatusOr<Value> v = GetPath((*items)[i], attribute->Str());
        if (!v.ok()) return v.status();
        out += v->Str();
      } else {
        out += (*items)[i].Str();
      }
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    if (items->empty())
      return Value::Undefined(absl::StrCat("No ", name, " item, sequence was empty."));
    return name == "first" ? items->front() : items->back();
  }
  if (name == "list") {
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    return Value(std::move(*items));
  }
  if (name == "items") {
    if (input.is_undefined()) return Value(ValueList());
    if (!input.is_dict()) return Error(name, "expected a mapping");
    ValueList out;
    for (const auto& [k, v] : input.dict().items())
      out.push_back(Value::Tuple(ValueList{Value(k), v}));
    return Value(std::move(out));
  }
  if (name == "dictsort") return DictSort(input, args);
  if (name == "selectattr") return SelectOrReject(name, input, args, true, true);
  if (name == "rejectattr") return SelectOrReject(name, input, args, true, false);
  if (name == "select") return SelectOrReject(name, input, args, false, true);
  if (name == "reject") return SelectOrReject(name, input, args, false, false);
  if (name == "map") return Map(input, args);
  if (name == "unique") return Unique(input, args);
  if (name == "sort") return Sort(input, args);
  if (name == "reverse") {
    if (input.is_string()) {
      std::u32string cps = ToCodePoints(input.str());
      std::reverse(cps.begin(), cps.end());
      return Value(FromCodePoints(cps));
    }
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    std::reverse(items->begin(), items->end());
    return Value(std::move(*items));
  }
  if (name == "sum") {
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    const Value* attribute = Arg(args, 0, "attribute");
    const Value* start = Arg(args, 1, "start");
    Value total = start ? *start : Value(static_cast<int64_t>(0));
    for (const Value& item : *items) {
      Value v = item;
      if (attribute) {
        absl::StatusOr<Value> a = GetPath(item, attribute->Str());
        if (!a.ok()) return a.status();
        v = std::move(*a);
      }
      if (!v.is_number() || !total.is_number()) return Error(name, "can only sum numbers");
      total = (v.is_float() || total.is_float()) ? Value(total.float_value() + v.float_value())
                                                 : Value(total.int_value() + v.int_value());
    }
    return total;
  }
  if (name == "indent") return Indent(input, args);
  if (name == "attr") {
    const Value* attribute = args.Get(0, "name");
    if (attribute == nullptr) return Error(name, "missing attribute name");
    return GetAttr(input, attribute->Str());
  }
  if (name == "wordcount") {
    return Value(static_cast<int64_t>(PySplit(input.Str(), std::nullopt, -1).size()));
  }
  return absl::NotFoundError(absl::StrCat("unknown filter '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args) {
  const Value* arg = args.Get(0, "value");
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.is_none();
  if (name == "string") return input.is_string();
  if (name == "number") return input.is_number();
  if (name == "integer") return input.is_int();
  if (name == "float") return input.is_float();
  if (name == "boolean") return input.is_bool();
  if (name == "true") return input.is_bool() && input.bool_value();
  if (name == "false") return input.is_bool() && !input.bool_value();
  if (name == "mapping") return input.is_dict();
  if (name == "iterable") {
    return input.is_list() || input.is_dict() || input.is_string() || input.is_undefined();
  }
  if (name == "sequence") {
    return input.is_list() || input.is_dict() || input.is_string() || input.is_undefined();
  }
  if (name == "callable") return input.is_function();
  if (name == "lower") return input.is_string() && PyLower(input.str()) == input.str();
  if (name == "upper") return input.is_string() && PyUpper(input.str()) == input.str();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!input.is_int() && !input.is_bool()) {
      return absl::InvalidArgumentError(absl::StrCat("test '", name, "' needs an integer"));
    }
    int64_t d = 2;
    if (name == "divisibleby") {
      if (arg == nullptr || !arg->is_int() || arg->int_value() == 0) {
        return absl::InvalidArgumentError("test 'divisibleby' needs a non-zero integer");
      }
      d = arg->int_value();
    }
    const int64_t r = input.int_value() % d;
    if (name == "odd") return r != 0;
    return r == 0;
  }
  if (name == "in") {
    if (arg == nullptr) return absl::InvalidArgumentError("test 'in' needs an argument");
    if (arg->is_string()) {
      if (!input.is_string()) return absl::InvalidArgumentError("'in <string>' requires a string");
      return arg->str().find(input.str()) != std::string::npos;
    }
    if (arg->is_dict()) return input.is_string() && arg->dict().Find(input.str()) != nullptr;
    absl::StatusOr<ValueList> items = Iterate(*arg);
    if (!items.ok()) return items.status();
    return std::any_of(items->begin(), items->end(),
                       [&](const Value& v) { return v.Equals(input); });
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") {
    return arg != nullptr && input.Equals(*arg);
  }
  if (name == "ne" || name == "!=") return arg == nullptr || !input.Equals(*arg);
  if (name == "lt" || name == "le" || name == "gt" || name == "ge" || name == "lessthan" ||
      name == "greaterthan") {
    if (arg == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("test '", name, "' needs an argument"));
    absl::StatusOr<int> c = CompareValues(input, *arg);
    if (!c.ok()) return c.status();
    if (name == "lt" || name == "lessthan") return *c < 0;
    if (name == "le") return *c <= 0;
    if (name == "gt" || name == "greaterthan") return *c > 0;
    return *c >= 0;
  }
  return absl::NotFoundError(absl::StrCat("unknown test '", name, "'"));
}

}  // namespace lychee::jinja
