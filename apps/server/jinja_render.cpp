// Jinja subset: rendering a syntax tree against a context. Values are JSON (ordered), undefined
// is JSON's "discarded" value. Expressions evaluate to a Ref that points into the scopes where it
// can, so `messages[0]['content']` inside a loop does not copy the conversation every time.
// Work and output are bounded so a hostile conversation cannot make rendering run away.
#include <algorithm>

#include "jinja_ast.h"
#include "jinja_builtins.h"

namespace moenav::server::jinja {
namespace {

constexpr int64_t kMaxSteps = 2'000'000;         // statements and loop iterations
constexpr size_t kMaxOutputBytes = 64u << 20;    // rendered prompt

class Renderer {
 public:
  explicit Renderer(const Value& context) { scopes_.push_back(context); }

  std::string render(const Node& root) {
    std::string out;
    render_node(root, out);
    return out;
  }

 private:
  void tick(size_t offset) {
    if (++steps_ > kMaxSteps) throw RenderError{"too many steps", offset};
  }

  const Value* lookup(const std::string& name) const {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope) {
      auto found = scope->find(name);
      if (found != scope->end()) return &*found;
    }
    return nullptr;
  }
  Value* lookup_mutable(const std::string& name) {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope) {
      auto found = scope->find(name);
      if (found != scope->end()) return &*found;
    }
    return nullptr;
  }

  void render_node(const Node& node, std::string& out);
  void render_if(const Node& node, std::string& out);
  void render_for(const Node& node, std::string& out);
  void assign(const Node& node, Value value);

  Ref eval(const Expr& expr);
  Ref eval_binary(const Expr& expr);
  Ref eval_call(const Expr& expr);
  std::vector<Value> eval_args(const Expr& expr, size_t first);
  Value eval_kwargs(const Expr& expr);

  std::deque<Value> scopes_;  // objects, innermost last; a deque keeps Refs into them valid
  int64_t steps_ = 0;
};

void Renderer::render_node(const Node& node, std::string& out) {
  tick(node.offset);
  switch (node.kind) {
    case NodeKind::Sequence:
      for (const auto& child : node.children) render_node(*child, out);
      break;
    case NodeKind::Text:
      out += node.text;
      break;
    case NodeKind::Output:
      out += to_text(eval(*node.expr).get());
      break;
    case NodeKind::If:
      render_if(node, out);
      break;
    case NodeKind::For:
      render_for(node, out);
      break;
    case NodeKind::Set:
      assign(node, (eval(*node.expr)).take());
      break;
    case NodeKind::SetBlock: {
      std::string captured;
      render_node(*node.children[0], captured);
      assign(node, Value(captured));
      break;
    }
  }
  if (out.size() > kMaxOutputBytes) throw RenderError{"output too large", node.offset};
}

void Renderer::render_if(const Node& node, std::string& out) {
  for (const auto& [condition, body] : node.branches) {
    if (!condition || truthy(eval(*condition).get())) {
      render_node(*body, out);
      return;
    }
  }
}

void Renderer::render_for(const Node& node, std::string& out) {
  // A copy: the body may rebind or mutate what it iterates over.
  std::vector<Value> items = iterate(eval(*node.expr).get(), node.offset);
  scopes_.push_back(Value::object());
  auto bind = [&](const Value& item) {
    Value& scope = scopes_.back();
    if (node.targets.size() == 1) {
      scope[node.targets[0]] = item;
      return;
    }
    for (size_t i = 0; i < node.targets.size(); ++i) {
      scope[node.targets[i]] = item.is_array() && i < item.size() ? item[i] : undefined();
    }
  };
  if (node.condition) {
    std::erase_if(items, [&](const Value& item) {
      bind(item);
      return !truthy(eval(*node.condition).get());
    });
  }
  const int64_t length = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < length; ++i) {
    tick(node.offset);
    bind(items[static_cast<size_t>(i)]);
    Value loop = {{"index", i + 1},          {"index0", i},     {"revindex", length - i},
                  {"revindex0", length - i - 1}, {"first", i == 0}, {"last", i == length - 1},
                  {"length", length}};
    loop["previtem"] = i > 0 ? items[static_cast<size_t>(i - 1)] : undefined();
    loop["nextitem"] = i + 1 < length ? items[static_cast<size_t>(i + 1)] : undefined();
    scopes_.back()["loop"] = std::move(loop);
    render_node(*node.children[0], out);
  }
  scopes_.pop_back();
  if (length == 0 && node.else_body) render_node(*node.else_body, out);
}

void Renderer::assign(const Node& node, Value value) {
  if (node.targets.size() == 1) {
    scopes_.back()[node.targets[0]] = std::move(value);
    return;
  }
  Value* target = lookup_mutable(node.targets[0]);  // {% set ns.attr = ... %}
  if (!target || !target->is_object()) {
    throw RenderError{"'" + node.targets[0] + "' is not a namespace", node.offset};
  }
  (*target)[node.targets[1]] = std::move(value);
}

