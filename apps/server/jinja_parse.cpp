// Jinja subset: source -> segments (text, {{ }}, {% %}) with Hugging Face's whitespace rules
// (trim_blocks, lstrip_blocks, and the explicit - markers), tokens, and a syntax tree by
// recursive descent. Operator precedence follows Jinja2's parser: or < and < not < comparisons
// < + - < ~ < * / // % < ** < unary < filters, tests and postfix.
#include <cctype>
#include <charconv>
#include <optional>

#include "jinja_ast.h"

namespace moenav::server::jinja {
namespace {

enum class SegmentKind { Text, Expression, Statement };

struct Segment {
  SegmentKind kind;
  std::string text;           // Text
  std::vector<Token> tokens;  // Expression / Statement, ending with an End token
  size_t offset = 0;
};

// Thrown inside this file only and turned into a Status by Template::parse, so the recursive
// descent can stay free of error plumbing on every line.
struct ParseError {
  std::string message;
  size_t offset;
};

[[noreturn]] void syntax_error(size_t offset, std::string message) { throw ParseError{std::move(message), offset}; }

const char* const kOperators[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
                                  "<",  ">",  "(",  ")",  "[",  "]",  "{", "}", ",", ".", ":", "|", "="};

class Lexer {
 public:
  explicit Lexer(std::string_view source) : source_(source) {}

  std::vector<Segment> run() {
    std::vector<Segment> segments;
    std::string text;
    bool strip_next_text = false;  // the previous tag ended with '-'
    while (position_ < source_.size()) {
      const size_t open = find_tag_open(position_);
      text.assign(source_.substr(position_, open - position_));
      if (strip_next_text) text.erase(0, text.find_first_not_of(" \t\r\n") == std::string::npos ? text.size() : text.find_first_not_of(" \t\r\n"));
      if (open == source_.size()) {
        segments.push_back({SegmentKind::Text, text, {}, position_});
        break;
      }
      const char type = source_[open + 1];
      const bool minus = open + 2 < source_.size() && source_[open + 2] == '-';
      const bool plus = open + 2 < source_.size() && source_[open + 2] == '+';
      if (minus) rstrip_all(text);
      else if (type != '{' && !plus) lstrip_block_line(text, open);
      segments.push_back({SegmentKind::Text, text, {}, position_});
      position_ = open + 2 + ((minus || plus) ? 1 : 0);
      bool end_minus = false;
      if (type == '#') {
        end_minus = skip_comment(open);
      } else {
        Segment tag{type == '{' ? SegmentKind::Expression : SegmentKind::Statement, {}, {}, open};
        tag.tokens = lex_tag(type == '{' ? '}' : '%', &end_minus);
        segments.push_back(std::move(tag));
      }
      strip_next_text = end_minus;
      // trim_blocks: the first newline after a block or comment tag goes.
      if (!end_minus && type != '{') {
        if (source_.compare(position_, 1, "\n") == 0) position_ += 1;
        else if (source_.compare(position_, 2, "\r\n") == 0) position_ += 2;
      }
    }
    return segments;
  }

 private:
  size_t find_tag_open(size_t from) const {
    for (size_t i = from; i + 1 < source_.size(); ++i) {
      if (source_[i] == '{' && (source_[i + 1] == '{' || source_[i + 1] == '%' || source_[i + 1] == '#')) return i;
    }
    return source_.size();
  }

  static void rstrip_all(std::string& text) {
    const size_t end = text.find_last_not_of(" \t\r\n");
    text.erase(end == std::string::npos ? 0 : end + 1);
  }

  // lstrip_blocks: spaces and tabs between a line start and a block tag are dropped.
  void lstrip_block_line(std::string& text, size_t tag_open) const {
    size_t start = tag_open;
    while (start > 0 && (source_[start - 1] == ' ' || source_[start - 1] == '\t')) --start;
    if (start != 0 && source_[start - 1] != '\n') return;
    const size_t whitespace = tag_open - start;
    if (whitespace <= text.size()) text.erase(text.size() - whitespace);
  }

