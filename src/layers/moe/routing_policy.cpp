#include "layers/moe/routing_policy.h"

#include "layers/moe/expert_pruning.h"
#include "layers/moe/layer_k_allocation.h"

namespace moenav {
namespace {

Status check_k(int64_t k, const ModelConfig& model, const std::string& option) {
  if (k < 1 || k > model.n_experts) {
    return Status::errorf("{} = {} must be between 1 and the model's {} experts per layer", option, k,
                          model.n_experts);
  }
  return ok_status();
}

}  // namespace

Expected<RoutingPolicy> RoutingPolicy::create(const RoutingConfig& config, const ModelConfig& model,
                                              const ModelWeights* weights, ThreadPool* pool) {
  RoutingPolicy policy;
  const int64_t default_k = config.top_k > 0 ? config.top_k : model.n_experts_used;
  if (model.n_experts > 0 && default_k > model.n_experts) {
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
      MOENAV_RETURN_IF_ERROR(check_k(k, model, fmt::format("routing.per_layer_top_k[{}]", layer)));
      policy.k_per_layer_[static_cast<size_t>(layer)] = k;
    }
  }
  if (config.allocation_policy == "lexi") {
    if (!config.per_layer_top_k.empty()) {
      return Status::error("routing.allocation.policy = lexi computes the per-layer k itself; "
                           "remove routing.per_layer_top_k");
    }
    if (weights == nullptr || pool == nullptr) {
      return Status::error("routing.allocation.policy = lexi needs the model's weights");
    }
    const double average = config.allocation_average_k > 0 ? config.allocation_average_k
                                                            : static_cast<double>(default_k);
    MOENAV_ASSIGN_OR_RETURN(policy.k_per_layer_, allocate_layer_k(model, *weights, average, *pool));
  } else if (config.allocation_policy != "none") {
    return Status::errorf("routing.allocation.policy '{}' is unknown (choose one of: none, lexi)",
                          config.allocation_policy);
  }
  policy.renormalize_ = config.skip_renormalize;
  if (config.skip_policy == "threshold") {
    if (config.skip_threshold >= 1.0) {
      return Status::errorf("routing.skip.threshold = {} must be below 1", config.skip_threshold);
    }
    policy.skip_ = Skip::Threshold;
    policy.skip_threshold_ = config.skip_threshold;
  } else if (config.skip_policy == "adaptive") {
    if (!(config.skip_threshold > 0.0 && config.skip_threshold <= 1.0)) {
      return Status::errorf("routing.skip.threshold = {}: adaptive skipping keeps experts until their "
                            "weight reaches this fraction of the selection, so it must be in (0, 1]",
                            config.skip_threshold);
    }
    policy.skip_ = Skip::Adaptive;
    policy.skip_threshold_ = config.skip_threshold;
  } else if (config.skip_policy != "none") {
    return Status::errorf("routing.skip.policy '{}' is unknown (choose one of: none, threshold, adaptive)",
                          config.skip_policy);
  }
  MOENAV_ASSIGN_OR_RETURN(policy.allowed_, pruning_masks(config, model, policy.k_per_layer_));
  return policy;
}

void RoutingPolicy::apply(Routing& routing) const {
  if (skip_ == Skip::None) return;
  for (int64_t t = 0; t < routing.n_tokens; ++t) {
    float* weights = routing.weights.data() + t * routing.k;
    int32_t* experts = routing.experts.data() + t * routing.k;
    float total = 0.0f;
    for (int64_t slot = 0; slot < routing.k; ++slot) if (experts[slot] >= 0) total += weights[slot];
    float kept = 0.0f;
    for (int64_t slot = 0; slot < routing.k; ++slot) {
      if (experts[slot] < 0) continue;
      const bool drop = slot > 0 && (skip_ == Skip::Threshold ? weights[slot] < skip_threshold_
                                                              : kept >= skip_threshold_ * total);
      if (drop) {
        experts[slot] = -1;
      } else {
        kept += weights[slot];
      }
    }
    if (renormalize_ && kept > 0.0f && kept < total) {
      const float scale = total / kept;
      for (int64_t slot = 0; slot < routing.k; ++slot) if (experts[slot] >= 0) weights[slot] *= scale;
    }
  }
}

}  // namespace moenav
