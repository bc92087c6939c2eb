#include "experts/cache_simulator.h"

#include "experts/gate_speculation.h"

namespace moenav {

Expected<SimulationResult> simulate_cache(const RoutingTrace& trace, const CacheSetup& setup,
                                          const ModelConfig& config) {
  if (trace.n_layers != config.n_layers || trace.n_experts != config.n_experts) {
    return Status::errorf("trace of a model with {} layers and {} experts; this model has {} and {}",
                          trace.n_layers, trace.n_experts, config.n_layers, config.n_experts);
  }
  SimulationResult result;
  result.tokens = trace.tokens();
  result.layer_visits = static_cast<int64_t>(trace.layers.size());
  result.cached = setup.plan.cached;
  if (!setup.plan.cached) {
    for (const TraceLayer& event : trace.layers) {
      result.counters.tier(Tier::Host).hits +=
          static_cast<int64_t>(first_use_order(event.routed, config.n_experts).size());
    }
    return result;
  }
  if (setup.prefetch == PrefetchPolicy::NextLayerGate && setup.prefetch_depth > trace.speculation_depth) {
    return Status::errorf("prefetch next_layer_gate with depth {} needs gate speculation {} layers "
                          "ahead; the trace recorded {} (moenav trace --speculate-depth {})",
                          setup.prefetch_depth, setup.prefetch_depth, trace.speculation_depth,
                          setup.prefetch_depth);
  }
  MOENAV_ASSIGN_OR_RETURN(auto cache, ExpertCache::create(setup.settings));
  cache->take_initial_loads();
  Prefetcher prefetcher(setup.prefetch, setup.prefetch_depth, config, setup.stats.get());
  std::vector<SlotLoad> loads;
  std::vector<PrefetchRequest> requests;
  std::vector<uint8_t> top1(static_cast<size_t>(config.n_experts)), essential;
  std::optional<SlotLoad> load;
  for (const TraceLayer& event : trace.layers) {
    // What the MoE layer and the store derive from the routing (moe_layer.cpp, cached_expert_store.cpp).
    const std::vector<int32_t> experts = first_use_order(event.routed, config.n_experts);
    std::fill(top1.begin(), top1.end(), 0);
    for (int64_t t = 0; t < event.n_tokens; ++t) {
      const int32_t expert = event.routed[static_cast<size_t>(t * event.k)];
      if (expert >= 0) top1[static_cast<size_t>(expert)] = 1;
    }
    essential.clear();
    for (int32_t expert : experts) essential.push_back(top1[static_cast<size_t>(expert)]);
    loads.clear();
    cache->begin_layer(event.layer, experts, essential, loads);
    if (setup.prefetch != PrefetchPolicy::None) {
      auto speculate = [&](int distance, std::vector<int32_t>& predictions) -> int64_t {
        if (distance > static_cast<int>(event.speculation.size())) return -1;
        const TraceSpeculation& guess = event.speculation[static_cast<size_t>(distance - 1)];
        if (guess.target < 0) return -1;
        predictions = guess.predictions;
        return guess.target;
      };
      prefetcher.after_routing(event.layer, event.n_tokens, event.k, event.routed, speculate, requests);
      for (const PrefetchRequest& request : requests) cache->prefetch(request.layer, request.candidates, loads);
    }
    for (int32_t expert : experts) {
      cache->acquire(event.layer, expert, load);
      cache->release(event.layer, expert);
    }
    cache->end_layer(event.layer);
  }
  result.counters = cache->counters();
  return result;
}

}  // namespace moenav