  bool skip_comment(size_t open) {
    const size_t close = source_.find("#}", position_);
    if (close == std::string_view::npos) syntax_error(open, "unterminated comment");
    const bool minus = close > position_ && source_[close - 1] == '-';
    position_ = close + 2;
    return minus;
  }

  std::vector<Token> lex_tag(char closer, bool* end_minus) {
    std::vector<Token> tokens;
    int brace_depth = 0;
    for (;;) {
      while (position_ < source_.size() && std::isspace(static_cast<unsigned char>(source_[position_]))) ++position_;
      if (position_ >= source_.size()) syntax_error(position_, "unterminated tag");
      const std::string_view rest = source_.substr(position_);
      if (brace_depth == 0 && (rest.starts_with(std::string{'-', closer, '}'}) ||
                               rest.starts_with(std::string{closer, '}'}))) {
        *end_minus = rest[0] == '-';
        position_ += *end_minus ? 3 : 2;
        tokens.push_back({TokenKind::End, {}, {}, position_});
        return tokens;
      }
      Token token = lex_token();
      if (token.kind == TokenKind::Operator && token.text == "{") ++brace_depth;
      if (token.kind == TokenKind::Operator && token.text == "}") --brace_depth;
      tokens.push_back(std::move(token));
    }
  }

  Token lex_token() {
    const size_t start = position_;
    const char c = source_[position_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (position_ < source_.size() && (std::isalnum(static_cast<unsigned char>(source_[position_])) || source_[position_] == '_')) ++position_;
      return {TokenKind::Name, std::string(source_.substr(start, position_ - start)), {}, start};
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return lex_number();
    if (c == '\'' || c == '"') return lex_string();
    for (const char* op : kOperators) {
      if (source_.substr(position_).starts_with(op)) {
        position_ += std::char_traits<char>::length(op);
        return {TokenKind::Operator, op, {}, start};
      }
    }
    syntax_error(start, std::string("unexpected character '") + c + "'");
  }

  Token lex_number() {
    const size_t start = position_;
    while (position_ < source_.size() && std::isdigit(static_cast<unsigned char>(source_[position_]))) ++position_;
    bool is_float = false;
    if (position_ + 1 < source_.size() && source_[position_] == '.' && std::isdigit(static_cast<unsigned char>(source_[position_ + 1]))) {
      is_float = true;
      ++position_;
      while (position_ < source_.size() && std::isdigit(static_cast<unsigned char>(source_[position_]))) ++position_;
    }
    const std::string text(source_.substr(start, position_ - start));
    if (is_float) return {TokenKind::Float, text, Value(std::stod(text)), start};
    int64_t number = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error != std::errc() || end != text.data() + text.size()) {
      syntax_error(start, "integer literal too large (beyond 64 bits)");
    }
    return {TokenKind::Integer, text, Value(number), start};
  }

  Token lex_string() {
    const size_t start = position_;
    const char quote = source_[position_++];
    std::string value;
    while (position_ < source_.size() && source_[position_] != quote) {
      char c = source_[position_++];
      if (c == '\\' && position_ < source_.size()) {
        const char escaped = source_[position_++];
        c = escaped == 'n' ? '\n' : escaped == 't' ? '\t' : escaped == 'r' ? '\r' : escaped;
      }
      value += c;
    }
    if (position_ >= source_.size()) syntax_error(start, "unterminated string literal");
    ++position_;
    return {TokenKind::String, std::move(value), {}, start};
  }

