// RoutingPolicy: the only stage that changes which experts run on purpose (and so the numbers):
// a global or per-layer k (explicit schedules, or the data-free LExI-like allocation of
// layer_k_allocation.h), expert pruning masks (expert_pruning.h), and skipping selected experts
// after routing:
//   threshold  drop selected experts whose normalized weight is below τ
//   adaptive   AdapMoE-like adaptive gating: keep each token's best experts, in order, until their
//              weight reaches τ of the selection's total, so confident tokens use fewer experts
// Each token's top-1 expert is always kept. With renormalize the kept weights are rescaled to the
// full selection's sum. The default policy reproduces the model exactly.
#pragma once

#include <vector>

#include "layers/moe/router.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "moenav/engine_config.h"

namespace moenav {

class ThreadPool;

class RoutingPolicy {
 public:
  // weights and pool are needed by routing.allocation.policy = lexi (null otherwise is fine).
  static Expected<RoutingPolicy> create(const RoutingConfig& config, const ModelConfig& model,
                                        const ModelWeights* weights = nullptr,
                                        ThreadPool* pool = nullptr);

  int64_t k_for_layer(int64_t layer) const { return k_per_layer_[static_cast<size_t>(layer)]; }
  const std::vector<int64_t>& k_per_layer() const { return k_per_layer_; }
  // Experts that may be selected in `layer`, or nullptr when all may.
  const std::vector<bool>* allowed(int64_t layer) const {
    return allowed_.empty() ? nullptr : &allowed_[static_cast<size_t>(layer)];
  }
  // Post-selection changes (threshold and adaptive skipping).
  void apply(Routing& routing) const;
  // Whether apply() can change a selection (a skip policy is set).
  bool adjusts_selection() const { return skip_ != Skip::None; }

  // Pruning masks computed elsewhere (calibration): [n_layers][n_experts].
  void set_allowed(std::vector<std::vector<bool>> allowed) { allowed_ = std::move(allowed); }

 private:
  enum class Skip { None, Threshold, Adaptive };
  std::vector<int64_t> k_per_layer_;
  std::vector<std::vector<bool>> allowed_;
  Skip skip_ = Skip::None;
  double skip_threshold_ = 0.0;
  bool renormalize_ = false;
};

}  // namespace moenav
