#include "experts/prefetcher.h"

#include <algorithm>

#include "experts/gate_speculation.h"
#include "experts/routing_stats.h"

namespace moenav {

Expected<PrefetchPolicy> parse_prefetch_policy(std::string_view name) {
  if (name == "none") return PrefetchPolicy::None;
  if (name == "next_layer_gate") return PrefetchPolicy::NextLayerGate;
  if (name == "trace") return PrefetchPolicy::Trace;
  return Status::errorf("prefetch.policy '{}' is unknown (choose one of: none, next_layer_gate, trace)", name);
}

Prefetcher::Prefetcher(PrefetchPolicy policy, int depth, const ModelConfig& config,
                       const RoutingStats* warm)
    : policy_(policy), depth_(std::max(depth, 1)), config_(config) {
  if (policy_ != PrefetchPolicy::Trace) return;
  const auto layers = static_cast<size_t>(config.n_layers);
  const auto experts = static_cast<size_t>(config.n_experts);
  transitions_.assign(layers, std::vector<double>(experts * experts, 0.0));
  frequency_.assign(layers, std::vector<double>(experts, 0.0));
  if (warm == nullptr) return;
  frequency_ = warm->counts;
  if (warm->has_transitions()) transitions_ = warm->transitions;
}

void Prefetcher::after_routing(int64_t layer, int64_t n_tokens, int64_t k,
                               std::span<const int32_t> routed, const Speculate& speculate,
                               std::vector<PrefetchRequest>& requests) {
  requests.clear();
  if (policy_ == PrefetchPolicy::Trace) {
    learn(layer, n_tokens, k, routed);
    predict_from_statistics(layer, n_tokens, k, routed, requests);
    return;
  }
  if (policy_ != PrefetchPolicy::NextLayerGate) return;
  for (int distance = 1; distance <= depth_; ++distance) {
    const int64_t target = speculate(distance, predictions_);
    if (target < 0) break;
    requests.push_back({target, first_use_order(predictions_, config_.n_experts)});
  }
}

void Prefetcher::learn(int64_t layer, int64_t n_tokens, int64_t k, std::span<const int32_t> routed) {
  const int64_t n_experts = config_.n_experts;
  auto& frequency = frequency_[static_cast<size_t>(layer)];
  for (int32_t expert : routed) if (expert >= 0) frequency[static_cast<size_t>(expert)] += 1.0;
  const bool follows = previous_layer_ >= 0 && moe_layer_ahead(config_, previous_layer_, 1) == layer &&
                       static_cast<int64_t>(previous_routed_.size()) == n_tokens * previous_k_;
  if (follows) {
    auto& table = transitions_[static_cast<size_t>(previous_layer_)];
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t a = 0; a < previous_k_; ++a) {
        const int32_t from = previous_routed_[static_cast<size_t>(t * previous_k_ + a)];
        if (from < 0) continue;
        for (int64_t b = 0; b < k; ++b) {
          const int32_t to = routed[static_cast<size_t>(t * k + b)];
          if (to >= 0) table[static_cast<size_t>(from * n_experts + to)] += 1.0;
        }
      }
    }
  }
  previous_layer_ = layer;
  previous_k_ = k;
  previous_routed_.assign(routed.begin(), routed.end());
}

void Prefetcher::predict_from_statistics(int64_t layer, int64_t n_tokens, int64_t k,
                                         std::span<const int32_t> routed,
                                         std::vector<PrefetchRequest>& requests) {
  const int64_t n_experts = config_.n_experts;
  std::vector<int32_t> current(routed.begin(), routed.end());  // [T, k] this distance's guess
  std::vector<double> score(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  int64_t source = layer;
  for (int distance = 1; distance <= depth_; ++distance) {
    const int64_t target = moe_layer_ahead(config_, layer, distance);
    if (target < 0) break;
    const auto& table = transitions_[static_cast<size_t>(source)];
    const auto& frequency = frequency_[static_cast<size_t>(target)];
    const int64_t top = std::min(k, n_experts);
    predictions_.assign(static_cast<size_t>(n_tokens * top), -1);
    for (int64_t t = 0; t < n_tokens; ++t) {
      std::fill(score.begin(), score.end(), 0.0);
      for (int64_t a = 0; a < k; ++a) {
        const int32_t from = current[static_cast<size_t>(t * k + a)];
        if (from < 0) continue;
        for (int64_t e = 0; e < n_experts; ++e) score[static_cast<size_t>(e)] += table[static_cast<size_t>(from * n_experts + e)];
      }
      for (int64_t e = 0; e < n_experts; ++e) order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
      std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int32_t a, int32_t b) {
        const auto ia = static_cast<size_t>(a), ib = static_cast<size_t>(b);
        if (score[ia] != score[ib]) return score[ia] > score[ib];
        if (frequency[ia] != frequency[ib]) return frequency[ia] > frequency[ib];
        return a < b;
      });
      std::copy(order.begin(), order.begin() + top, predictions_.begin() + t * top);
    }
    requests.push_back({target, first_use_order(predictions_, n_experts)});
    current = predictions_;
    k = top;
    source = target;
  }
}

}  // namespace moenav