  std::string_view source_;
  size_t position_ = 0;
};

// ---- expressions ----------------------------------------------------------------------------

class ExpressionParser {
 public:
  explicit ExpressionParser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  ExprPtr expression() { return conditional(); }
  const Token& peek() const { return tokens_[index_]; }
  bool at_end() const { return peek().kind == TokenKind::End; }
  bool accept_name(std::string_view name) {
    if (peek().kind != TokenKind::Name || peek().text != name) return false;
    ++index_;
    return true;
  }
  bool accept_op(std::string_view op) {
    if (peek().kind != TokenKind::Operator || peek().text != op) return false;
    ++index_;
    return true;
  }
  void expect_op(std::string_view op) {
    if (!accept_op(op)) syntax_error(peek().offset, "expected '" + std::string(op) + "'");
  }
  std::string expect_name() {
    if (peek().kind != TokenKind::Name) syntax_error(peek().offset, "expected a name");
    return tokens_[index_++].text;
  }
  void expect_end() {
    if (!at_end()) syntax_error(peek().offset, "unexpected '" + peek().text + "'");
  }

 private:
  static ExprPtr make(ExprKind kind, size_t offset, std::string name = {}) {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->offset = offset;
    expr->name = std::move(name);
    return expr;
  }
  static ExprPtr binary(std::string op, ExprPtr left, ExprPtr right) {
    ExprPtr expr = make(ExprKind::Binary, left->offset, std::move(op));
    expr->args.push_back(std::move(left));
    expr->args.push_back(std::move(right));
    return expr;
  }

  ExprPtr conditional() {
    ExprPtr value = logical_or();
    while (accept_name("if")) {
      ExprPtr expr = make(ExprKind::Conditional, value->offset);
      expr->args.push_back(std::move(value));
      expr->args.push_back(logical_or());
      expr->args.push_back(accept_name("else") ? conditional() : nullptr);
      value = std::move(expr);
    }
    return value;
  }
  ExprPtr logical_or() {
    ExprPtr left = logical_and();
    while (accept_name("or")) left = binary("or", std::move(left), logical_and());
    return left;
  }
  ExprPtr logical_and() {
    ExprPtr left = logical_not();
    while (accept_name("and")) left = binary("and", std::move(left), logical_not());
    return left;
  }
  ExprPtr logical_not() {
    const size_t offset = peek().offset;
    if (accept_name("not")) {
      ExprPtr expr = make(ExprKind::Unary, offset, "not");
      expr->args.push_back(logical_not());
      return expr;
    }
    return comparison();
  }
  ExprPtr comparison() {
    ExprPtr left = additive();
    for (;;) {
      std::string op;
      for (const char* candidate : {"==", "!=", "<=", ">=", "<", ">"}) {
        if (accept_op(candidate)) op = candidate;
        if (!op.empty()) break;
      }
      if (op.empty() && accept_name("in")) op = "in";
      if (op.empty() && peek().kind == TokenKind::Name && peek().text == "not" &&
          tokens_[index_ + 1].kind == TokenKind::Name && tokens_[index_ + 1].text == "in") {
        index_ += 2;
        op = "not in";
      }
      if (op.empty()) return left;
      left = binary(op, std::move(left), additive());
    }
  }
  ExprPtr additive() {
    ExprPtr left = concatenation();
    for (;;) {
      if (accept_op("+")) left = binary("+", std::move(left), concatenation());
      else if (accept_op("-")) left = binary("-", std::move(left), concatenation());
      else return left;
    }
  }
  ExprPtr concatenation() {
    ExprPtr left = multiplicative();
    while (accept_op("~")) left = binary("~", std::move(left), multiplicative());
    return left;
  }
  ExprPtr multiplicative() {
    ExprPtr left = power();
    for (;;) {
      std::string op;
      for (const char* candidate : {"*", "//", "/", "%"}) {
        if (op.empty() && accept_op(candidate)) op = candidate;
      }
      if (op.empty()) return left;
      left = binary(op, std::move(left), power());
    }
  }
  ExprPtr power() {
    ExprPtr left = unary();
    while (accept_op("**")) left = binary("**", std::move(left), unary());
    return left;
  }
  ExprPtr unary() {
    const size_t offset = peek().offset;
    for (const char* op : {"-", "+"}) {
      if (accept_op(op)) {
        ExprPtr expr = make(ExprKind::Unary, offset, op);
        expr->args.push_back(unary());
        return expr;
      }
    }
    return filters_and_tests(postfix(primary()));
  }

