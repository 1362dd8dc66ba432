// SPDX-License-Identifier: Apache-2.0
// Tree-walking evaluator for the Jinja subset (see evaluator.h).
#include "model/chat_template/evaluator.h"

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/chat_template/builtins.h"
#include "model/chat_template/filters.h"

namespace lychee::jinja {
namespace {

constexpr char kErrorPrefix[] = "chat template error at ";

using Frame = std::shared_ptr<ValueDict>;

class Evaluator {
 public:
  explicit Evaluator(const RenderLimits& limits) : limits_(limits) {}

  absl::StatusOr<std::string> Run(const Program& program, const Value& variables) {
    auto globals = std::make_shared<ValueDict>();
    AddGlobalFunctions(globals.get(), &namespaces_);
    if (variables.is_dict()) {
      for (const auto& [k, v] : variables.dict().items()) globals->Set(k, v);
    }
    frames_ = {globals, std::make_shared<ValueDict>()};
    std::string out;
    absl::Status s = Exec(program.body, &out);
    for (Value& ns : namespaces_) ns.dict().Clear();  // breaks any reference cycles
    if (!s.ok()) {
      if (s.code() == kRaisedCode) return absl::InvalidArgumentError(s.message());
      return s;
    }
    return out;
  }

 private:
  enum class Signal { kNone, kBreak, kContinue };

  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };

  template <typename T>
  absl::Status ErrorAt(const T& at, absl::StatusCode code, const std::string& msg) const {
    return absl::Status(code, absl::StrCat(kErrorPrefix, at.line, ":", at.column, ": ", msg));
  }
  template <typename T>
  absl::Status ErrorAt(const T& at, const std::string& msg) const {
    return ErrorAt(at, absl::StatusCode::kInvalidArgument, msg);
  }
  // Adds the position to errors from filters, methods and builtins, once.
  template <typename T>
  absl::Status Locate(const T& at, const absl::Status& s) const {
    if (s.code() == kRaisedCode || absl::StartsWith(s.message(), kErrorPrefix)) return s;
    return ErrorAt(at, s.code(), std::string(s.message()));
  }

  absl::Status Emit(const std::string& text, std::string* out) {
    produced_ += text.size();
    if (produced_ > limits_.max_output_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chat template output exceeds ", limits_.max_output_bytes, " bytes"));
    }
    out->append(text);
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      if (const Value* v = (*it)->Find(name)) return *v;
    }
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  // ---- statements ----

