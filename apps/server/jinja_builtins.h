// Jinja subset: value semantics (Python's truthiness, str(), operators, indexing and slicing) and
// the built-in filters, tests, functions and methods. Used by jinja_render.cpp only.
#pragma once

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "jinja.h"

namespace moenav::server::jinja {

// Thrown while rendering; Template::render turns it into a Status.
struct RenderError {
  std::string message;
  size_t offset;
};

// A value owned here, or a pointer to one that outlives the expression (a scope variable or a
// literal in the tree).
class Ref {
 public:
  explicit Ref(const Value* pointer) : pointer_(pointer) {}
  explicit Ref(Value value) : owned_(std::move(value)) {}
  const Value& get() const { return pointer_ ? *pointer_ : owned_; }
  Value take() && { return pointer_ ? *pointer_ : std::move(owned_); }
  bool borrowed() const { return pointer_ != nullptr; }

 private:
  const Value* pointer_ = nullptr;
  Value owned_;
};

inline Value undefined() { return Value(Value::value_t::discarded); }
inline bool is_undefined(const Value& value) { return value.is_discarded(); }

bool truthy(const Value& value);
std::string to_text(const Value& value);           // Python str()
std::string to_json(const Value& value, int indent);  // Python json.dumps (HF's tojson)
std::vector<Value> iterate(const Value& value, size_t offset);

Ref member(Ref object, const Value& key);  // object.key and object[key]
Value slice(const Value& value, const Value& start, const Value& stop, const Value& step, size_t offset);
Value binary_operator(const std::string& op, const Value& left, const Value& right, size_t offset);

Value apply_filter(const std::string& name, const Value& input, const std::vector<Value>& args,
                   const Value& kwargs, size_t offset);
bool apply_test(const std::string& name, const Value& input, const std::vector<Value>& args, size_t offset);
Value call_method(const Value& object, const std::string& name, const std::vector<Value>& args,
                  const Value& kwargs, size_t offset);
Value call_function(const std::string& name, const std::vector<Value>& args, const Value& kwargs,
                    size_t offset);

// ---- helpers shared by jinja_builtins.cpp and jinja_filters.cpp ----------------------------

inline constexpr size_t kMaxBuiltString = 16u << 20;  // 'x' * n, joins, replaces: bounded
inline constexpr int64_t kMaxRange = 1'000'000;

[[noreturn]] void fail(size_t offset, std::string message);
bool is_int(const Value& value);
double as_double(const Value& value);
int64_t as_int(const Value& value, size_t offset);
const std::string& as_string(const Value& value, size_t offset);
// Positional argument `index`, else keyword `name`, else `fallback`.
const Value& arg(const std::vector<Value>& args, const Value& kwargs, size_t index, const char* name,
                 const Value& fallback);
std::vector<std::string> characters(const std::string& text);  // UTF-8 characters
bool equal(const Value& left, const Value& right);               // Python ==
std::string strip(const std::string& text, const Value& chars, bool left, bool right);
std::string change_case(std::string text, bool upper);
std::string capitalize(const std::string& text, bool every_word);
std::string replace_all(std::string text, const std::string& from, const std::string& to, int64_t count);
Value split(const std::string& text, const Value& separator, int64_t max_split);
Value join(const Value& input, const std::string& separator, const Value& attribute, size_t offset);

}  // namespace moenav::server::jinja