  ExprPtr primary();
  ExprPtr postfix(ExprPtr value);
  ExprPtr subscript(ExprPtr value);
  void call_arguments(Expr& call);
  ExprPtr filters_and_tests(ExprPtr value);

  const std::vector<Token>& tokens_;
  size_t index_ = 0;
};

ExprPtr ExpressionParser::primary() {
  const Token& token = peek();
  const size_t offset = token.offset;
  if (token.kind == TokenKind::End) syntax_error(offset, "expected an expression");
  ++index_;
  if (token.kind == TokenKind::String) {
    ExprPtr expr = make(ExprKind::Literal, offset);
    std::string text = token.text;
    while (peek().kind == TokenKind::String) text += tokens_[index_++].text;  // 'a' 'b' == 'ab'
    expr->value = text;
    return expr;
  }
  if (token.kind == TokenKind::Integer || token.kind == TokenKind::Float) {
    ExprPtr expr = make(ExprKind::Literal, offset);
    expr->value = token.number;
    return expr;
  }
  if (token.kind == TokenKind::Name) {
    static const std::pair<const char*, Value> kConstants[] = {
        {"true", true}, {"True", true}, {"false", false}, {"False", false}, {"none", nullptr}, {"None", nullptr}};
    for (const auto& [name, value] : kConstants) {
      if (token.text == name) {
        ExprPtr expr = make(ExprKind::Literal, offset);
        expr->value = value;
        return expr;
      }
    }
    return make(ExprKind::Name, offset, token.text);
  }
  if (token.text == "(") {
    ExprPtr first = expression();
    if (accept_op(")")) return first;
    ExprPtr tuple = make(ExprKind::List, offset);  // a tuple behaves as a list here
    tuple->args.push_back(std::move(first));
    while (accept_op(",") && !(peek().kind == TokenKind::Operator && peek().text == ")")) tuple->args.push_back(expression());
    expect_op(")");
    return tuple;
  }
  if (token.text == "[" || token.text == "{") {
    const bool is_list = token.text == "[";
    ExprPtr expr = make(is_list ? ExprKind::List : ExprKind::Dict, offset);
    const char* closer = is_list ? "]" : "}";
    while (!accept_op(closer)) {
      expr->args.push_back(expression());
      if (!is_list) {
        expect_op(":");
        expr->args.push_back(expression());
      }
      if (!accept_op(",")) {
        expect_op(closer);
        break;
      }
    }
    return expr;
  }
  syntax_error(offset, "unexpected '" + token.text + "'");
}

ExprPtr ExpressionParser::postfix(ExprPtr value) {
  for (;;) {
    const size_t offset = peek().offset;
    if (accept_op(".")) {
      ExprPtr expr = make(ExprKind::Attribute, offset, expect_name());
      expr->args.push_back(std::move(value));
      value = std::move(expr);
    } else if (accept_op("[")) {
      value = subscript(std::move(value));
    } else if (accept_op("(")) {
      ExprPtr call = make(ExprKind::Call, offset);
      call->args.push_back(std::move(value));
      call_arguments(*call);
      value = std::move(call);
    } else {
      return value;
    }
  }
}

ExprPtr ExpressionParser::subscript(ExprPtr value) {
  const size_t offset = peek().offset;
  std::optional<ExprPtr> parts[3];
  int part = 0;
  bool is_slice = false;
  for (;;) {
    if (accept_op("]")) break;
    if (accept_op(":")) {
      is_slice = true;
      if (++part > 2) syntax_error(offset, "a slice has at most three parts");
      continue;
    }
    if (parts[part]) syntax_error(peek().offset, "expected ':' or ']'");
    parts[part] = expression();
  }
  if (!is_slice) {
    if (!parts[0]) syntax_error(offset, "empty subscript");
    ExprPtr expr = make(ExprKind::Index, offset);
    expr->args.push_back(std::move(value));
    expr->args.push_back(std::move(*parts[0]));
    return expr;
  }
  ExprPtr expr = make(ExprKind::Slice, offset);
  expr->args.push_back(std::move(value));
  for (auto& slice_part : parts) expr->args.push_back(slice_part ? std::move(*slice_part) : nullptr);
  return expr;
}

void ExpressionParser::call_arguments(Expr& call) {
  while (!accept_op(")")) {
    if (peek().kind == TokenKind::Name && tokens_[index_ + 1].kind == TokenKind::Operator &&
        tokens_[index_ + 1].text == "=") {
      std::string name = tokens_[index_].text;
      index_ += 2;
      call.kwargs.emplace_back(std::move(name), expression());
    } else {
      call.args.push_back(expression());
    }
    if (!accept_op(",")) {
      expect_op(")");
      break;
    }
  }
}

ExprPtr ExpressionParser::filters_and_tests(ExprPtr value) {
  for (;;) {
    const size_t offset = peek().offset;
    if (accept_op("|")) {
      ExprPtr filter = make(ExprKind::Filter, offset, expect_name());
      filter->args.push_back(std::move(value));
      if (accept_op("(")) call_arguments(*filter);
      value = std::move(filter);
    } else if (accept_name("is")) {
      const bool negated = accept_name("not");
      ExprPtr test = make(ExprKind::Test, offset, expect_name());
      test->negated = negated;
      test->args.push_back(std::move(value));
      if (accept_op("(")) {
        call_arguments(*test);
      } else if (peek().kind == TokenKind::String || peek().kind == TokenKind::Integer ||
                 peek().kind == TokenKind::Float) {
        test->args.push_back(primary());  // `is divisibleby 3`, `is sameas 'x'`
      }
      value = std::move(test);
    } else {
      return value;
    }
  }
}

// ---- statements ---------------------------------------------------------------------------

class StatementParser {
 public:
  StatementParser(std::vector<Segment> segments, size_t source_end)
      : segments_(std::move(segments)), source_end_(source_end) {}

