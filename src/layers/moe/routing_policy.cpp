#include "layers/moe/routing_policy.h"

namespace moenav {

Expected<RoutingPolicy> RoutingPolicy::create(const RoutingConfig& config, const ModelConfig& model) {
  RoutingPolicy policy;
  const int64_t default_k = config.top_k > 0 ? config.top_k : model.n_experts_used;
  if (default_k > model.n_experts) {
    return Status::errorf("routing.top_k = {} is more than the model's {} experts per layer",
                          default_k, model.n_experts);
  }
  policy.k_per_layer_.assign(static_cast<size_t>(model.n_layers), default_k);
  if (!config.per_layer_top_k.empty()) {
    if (static_cast<int64_t>(config.per_layer_top_k.size()) != model.n_layers) {
      return Status::errorf("routing.per_layer_top_k has {} entries; the model has {} layers",
                            config.per_layer_top_k.size(), model.n_layers);
    }
    for (int64_t layer = 0; layer < model.n_layers; ++layer) {
      const int k = config.per_layer_top_k[static_cast<size_t>(layer)];
      if (k < 1 || k > model.n_experts) {
        return Status::errorf("routing.per_layer_top_k[{}] = {} must be between 1 and {}", layer, k,
                              model.n_experts);
      }
      policy.k_per_layer_[static_cast<size_t>(layer)] = k;
    }
  }
  if (config.skip_policy == "threshold") {
    if (config.skip_threshold >= 1.0) {
      return Status::errorf("routing.skip.threshold = {} must be below 1", config.skip_threshold);
    }
    policy.skip_threshold_ = config.skip_threshold;
  } else if (config.skip_policy != "none") {
    return Status::errorf("routing.skip.policy '{}' is not available in this build",
                          config.skip_policy);
  }
  if (config.prune_policy != "none") {
    return Status::errorf("routing.prune.policy '{}' is not available in this build",
                          config.prune_policy);
  }
  return policy;
}

void RoutingPolicy::apply(Routing& routing) const {
  if (skip_threshold_ <= 0.0) return;
  for (int64_t t = 0; t < routing.n_tokens; ++t) {
    for (int64_t slot = 1; slot < routing.k; ++slot) {
      const size_t index = static_cast<size_t>(t * routing.k + slot);
      if (routing.weights[index] < skip_threshold_) routing.experts[index] = -1;
    }
  }
}

}  // namespace moenav
