// Jinja subset: the filters, methods and global functions chat templates use. Each is looked up
// by name in a table; an unknown one is a render error naming it, so an unsupported template
// fails at startup (the server then falls back to its default template) instead of misrendering.
#include <algorithm>
#include <ctime>
#include <functional>
#include <map>

#include "jinja_builtins.h"

namespace moenav::server::jinja {
namespace {

const Value kNone;
const Value kEmptyString = Value("");

using Filter = std::function<Value(const Value& input, const std::vector<Value>& args, const Value& kwargs, size_t offset)>;

int64_t length(const Value& input) {
  if (input.is_string()) return static_cast<int64_t>(characters(input.get<std::string>()).size());
  if (input.is_array() || input.is_object()) return static_cast<int64_t>(input.size());
  return 0;
}

Value reversed(const Value& input, size_t offset) {
  std::vector<Value> items = iterate(input, offset);
  std::reverse(items.begin(), items.end());
  if (!input.is_string()) return Value(items);
  std::string out;
  for (const Value& c : items) out += c.get<std::string>();
  return Value(out);
}

Value items_of(const Value& input, size_t offset) {
  if (!input.is_object()) fail(offset, "items() needs a mapping");
  Value pairs = Value::array();
  for (const auto& [key, item] : input.items()) pairs.push_back(Value::array({key, item}));
  return pairs;
}

// selectattr / rejectattr / select / reject: keep items whose (attribute) passes a test.
Value select(const Value& input, const std::vector<Value>& args, bool by_attribute, bool keep, size_t offset) {
  Value out = Value::array();
  const size_t test_index = by_attribute ? 1 : 0;
  for (const Value& item : iterate(input, offset)) {
    const Value subject = by_attribute ? member(Ref(&item), arg(args, Value::object(), 0, "", kNone)).get() : item;
    bool passed = truthy(subject);
    if (args.size() > test_index) {
      std::vector<Value> test_args(args.begin() + static_cast<long>(test_index) + 1, args.end());
      passed = apply_test(as_string(args[test_index], offset), subject, test_args, offset);
    }
    if (passed == keep) out.push_back(item);
  }
  return out;
}

Value map_values(const Value& input, const std::vector<Value>& args, const Value& kwargs, size_t offset) {
  Value out = Value::array();
  const Value& attribute = arg({}, kwargs, 0, "attribute", kNone);
  for (const Value& item : iterate(input, offset)) {
    if (attribute.is_string()) out.push_back(member(Ref(&item), attribute).get());
    else if (!args.empty()) out.push_back(apply_filter(as_string(args[0], offset), item, {}, Value::object(), offset));
    else fail(offset, "map needs a filter name or attribute=");
  }
  return out;
}

Value indent(const Value& input, const std::vector<Value>& args, const Value& kwargs, size_t offset) {
  const std::string pad(static_cast<size_t>(std::clamp<int64_t>(as_int(arg(args, kwargs, 0, "width", Value(4)), offset), 0, 64)), ' ');
  const bool first = truthy(arg(args, kwargs, 1, "first", Value(false)));
  std::string out = first ? pad : "";
  for (char c : as_string(input, offset)) {
    out += c;
    if (c == '\n') out += pad;
  }
  return Value(out);
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const std::map<std::string, Filter, std::less<>>& filters() {
  static const std::map<std::string, Filter, std::less<>> kFilters = {
      {"trim", [](const Value& in, const auto& a, const auto& k, size_t o) { return Value(strip(as_string(in, o), arg(a, k, 0, "chars", kNone), true, true)); }},
      {"length", [](const Value& in, const auto&, const auto&, size_t) { return Value(length(in)); }},
      {"count", [](const Value& in, const auto&, const auto&, size_t) { return Value(length(in)); }},
      {"upper", [](const Value& in, const auto&, const auto&, size_t o) { return Value(change_case(as_string(in, o), true)); }},
      {"lower", [](const Value& in, const auto&, const auto&, size_t o) { return Value(change_case(as_string(in, o), false)); }},
      {"capitalize", [](const Value& in, const auto&, const auto&, size_t o) { return Value(capitalize(as_string(in, o), false)); }},
      {"title", [](const Value& in, const auto&, const auto&, size_t o) { return Value(capitalize(as_string(in, o), true)); }},
      {"string", [](const Value& in, const auto&, const auto&, size_t) { return Value(to_text(in)); }},
      {"safe", [](const Value& in, const auto&, const auto&, size_t) { return in; }},
      {"escape", [](const Value& in, const auto&, const auto&, size_t) { return Value(html_escape(to_text(in))); }},
      {"e", [](const Value& in, const auto&, const auto&, size_t) { return Value(html_escape(to_text(in))); }},
      {"tojson", [](const Value& in, const auto& a, const auto& k, size_t o) {
         const Value& width = arg(a, k, 0, "indent", kNone);
         return Value(to_json(in, width.is_null() ? 0 : static_cast<int>(std::clamp<int64_t>(as_int(width, o), 0, 16))));
       }},
      {"int", [](const Value& in, const auto&, const auto&, size_t) {
         if (is_int(in)) return in;
         if (in.is_number()) return Value(static_cast<int64_t>(in.get<double>()));
         try { return Value(static_cast<int64_t>(std::stoll(to_text(in)))); } catch (...) { return Value(0); }
       }},
      {"float", [](const Value& in, const auto&, const auto&, size_t) {
         if (in.is_number()) return Value(in.get<double>());
         try { return Value(std::stod(to_text(in))); } catch (...) { return Value(0.0); }
       }},
      {"abs", [](const Value& in, const auto&, const auto&, size_t o) {
         if (is_int(in)) return Value(in.get<int64_t>() == INT64_MIN ? in.get<int64_t>() : std::abs(in.get<int64_t>()));
         if (!in.is_number()) fail(o, "abs needs a number");
         return Value(std::abs(in.get<double>()));
       }},
      {"first", [](const Value& in, const auto&, const auto&, size_t o) { auto items = iterate(in, o); return items.empty() ? undefined() : items.front(); }},
      {"last", [](const Value& in, const auto&, const auto&, size_t o) { auto items = iterate(in, o); return items.empty() ? undefined() : items.back(); }},
      {"list", [](const Value& in, const auto&, const auto&, size_t o) { return Value(iterate(in, o)); }},
      {"reverse", [](const Value& in, const auto&, const auto&, size_t o) { return reversed(in, o); }},
      {"items", [](const Value& in, const auto&, const auto&, size_t o) { return items_of(in, o); }},
      {"join", [](const Value& in, const auto& a, const auto& k, size_t o) {
         return join(in, to_text(arg(a, k, 0, "d", kEmptyString)), arg(a, k, 1, "attribute", kNone), o);
       }},
      {"default", [](const Value& in, const auto& a, const auto& k, size_t) {
         const bool boolean = truthy(arg(a, k, 1, "boolean", Value(false)));
         return (is_undefined(in) || (boolean && !truthy(in))) ? arg(a, k, 0, "default_value", kEmptyString) : in;
       }},
      {"replace", [](const Value& in, const auto& a, const auto& k, size_t o) {
         const Value& count = arg(a, k, 2, "count", kNone);
         return Value(replace_all(to_text(in), as_string(arg(a, k, 0, "old", kNone), o), as_string(arg(a, k, 1, "new", kNone), o), count.is_null() ? -1 : as_int(count, o)));
       }},
      {"selectattr", [](const Value& in, const auto& a, const auto&, size_t o) { return select(in, a, true, true, o); }},
      {"rejectattr", [](const Value& in, const auto& a, const auto&, size_t o) { return select(in, a, true, false, o); }},
      {"select", [](const Value& in, const auto& a, const auto&, size_t o) { return select(in, a, false, true, o); }},
      {"reject", [](const Value& in, const auto& a, const auto&, size_t o) { return select(in, a, false, false, o); }},
      {"map", [](const Value& in, const auto& a, const auto& k, size_t o) { return map_values(in, a, k, o); }},
      {"indent", [](const Value& in, const auto& a, const auto& k, size_t o) { return indent(in, a, k, o); }},
  };
  return kFilters;
}

Value string_method(const std::string& text, const std::string& name, const std::vector<Value>& args,
                    const Value& kwargs, size_t offset) {
  const Value& first = arg(args, kwargs, 0, "", kNone);
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return Value(strip(text, first, name != "rstrip", name != "lstrip"));
  }
  if (name == "upper" || name == "lower") return Value(change_case(text, name == "upper"));
  if (name == "title" || name == "capitalize") return Value(capitalize(text, name == "title"));
  if (name == "startswith" || name == "endswith") {
    std::vector<Value> candidates = first.is_array() ? iterate(first, offset) : std::vector<Value>{first};
    return Value(std::any_of(candidates.begin(), candidates.end(), [&](const Value& candidate) {
      const std::string& part = as_string(candidate, offset);
      return name == "startswith" ? text.starts_with(part) : text.ends_with(part);
    }));
  }
  if (name == "split") {
    const Value max_split = arg(args, kwargs, 1, "maxsplit", Value(-1));
    return split(text, arg(args, kwargs, 0, "sep", kNone), as_int(max_split, offset));
  }
  if (name == "replace") {
    const Value count = arg(args, kwargs, 2, "count", Value(-1));
    return Value(replace_all(text, as_string(first, offset), as_string(arg(args, kwargs, 1, "", kNone), offset), as_int(count, offset)));
  }
  if (name == "join") return join(first, text, kNone, offset);
  if (name == "find") {
    const size_t found = text.find(as_string(first, offset));
    return Value(found == std::string::npos ? int64_t{-1} : static_cast<int64_t>(found));
  }
  fail(offset, "unsupported string method '" + name + "'");
}

}  // namespace

Value apply_filter(const std::string& name, const Value& input, const std::vector<Value>& args,
                   const Value& kwargs, size_t offset) {
  const auto& table = filters();
  const std::string canonical = name == "d" ? "default" : name;
  auto found = table.find(canonical);
  if (found == table.end()) fail(offset, "unsupported filter '" + name + "'");
  return found->second(input, args, kwargs, offset);
}

Value call_method(const Value& object, const std::string& name, const std::vector<Value>& args,
                  const Value& kwargs, size_t offset) {
  if (object.is_string()) return string_method(object.get<std::string>(), name, args, kwargs, offset);
  if (object.is_object()) {
    if (name == "items") return items_of(object, offset);
    if (name == "keys") return Value(iterate(object, offset));
    if (name == "values") {
      Value values = Value::array();
      for (const auto& [key, item] : object.items()) values.push_back(item);
      return values;
    }
    if (name == "get") {
      auto found = object.find(as_string(arg(args, kwargs, 0, "key", kNone), offset));
      return found != object.end() ? *found : arg(args, kwargs, 1, "default", kNone);
    }
  }
  fail(offset, "unsupported method '" + name + "'");
}

Value call_function(const std::string& name, const std::vector<Value>& args, const Value& kwargs,
                    size_t offset) {
  if (name == "raise_exception") fail(offset, "template raised: " + to_text(arg(args, kwargs, 0, "message", kNone)));
  if (name == "namespace" || name == "dict") {
    Value object = args.empty() || !args[0].is_object() ? Value::object() : args[0];
    for (const auto& [key, item] : kwargs.items()) object[key] = item;
    return object;
  }
  if (name == "range") {
    int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) stop = as_int(args[0], offset);
    else if (args.size() >= 2) start = as_int(args[0], offset), stop = as_int(args[1], offset);
    if (args.size() >= 3) step = as_int(args[2], offset);
    if (step == 0) fail(offset, "range() step cannot be zero");
    Value out = Value::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (static_cast<int64_t>(out.size()) >= kMaxRange) fail(offset, "range() too long");
      out.push_back(i);
    }
    return out;
  }
  if (name == "strftime_now") {  // Llama 3.x templates put today's date in the system prompt
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[256];
    const size_t size = std::strftime(buffer, sizeof(buffer), as_string(arg(args, kwargs, 0, "format", kNone), offset).c_str(), &local);
    return Value(std::string(buffer, size));
  }
  fail(offset, "unknown function '" + name + "'");
}

}  // namespace moenav::server::jinja