  absl::Status Exec(const NodeList& nodes, std::string* out) {
    DepthGuard guard(&depth_);
    if (depth_ > limits_.max_depth) {
      return absl::ResourceExhaustedError("chat template exceeds the maximum nesting depth");
    }
    for (const NodePtr& node : nodes) {
      absl::Status s = ExecNode(*node, out);
      if (!s.ok()) return s;
      if (signal_ != Signal::kNone) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status ExecNode(const Node& n, std::string* out) {
    switch (n.kind) {
      case Node::Kind::kText:
        return Emit(n.text, out);
      case Node::Kind::kOutput: {
        absl::StatusOr<Value> v = Eval(*n.expr);
        if (!v.ok()) return v.status();
        return Emit(v->Str(), out);
      }
      case Node::Kind::kIf:
        for (size_t i = 0; i < n.conditions.size(); ++i) {
          absl::StatusOr<Value> c = Eval(*n.conditions[i]);
          if (!c.ok()) return c.status();
          if (c->Truthy()) return Exec(n.bodies[i], out);
        }
        if (n.bodies.size() > n.conditions.size()) return Exec(n.bodies.back(), out);
        return absl::OkStatus();
      case Node::Kind::kFor:
        return ExecFor(n, out);
      case Node::Kind::kSet:
        return ExecSet(n);
      case Node::Kind::kSetBlock: {
        std::string body;
        if (absl::Status s = Exec(n.bodies[0], &body); !s.ok()) return s;
        frames_.back()->Set(n.targets[0], Value(std::move(body)));
        return absl::OkStatus();
      }
      case Node::Kind::kMacro:
        frames_.back()->Set(n.name, MakeMacro(n));
        return absl::OkStatus();
      case Node::Kind::kCallBlock:
        return ExecCallBlock(n, out);
      case Node::Kind::kFilterBlock: {
        std::string body;
        if (absl::Status s = Exec(n.bodies[0], &body); !s.ok()) return s;
        filter_inputs_.push_back(Value(std::move(body)));
        absl::StatusOr<Value> v = Eval(*n.expr);
        filter_inputs_.pop_back();
        if (!v.ok()) return v.status();
        return Emit(v->Str(), out);
      }
      case Node::Kind::kScope:
        return Exec(n.bodies[0], out);
      case Node::Kind::kBreak:
        signal_ = Signal::kBreak;
        return absl::OkStatus();
      case Node::Kind::kContinue:
        signal_ = Signal::kContinue;
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  // Values are built deeper only by storing them, so bounding stores bounds all recursion.
  template <typename T>
  absl::Status CheckDepth(const T& at, const Value& v) const {
    if (v.depth() <= limits_.max_value_depth) return absl::OkStatus();
    return ErrorAt(at, absl::StatusCode::kResourceExhausted,
                   absl::StrCat("value nested deeper than ", limits_.max_value_depth, " levels"));
  }

  absl::Status Assign(const Node& n, const std::vector<std::string>& targets, const Value& value,
                      ValueDict* frame) {
    if (absl::Status s = CheckDepth(n, value); !s.ok()) return s;
    if (targets.size() == 1) {
      frame->Set(targets[0], value);
      return absl::OkStatus();
    }
    absl::StatusOr<ValueList> items = Iterate(value);
    if (!items.ok()) return Locate(n, items.status());
    if (items->size() != targets.size()) {
      return ErrorAt(n, absl::StrCat(items->size() < targets.size() ? "not enough" : "too many",
                                     " values to unpack (expected ", targets.size(), ", got ",
                                     items->size(), ")"));
    }
    for (size_t i = 0; i < targets.size(); ++i) frame->Set(targets[i], (*items)[i]);
    return absl::OkStatus();
  }

  absl::Status ExecSet(const Node& n) {
    absl::StatusOr<Value> v = Eval(*n.expr);
    if (!v.ok()) return v.status();
    if (!n.attr.empty()) {
      const Value ns = Lookup(n.name);
      if (!ns.is_dict() || !ns.dict().is_namespace) {
        return ErrorAt(n, "cannot assign attribute on non-namespace object");
      }
      if (absl::Status s = CheckDepth(n, *v); !s.ok()) return s;
      ns.dict().Set(n.attr, std::move(*v));
      return absl::OkStatus();
    }
    return Assign(n, n.targets, *v, frames_.back().get());
  }

  absl::Status ExecFor(const Node& n, std::string* out) {
    absl::StatusOr<Value> iterable = Eval(*n.expr);
    if (!iterable.ok()) return iterable.status();
    absl::StatusOr<ValueList> all = Iterate(*iterable);
    if (!all.ok()) return Locate(*n.expr, all.status());
    ValueList items;
    if (n.condition) {
      // The inline `if` filters before loop.length and friends are computed, as in jinja2.
      for (Value& item : *all) {
        frames_.push_back(std::make_shared<ValueDict>());
        absl::Status s = Assign(n, n.targets, item, frames_.back().get());
        absl::StatusOr<Value> keep = s.ok() ? Eval(*n.condition) : absl::StatusOr<Value>(s);
        frames_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) items.push_back(std::move(item));
      }
    } else {
      items = std::move(*all);
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      if (++iterations_ > limits_.max_loop_iterations) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "chat template exceeds ", limits_.max_loop_iterations, " loop iterations"));
      }
      auto frame = std::make_shared<ValueDict>();
      Value loop = Value::NewDict();
      ValueDict& l = loop.dict();
      l.Set("index", Value(i + 1));
      l.Set("index0", Value(i));
      l.Set("revindex", Value(length - i));
      l.Set("revindex0", Value(length - i - 1));
      l.Set("first", Value(i == 0));
      l.Set("last", Value(i == length - 1));
      l.Set("length", Value(length));
      l.Set("depth", Value(static_cast<int64_t>(1)));
      l.Set("depth0", Value(static_cast<int64_t>(0)));
      if (i > 0) l.Set("previtem", items[i - 1]);
      if (i + 1 < length) l.Set("nextitem", items[i + 1]);
      l.Set("cycle", Value::NewFunction([i](const CallArgs& args) -> absl::StatusOr<Value> {
              if (args.positional.empty())
                return absl::InvalidArgumentError("no items for cycling given");
              return args.positional[i % args.positional.size()];
            }));
      frame->Set("loop", loop);
      if (absl::Status s = Assign(n, n.targets, items[i], frame.get()); !s.ok()) return s;
      frames_.push_back(frame);
      absl::Status s = Exec(n.bodies[0], out);
      frames_.pop_back();
      if (!s.ok()) return s;
      if (signal_ == Signal::kBreak) {
        signal_ = Signal::kNone;
        break;
      }
      signal_ = Signal::kNone;
    }
    if (length == 0 && n.bodies.size() > 1) return Exec(n.bodies[1], out);
    return absl::OkStatus();
  }