Ref Renderer::eval(const Expr& expr) {
  switch (expr.kind) {
    case ExprKind::Literal:
      return Ref(&expr.value);
    case ExprKind::Name: {
      const Value* found = lookup(expr.name);
      return found ? Ref(found) : Ref(undefined());
    }
    case ExprKind::List: {
      Value list = Value::array();
      for (const auto& item : expr.args) list.push_back((eval(*item)).take());
      return Ref(std::move(list));
    }
    case ExprKind::Dict: {
      Value dict = Value::object();
      for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
        dict[to_text(eval(*expr.args[i]).get())] = (eval(*expr.args[i + 1])).take();
      }
      return Ref(std::move(dict));
    }
    case ExprKind::Attribute:
      return member(eval(*expr.args[0]), Value(expr.name));
    case ExprKind::Index: {
      Ref object = eval(*expr.args[0]);
      return member(std::move(object), eval(*expr.args[1]).get());
    }
    case ExprKind::Slice: {
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        parts[i] = expr.args[static_cast<size_t>(i + 1)] ? (eval(*expr.args[static_cast<size_t>(i + 1)])).take() : Value();
      }
      return Ref(slice(eval(*expr.args[0]).get(), parts[0], parts[1], parts[2], expr.offset));
    }
    case ExprKind::Call:
      return eval_call(expr);
    case ExprKind::Filter: {
      Value input = (eval(*expr.args[0])).take();
      return Ref(apply_filter(expr.name, input, eval_args(expr, 1), eval_kwargs(expr), expr.offset));
    }
    case ExprKind::Test: {
      const bool result = apply_test(expr.name, eval(*expr.args[0]).get(), eval_args(expr, 1), expr.offset);
      return Ref(Value(result != expr.negated));
    }
    case ExprKind::Unary: {
      const Value operand = (eval(*expr.args[0])).take();
      if (expr.name == "not") return Ref(Value(!truthy(operand)));
      if (!operand.is_number()) throw RenderError{"unary " + expr.name + " needs a number", expr.offset};
      if (expr.name == "+") return Ref(operand);
      return Ref(operand.is_number_float() ? Value(-operand.get<double>()) : Value(-operand.get<int64_t>()));
    }
    case ExprKind::Binary:
      return eval_binary(expr);
    case ExprKind::Conditional:
      if (truthy(eval(*expr.args[1]).get())) return eval(*expr.args[0]);
      return expr.args[2] ? eval(*expr.args[2]) : Ref(undefined());
  }
  return Ref(undefined());
}

Ref Renderer::eval_binary(const Expr& expr) {
  // and/or return an operand, as Python does, and skip the right side when they can.
  if (expr.name == "and" || expr.name == "or") {
    Ref left = eval(*expr.args[0]);
    if (truthy(left.get()) == (expr.name == "or")) return left;
    return eval(*expr.args[1]);
  }
  Ref left = eval(*expr.args[0]);
  Ref right = eval(*expr.args[1]);
  return Ref(binary_operator(expr.name, left.get(), right.get(), expr.offset));
}

Ref Renderer::eval_call(const Expr& expr) {
  const Expr& callee = *expr.args[0];
  std::vector<Value> args = eval_args(expr, 1);
  Value kwargs = eval_kwargs(expr);
  if (callee.kind == ExprKind::Attribute) {
    Ref object = eval(*callee.args[0]);
    return Ref(call_method(object.get(), callee.name, args, kwargs, expr.offset));
  }
  if (callee.kind == ExprKind::Name && !lookup(callee.name)) {
    return Ref(call_function(callee.name, args, kwargs, expr.offset));
  }
  throw RenderError{"this value cannot be called", expr.offset};
}

std::vector<Value> Renderer::eval_args(const Expr& expr, size_t first) {
  std::vector<Value> args;
  for (size_t i = first; i < expr.args.size(); ++i) args.push_back((eval(*expr.args[i])).take());
  return args;
}

Value Renderer::eval_kwargs(const Expr& expr) {
  Value kwargs = Value::object();
  for (const auto& [name, value] : expr.kwargs) kwargs[name] = (eval(*value)).take();
  return kwargs;
}

}  // namespace

Expected<std::string> Template::render(const Value& context) const {
  try {
    return Renderer(context).render(*root_);
  } catch (const RenderError& error) {
    return Status::errorf("chat template (at offset {}): {}", error.offset, error.message);
  } catch (const std::exception& error) {  // JSON type errors on exotic input
    return Status::errorf("chat template: {}", error.what());
  }
}

}  // namespace moenav::server::jinja