  std::unique_ptr<Node> parse_all() {
    std::string unused;
    return parse_body({}, &unused);
  }

 private:
  static std::unique_ptr<Node> make(NodeKind kind, size_t offset) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->offset = offset;
    return node;
  }

  // Parses nodes until a statement whose keyword is in `enders` (returned through *ender, its
  // parser left positioned after the keyword) or the end of the template.
  std::unique_ptr<Node> parse_body(std::initializer_list<std::string_view> enders, std::string* ender) {
    auto body = make(NodeKind::Sequence, index_ < segments_.size() ? segments_[index_].offset : 0);
    while (index_ < segments_.size()) {
      Segment& segment = segments_[index_++];
      if (segment.kind == SegmentKind::Text) {
        if (segment.text.empty()) continue;
        auto text = make(NodeKind::Text, segment.offset);
        text->text = std::move(segment.text);
        body->children.push_back(std::move(text));
        continue;
      }
      current_ = std::make_unique<ExpressionParser>(segment.tokens);
      if (segment.kind == SegmentKind::Expression) {
        auto output = make(NodeKind::Output, segment.offset);
        output->expr = current_->expression();
        current_->expect_end();
        body->children.push_back(std::move(output));
        continue;
      }
      const std::string keyword = current_->expect_name();
      for (std::string_view candidate : enders) {
        if (keyword == candidate) {
          *ender = keyword;
          return body;
        }
      }
      if (auto node = statement(keyword, segment.offset)) body->children.push_back(std::move(node));
    }
    if (enders.size() != 0) syntax_error(source_end_, "missing {% " + std::string(*(enders.end() - 1)) + " %}");
    return body;
  }