  // A macro runs in a fresh frame over the template's globals and top level.
  Value MakeMacro(const Node& n) {
    const Node* node = &n;
    return Value::NewFunction([this, node](const CallArgs& args) -> absl::StatusOr<Value> {
      auto frame = std::make_shared<ValueDict>();
      if (args.positional.size() > node->params.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "macro '", node->name, "' takes not more than ", node->params.size(), " argument(s)"));
      }
      std::vector<Frame> saved = frames_;
      frames_ = {saved[0], saved[1], frame};
      absl::Status status;
      for (size_t i = 0; i < node->params.size() && status.ok(); ++i) {
        const auto& [pname, def] = node->params[i];
        if (i < args.positional.size()) {
          frame->Set(pname, args.positional[i]);
          continue;
        }
        const Value* kw = args.Get(SIZE_MAX, pname);
        if (kw != nullptr) {
          frame->Set(pname, *kw);
        } else if (def) {
          absl::StatusOr<Value> v = Eval(*def);
          if (v.ok()) {
            frame->Set(pname, std::move(*v));
          } else {
            status = v.status();
          }
        } else {
          frame->Set(pname, Value::Undefined(absl::StrCat("'", pname, "' is undefined")));
        }
      }
      for (const auto& [k, v] : args.keyword) {
        if (!status.ok()) break;
        if (k == "caller") {
          frame->Set("caller", v);
          continue;
        }
        bool known = false;
        for (const auto& p : node->params) known = known || p.first == k;
        if (!known) {
          status = absl::InvalidArgumentError(
              absl::StrCat("macro '", node->name, "' takes no keyword argument '", k, "'"));
        }
      }
      std::string body;
      if (status.ok()) status = Exec(node->bodies[0], &body);
      frames_ = std::move(saved);
      signal_ = Signal::kNone;
      if (!status.ok()) return status;
      return Value(std::move(body));
    });
  }

  absl::Status ExecCallBlock(const Node& n, std::string* out) {
    const Node* node = &n;
    std::vector<Frame> scope = frames_;
    Value caller =
        Value::NewFunction([this, node, scope](const CallArgs& args) -> absl::StatusOr<Value> {
          auto frame = std::make_shared<ValueDict>();
          for (size_t i = 0; i < node->params.size(); ++i) {
            const Value* v = args.Get(i, node->params[i].first);
            frame->Set(node->params[i].first, v ? *v : Value::Undefined(node->params[i].first));
          }
          std::vector<Frame> saved = frames_;
          frames_ = scope;
          frames_.push_back(frame);
          std::string body;
          absl::Status s = Exec(node->bodies[0], &body);
          frames_ = std::move(saved);
          if (!s.ok()) return s;
          return Value(std::move(body));
        });
    const Expr& call = *n.expr;
    absl::StatusOr<Value> callee = Eval(*call.args[0]);
    if (!callee.ok()) return callee.status();
    absl::StatusOr<CallArgs> args = EvalArgs(call, 1);
    if (!args.ok()) return args.status();
    args->keyword.emplace_back("caller", caller);
    absl::StatusOr<Value> v = Invoke(call, *callee, *args);
    if (!v.ok()) return v.status();
    return Emit(v->Str(), out);
  }

  // ---- expressions ----

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.args.size(); ++i) {
      absl::StatusOr<Value> v = Eval(*e.args[i]);
      if (!v.ok()) return v.status();
      args.positional.push_back(std::move(*v));
    }
    for (const auto& [k, ex] : e.kwargs) {
      absl::StatusOr<Value> v = Eval(*ex);
      if (!v.ok()) return v.status();
      args.keyword.emplace_back(k, std::move(*v));
    }
    return args;
  }

  absl::StatusOr<Value> Invoke(const Expr& at, const Value& callee, const CallArgs& args) {
    if (callee.is_undefined()) return Locate(at, UndefinedError(callee));
    if (!callee.is_function()) {
      return ErrorAt(at, absl::StrCat("'", callee.TypeName(), "' object is not callable"));
    }
    DepthGuard guard(&depth_);
    if (depth_ > limits_.max_depth) {
      return ErrorAt(at, absl::StatusCode::kResourceExhausted, "maximum recursion depth exceeded");
    }
    absl::StatusOr<Value> v = callee.function()(args);
    if (!v.ok()) return Locate(at, v.status());
    return v;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    DepthGuard guard(&depth_);
    if (depth_ > limits_.max_depth) {
      return ErrorAt(e, absl::StatusCode::kResourceExhausted, "expression nested too deeply");
    }
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList items;
        for (const ExprPtr& a : e.args) {
          absl::StatusOr<Value> v = Eval(*a);
          if (!v.ok()) return v;
          items.push_back(std::move(*v));
        }
        Value list =
            e.kind == Expr::Kind::kTuple ? Value::Tuple(std::move(items)) : Value(std::move(items));
        if (absl::Status s = CheckDepth(e, list); !s.ok()) return s;
        return list;
      }
      case Expr::Kind::kDict: {
        Value d = Value::NewDict();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          absl::StatusOr<Value> k = Eval(*e.args[i]);
          if (!k.ok()) return k;
          absl::StatusOr<Value> v = Eval(*e.args[i + 1]);
          if (!v.ok()) return v;
          d.dict().Set(k->Str(), std::move(*v));
        }
        if (absl::Status s = CheckDepth(e, d); !s.ok()) return s;
        return d;
      }
      case Expr::Kind::kAttr: {
        absl::StatusOr<Value> obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        absl::StatusOr<Value> v = GetAttr(*obj, e.name);
        if (!v.ok()) return Locate(e, v.status());
        return v;
      }
      case Expr::Kind::kItem: {
        absl::StatusOr<Value> obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        absl::StatusOr<Value> key = Eval(*e.args[1]);
        if (!key.ok()) return key;
        absl::StatusOr<Value> v = GetItem(*obj, *key);
        if (!v.ok()) return Locate(e, v.status());
        return v;
      }
      case Expr::Kind::kSlice: {
        Value parts[4];
        for (int i = 0; i < 4; ++i) {
          if (!e.args[i]) continue;
          absl::StatusOr<Value> v = Eval(*e.args[i]);
          if (!v.ok()) return v;
          parts[i] = std::move(*v);
        }
        absl::StatusOr<Value> v = GetSlice(parts[0], parts[1], parts[2], parts[3]);
        if (!v.ok()) return Locate(e, v.status());
        return v;
      }
      case Expr::Kind::kCall: {
        absl::StatusOr<Value> callee = Eval(*e.args[0]);
        if (!callee.ok()) return callee;
        absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        return Invoke(e, *callee, *args);
      }
      case Expr::Kind::kFilter:
        return EvalFilter(e);
      case Expr::Kind::kTest: {
        absl::StatusOr<Value> input = Eval(*e.args[0]);
        if (!input.ok()) return input;
        absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        absl::StatusOr<bool> r = ApplyTest(e.name, *input, *args);
        if (!r.ok()) return Locate(e, r.status());
        return Value(*r != e.negated);
      }
      case Expr::Kind::kUnary:
        return EvalUnary(e);
      case Expr::Kind::kBinary:
        return EvalBinary(e);
      case Expr::Kind::kAnd:
      case Expr::Kind::kOr: {
        absl::StatusOr<Value> left = Eval(*e.args[0]);
        if (!left.ok()) return left;
        // Python returns the deciding operand, not a bool.
        if (left->Truthy() == (e.kind == Expr::Kind::kOr)) return left;
        return Eval(*e.args[1]);
      }
      case Expr::Kind::kCondition: {
        absl::StatusOr<Value> cond = Eval(*e.args[1]);
        if (!cond.ok()) return cond;
        if (cond->Truthy()) return Eval(*e.args[0]);
        if (e.args[2]) return Eval(*e.args[2]);
        return Value::Undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined.");
      }
    }
    return Value();
  }

  absl::StatusOr<Value> EvalFilter(const Expr& e) {
    Value input;
    if (e.args[0]) {
      absl::StatusOr<Value> v = Eval(*e.args[0]);
      if (!v.ok()) return v;
      input = std::move(*v);
    } else if (!filter_inputs_.empty()) {
      input = filter_inputs_.back();
    }
    absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    absl::StatusOr<Value> v = ApplyFilter(e.name, input, *args);
    if (!v.ok()) return Locate(e, v.status());
    return v;
  }

  absl::StatusOr<Value> EvalUnary(const Expr& e) {
    absl::StatusOr<Value> v = Eval(*e.args[0]);
    if (!v.ok()) return v;
    if (e.name == "not") return Value(!v->Truthy());
    if (v->is_undefined()) return Locate(e, UndefinedError(*v));
    if (!v->is_number()) {
      return ErrorAt(
          e, absl::StrCat("bad operand type for unary ", e.name, ": '", v->TypeName(), "'"));
    }
    if (e.name == "+") return v->is_float() ? *v : Value(v->int_value());
    if (v->is_float()) return Value(-v->float_value());
    return Value(-v->int_value());
  }

  absl::StatusOr<Value> EvalBinary(const Expr& e) {
    absl::StatusOr<Value> lv = Eval(*e.args[0]);
    if (!lv.ok()) return lv;
    absl::StatusOr<Value> rv = Eval(*e.args[1]);
    if (!rv.ok()) return rv;
    const Value& a = *lv;
    const Value& b = *rv;
    const std::string& op = e.name;
    if (op == "==") return Value(a.Equals(b));
    if (op == "!=") return Value(!a.Equals(b));
    if (op == "~") return Value(a.Str() + b.Str());
    if (op == "in" || op == "not in") {
      absl::StatusOr<bool> r = Contains(e, b, a);
      if (!r.ok()) return r.status();
      return Value(*r == (op == "in"));
    }
    if (op == "<" || op == "<=" || op == ">" || op == ">=") {
      absl::StatusOr<int> c = CompareValues(a, b);
      if (!c.ok()) return Locate(e, c.status());
      if (op == "<") return Value(*c < 0);
      if (op == "<=") return Value(*c <= 0);
      if (op == ">") return Value(*c > 0);
      return Value(*c >= 0);
    }
    if (a.is_undefined()) return Locate(e, UndefinedError(a));
    if (b.is_undefined()) return Locate(e, UndefinedError(b));
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_list() && b.is_list()) {
        ValueList out = a.list();
        out.insert(out.end(), b.list().begin(), b.list().end());
        return Value(std::move(out));
      }
    }
    if (op == "*" && (a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) {
      return Repeat(e, a, b.int_value());
    }
    if (op == "*" && (b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())) {
      return Repeat(e, b, a.int_value());
    }
    if (!a.is_number() || !b.is_number()) {
      return ErrorAt(e, absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(),
                                     "' and '", b.TypeName(), "'"));
    }
    return Arithmetic(e, a, b);
  }

  absl::StatusOr<Value> Repeat(const Expr& e, const Value& seq, int64_t n) {
    if (n <= 0) return seq.is_string() ? Value("") : Value(ValueList());
    const size_t unit = seq.is_string() ? seq.str().size() : seq.list().size();
    if (unit * static_cast<uint64_t>(n) > limits_.max_output_bytes) {
      return ErrorAt(e, absl::StatusCode::kResourceExhausted, "sequence repetition too large");
    }
    if (seq.is_string()) {
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += seq.str();
      return Value(std::move(out));
    }
    ValueList out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
    return Value(std::move(out));
  }

  absl::StatusOr<Value> Arithmetic(const Expr& e, const Value& a, const Value& b) {
    const std::string& op = e.name;
    if (op == "/") {
      if (b.float_value() == 0) return ErrorAt(e, "division by zero");
      return Value(a.float_value() / b.float_value());
    }
    const bool floating = a.is_float() || b.is_float();
    if (floating) {
      const double x = a.float_value(), y = b.float_value();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (op == "**") return Value(std::pow(x, y));
      if (y == 0) return ErrorAt(e, "float division by zero");
      if (op == "//") return Value(std::floor(x / y));
      if (op == "%") {
        double r = std::fmod(x, y);
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value(r);
      }
    } else {
      const int64_t x = a.int_value(), y = b.int_value();
      int64_t r = 0;
      if (op == "+" || op == "-" || op == "*") {
        const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                              : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                          : __builtin_mul_overflow(x, y, &r);
        if (overflow) return ErrorAt(e, "integer overflow");
        return Value(r);
      }
      if (op == "**") {
        if (y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
        r = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(r, x, &r)) return ErrorAt(e, "integer overflow");
        }
        return Value(r);
      }
      if (y == 0) return ErrorAt(e, "integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) return ErrorAt(e, "integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward negative infinity
        --q;
        m += y;
      }
      if (op == "//") return Value(q);
      if (op == "%") return Value(m);
    }
    return ErrorAt(e, absl::StrCat("unknown operator '", op, "'"));
  }

  absl::StatusOr<bool> Contains(const Expr& e, const Value& container, const Value& item) {
    switch (container.kind()) {
      case Value::Kind::kString:
        if (!item.is_string()) {
          return ErrorAt(e, absl::StrCat("'in <string>' requires string as left operand, not ",
                                         item.TypeName()));
        }
        return container.str().find(item.str()) != std::string::npos;
      case Value::Kind::kList:
        for (const Value& v : container.list()) {
          if (v.Equals(item)) return true;
        }
        return false;
      case Value::Kind::kDict:
        return item.is_string() && container.dict().Find(item.str()) != nullptr;
      case Value::Kind::kUndefined:
        return false;
      default:
        return ErrorAt(
            e, absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
    }
  }

  const RenderLimits& limits_;
  std::vector<Frame> frames_;
  std::vector<Value> namespaces_;
  std::vector<Value> filter_inputs_;
  Signal signal_ = Signal::kNone;
  int depth_ = 0;
  size_t produced_ = 0;
  int64_t iterations_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderProgram(const Program& program, const Value& variables,
                                          const RenderLimits& limits) {
  Evaluator evaluator(limits);
  return evaluator.Run(program, variables);
}

}  // namespace lychee::jinja
