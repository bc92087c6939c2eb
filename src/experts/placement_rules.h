// Placement rules: pattern -> tier for routed experts, the general form of llama.cpp's
// -ot/--override-tensor and --n-cpu-moe ("the experts of the first N layers stay on the CPU").
//   {"match": "layers[0-13].experts", "tier": "host"}      every expert of layers 0..13
//   {"match": "layers[*].experts[0,3,5-7]", "tier": "disk"}  those experts of every layer
// A layer or expert list is "*", or comma-separated indices and inclusive ranges. The first rule
// that matches an expert decides. On the CPU build "host" pins the expert in the host cache
// (never evicted) and "disk" keeps it out of the cache (its uses are misses served by the miss
// policy); "device" needs the CUDA build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "moenav/engine_config.h"
#include "moenav/expert_counters.h"

namespace moenav {

struct ExpertPlacement {
  int64_t n_experts = 0;
  std::vector<std::optional<Tier>> tiers;  // [n_layers * n_experts]; nullopt: no rule
  std::optional<Tier> tier(int64_t layer, int64_t expert) const {
    return tiers[static_cast<size_t>(layer * n_experts + expert)];
  }
};

// Errors: a pattern that does not parse, an index out of range, an unknown tier, and "device" on a
// build or backend without a GPU (allow_device = false).
Expected<ExpertPlacement> resolve_placement(const std::vector<PlacementRule>& rules,
                                            const ModelConfig& config, bool allow_device);

}  // namespace moenav
