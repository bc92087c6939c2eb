#include "jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

namespace moenav::server::jinja {

void fail(size_t offset, std::string message) { throw RenderError{std::move(message), offset}; }

bool is_int(const Value& v) { return v.is_number_integer(); }
double as_double(const Value& v) { return v.get<double>(); }
int64_t as_int(const Value& v, size_t offset) {
  if (!is_int(v)) fail(offset, "expected an integer");
  return v.get<int64_t>();
}
const std::string& as_string(const Value& v, size_t offset) {
  if (!v.is_string()) fail(offset, "expected a string");
  return v.get_ref<const std::string&>();
}
const Value& arg(const std::vector<Value>& args, const Value& kwargs, size_t index, const char* name,
                 const Value& fallback) {
  if (index < args.size()) return args[index];
  auto found = kwargs.find(name);
  return found != kwargs.end() ? *found : fallback;
}

// UTF-8 characters of a string, so len(), slicing and reversing work on characters as in Python.
std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> result;
  for (size_t i = 0; i < text.size();) {
    size_t length = 1;
    while (i + length < text.size() && (static_cast<unsigned char>(text[i + length]) & 0xC0) == 0x80) ++length;
    result.push_back(text.substr(i, length));
    i += length;
  }
  return result;
}

bool equal(const Value& left, const Value& right) {
  if (left.is_number() && right.is_number()) {
    if (is_int(left) && is_int(right)) return left.get<int64_t>() == right.get<int64_t>();
    return as_double(left) == as_double(right);
  }
  if (left.is_discarded() || right.is_discarded()) return left.is_discarded() && right.is_discarded();
  return left == right;
}

namespace {

std::string python_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

std::string python_repr(const Value& value) {
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    const char quote = text.find('\'') != std::string::npos && text.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (char c : text) {
      if (c == '\\' || c == quote) out += '\\';
      if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else out += c;
    }
    return out + quote;
  }
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) out += (i ? ", " : "") + python_repr(value[i]);
    return out + "]";
  }
  if (value.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [key, item] : value.items()) {
      out += (first ? "" : ", ") + python_repr(Value(key)) + ": " + python_repr(item);
      first = false;
    }
    return out + "}";
  }
  return to_text(value);
}

