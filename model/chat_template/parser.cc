// SPDX-License-Identifier: Apache-2.0
// Recursive-descent Jinja parser (see parser.h).
#include "model/chat_template/parser.h"

#include <algorithm>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/chat_template/lexer.h"

namespace lychee::jinja {
namespace {

using TK = Token::Kind;

// Nesting bound so hostile templates cannot overflow the parser's stack.
constexpr int kMaxParseDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<Program> Run() {
    Program program;
    std::string tag;
    absl::Status s = ParseBody({}, &program.body, &tag);
    if (!s.ok()) return s;
    return program;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).kind == TK::kOperator && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).kind == TK::kName && Peek(ahead).text == name;
  }

  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case TK::kText:
        return "template text";
      case TK::kVarBegin:
        return "'{{'";
      case TK::kVarEnd:
        return "'}}'";
      case TK::kBlockBegin:
        return "'{%'";
      case TK::kBlockEnd:
        return "'%}'";
      case TK::kString:
        return "string literal";
      case TK::kEnd:
        return "end of template";
      default:
        return "'" + t.text + "'";
    }
  }

  absl::Status ErrorAt(const Token& t, const std::string& msg) const {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error at ", t.line, ":", t.column, ": ", msg));
  }
  absl::Status Unexpected(const std::string& expected) const {
    return ErrorAt(Peek(), absl::StrCat("expected ", expected, ", got ", Describe(Peek())));
  }
  absl::Status ExpectOp(const char* op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectKind(TK kind, const char* what) {
    if (Peek().kind != kind) return Unexpected(what);
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() { return ExpectKind(TK::kBlockEnd, "'%}'"); }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != TK::kName) return Unexpected("a name");
    return Next().text;
  }

  ExprPtr NewExpr(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  NodePtr NewNode(Node::Kind kind, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = at.line;
    n->column = at.column;
    return n;
  }

  // Parses nodes until `{% <one of end_tags>`; consumes that tag's name and stores it in *found.
  absl::Status ParseBody(std::initializer_list<const char*> end_tags, NodeList* body,
                         std::string* found) {
    if (++depth_ > kMaxParseDepth) return ErrorAt(Peek(), "template nested too deeply");
    while (true) {
      const Token& t = Peek();
      if (t.kind == TK::kEnd) {
        --depth_;
        if (end_tags.size() == 0) return absl::OkStatus();
        return ErrorAt(t, absl::StrCat("unexpected end of template, expected '{% ",
                                       *(end_tags.end() - 1), " %}'"));
      }
      if (t.kind == TK::kText) {
        NodePtr n = NewNode(Node::Kind::kText, t);
        n->text = Next().text;
        body->push_back(std::move(n));
        continue;
      }
      if (t.kind == TK::kVarBegin) {
        NodePtr n = NewNode(Node::Kind::kOutput, Next());
        absl::StatusOr<ExprPtr> e = ParseTuple(true);
        if (!e.ok()) return e.status();
        n->expr = std::move(*e);
        if (absl::Status s = ExpectKind(TK::kVarEnd, "'}}'"); !s.ok()) return s;
        body->push_back(std::move(n));
        continue;
      }
      if (t.kind != TK::kBlockBegin) return Unexpected("template text or a tag");
      const Token& name = Peek(1);
      if (name.kind != TK::kName) {
        Next();
        return Unexpected("a tag name");
      }
      for (const char* end : end_tags) {
        if (name.text == end) {
          Next();
          *found = Next().text;
          --depth_;
          return absl::OkStatus();
        }
      }
      Next();  // {%
      absl::Status s = ParseStatement(body);
      if (!s.ok()) return s;
    }
  }

  absl::Status ParseStatement(NodeList* body) {
    const Token& t = Peek();
    const std::string& tag = t.text;
    if (tag == "if") return ParseIf(body);
    if (tag == "for") return ParseFor(body);
    if (tag == "set") return ParseSet(body);
    if (tag == "macro") return ParseMacro(body);
    if (tag == "call") return ParseCallBlock(body);
    if (tag == "filter") return ParseFilterBlock(body);
    if (tag == "generation") return ParseSimpleBlock(body, "endgeneration");
    if (tag == "break" || tag == "continue") {
      NodePtr n = NewNode(tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, Next());
      body->push_back(std::move(n));
      return ExpectBlockEnd();
    }
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else") {
      return ErrorAt(t, absl::StrCat("unexpected '", tag, "'"));
    }
    return ErrorAt(t, absl::StrCat("unknown tag '", tag, "'"));
  }

  absl::Status ParseIf(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kIf, Next());
    std::string tag = "if";
    while (tag == "if" || tag == "elif") {
      absl::StatusOr<ExprPtr> cond = ParseTuple(true);
      if (!cond.ok()) return cond.status();
      n->conditions.push_back(std::move(*cond));
      if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
      n->bodies.emplace_back();
      if (absl::Status s = ParseBody({"elif", "else", "endif"}, &n->bodies.back(), &tag); !s.ok()) {
        return s;
      }
    }
    if (tag == "else") {
      if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
      n->bodies.emplace_back();
      if (absl::Status s = ParseBody({"endif"}, &n->bodies.back(), &tag); !s.ok()) return s;
    }
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseTargets(std::vector<std::string>* targets) {
    const bool paren = IsOp("(");
    if (paren) Next();
    do {
      absl::StatusOr<std::string> name = ExpectName();
      if (!name.ok()) return name.status();
      targets->push_back(*name);
      if (!IsOp(",")) break;
      Next();
    } while (Peek().kind == TK::kName);
    if (paren) return ExpectOp(")");
    return absl::OkStatus();
  }

  absl::Status ParseFor(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kFor, Next());
    if (absl::Status s = ParseTargets(&n->targets); !s.ok()) return s;
    if (!IsName("in")) return Unexpected("'in'");
    Next();
    absl::StatusOr<ExprPtr> iter = ParseTuple(false);
    if (!iter.ok()) return iter.status();
    n->expr = std::move(*iter);
    if (IsName("if")) {
      Next();
      absl::StatusOr<ExprPtr> cond = ParseExpr(true);
      if (!cond.ok()) return cond.status();
      n->condition = std::move(*cond);
    }
    if (IsName("recursive")) return ErrorAt(Peek(), "recursive for loops are not supported");
    if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
    std::string tag;
    n->bodies.emplace_back();
    if (absl::Status s = ParseBody({"else", "endfor"}, &n->bodies.back(), &tag); !s.ok()) return s;
    if (tag == "else") {
      if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
      n->bodies.emplace_back();
      if (absl::Status s = ParseBody({"endfor"}, &n->bodies.back(), &tag); !s.ok()) return s;
    }
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseSet(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kSet, Next());
    if (Peek().kind == TK::kName && IsOp(".", 1)) {
      n->name = Next().text;
      Next();
      absl::StatusOr<std::string> attr = ExpectName();
      if (!attr.ok()) return attr.status();
      n->attr = *attr;
    } else if (absl::Status s = ParseTargets(&n->targets); !s.ok()) {
      return s;
    }
    if (Peek().kind == TK::kBlockEnd && n->attr.empty() && n->targets.size() == 1) {
      Next();
      n->kind = Node::Kind::kSetBlock;
      std::string tag;
      n->bodies.emplace_back();
      if (absl::Status s = ParseBody({"endset"}, &n->bodies.back(), &tag); !s.ok()) return s;
      body->push_back(std::move(n));
      return ExpectBlockEnd();
    }
    if (absl::Status s = ExpectOp("="); !s.ok()) return s;
    absl::StatusOr<ExprPtr> value = ParseTuple(true);
    if (!value.ok()) return value.status();
    n->expr = std::move(*value);
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseParams(std::vector<std::pair<std::string, ExprPtr>>* params) {
    if (absl::Status s = ExpectOp("("); !s.ok()) return s;
    while (!IsOp(")")) {
      absl::StatusOr<std::string> name = ExpectName();
      if (!name.ok()) return name.status();
      ExprPtr def;
      if (IsOp("=")) {
        Next();
        absl::StatusOr<ExprPtr> e = ParseExpr(true);
        if (!e.ok()) return e.status();
        def = std::move(*e);
      }
      params->emplace_back(*name, std::move(def));
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::Status ParseMacro(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kMacro, Next());
    absl::StatusOr<std::string> name = ExpectName();
    if (!name.ok()) return name.status();
    n->name = *name;
    if (absl::Status s = ParseParams(&n->params); !s.ok()) return s;
    if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
    std::string tag;
    n->bodies.emplace_back();
    if (absl::Status s = ParseBody({"endmacro"}, &n->bodies.back(), &tag); !s.ok()) return s;
    if (Peek().kind == TK::kName) Next();  // {% endmacro name %}
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseCallBlock(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kCallBlock, Next());
    if (IsOp("(")) {
      if (absl::Status s = ParseParams(&n->params); !s.ok()) return s;
    }
    const Token& at = Peek();
    absl::StatusOr<ExprPtr> call = ParseExpr(true);
    if (!call.ok()) return call.status();
    if ((*call)->kind != Expr::Kind::kCall) return ErrorAt(at, "expected a macro call");
    n->expr = std::move(*call);
    if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
    std::string tag;
    n->bodies.emplace_back();
    if (absl::Status s = ParseBody({"endcall"}, &n->bodies.back(), &tag); !s.ok()) return s;
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseFilterBlock(NodeList* body) {
    NodePtr n = NewNode(Node::Kind::kFilterBlock, Next());
    ExprPtr chain;  // nullptr input marks "the block's rendered body"
    do {
      absl::StatusOr<ExprPtr> f = ParseFilter(std::move(chain));
      if (!f.ok()) return f.status();
      chain = std::move(*f);
    } while (IsOp("|") && (Next(), true));
    n->expr = std::move(chain);
    if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
    std::string tag;
    n->bodies.emplace_back();
    if (absl::Status s = ParseBody({"endfilter"}, &n->bodies.back(), &tag); !s.ok()) return s;
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  absl::Status ParseSimpleBlock(NodeList* body, const char* end_tag) {
    NodePtr n = NewNode(Node::Kind::kScope, Next());
    if (absl::Status s = ExpectBlockEnd(); !s.ok()) return s;
    std::string tag;
    n->bodies.emplace_back();
    if (absl::Status s = ParseBody({end_tag}, &n->bodies.back(), &tag); !s.ok()) return s;
    body->push_back(std::move(n));
    return ExpectBlockEnd();
  }

  // ---- expressions ----

  // expr [, expr ...]: a bare tuple where Jinja allows one.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condition) {
    const Token& at = Peek();
    absl::StatusOr<ExprPtr> first = ParseExpr(with_condition);
    if (!first.ok() || !IsOp(",")) return first;
    ExprPtr tuple = NewExpr(Expr::Kind::kTuple, at);
    tuple->args.push_back(std::move(*first));
    while (IsOp(",")) {
      Next();
      if (!StartsExpression()) break;
      absl::StatusOr<ExprPtr> e = ParseExpr(with_condition);
      if (!e.ok()) return e.status();
      tuple->args.push_back(std::move(*e));
    }
    return tuple;
  }

  bool StartsExpression() const {
    const Token& t = Peek();
    switch (t.kind) {
      case TK::kName:
      case TK::kString:
      case TK::kInt:
      case TK::kFloat:
        return true;
      case TK::kOperator:
        return t.text == "(" || t.text == "[" || t.text == "{" || t.text == "-" || t.text == "+";
      default:
        return false;
    }
  }

  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };

  absl::StatusOr<ExprPtr> ParseExpr(bool with_condition) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return ErrorAt(Peek(), "expression nested too deeply");
    absl::StatusOr<ExprPtr> e = ParseOr();
    if (!e.ok() || !with_condition) return e;
    ExprPtr node = std::move(*e);
    while (IsName("if")) {
      ExprPtr cond = NewExpr(Expr::Kind::kCondition, Next());
      absl::StatusOr<ExprPtr> test = ParseOr();
      if (!test.ok()) return test.status();
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        absl::StatusOr<ExprPtr> o = ParseExpr(true);
        if (!o.ok()) return o.status();
        otherwise = std::move(*o);
      }
      cond->args.push_back(std::move(node));
      cond->args.push_back(std::move(*test));
      cond->args.push_back(std::move(otherwise));
      node = std::move(cond);
    }
    return node;
  }

  using SubParser = absl::StatusOr<ExprPtr> (Parser::*)();

  absl::StatusOr<ExprPtr> ParseOr() {
    return ParseKeywordLevel("or", Expr::Kind::kOr, &Parser::ParseAnd);
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    return ParseKeywordLevel("and", Expr::Kind::kAnd, &Parser::ParseNot);
  }

  // Left-associative chain `next (keyword next)*` of one logical operator.
  absl::StatusOr<ExprPtr> ParseKeywordLevel(const char* keyword, Expr::Kind kind, SubParser next) {
    absl::StatusOr<ExprPtr> left = (this->*next)();
    if (!left.ok()) return left;
    ExprPtr node = std::move(*left);
    while (IsName(keyword)) {
      ExprPtr e = NewExpr(kind, Next());
      absl::StatusOr<ExprPtr> right = (this->*next)();
      if (!right.ok()) return right;
      e->args.push_back(std::move(node));
      e->args.push_back(std::move(*right));
      node = std::move(e);
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(&depth_);
      if (depth_ > kMaxParseDepth) return ErrorAt(Peek(), "expression nested too deeply");
      ExprPtr e = NewExpr(Expr::Kind::kUnary, Next());
      e->name = "not";
      absl::StatusOr<ExprPtr> operand = ParseNot();
      if (!operand.ok()) return operand;
      e->args.push_back(std::move(*operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    absl::StatusOr<ExprPtr> left = ParseMath1();
    if (!left.ok()) return left;
    ExprPtr node = std::move(*left);
    while (true) {
      std::string op;
      const Token& at = Peek();
      if (Peek().kind == TK::kOperator && (at.text == "==" || at.text == "!=" || at.text == "<" ||
                                           at.text == "<=" || at.text == ">" || at.text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        return node;
      }
      absl::StatusOr<ExprPtr> right = ParseMath1();
      if (!right.ok()) return right;
      ExprPtr e = NewExpr(Expr::Kind::kBinary, at);
      e->name = op;
      e->args.push_back(std::move(node));
      e->args.push_back(std::move(*right));
      node = std::move(e);
    }
  }

  absl::StatusOr<ExprPtr> ParseBinaryLevel(std::initializer_list<const char*> ops, SubParser next) {
    absl::StatusOr<ExprPtr> left = (this->*next)();
    if (!left.ok()) return left;
    ExprPtr node = std::move(*left);
    while (true) {
      const char* matched = nullptr;
      for (const char* op : ops) {
        if (IsOp(op)) matched = op;
      }
      if (matched == nullptr) return node;
      ExprPtr e = NewExpr(Expr::Kind::kBinary, Next());
      e->name = matched;
      absl::StatusOr<ExprPtr> right = (this->*next)();
      if (!right.ok()) return right;
      e->args.push_back(std::move(node));
      e->args.push_back(std::move(*right));
      node = std::move(e);
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel({"+", "-"}, &Parser::ParseConcat);
  }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseBinaryLevel({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &Parser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() { return ParseBinaryLevel({"**"}, &Parser::ParseUnaryF); }
  absl::StatusOr<ExprPtr> ParseUnaryF() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return ErrorAt(Peek(), "expression nested too deeply");
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = NewExpr(Expr::Kind::kUnary, Peek());
      node->name = Next().text;
      absl::StatusOr<ExprPtr> operand = ParseUnary(false);
      if (!operand.ok()) return operand;
      node->args.push_back(std::move(*operand));
    } else {
      absl::StatusOr<ExprPtr> primary = ParsePrimary();
      if (!primary.ok()) return primary;
      node = std::move(*primary);
    }
    absl::StatusOr<ExprPtr> post = ParsePostfix(std::move(node));
    if (!post.ok() || !with_filter) return post;
    return ParseFilterExpr(std::move(*post));
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Peek();
    switch (t.kind) {
      case TK::kName: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, t);
        const std::string& n = t.text;
        if (n == "true" || n == "True") {
          e->literal = Value(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        Next();
        return e;
      }
      case TK::kString: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, t);
        std::string s;
        while (Peek().kind == TK::kString) s += Next().text;  // adjacent literals concatenate
        e->literal = Value(std::move(s));
        return e;
      }
      case TK::kInt: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, t);
        e->literal = Value(Next().int_value);
        return e;
      }
      case TK::kFloat: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, t);
        e->literal = Value(Next().float_value);
        return e;
      }
      case TK::kOperator:
        if (t.text == "(") return ParseParenthesized();
        if (t.text == "[") return ParseSequence(Expr::Kind::kList, "]");
        if (t.text == "{") return ParseDict();
        break;
      default:
        break;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParseParenthesized() {
    const Token& at = Next();
    if (IsOp(")")) {
      Next();
      return NewExpr(Expr::Kind::kTuple, at);
    }
    absl::StatusOr<ExprPtr> first = ParseExpr(true);
    if (!first.ok()) return first;
    if (IsOp(")")) {
      Next();
      return first;
    }
    ExprPtr tuple = NewExpr(Expr::Kind::kTuple, at);
    tuple->args.push_back(std::move(*first));
    while (IsOp(",")) {
      Next();
      if (IsOp(")")) break;
      absl::StatusOr<ExprPtr> e = ParseExpr(true);
      if (!e.ok()) return e;
      tuple->args.push_back(std::move(*e));
    }
    if (absl::Status s = ExpectOp(")"); !s.ok()) return s;
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseSequence(Expr::Kind kind, const char* close) {
    ExprPtr list = NewExpr(kind, Next());
    while (!IsOp(close)) {
      absl::StatusOr<ExprPtr> e = ParseExpr(true);
      if (!e.ok()) return e;
      list->args.push_back(std::move(*e));
      if (!IsOp(",")) break;
      Next();
    }
    if (absl::Status s = ExpectOp(close); !s.ok()) return s;
    return list;
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    ExprPtr dict = NewExpr(Expr::Kind::kDict, Next());
    while (!IsOp("}")) {
      absl::StatusOr<ExprPtr> key = ParseExpr(true);
      if (!key.ok()) return key;
      if (absl::Status s = ExpectOp(":"); !s.ok()) return s;
      absl::StatusOr<ExprPtr> value = ParseExpr(true);
      if (!value.ok()) return value;
      dict->args.push_back(std::move(*key));
      dict->args.push_back(std::move(*value));
      if (!IsOp(",")) break;
      Next();
    }
    if (absl::Status s = ExpectOp("}"); !s.ok()) return s;
    return dict;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        const Token& at = Next();
        if (Peek().kind == TK::kInt) {
          ExprPtr e = NewExpr(Expr::Kind::kItem, at);
          ExprPtr index = NewExpr(Expr::Kind::kLiteral, Peek());
          index->literal = Value(Next().int_value);
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(index));
          node = std::move(e);
          continue;
        }
        absl::StatusOr<std::string> name = ExpectName();
        if (!name.ok()) return name.status();
        ExprPtr e = NewExpr(Expr::Kind::kAttr, at);
        e->name = *name;
        e->args.push_back(std::move(node));
        node = std::move(e);
      } else if (IsOp("[")) {
        absl::StatusOr<ExprPtr> e = ParseSubscript(std::move(node));
        if (!e.ok()) return e;
        node = std::move(*e);
      } else if (IsOp("(")) {
        absl::StatusOr<ExprPtr> e = ParseCall(std::move(node));
        if (!e.ok()) return e;
        node = std::move(*e);
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr target) {
    const Token& at = Next();
    ExprPtr parts[3];
    bool is_slice = false;
    for (int i = 0; i < 3; ++i) {
      if (!IsOp(":") && !IsOp("]")) {
        absl::StatusOr<ExprPtr> e = ParseExpr(true);
        if (!e.ok()) return e;
        parts[i] = std::move(*e);
      }
      if (!IsOp(":") || i == 2) break;
      Next();
      is_slice = true;
    }
    if (absl::Status s = ExpectOp("]"); !s.ok()) return s;
    if (!is_slice) {
      if (!parts[0]) return ErrorAt(at, "empty subscript");
      ExprPtr e = NewExpr(Expr::Kind::kItem, at);
      e->args.push_back(std::move(target));
      e->args.push_back(std::move(parts[0]));
      return e;
    }
    ExprPtr e = NewExpr(Expr::Kind::kSlice, at);
    e->args.push_back(std::move(target));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  absl::Status ParseArgs(Expr* call) {
    if (absl::Status s = ExpectOp("("); !s.ok()) return s;
    while (!IsOp(")")) {
      if (Peek().kind == TK::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        absl::StatusOr<ExprPtr> e = ParseExpr(true);
        if (!e.ok()) return e.status();
        call->kwargs.emplace_back(std::move(name), std::move(*e));
      } else {
        if (!call->kwargs.empty()) {
          return ErrorAt(Peek(), "positional argument follows keyword argument");
        }
        absl::StatusOr<ExprPtr> e = ParseExpr(true);
        if (!e.ok()) return e.status();
        call->args.push_back(std::move(*e));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    ExprPtr e = NewExpr(Expr::Kind::kCall, Peek());
    e->args.push_back(std::move(callee));
    if (absl::Status s = ParseArgs(e.get()); !s.ok()) return s;
    return e;
  }

  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr input) {
    const Token& at = Peek();
    absl::StatusOr<std::string> name = ExpectName();
    if (!name.ok()) return name.status();
    ExprPtr e = NewExpr(Expr::Kind::kFilter, at);
    e->name = *name;
    e->args.push_back(std::move(input));
    if (IsOp("(")) {
      if (absl::Status s = ParseArgs(e.get()); !s.ok()) return s;
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        Next();
        absl::StatusOr<ExprPtr> f = ParseFilter(std::move(node));
        if (!f.ok()) return f;
        node = std::move(*f);
      } else if (IsName("is")) {
        ExprPtr e = NewExpr(Expr::Kind::kTest, Next());
        if (IsName("not")) {
          Next();
          e->negated = true;
        }
        absl::StatusOr<std::string> name = ExpectName();
        if (!name.ok()) return name.status();
        e->name = *name;
        e->args.push_back(std::move(node));
        if (IsOp("(")) {
          if (absl::Status s = ParseArgs(e.get()); !s.ok()) return s;
        } else if ((Peek().kind == TK::kName || Peek().kind == TK::kString ||
                    Peek().kind == TK::kInt || Peek().kind == TK::kFloat || IsOp("[") ||
                    IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and")) {
          // `x is divisibleby 3`: one argument without parentheses.
          absl::StatusOr<ExprPtr> arg = ParsePrimary();
          if (!arg.ok()) return arg;
          absl::StatusOr<ExprPtr> post = ParsePostfix(std::move(*arg));
          if (!post.ok()) return post;
          e->args.push_back(std::move(*post));
        }
        node = std::move(e);
      } else if (IsOp("(")) {
        absl::StatusOr<ExprPtr> e = ParseCall(std::move(node));
        if (!e.ok()) return e;
        node = std::move(*e);
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Program> ParseTemplate(const std::string& source) {
  absl::StatusOr<std::vector<Token>> tokens = Tokenize(source);
  if (!tokens.ok()) return tokens.status();
  return Parser(std::move(*tokens)).Run();
}

}  // namespace lychee::jinja
