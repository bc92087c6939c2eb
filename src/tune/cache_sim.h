// Trace-driven expert cache simulation for the cost model: replays a routing trace (taken with
// every expert's weight, so any top-k and skip threshold can be derived from it) through a
// per-layer cache of S slots under a policy, and counts hits. It answers "what hit rate would
// this cache size and policy get" without running the engine, which is what lets the navigator
// predict offloading points instead of measuring them all.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tune/profiler.h"

namespace moenav::tune {

// Which slots of the trace a routing configuration keeps.
struct SelectionRule {
  int64_t top_k = 2;
  double skip_threshold = 0.0;  // drop slots >= 1 whose renormalized weight is below this
  bool renormalize = true;      // the model's norm_topk_prob
};

// Mean routed experts per token and MoE layer under `rule`.
double experts_per_token(const RoutingTrace& trace, const SelectionRule& rule);

// Hit rate of a per-layer cache of `slots` experts ("lru", "lfu", "lfru", "static"); 1.0 when
// slots >= n_experts. Unknown policies are simulated as LRU.
double simulate_hit_rate(const RoutingTrace& trace, const SelectionRule& rule, int64_t slots,
                         std::string_view policy);

struct CacheCurve {
  std::string policy;
  std::vector<int64_t> slots;
  std::vector<double> hit_rate;
};
std::vector<CacheCurve> cache_curves(const RoutingTrace& trace, const SelectionRule& rule,
                                     const std::vector<std::string>& policies);

}  // namespace moenav::tune