void json_string(const std::string& text, std::string& out) {
  out += '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

void json_dump(const Value& value, int indent, int depth, std::string& out) {
  const std::string newline = indent > 0 ? "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ') : "";
  const std::string close = indent > 0 ? "\n" + std::string(static_cast<size_t>(indent * depth), ' ') : "";
  const char* separator = indent > 0 ? "," : ", ";  // Python's defaults for each mode
  if (value.is_string()) return json_string(value.get_ref<const std::string&>(), out);
  if (value.is_number_float()) {
    out += python_float(value.get<double>());
  } else if (value.is_array() || value.is_object()) {
    const bool is_array = value.is_array();
    if (value.empty()) {
      out += is_array ? "[]" : "{}";
      return;
    }
    out += is_array ? "[" : "{";
    bool first = true;
    for (const auto& [key, item] : value.items()) {
      out += (first ? "" : separator) + newline;
      if (!is_array) {
        json_string(key, out);
        out += ": ";
      }
      json_dump(item, indent, depth + 1, out);
      first = false;
    }
    out += close + (is_array ? "]" : "}");
  } else if (value.is_discarded()) {
    out += "null";
  } else {
    out += value.dump();
  }
}

bool contains(const Value& container, const Value& item, size_t offset) {
  if (container.is_string()) {
    return container.get_ref<const std::string&>().find(as_string(item, offset)) != std::string::npos;
  }
  if (container.is_array()) {
    return std::any_of(container.begin(), container.end(), [&](const Value& v) { return equal(v, item); });
  }
  if (container.is_object()) return item.is_string() && container.contains(item.get<std::string>());
  return false;
}

Value arithmetic(const std::string& op, const Value& left, const Value& right, size_t offset) {
  if (!left.is_number() || !right.is_number()) fail(offset, "'" + op + "' needs numbers");
  if (is_int(left) && is_int(right) && op != "/") {
    const int64_t a = left.get<int64_t>(), b = right.get<int64_t>();
    int64_t result = 0;
    bool overflow = false;
    if (op == "+") overflow = __builtin_add_overflow(a, b, &result);
    else if (op == "-") overflow = __builtin_sub_overflow(a, b, &result);
    else if (op == "*") overflow = __builtin_mul_overflow(a, b, &result);
    else if (op == "**") {
      if (b < 0) return Value(std::pow(static_cast<double>(a), static_cast<double>(b)));
      if (a == 0 || a == 1) return Value(b == 0 ? int64_t{1} : a);
      if (a == -1) return Value(b % 2 == 0 ? int64_t{1} : int64_t{-1});
      result = 1;  // |a| >= 2 overflows within 63 steps, so this loop is short
      for (int64_t i = 0; i < b && !overflow; ++i) overflow = __builtin_mul_overflow(result, a, &result);
    } else {  // "//" and "%": Python floors toward negative infinity
      if (b == 0) fail(offset, "division by zero");
      if (a == INT64_MIN && b == -1) fail(offset, "integer overflow");
      int64_t quotient = a / b, remainder = a % b;
      if (remainder != 0 && ((remainder < 0) != (b < 0))) {
        --quotient;
        remainder += b;
      }
      result = op == "//" ? quotient : remainder;
    }
    if (overflow) fail(offset, "integer overflow");
    return Value(result);
  }
  const double a = as_double(left), b = as_double(right);
  if ((op == "/" || op == "//" || op == "%") && b == 0) fail(offset, "division by zero");
  if (op == "+") return Value(a + b);
  if (op == "-") return Value(a - b);
  if (op == "*") return Value(a * b);
  if (op == "/") return Value(a / b);
  if (op == "//") return Value(std::floor(a / b));
  if (op == "%") return Value(a - b * std::floor(a / b));
  return Value(std::pow(a, b));
}

}  // namespace

std::string strip(const std::string& text, const Value& chars, bool left, bool right) {
  const std::string set = chars.is_string() ? chars.get<std::string>() : std::string(" \t\n\r\f\v");
  size_t begin = 0, end = text.size();
  if (left) while (begin < end && set.find(text[begin]) != std::string::npos) ++begin;
  if (right) while (end > begin && set.find(text[end - 1]) != std::string::npos) --end;
  return text.substr(begin, end - begin);
}

std::string change_case(std::string text, bool upper) {
  for (char& c : text) c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string capitalize(const std::string& text, bool every_word) {
  std::string out = change_case(text, false);
  bool start = true;
  for (char& c : out) {
    if (start && std::isalpha(static_cast<unsigned char>(c))) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    start = every_word ? !std::isalnum(static_cast<unsigned char>(c)) : false;
  }
  return out;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return text;
  size_t position = 0;
  for (int64_t done = 0; (count < 0 || done < count) && (position = text.find(from, position)) != std::string::npos; ++done) {
    text.replace(position, from.size(), to);
    position += to.size();
    if (text.size() > kMaxBuiltString) throw RenderError{"string too large", 0};
  }
  return text;
}

Value split(const std::string& text, const Value& separator, int64_t max_split) {
  Value parts = Value::array();
  if (!separator.is_string()) {  // Python: runs of whitespace, no empty parts
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
      if (i >= text.size()) break;
      size_t end = i;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) end = text.size();
      else while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      parts.push_back(text.substr(i, end - i));
      i = end;
    }
    return parts;
  }
  const std::string& sep = separator.get_ref<const std::string&>();
  if (sep.empty()) fail(0, "empty separator");
  size_t begin = 0, found;
  while ((max_split < 0 || static_cast<int64_t>(parts.size()) < max_split) && (found = text.find(sep, begin)) != std::string::npos) {
    parts.push_back(text.substr(begin, found - begin));
    begin = found + sep.size();
  }
  parts.push_back(text.substr(begin));
  return parts;
}

