// Expert pruning (shared/seeds/003): removes a set of experts from every MoE layer before
// inference; the router then picks its top-k among the rest. Masks per layer:
//   frequency   the least important fraction per layer by calibration statistics gathered on the
//               valid split: "hard" scores are selection counts, "soft" scores are summed router
//               weights (routing.prune.score); ties prune the higher index
//   random      a seeded random fraction per layer
//   structured  a fixed pattern: odd or even indices (half the experts), or "tail", the highest
//               indices by fraction
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "moenav/engine_config.h"
#include "moenav/status.h"

namespace moenav {

// Empty result: no pruning. Errors: a fraction outside (0, 1), a layer left with fewer experts
// than its k, a missing or malformed calibration file.
Expected<std::vector<std::vector<bool>>> pruning_masks(const RoutingConfig& config,
                                                       const ModelConfig& model,
                                                       const std::vector<int64_t>& k_per_layer);

}  // namespace moenav
