// The Jinja subset's tokens and syntax tree, shared by the lexer/parser (jinja_parse.cpp) and the
// renderer (jinja_render.cpp). Internal to the server.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja.h"

namespace moenav::server::jinja {

// ---- tokens inside {{ }} and {% %} -----------------------------------------------------------

enum class TokenKind { Name, String, Integer, Float, Operator, End };

struct Token {
  TokenKind kind = TokenKind::End;
  std::string text;  // name, operator spelling, or the decoded string literal
  Value number;      // Integer / Float
  size_t offset = 0; // in the template source, for error messages
};

// ---- expressions --------------------------------------------------------------------------

enum class ExprKind {
  Literal,      // value
  Name,         // name
  List,         // args: items
  Dict,         // args: key, value, key, value, ...
  Attribute,    // args[0].name
  Index,        // args[0][args[1]]
  Slice,        // args[0][args[1]:args[2]:args[3]], absent parts null
  Call,         // args[0](args[1..], kwargs)
  Filter,       // args[0] | name(args[1..], kwargs)
  Test,         // args[0] is [not] name(args[1..])
  Unary,        // name ("not", "-", "+") args[0]
  Binary,       // args[0] name args[1]; name is the operator ("and", "in", "not in", "==", ...)
  Conditional,  // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Expr {
  ExprKind kind = ExprKind::Literal;
  Value value;
  std::string name;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;  // Test: "is not"
  size_t offset = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

// ---- statements ---------------------------------------------------------------------------

enum class NodeKind {
  Sequence,  // children
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches (condition null for else)
  For,       // for targets in expr [if condition]: children, else_children
  Set,       // set targets = expr; targets = {name} or {namespace, attribute}
  SetBlock,  // set targets: children rendered into a string
};

struct Node {
  NodeKind kind = NodeKind::Sequence;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<std::string> targets;
  std::vector<std::pair<ExprPtr, std::unique_ptr<Node>>> branches;
  std::vector<std::unique_ptr<Node>> children;
  std::unique_ptr<Node> else_body;
  size_t offset = 0;
};

}  // namespace moenav::server::jinja