Value join(const Value& input, const std::string& separator, const Value& attribute, size_t offset) {
  std::string out;
  bool first = true;
  for (const Value& item : iterate(input, offset)) {
    out += (first ? "" : separator) + to_text(attribute.is_string() ? member(Ref(&item), attribute).get() : item);
    first = false;
    if (out.size() > kMaxBuiltString) fail(offset, "string too large");
  }
  return Value(out);
}

bool truthy(const Value& value) {
  if (value.is_discarded() || value.is_null()) return false;
  if (value.is_boolean()) return value.get<bool>();
  if (value.is_number()) return as_double(value) != 0.0;
  if (value.is_string() || value.is_array() || value.is_object()) return !value.empty();
  return false;
}

std::string to_text(const Value& value) {
  if (value.is_discarded()) return "";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "None";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_number_float()) return python_float(value.get<double>());
  if (value.is_number()) return value.dump();
  return python_repr(value);
}

std::string to_json(const Value& value, int indent) {
  std::string out;
  json_dump(value, indent, 0, out);
  return out;
}

std::vector<Value> iterate(const Value& value, size_t offset) {
  std::vector<Value> items;
  if (value.is_array()) {
    items.assign(value.begin(), value.end());
  } else if (value.is_object()) {
    for (const auto& [key, item] : value.items()) items.emplace_back(key);
  } else if (value.is_string()) {
    for (std::string& c : characters(value.get<std::string>())) items.emplace_back(std::move(c));
  } else if (!value.is_discarded() && !value.is_null()) {
    fail(offset, "value is not iterable");
  }
  return items;
}

Ref member(Ref object, const Value& key) {
  const Value& container = object.get();
  const Value* found = nullptr;
  if (container.is_object() && key.is_string()) {
    auto it = container.find(key.get<std::string>());
    if (it != container.end()) found = &*it;
  } else if ((container.is_array() || container.is_string()) && is_int(key)) {
    const int64_t size = container.is_array() ? static_cast<int64_t>(container.size()) : 0;
    if (container.is_string()) {
      std::vector<std::string> chars = characters(container.get<std::string>());
      int64_t index = key.get<int64_t>();
      if (index < 0) index += static_cast<int64_t>(chars.size());
      if (index < 0 || index >= static_cast<int64_t>(chars.size())) return Ref(undefined());
      return Ref(Value(chars[static_cast<size_t>(index)]));
    }
    int64_t index = key.get<int64_t>();
    if (index < 0) index += size;
    if (index >= 0 && index < size) found = &container[static_cast<size_t>(index)];
  }
  if (!found) return Ref(undefined());
  return object.borrowed() ? Ref(found) : Ref(Value(*found));
}

Value slice(const Value& value, const Value& start, const Value& stop, const Value& step, size_t offset) {
  std::vector<Value> units = value.is_string() ? iterate(value, offset) : value.is_array() ? iterate(value, offset) : std::vector<Value>{};
  if (!value.is_string() && !value.is_array()) fail(offset, "only lists and strings can be sliced");
  const int64_t n = static_cast<int64_t>(units.size());
  const int64_t stride = step.is_null() ? 1 : as_int(step, offset);
  if (stride == 0) fail(offset, "slice step cannot be zero");
  auto bound = [&](const Value& index, int64_t fallback, int64_t low, int64_t high) {
    if (index.is_null()) return fallback;
    int64_t i = as_int(index, offset);
    if (i < 0) i += n;
    return std::clamp(i, low, high);
  };
  const int64_t begin = stride > 0 ? bound(start, 0, 0, n) : bound(start, n - 1, -1, n - 1);
  const int64_t end = stride > 0 ? bound(stop, n, 0, n) : bound(stop, -1, -1, n - 1);
  Value result = value.is_string() ? Value("") : Value::array();
  for (int64_t i = begin; stride > 0 ? i < end : i > end; i += stride) {
    if (value.is_string()) result.get_ref<std::string&>() += units[static_cast<size_t>(i)].get<std::string>();
    else result.push_back(units[static_cast<size_t>(i)]);
  }
  return result;
}

