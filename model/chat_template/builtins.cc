// SPDX-License-Identifier: Apache-2.0
// Attribute/item access, Python methods and global functions (see builtins.h).
#include "model/chat_template/builtins.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <optional>

#include "absl/strings/str_cat.h"
#include "model/chat_template/py_string.h"
#include "model/chat_template/utf8.h"

namespace lychee::jinja {
namespace {

// A range() this large is a runaway template, not a chat prompt.
constexpr int64_t kMaxRangeLength = 1'000'000;

absl::Status TypeError(const std::string& msg) { return absl::InvalidArgumentError(msg); }

std::string ObjectName(const Value& v) { return absl::StrCat(v.TypeName(), " object"); }

Value MissingAttribute(const Value& obj, const std::string& name) {
  return Value::Undefined(absl::StrCat("'", ObjectName(obj), "' has no attribute '", name, "'"));
}

absl::StatusOr<std::optional<std::string>> OptionalStringArg(const CallArgs& args, size_t index,
                                                             const char* name) {
  const Value* v = args.Get(index, name);
  if (v == nullptr || v->is_none() || v->is_undefined()) return std::optional<std::string>();
  if (!v->is_string()) {
    return TypeError(absl::StrCat("argument '", name, "' must be str, not ", v->TypeName()));
  }
  return std::optional<std::string>(v->str());
}

absl::StatusOr<int64_t> IntArg(const CallArgs& args, size_t index, const char* name,
                               int64_t fallback) {
  const Value* v = args.Get(index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (!v->is_int() && !v->is_bool()) {
    return TypeError(absl::StrCat("argument '", name, "' must be int, not ", v->TypeName()));
  }
  return v->int_value();
}

// Normalizes a Python index; returns false when out of range.
bool NormalizeIndex(int64_t* i, int64_t size) {
  if (*i < 0) *i += size;
  return *i >= 0 && *i < size;
}

bool MatchAffix(const std::string& s, const Value& affix, bool prefix, absl::Status* error) {
  auto match = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0
                  : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_string()) return match(affix.str());
  if (affix.is_list()) {
    for (const Value& a : affix.list()) {
      if (a.is_string() && match(a.str())) return true;
    }
    return false;
  }
  *error =
      TypeError(absl::StrCat(prefix ? "startswith" : "endswith",
                             " first arg must be str or a tuple of str, not ", affix.TypeName()));
  return false;
}

absl::StatusOr<Value> CallStringMethod(const std::string& s, const std::string& name,
                                       const CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    absl::StatusOr<std::optional<std::string>> chars = OptionalStringArg(args, 0, "chars");
    if (!chars.ok()) return chars.status();
    return Value(PyStrip(s, *chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split") {
    absl::StatusOr<std::optional<std::string>> sep = OptionalStringArg(args, 0, "sep");
    if (!sep.ok()) return sep.status();
    if (*sep && (*sep)->empty()) return absl::InvalidArgumentError("split: empty separator");
    absl::StatusOr<int64_t> maxsplit = IntArg(args, 1, "maxsplit", -1);
    if (!maxsplit.ok()) return maxsplit.status();
    ValueList out;
    for (std::string& part : PySplit(s, *sep, *maxsplit)) out.emplace_back(std::move(part));
    return Value(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* affix = args.Get(0, "prefix");
    if (affix == nullptr) return TypeError(absl::StrCat(name, "() takes at least 1 argument"));
    absl::Status error;
    const bool r = MatchAffix(s, *affix, name == "startswith", &error);
    if (!error.ok()) return error;
    return Value(r);
  }
  if (name == "upper") return Value(PyUpper(s));
  if (name == "lower") return Value(PyLower(s));
  if (name == "title") return Value(PyTitle(s));
  if (name == "capitalize") return Value(PyCapitalize(s));
  if (name == "replace") {
    const Value* from = args.Get(0, "old");
    const Value* to = args.Get(1, "new");
    if (from == nullptr || to == nullptr || !from->is_string() || !to->is_string()) {
      return TypeError("replace() takes two str arguments");
    }
    absl::StatusOr<int64_t> count = IntArg(args, 2, "count", -1);
    if (!count.ok()) return count.status();
    return Value(PyReplace(s, from->str(), to->str(), *count));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    const Value* sub = args.Get(0, "sub");
    if (sub == nullptr || !sub->is_string()) return TypeError(name + "() takes a str argument");
    if (name == "count") {
      if (sub->str().empty()) return Value(static_cast<int64_t>(PyLength(s) + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub->str()); p != std::string::npos;
           p = s.find(sub->str(), p + sub->str().size())) {
        ++n;
      }
      return Value(n);
    }
    const size_t p = name == "find" ? s.find(sub->str()) : s.rfind(sub->str());
    if (p == std::string::npos) return Value(static_cast<int64_t>(-1));
    return Value(static_cast<int64_t>(PyLength(s.substr(0, p))));
  }
  if (name == "join") {
    const Value* items = args.Get(0, "iterable");
    if (items == nullptr) return TypeError("join() takes exactly one argument");
    absl::StatusOr<ValueList> list = Iterate(*items);
    if (!list.ok()) return list.status();
    std::string out;
    for (size_t i = 0; i < list->size(); ++i) {
      if (!(*list)[i].is_string()) {
        return TypeError(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                      (*list)[i].TypeName(), " found"));
      }
      if (i) out += s;
      out += (*list)[i].str();
    }
    return Value(std::move(out));
  }
  auto all_of = [&](auto pred) {
    if (s.empty()) return Value(false);
    for (unsigned char c : s) {
      if (!pred(c)) return Value(false);
    }
    return Value(true);
  };
  if (name == "isdigit") return all_of([](unsigned char c) { return std::isdigit(c) != 0; });
  if (name == "isspace") return all_of([](unsigned char c) { return std::isspace(c) != 0; });
  if (name == "isalpha") return all_of([](unsigned char c) { return std::isalpha(c) != 0; });
  if (name == "isalnum") return all_of([](unsigned char c) { return std::isalnum(c) != 0; });
  return absl::NotFoundError(name);
}

bool IsStringMethod(const std::string& name) {
  static const char* const kMethods[] = {"strip",    "lstrip",  "rstrip",  "split",  "startswith",
                                         "endswith", "upper",   "lower",   "title",  "capitalize",
                                         "replace",  "find",    "rfind",   "count",  "join",
                                         "isdigit",  "isspace", "isalpha", "isalnum"};
  for (const char* m : kMethods) {
    if (name == m) return true;
  }
  return false;
}

Value PairList(const ValueDict& d) {
  ValueList out;
  for (const auto& [k, v] : d.items()) out.push_back(Value::Tuple(ValueList{Value(k), v}));
  return Value(std::move(out));
}

absl::StatusOr<Value> CallDictMethod(const Value& obj, const std::string& name,
                                     const CallArgs& args) {
  const ValueDict& d = obj.dict();
  if (name == "items") return PairList(d);
  if (name == "keys" || name == "values") {
    ValueList out;
    for (const auto& [k, v] : d.items()) out.push_back(name == "keys" ? Value(k) : v);
    return Value(std::move(out));
  }
  if (name == "get") {
    const Value* key = args.Get(0, "key");
    if (key == nullptr) return TypeError("get expected at least 1 argument");
    const Value* found = key->is_string() ? d.Find(key->str()) : nullptr;
    if (found != nullptr) return *found;
    const Value* fallback = args.Get(1, "default");
    return fallback ? *fallback : Value::None();
  }
  return absl::NotFoundError(name);
}

Value BoundMethod(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    const std::string s = obj.str();
    return Value::NewFunction(
        [s, name](const CallArgs& args) { return CallStringMethod(s, name, args); });
  }
  return Value::NewFunction(
      [obj, name](const CallArgs& args) { return CallDictMethod(obj, name, args); });
}

absl::StatusOr<Value> Range(const CallArgs& args) {
  if (!args.keyword.empty()) return TypeError("range() takes no keyword arguments");
  int64_t v[3] = {0, 0, 1};
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) return TypeError("range expected 1 to 3 arguments");
  for (size_t i = 0; i < n; ++i) {
    const Value& a = args.positional[i];
    if (!a.is_int() && !a.is_bool()) {
      return TypeError(
          absl::StrCat("'", a.TypeName(), "' object cannot be interpreted as an integer"));
    }
  }
  if (n == 1) {
    v[1] = args.positional[0].int_value();
  } else {
    v[0] = args.positional[0].int_value();
    v[1] = args.positional[1].int_value();
    if (n == 3) v[2] = args.positional[2].int_value();
  }
  if (v[2] == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  ValueList out;
  for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
    if (static_cast<int64_t>(out.size()) >= kMaxRangeLength) {
      return absl::ResourceExhaustedError(
          absl::StrCat("range() longer than ", kMaxRangeLength, " items"));
    }
    out.emplace_back(i);
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> MakeDict(const CallArgs& args, bool is_namespace) {
  Value d = Value::NewDict();
  d.dict().is_namespace = is_namespace;
  for (const Value& p : args.positional) {
    if (!p.is_dict()) return TypeError("expected a mapping as positional argument");
    for (const auto& [k, v] : p.dict().items()) d.dict().Set(k, v);
  }
  for (const auto& [k, v] : args.keyword) d.dict().Set(k, v);
  return d;
}

absl::StatusOr<Value> StrftimeNow(const CallArgs& args) {
  const Value* fmt = args.Get(0, "format");
  if (fmt == nullptr || !fmt->is_string()) return TypeError("strftime_now() takes a format string");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[512];
  const size_t n = std::strftime(buf, sizeof(buf), fmt->str().c_str(), &tm);
  return Value(std::string(buf, n));
}

}  // namespace

absl::Status UndefinedError(const Value& undefined) {
  return absl::InvalidArgumentError(undefined.str().empty() ? "value is undefined"
                                                            : undefined.str());
}

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return UndefinedError(obj);
    case Value::Kind::kDict: {
      const ValueDict& d = obj.dict();
      if (!d.is_namespace &&
          (name == "items" || name == "keys" || name == "values" || name == "get")) {
        return BoundMethod(obj, name);
      }
      if (const Value* v = d.Find(name)) return *v;
      if (d.is_namespace) {
        return Value::Undefined(absl::StrCat("'Namespace' object has no attribute '", name, "'"));
      }
      return MissingAttribute(obj, name);
    }
    case Value::Kind::kString:
      if (IsStringMethod(name)) return BoundMethod(obj, name);
      return MissingAttribute(obj, name);
    case Value::Kind::kList:
      if (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
          name == "remove" || name == "clear" || name == "sort" || name == "reverse") {
        // ImmutableSandboxedEnvironment refuses these, so transformers fails on them too.
        return absl::InvalidArgumentError(
            absl::StrCat("access to attribute '", name, "' of 'list' object is unsafe."));
      }
      return MissingAttribute(obj, name);
    default:
      return MissingAttribute(obj, name);
  }
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return UndefinedError(obj);
    case Value::Kind::kDict: {
      if (key.is_string()) {
        if (const Value* v = obj.dict().Find(key.str())) return *v;
        return MissingAttribute(obj, key.str());
      }
      if (const Value* v = obj.dict().Find(key.Str())) return *v;
      return Value::Undefined(
          absl::StrCat("'", ObjectName(obj), "' has no attribute '", key.Str(), "'"));
    }
    case Value::Kind::kList: {
      if (key.is_string()) return GetAttr(obj, key.str());
      if (!key.is_int() && !key.is_bool()) {
        return TypeError(
            absl::StrCat("list indices must be integers or slices, not ", key.TypeName()));
      }
      int64_t i = key.int_value();
      if (!NormalizeIndex(&i, static_cast<int64_t>(obj.list().size()))) {
        return Value::Undefined(absl::StrCat("list object has no element ", key.int_value()));
      }
      return obj.list()[i];
    }
    case Value::Kind::kString: {
      if (key.is_string()) return GetAttr(obj, key.str());
      if (!key.is_int() && !key.is_bool()) {
        return TypeError(absl::StrCat("string indices must be integers, not ", key.TypeName()));
      }
      const std::u32string cps = ToCodePoints(obj.str());
      int64_t i = key.int_value();
      if (!NormalizeIndex(&i, static_cast<int64_t>(cps.size()))) {
        return Value::Undefined(absl::StrCat("str object has no element ", key.int_value()));
      }
      return Value(FromCodePoints(std::u32string_view(cps).substr(i, 1)));
    }
    default:
      return Value::Undefined(
          absl::StrCat("'", ObjectName(obj), "' has no attribute '", key.Str(), "'"));
  }
}

absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  auto bound = [](const Value& v, const char* what) -> absl::StatusOr<std::optional<int64_t>> {
    if (v.is_undefined() || v.is_none()) return std::optional<int64_t>();
    if (!v.is_int() && !v.is_bool()) {
      return TypeError(absl::StrCat("slice ", what, " must be an integer or None"));
    }
    return std::optional<int64_t>(v.int_value());
  };
  absl::StatusOr<std::optional<int64_t>> b = bound(start, "start");
  absl::StatusOr<std::optional<int64_t>> e = bound(stop, "stop");
  absl::StatusOr<std::optional<int64_t>> s = bound(step, "step");
  if (!b.ok()) return b.status();
  if (!e.ok()) return e.status();
  if (!s.ok()) return s.status();
  const int64_t st = s->value_or(1);
  if (st == 0) return absl::InvalidArgumentError("slice step cannot be zero");

  std::u32string cps;
  int64_t len = 0;
  if (obj.is_list()) {
    len = static_cast<int64_t>(obj.list().size());
  } else if (obj.is_string()) {
    cps = ToCodePoints(obj.str());
    len = static_cast<int64_t>(cps.size());
  } else {
    return TypeError(absl::StrCat("'", obj.TypeName(), "' object is not subscriptable"));
  }
  // Python's slice.indices().
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += len;
    if (st > 0) return std::clamp<int64_t>(x, 0, len);
    return std::clamp<int64_t>(x, -1, len - 1);
  };
  const int64_t lo = clamp(*b, st > 0 ? 0 : len - 1);
  const int64_t hi = clamp(*e, st > 0 ? len : -1);
  std::vector<int64_t> indices;
  for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) indices.push_back(i);
  if (obj.is_list()) {
    ValueList out;
    for (int64_t i : indices) out.push_back(obj.list()[i]);
    return Value(std::move(out));
  }
  std::u32string out;
  for (int64_t i : indices) out.push_back(cps[i]);
  return Value(FromCodePoints(out));
}

absl::StatusOr<ValueList> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return ValueList();
    case Value::Kind::kList:
      return v.list();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& [k, unused] : v.dict().items()) keys.emplace_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      ValueList chars;
      for (char32_t c : ToCodePoints(v.str())) {
        std::string s;
        AppendUtf8(c, &s);
        chars.emplace_back(std::move(s));
      }
      return chars;
    }
    default:
      return TypeError(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

void AddGlobalFunctions(ValueDict* globals, std::vector<Value>* namespaces) {
  globals->Set("range", Value::NewFunction(Range));
  globals->Set("namespace", Value::NewFunction([namespaces](const CallArgs& args) {
                 absl::StatusOr<Value> ns = MakeDict(args, true);
                 if (ns.ok()) namespaces->push_back(*ns);
                 return ns;
               }));
  globals->Set("dict",
               Value::NewFunction([](const CallArgs& args) { return MakeDict(args, false); }));
  globals->Set("raise_exception",
               Value::NewFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
                 const Value* msg = args.Get(0, "message");
                 return absl::Status(kRaisedCode, msg ? msg->Str() : std::string());
               }));
  globals->Set("strftime_now", Value::NewFunction(StrftimeNow));
}

}  // namespace lychee::jinja
