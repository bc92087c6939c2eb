// Routing statistics: how often each expert of each layer was selected (hard counts), the router
// weight it received (soft counts), and which experts of the next MoE layer followed it on the
// same token (transitions). They drive frequency-based static placement, cache warm starts,
// statistical prefetching (MoE-Infinity) and frequency pruning. `moenav trace --stats` writes
// them; reference.json's routing_counts_* lists load too (hard counts only).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "moenav/status.h"

namespace moenav {

struct RoutingStats {
  int64_t tokens = 0;                                  // tokens seen at the first MoE layer
  std::vector<std::vector<double>> counts;             // [n_layers][n_experts] (dense layers: 0)
  std::vector<std::vector<double>> weight_sums;        // [n_layers][n_experts]; empty if unknown
  std::vector<std::vector<double>> transitions;        // [n_layers][E * E] to the next MoE layer;
                                                       // empty if unknown

  static RoutingStats zeros(const ModelConfig& config, bool with_transitions);
  bool has_weight_sums() const { return !weight_sums.empty(); }
  bool has_transitions() const { return !transitions.empty(); }
  // Adds one layer's routing [T, k]; `previous` is the same tokens' routing [T, previous_k] at
  // the previous MoE layer (empty at the first), for transitions.
  void add(const ModelConfig& config, int64_t layer, int64_t n_tokens, int64_t k,
           std::span<const int32_t> routed, std::span<const float> weights,
           int64_t previous_layer, int64_t previous_k, std::span<const int32_t> previous);
  nlohmann::json to_json() const;
};

// Reads a statistics file: moenav's own format ({"format": "moenav-routing-stats", ...}), or any
// JSON object with a "routing_counts*" array of per-layer counts (reference.json). Per-layer
// arrays may list every layer or only the MoE layers. Errors name the file and what is wrong.
Expected<RoutingStats> load_routing_stats(const std::string& path, const ModelConfig& config);
Status save_routing_stats(const std::string& path, const RoutingStats& stats);

}  // namespace moenav
