// Pattern translation of checkpoint tensor names; {L} and {E} match decimal indices.
#include <cctype>

#include "model/arch/architecture.h"

namespace moenav {
namespace {

// Matches `name` against `pattern`, capturing the digits of each placeholder in order.
bool match(std::string_view pattern, std::string_view name, std::vector<std::string_view>& captures) {
  size_t p = 0, n = 0;
  while (p < pattern.size()) {
    if (pattern.compare(p, 3, "{L}") == 0 || pattern.compare(p, 3, "{E}") == 0) {
      size_t start = n;
      while (n < name.size() && std::isdigit(static_cast<unsigned char>(name[n]))) ++n;
      if (n == start) return false;
      captures.push_back(name.substr(start, n - start));
      p += 3;
      continue;
    }
    if (n >= name.size() || pattern[p] != name[n]) return false;
    ++p;
    ++n;
  }
  return n == name.size();
}

std::string substitute(std::string_view pattern, std::string_view source_pattern,
                       const std::vector<std::string_view>& captures) {
  // Placeholders are substituted by kind, so a rule may reorder {L} and {E}.
  std::vector<std::pair<char, std::string_view>> by_kind;
  size_t index = 0;
  for (size_t p = 0; p + 2 < source_pattern.size(); ++p) {
    if (source_pattern[p] == '{' && source_pattern[p + 2] == '}') {
      by_kind.emplace_back(source_pattern[p + 1], captures[index++]);
    }
  }
  std::string out;
  for (size_t p = 0; p < pattern.size(); ++p) {
    if (pattern[p] == '{' && p + 2 < pattern.size() && pattern[p + 2] == '}') {
      for (const auto& [kind, digits] : by_kind) {
        if (kind == pattern[p + 1]) out += digits;
      }
      p += 2;
    } else {
      out += pattern[p];
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> translate_name(std::string_view name, std::span<const NameRule> rules) {
  for (const NameRule& rule : rules) {
    std::vector<std::string_view> captures;
    if (match(rule.source, name, captures)) return substitute(rule.canonical, rule.source, captures);
  }
  return std::nullopt;
}

}  // namespace moenav
