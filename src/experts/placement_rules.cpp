#include "experts/placement_rules.h"

#include <cctype>
#include <string_view>

#include <fmt/format.h>

namespace moenav {
namespace {

// "*" or "1,3,5-7" over [0, limit) -> membership mask.
Expected<std::vector<bool>> parse_index_list(std::string_view text, int64_t limit, const char* what,
                                             const std::string& pattern) {
  std::vector<bool> mask(static_cast<size_t>(limit), false);
  if (text == "*") {
    mask.assign(static_cast<size_t>(limit), true);
    return mask;
  }
  auto bad = [&](std::string_view detail) {
    return Status::errorf("placement rule '{}': {} list '{}': {} (use *, N, A-B or a comma list)",
                          pattern, what, text, detail);
  };
  size_t position = 0;
  auto number = [&](int64_t& out) -> bool {
    const size_t start = position;
    out = 0;
    while (position < text.size() && std::isdigit(static_cast<unsigned char>(text[position]))) {
      out = out * 10 + (text[position++] - '0');
      if (out > (int64_t{1} << 40)) return false;
    }
    return position > start;
  };
  while (position < text.size()) {
    int64_t first = 0, last = 0;
    if (!number(first)) return bad("expected a number");
    last = first;
    if (position < text.size() && text[position] == '-') {
      ++position;
      if (!number(last)) return bad("expected a number after '-'");
    }
    if (first > last) return bad(fmt::format("range {}-{} is reversed", first, last));
    if (last >= limit) return bad(fmt::format("index {} is out of range (the model has {} {}s)", last, limit, what));
    for (int64_t i = first; i <= last; ++i) mask[static_cast<size_t>(i)] = true;
    if (position < text.size()) {
      if (text[position] != ',') return bad(fmt::format("unexpected '{}'", text[position]));
      ++position;
    }
  }
  return mask;
}

// Reads "NAME[LIST]" at the front of rest; LIST defaults to "*" when the brackets are absent.
Expected<std::string_view> take_bracketed(std::string_view& rest, std::string_view name,
                                          const std::string& pattern) {
  if (!rest.starts_with(name)) {
    return Status::errorf("placement rule '{}': expected '{}' (form: layers[LIST].experts[LIST])",
                          pattern, name);
  }
  rest.remove_prefix(name.size());
  if (rest.empty() || rest.front() != '[') return std::string_view("*");
  const size_t close = rest.find(']');
  if (close == std::string_view::npos) return Status::errorf("placement rule '{}': missing ']'", pattern);
  std::string_view list = rest.substr(1, close - 1);
  rest.remove_prefix(close + 1);
  return list;
}

Expected<Tier> parse_tier(const std::string& text, const std::string& pattern, bool allow_device) {
  if (text == "host") return Tier::Host;
  if (text == "disk") return Tier::Disk;
  if (text == "device") {
    if (!allow_device) {
      return Status::errorf("placement rule '{}': tier \"device\" needs a GPU (device.backend = cuda "
                            "on a CUDA build); this run's fast tier is host memory", pattern);
    }
    return Tier::Device;
  }
  return Status::errorf("placement rule '{}': unknown tier '{}' (choose one of: device, host, disk)",
                        pattern, text);
}

}  // namespace

Expected<ExpertPlacement> resolve_placement(const std::vector<PlacementRule>& rules,
                                            const ModelConfig& config, bool allow_device) {
  ExpertPlacement placement;
  placement.n_experts = config.n_experts;
  placement.tiers.assign(static_cast<size_t>(config.n_layers * config.n_experts), std::nullopt);
  for (const PlacementRule& rule : rules) {
    MOENAV_ASSIGN_OR_RETURN(const Tier tier, parse_tier(rule.tier, rule.match, allow_device));
    std::string_view rest = rule.match;
    MOENAV_ASSIGN_OR_RETURN(std::string_view layer_list, take_bracketed(rest, "layers", rule.match));
    std::string_view expert_list = "*";
    if (!rest.empty()) {
      if (rest.front() != '.') {
        return Status::errorf("placement rule '{}': unexpected '{}' after the layer list", rule.match, rest);
      }
      rest.remove_prefix(1);
      MOENAV_ASSIGN_OR_RETURN(expert_list, take_bracketed(rest, "experts", rule.match));
      if (!rest.empty()) {
        return Status::errorf("placement rule '{}': unexpected '{}' at the end", rule.match, rest);
      }
    }
    MOENAV_ASSIGN_OR_RETURN(std::vector<bool> layers,
                            parse_index_list(layer_list, config.n_layers, "layer", rule.match));
    MOENAV_ASSIGN_OR_RETURN(std::vector<bool> experts,
                            parse_index_list(expert_list, config.n_experts, "expert", rule.match));
    for (int64_t l = 0; l < config.n_layers; ++l) {
      if (!layers[static_cast<size_t>(l)] || !config.is_moe_layer(l)) continue;
      for (int64_t e = 0; e < config.n_experts; ++e) {
        auto& slot = placement.tiers[static_cast<size_t>(l * config.n_experts + e)];
        if (experts[static_cast<size_t>(e)] && !slot) slot = tier;
      }
    }
  }
  return placement;
}

}  // namespace moenav
