// Trace-driven cache simulation: replays a routing trace through the expert cache's bookkeeping
// (the same ExpertCache and Prefetcher code a run uses) under any policy, capacity, scope, miss
// and prefetch policy, and predicts hits, misses, evictions, loads and bytes moved without running
// the model. For the deterministic policies (all of them: ties are broken by age, then index) the
// prediction equals what the real run counts on the same trace. Timing (stalls, late prefetches)
// is not simulated: the tuner's cost model turns bytes into time with measured bandwidths.
#pragma once

#include <cstdint>

#include "experts/routing_trace.h"
#include "experts/store_factory.h"
#include "moenav/expert_counters.h"

namespace moenav {

struct SimulationResult {
  ExpertCounters counters;     // hits/misses, miss actions, loads, payload_bytes, prefetch accuracy
  int64_t tokens = 0;          // tokens at the first MoE layer
  int64_t layer_visits = 0;
  bool cached = false;         // false: the setup keeps every expert resident (all hits)
};

// Errors: a trace of another model shape; next_layer_gate prefetch deeper than the trace recorded.
Expected<SimulationResult> simulate_cache(const RoutingTrace& trace, const CacheSetup& setup,
                                          const ModelConfig& config);

}  // namespace moenav