Value binary_operator(const std::string& op, const Value& left, const Value& right, size_t offset) {
  if (op == "~") return Value(to_text(left) + to_text(right));
  if (op == "==") return Value(equal(left, right));
  if (op == "!=") return Value(!equal(left, right));
  if (op == "in") return Value(contains(right, left, offset));
  if (op == "not in") return Value(!contains(right, left, offset));
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int order = 0;
    if (left.is_number() && right.is_number()) order = as_double(left) < as_double(right) ? -1 : as_double(left) > as_double(right) ? 1 : 0;
    else if (left.is_string() && right.is_string()) order = left.get<std::string>().compare(right.get<std::string>());
    else fail(offset, "'" + op + "' needs two numbers or two strings");
    return Value(op == "<" ? order < 0 : op == ">" ? order > 0 : op == "<=" ? order <= 0 : order >= 0);
  }
  if (op == "+" && (left.is_string() || right.is_string())) {
    // Lenient with undefined (a missing key), strict with other types as Python is.
    if ((!left.is_string() && !left.is_discarded()) || (!right.is_string() && !right.is_discarded())) {
      fail(offset, "cannot add a string and a non-string; use ~ to concatenate");
    }
    std::string sum = to_text(left) + to_text(right);
    if (sum.size() > kMaxBuiltString) fail(offset, "string too large");
    return Value(sum);
  }
  if (op == "+" && left.is_array() && right.is_array()) {
    Value sum = left;
    for (const Value& item : right) sum.push_back(item);
    return sum;
  }
  if (op == "*" && (left.is_string() || right.is_string())) {
    const Value& text = left.is_string() ? left : right;
    const int64_t count = as_int(left.is_string() ? right : left, offset);
    const std::string& unit = text.get_ref<const std::string&>();
    if (count > 0 && static_cast<uint64_t>(count) > kMaxBuiltString / std::max<size_t>(unit.size(), 1)) {
      fail(offset, "string too large");
    }
    std::string out;
    for (int64_t i = 0; i < count; ++i) out += unit;
    return Value(out);
  }
  return arithmetic(op, left, right, offset);
}

bool apply_test(const std::string& name, const Value& input, const std::vector<Value>& args, size_t offset) {
  const Value none;
  const Value& other = args.empty() ? none : args[0];
  if (name == "defined") return !input.is_discarded();
  if (name == "undefined") return input.is_discarded();
  if (name == "none") return input.is_null();
  if (name == "string") return input.is_string();
  if (name == "number") return input.is_number();
  if (name == "integer") return is_int(input);
  if (name == "float") return input.is_number_float();
  if (name == "boolean") return input.is_boolean();
  if (name == "true" || name == "false") return input.is_boolean() && input.get<bool>() == (name == "true");
  if (name == "mapping") return input.is_object();
  if (name == "sequence" || name == "iterable") return input.is_array() || input.is_string() || input.is_object();
  if (name == "callable") return false;
  if (name == "odd" || name == "even") return (as_int(input, offset) % 2 != 0) == (name == "odd");
  if (name == "divisibleby") return as_int(other, offset) != 0 && as_int(input, offset) % as_int(other, offset) == 0;
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return equal(input, other);
  if (name == "ne" || name == "!=") return !equal(input, other);
  if (name == "lower" || name == "upper") {
    return input.is_string() && input.get<std::string>() == change_case(input.get<std::string>(), name == "upper");
  }
  if (name == "in") return contains(other, input, offset);
  if (name == "lt" || name == "gt" || name == "le" || name == "ge") {
    static const std::pair<const char*, const char*> kOps[] = {{"lt", "<"}, {"gt", ">"}, {"le", "<="}, {"ge", ">="}};
    for (const auto& [test, op] : kOps) {
      if (name == test) return binary_operator(op, input, other, offset).get<bool>();
    }
  }
  fail(offset, "unknown test '" + name + "'");
}

}  // namespace moenav::server::jinja