  std::unique_ptr<Node> statement(const std::string& keyword, size_t offset) {
    if (keyword == "if") return if_statement(offset);
    if (keyword == "for") return for_statement(offset);
    if (keyword == "set") return set_statement(offset);
    if (keyword == "generation") {  // Hugging Face's assistant-mask marker: renders its body
      current_->expect_end();
      std::string ender;
      return parse_body({"endgeneration"}, &ender);
    }
    syntax_error(offset, "unsupported statement '" + keyword + "'");
  }

  std::unique_ptr<Node> if_statement(size_t offset) {
    auto node = make(NodeKind::If, offset);
    ExprPtr condition = current_->expression();
    for (;;) {
      current_->expect_end();
      std::string ender;
      auto body = parse_body({"elif", "else", "endif"}, &ender);
      node->branches.emplace_back(std::move(condition), std::move(body));
      if (ender == "endif") break;
      condition = ender == "elif" ? current_->expression() : nullptr;
      if (ender == "else") {
        current_->expect_end();
        node->branches.emplace_back(nullptr, parse_body({"endif"}, &ender));
        break;
      }
    }
    current_->expect_end();
    return node;
  }

  std::unique_ptr<Node> for_statement(size_t offset) {
    auto node = make(NodeKind::For, offset);
    do {
      node->targets.push_back(current_->expect_name());
    } while (current_->accept_op(","));
    if (!current_->accept_name("in")) syntax_error(current_->peek().offset, "expected 'in'");
    node->expr = current_->expression();  // a trailing `if` is parsed as a filter below
    if (node->expr->kind == ExprKind::Conditional && !node->expr->args[2]) {
      node->condition = std::move(node->expr->args[1]);
      node->expr = std::move(node->expr->args[0]);
    }
    current_->expect_end();
    std::string ender;
    auto body = parse_body({"else", "endfor"}, &ender);
    node->children.push_back(std::move(body));
    if (ender == "else") {
      current_->expect_end();
      node->else_body = parse_body({"endfor"}, &ender);
    }
    current_->expect_end();
    return node;
  }

  std::unique_ptr<Node> set_statement(size_t offset) {
    auto node = make(NodeKind::Set, offset);
    node->targets.push_back(current_->expect_name());
    if (current_->accept_op(".")) node->targets.push_back(current_->expect_name());
    if (current_->accept_op("=")) {
      node->expr = current_->expression();
      current_->expect_end();
      return node;
    }
    current_->expect_end();  // {% set name %}...{% endset %}
    node->kind = NodeKind::SetBlock;
    std::string ender;
    node->children.push_back(parse_body({"endset"}, &ender));
    current_->expect_end();
    return node;
  }

  std::vector<Segment> segments_;
  size_t source_end_;
  size_t index_ = 0;
  std::unique_ptr<ExpressionParser> current_;
};

// Line and column of a source offset, for messages a template author can act on.
std::string where(std::string_view source, size_t offset) {
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < offset && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

}  // namespace

Template::Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

Expected<Template> Template::parse(std::string_view source) {
  try {
    Template result;
    // keep_trailing_newline is off in Jinja2 (and so in apply_chat_template): one trailing
    // newline of the source is not part of the output.
    std::string_view body = source;
    if (body.ends_with('\n')) body.remove_suffix(body.ends_with("\r\n") ? 2 : 1);
    result.root_ = StatementParser(Lexer(body).run(), body.size()).parse_all();
    return result;
  } catch (const ParseError& error) {
    return Status::errorf("chat template {}: {}", where(source, error.offset), error.message);
  } catch (const std::exception& error) {  // std::stod/stoll out of range
    return Status::errorf("chat template: {}", error.what());
  }
}

}  // namespace moenav::server::jinja
