#include "layers/moe/expert_pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <memory>
#include <random>

#include "experts/routing_stats.h"

namespace moenav {
namespace {

// The experts to prune in one layer, by policy.
Expected<std::vector<int32_t>> pruned_experts(const RoutingConfig& config, const ModelConfig& model,
                                              int64_t layer, int64_t count,
                                              const RoutingStats* stats) {
  const int64_t n_experts = model.n_experts;
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  std::iota(order.begin(), order.end(), 0);
  if (config.prune_policy == "frequency") {
    const auto& scores = config.prune_score == "soft" ? stats->weight_sums : stats->counts;
    const auto& row = scores[static_cast<size_t>(layer)];
    // Least important first; ties prune the higher index.
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      const double sa = row[static_cast<size_t>(a)], sb = row[static_cast<size_t>(b)];
      return sa < sb || (sa == sb && a > b);
    });
  } else if (config.prune_policy == "random") {
    std::mt19937_64 random(static_cast<uint64_t>(config.prune_seed) * 1000003u + static_cast<uint64_t>(layer));
    std::shuffle(order.begin(), order.end(), random);
  } else if (config.prune_pattern == "odd" || config.prune_pattern == "even") {
    const int32_t parity = config.prune_pattern == "odd" ? 1 : 0;
    std::vector<int32_t> chosen;
    for (int32_t e = 0; e < n_experts; ++e) if (e % 2 == parity) chosen.push_back(e);
    return chosen;
  } else {  // tail
    std::reverse(order.begin(), order.end());
  }
  order.resize(static_cast<size_t>(count));
  return order;
}

}  // namespace

Expected<std::vector<std::vector<bool>>> pruning_masks(const RoutingConfig& config,
                                                       const ModelConfig& model,
                                                       const std::vector<int64_t>& k_per_layer) {
  std::vector<std::vector<bool>> masks;
  if (config.prune_policy == "none") return masks;
  if (config.prune_policy != "frequency" && config.prune_policy != "random" &&
      config.prune_policy != "structured") {
    return Status::errorf("routing.prune.policy '{}' is unknown (choose one of: none, frequency, "
                          "random, structured)", config.prune_policy);
  }
  const bool by_pattern = config.prune_policy == "structured" && config.prune_pattern != "tail";
  if (!by_pattern && !(config.prune_fraction > 0.0 && config.prune_fraction < 1.0)) {
    return Status::errorf("routing.prune.fraction = {} must be between 0 and 1 (exclusive) for "
                          "routing.prune.policy = {}", config.prune_fraction, config.prune_policy);
  }
  std::unique_ptr<RoutingStats> stats;
  if (config.prune_policy == "frequency") {
    if (config.prune_calibration.empty()) {
      return Status::error("routing.prune.policy = frequency needs routing.prune.calibration "
                           "(--prune-calibration): routing statistics of a calibration text, from "
                           "`moenav trace --stats`, or a reference.json with routing_counts");
    }
    MOENAV_ASSIGN_OR_RETURN(RoutingStats loaded, load_routing_stats(config.prune_calibration, model));
    if (config.prune_score == "soft" && !loaded.has_weight_sums()) {
      return Status::errorf("{}: routing.prune.score = soft needs weight sums, which this file lacks "
                            "(write one with `moenav trace --stats`, or use score hard)",
                            config.prune_calibration);
    }
    stats = std::make_unique<RoutingStats>(std::move(loaded));
  }
  const auto count = static_cast<int64_t>(std::llround(config.prune_fraction * static_cast<double>(model.n_experts)));
  masks.assign(static_cast<size_t>(model.n_layers), std::vector<bool>(static_cast<size_t>(model.n_experts), true));
  for (int64_t l = 0; l < model.n_layers; ++l) {
    if (!model.is_moe_layer(l)) continue;
    MOENAV_ASSIGN_OR_RETURN(std::vector<int32_t> pruned, pruned_experts(config, model, l, count, stats.get()));
    const int64_t left = model.n_experts - static_cast<int64_t>(pruned.size());
    if (left < k_per_layer[static_cast<size_t>(l)]) {
      return Status::errorf("routing.prune: pruning {} of {} experts leaves {} in layer {}, fewer "
                            "than its top-k = {}", pruned.size(), model.n_experts, left, l,
                            k_per_layer[static_cast<size_t>(l)]);
    }
    for (int32_t e : pruned) masks[static_cast<size_t>(l)][static_cast<size_t>(e)] = false;
  }
  return masks;
}

}  // namespace moenav
