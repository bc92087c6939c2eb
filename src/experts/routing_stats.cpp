#include "experts/routing_stats.h"

#include <fstream>
#include <algorithm>

#include <fmt/format.h>

namespace moenav {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "moenav-routing-stats";

std::vector<int64_t> moe_layers(const ModelConfig& config) {
  std::vector<int64_t> layers;
  for (int64_t l = 0; l < config.n_layers; ++l) if (config.is_moe_layer(l)) layers.push_back(l);
  return layers;
}

// A per-layer table [rows][width] that lists every layer or only the MoE layers.
Status read_table(const json& value, const ModelConfig& config, int64_t width, const std::string& where,
                  std::vector<std::vector<double>>& out) {
  const std::vector<int64_t> moe = moe_layers(config);
  if (!value.is_array() ||
      (value.size() != static_cast<size_t>(config.n_layers) && value.size() != moe.size())) {
    return Status::errorf("{}: expected an array of {} per-layer arrays (or {} for the MoE layers), "
                          "found {}", where, config.n_layers, moe.size(),
                          value.is_array() ? fmt::format("{} entries", value.size()) : value.type_name());
  }
  const bool every_layer = value.size() == static_cast<size_t>(config.n_layers);
  out.assign(static_cast<size_t>(config.n_layers), std::vector<double>(static_cast<size_t>(width), 0.0));
  for (size_t i = 0; i < value.size(); ++i) {
    const int64_t layer = every_layer ? static_cast<int64_t>(i) : moe[i];
    const json& row = value[i];
    if (!config.is_moe_layer(layer) && row.is_array() && row.empty()) continue;
    if (!row.is_array() || row.size() != static_cast<size_t>(width)) {
      return Status::errorf("{}: layer {} has {} values, expected {} (n_experts = {})", where, layer,
                            row.is_array() ? row.size() : 0, width, config.n_experts);
    }
    for (size_t e = 0; e < row.size(); ++e) {
      if (!row[e].is_number() || row[e].get<double>() < 0) {
        return Status::errorf("{}: layer {} entry {} is {}, expected a non-negative number", where,
                              layer, e, row[e].dump());
      }
      out[static_cast<size_t>(layer)][e] = row[e].get<double>();
    }
  }
  return ok_status();
}

}  // namespace

RoutingStats RoutingStats::zeros(const ModelConfig& config, bool with_transitions) {
  RoutingStats stats;
  const auto layers = static_cast<size_t>(config.n_layers);
  const auto experts = static_cast<size_t>(config.n_experts);
  stats.counts.assign(layers, std::vector<double>(experts, 0.0));
  stats.weight_sums.assign(layers, std::vector<double>(experts, 0.0));
  if (with_transitions) stats.transitions.assign(layers, std::vector<double>(experts * experts, 0.0));
  return stats;
}

void RoutingStats::add(const ModelConfig& config, int64_t layer, int64_t n_tokens, int64_t k,
                       std::span<const int32_t> routed, std::span<const float> weights,
                       int64_t previous_layer, int64_t previous_k,
                       std::span<const int32_t> previous) {
  const int64_t n_experts = config.n_experts;
  auto& layer_counts = counts[static_cast<size_t>(layer)];
  auto& layer_weights = weight_sums[static_cast<size_t>(layer)];
  for (int64_t i = 0; i < n_tokens * k; ++i) {
    const int32_t expert = routed[static_cast<size_t>(i)];
    if (expert < 0) continue;
    layer_counts[static_cast<size_t>(expert)] += 1.0;
    layer_weights[static_cast<size_t>(expert)] += weights[static_cast<size_t>(i)];
  }
  if (transitions.empty() || previous_layer < 0 || previous.empty()) return;
  auto& table = transitions[static_cast<size_t>(previous_layer)];
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t a = 0; a < previous_k; ++a) {
      const int32_t from = previous[static_cast<size_t>(t * previous_k + a)];
      if (from < 0) continue;
      for (int64_t b = 0; b < k; ++b) {
        const int32_t to = routed[static_cast<size_t>(t * k + b)];
        if (to >= 0) table[static_cast<size_t>(from * n_experts + to)] += 1.0;
      }
    }
  }
}

json RoutingStats::to_json() const {
  json out = {{"format", kFormat}, {"version", 1}, {"tokens", tokens}, {"counts", counts}};
  if (has_weight_sums()) out["weight_sums"] = weight_sums;
  if (has_transitions()) out["transitions"] = transitions;
  return out;
}

Expected<RoutingStats> load_routing_stats(const std::string& path, const ModelConfig& config) {
  std::ifstream stream(path);
  if (!stream) return Status::errorf("{}: cannot open routing statistics file", path);
  const json document = json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded() || !document.is_object()) {
    return Status::errorf("{}: not a JSON object (expected routing statistics from `moenav trace "
                          "--stats`)", path);
  }
  RoutingStats stats;
  const json* counts = nullptr;
  std::string counts_key = "counts";
  if (document.value("format", std::string()) == kFormat) {
    if (!document.contains("counts")) return Status::errorf("{}: no \"counts\"", path);
    counts = &document["counts"];
    stats.tokens = document.value("tokens", int64_t{0});
  } else {
    for (const auto& [key, value] : document.items()) {
      if (key.starts_with("routing_counts")) {
        counts = &value;
        counts_key = key;
        break;
      }
    }
    if (counts == nullptr) {
      return Status::errorf("{}: no routing counts (neither a moenav-routing-stats file nor a "
                            "\"routing_counts*\" key)", path);
    }
  }
  const int64_t n_experts = config.n_experts;
  MOENAV_RETURN_IF_ERROR(read_table(*counts, config, n_experts, path + ": " + counts_key, stats.counts));
  if (document.contains("weight_sums")) {
    MOENAV_RETURN_IF_ERROR(read_table(document["weight_sums"], config, n_experts,
                                      path + ": weight_sums", stats.weight_sums));
  }
  if (document.contains("transitions")) {
    MOENAV_RETURN_IF_ERROR(read_table(document["transitions"], config, n_experts * n_experts,
                                      path + ": transitions", stats.transitions));
  }
  if (stats.tokens == 0) {
    // Each token makes k selections at every MoE layer.
    for (int64_t l = 0; l < config.n_layers; ++l) {
      if (!config.is_moe_layer(l)) continue;
      double sum = 0.0;
      for (double c : stats.counts[static_cast<size_t>(l)]) sum += c;
      stats.tokens = static_cast<int64_t>(sum / static_cast<double>(std::max<int64_t>(config.n_experts_used, 1)));
      break;
    }
  }
  return stats;
}

Status save_routing_stats(const std::string& path, const RoutingStats& stats) {
  std::ofstream stream(path);
  if (!stream) return Status::errorf("{}: cannot write routing statistics", path);
  stream << stats.to_json().dump() << "\n";
  return stream ? ok_status() : Status::errorf("{}: write failed", path);
}

}  // namespace moenav
