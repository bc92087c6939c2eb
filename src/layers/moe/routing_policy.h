// RoutingPolicy: the only stage that changes which experts run on purpose (and so the numbers):
// a global or per-layer k, expert pruning masks, and dropping selected experts whose weight is
// below a threshold. The default policy reproduces the model exactly.
#pragma once

#include <vector>

#include "layers/moe/router.h"
#include "model/model_config.h"
#include "moenav/engine_config.h"

namespace moenav {

class RoutingPolicy {
 public:
  static Expected<RoutingPolicy> create(const RoutingConfig& config, const ModelConfig& model);

  int64_t k_for_layer(int64_t layer) const { return k_per_layer_[static_cast<size_t>(layer)]; }
  // Experts that may be selected in `layer`, or nullptr when all may.
  const std::vector<bool>* allowed(int64_t layer) const {
    return allowed_.empty() ? nullptr : &allowed_[static_cast<size_t>(layer)];
  }
  // Post-selection changes (threshold skipping). The top-1 slot of each token is always kept.
  void apply(Routing& routing) const;

  // Pruning masks computed elsewhere (calibration): [n_layers][n_experts].
  void set_allowed(std::vector<std::vector<bool>> allowed) { allowed_ = std::move(allowed); }

 private:
  std::vector<int64_t> k_per_layer_;
  std::vector<std::vector<bool>> allowed_;
  double skip_threshold_ = 0.0;
};

}  // namespace moenav
