// Prefetch policies: after a layer is routed, which experts of the next `depth` MoE layers to load
// ahead, best first. The cache (expert_cache.h) decides what it can take and the store's I/O
// workers load them while the current layer computes. Prefetching only moves bytes earlier; it
// can never change which experts run or what they compute.
//
//   next_layer_gate  the later layers' routers applied to this layer's MoE input
//                    (mixtral-offloading; gate_speculation.h)
//   trace            statistical (MoE-Infinity-like): per token, the experts that most often
//                    followed this token's experts at the next MoE layer, from transition counts
//                    gathered during the run (and seeded from warm-start statistics); layers
//                    further ahead chain the prediction; ties go to the more frequent expert,
//                    then the lower index
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "model/model_config.h"
#include "moenav/status.h"

namespace moenav {

struct RoutingStats;

enum class PrefetchPolicy : uint8_t { None, NextLayerGate, Trace, Count };
Expected<PrefetchPolicy> parse_prefetch_policy(std::string_view name);

struct PrefetchRequest {
  int64_t layer = -1;
  std::vector<int32_t> candidates;  // best first
};

class Prefetcher {
 public:
  Prefetcher(PrefetchPolicy policy, int depth, const ModelConfig& config, const RoutingStats* warm);

  // Fills predictions [T, k] for the MoE layer `distance` ahead; returns that layer (-1: none).
  using Speculate = std::function<int64_t(int distance, std::vector<int32_t>& predictions)>;

  // After `layer` was routed ([T, k] experts): the prefetch requests, nearest layer first.
  void after_routing(int64_t layer, int64_t n_tokens, int64_t k, std::span<const int32_t> routed,
                     const Speculate& speculate, std::vector<PrefetchRequest>& requests);
  PrefetchPolicy policy() const { return policy_; }
  int depth() const { return depth_; }

 private:
  void learn(int64_t layer, int64_t n_tokens, int64_t k, std::span<const int32_t> routed);
  void predict_from_statistics(int64_t layer, int64_t n_tokens, int64_t k,
                               std::span<const int32_t> routed, std::vector<PrefetchRequest>& requests);

  PrefetchPolicy policy_;
  int depth_;
  ModelConfig config_;
  std::vector<std::vector<double>> transitions_;  // [n_layers][E * E] to the next MoE layer
  std::vector<std::vector<double>> frequency_;    // [n_layers][E]
  int64_t previous_layer_ = -1;
  int64_t previous_k_ = 0;
  std::vector<int32_t> previous_routed_;
  std::vector<int32_t> predictions_;
};

}  // namespace moenav
