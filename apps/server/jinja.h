// A small Jinja2 subset, enough for the chat templates models ship in tokenizer_config.json and
// GGUF metadata (Mixtral/Mistral, Llama 2/3, ChatML/Qwen, Zephyr, Gemma, DeepSeek): text,
// {{ expressions }}, {% if/elif/else %}, {% for %} with loop.*, {% set %} (also ns.attr with
// namespace()), comments, whitespace control ({%- -%}), string/number/list/dict literals,
// attribute and index access, slices ([1:], [::-1]), + - * / // % ~, comparisons, and/or/not,
// in, `is` tests, `a if c else b`, common filters (trim, length, tojson, join, default, ...) and
// string/dict methods (strip, startswith, split, items, get, ...).
//
// Rendering follows Hugging Face's apply_chat_template environment: trim_blocks and
// lstrip_blocks on, keep_trailing_newline off, lenient undefined values (print as "", falsy). Anything outside the subset is
// a parse or render error with its position, never a crash; callers fall back to a default.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "moenav/status.h"

namespace moenav::server::jinja {

// Ordered so that tojson writes keys in the order the client sent them, as Python does.
using Value = nlohmann::ordered_json;

struct Node;

class Template {
 public:
  static Expected<Template> parse(std::string_view source);
  // `context` is an object of top-level variables (messages, add_generation_prompt, ...).
  Expected<std::string> render(const Value& context) const;

  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  ~Template();

 private:
  Template();
  std::unique_ptr<Node> root_;
};

}  // namespace moenav::server::jinja
