#include "experts/store_factory.h"

#include "core/byte_size.h"
#include "experts/cached_expert_store.h"
#include "experts/placement_rules.h"
#include "model/model.h"

namespace moenav {

CacheKeySpace expert_key_space(const ModelConfig& c, const EngineConfig& config) {
  CacheKeySpace keys;
  keys.n_layers = c.n_layers;
  keys.n_experts = c.n_experts;
  keys.moe_ordinal.assign(static_cast<size_t>(c.n_layers), -1);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (c.is_moe_layer(l)) keys.moe_ordinal[static_cast<size_t>(l)] = static_cast<int32_t>(keys.n_moe_layers++);
  }
  const int64_t k = config.routing.top_k > 0 ? config.routing.top_k : c.n_experts_used;
  keys.uses_per_token = keys.n_moe_layers * std::max<int64_t>(k, 1);
  return keys;
}

std::vector<int64_t> expert_key_bytes(const Model& model) {
  const ModelConfig& c = model.config;
  std::vector<int64_t> bytes(static_cast<size_t>(c.n_layers * c.n_experts), 0);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const auto& experts = model.weights.layers[static_cast<size_t>(l)].experts;
    for (size_t e = 0; e < experts.size(); ++e) {
      bytes[static_cast<size_t>(l * c.n_experts) + e] = experts[e].gate.bytes() + experts[e].up.bytes() +
                                                        experts[e].down.bytes();
    }
  }
  return bytes;
}

Expected<CacheSetup> resolve_cache_setup(const Model& model, const EngineConfig& config,
                                         int64_t context, int threads) {
  const ModelConfig& c = model.config;
  CacheSetup setup;
  MOENAV_ASSIGN_OR_RETURN(const MissPolicy miss, parse_miss_policy(config.miss.policy));
  MOENAV_ASSIGN_OR_RETURN(setup.prefetch, parse_prefetch_policy(config.prefetch.policy));
  MOENAV_ASSIGN_OR_RETURN(setup.disk_io, parse_disk_io(config.placement.disk_io));
  if (config.prefetch.depth < 1) return Status::errorf("prefetch.depth = {} must be >= 1", config.prefetch.depth);
  setup.prefetch_depth = config.prefetch.depth;
  setup.io_threads = config.prefetch.io_threads;
  if (setup.io_threads < 0) return Status::errorf("prefetch.io_threads = {} must be >= 0", setup.io_threads);
  if (!config.prefetch.max_in_flight.empty()) {
    MOENAV_ASSIGN_OR_RETURN(setup.max_bytes_in_flight, parse_byte_size(config.prefetch.max_in_flight));
  }
  const auto lowbit = dtype_from_name(config.miss.lowbit_type);
  if (!lowbit) return Status::errorf("miss.lowbit_type '{}' is not a type name", config.miss.lowbit_type);
  setup.lowbit_type = *lowbit;
  const bool cached = config.placement.expert_cache.size != "all";
  PlanInputs inputs;
  inputs.context = context;
  inputs.threads = threads;
  if (cached) {
    // The slot geometry; mmap mode only plans (no descriptors are opened).
    MOENAV_ASSIGN_OR_RETURN(auto layout, ExpertReader::create(model, DiskIo::Mmap));
    inputs.slot_bytes = layout->slot_bytes();
    inputs.staging_bytes = inputs.slot_bytes;
    if (miss == MissPolicy::LowBit) {
      MOENAV_ASSIGN_OR_RETURN(inputs.lowbit_bytes, LowBitExperts::planned_bytes(model, setup.lowbit_type));
    }
  }
  MOENAV_ASSIGN_OR_RETURN(setup.plan, plan_memory(model, config, inputs));
  if (!setup.plan.cached) {
    if (!config.placement.rules.empty()) {
      return Status::error("placement.rules need an expert cache: set placement.expert_cache.size "
                           "(--cache-size) to a slot count, a byte size or \"auto\"");
    }
    return setup;
  }
  CacheSettings& settings = setup.settings;
  settings.keys = expert_key_space(c, config);
  settings.policy = config.placement.expert_cache.policy;
  settings.global_scope = setup.plan.scope == "global";
  settings.slots_per_partition = settings.global_scope ? setup.plan.slots : setup.plan.slots_per_layer;
  settings.miss = miss;
  settings.fast_tier = Tier::Host;
  settings.key_bytes = expert_key_bytes(model);
  if (!config.placement.rules.empty()) {
    MOENAV_ASSIGN_OR_RETURN(settings.placement,
                            resolve_placement(config.placement.rules, c, config.device.backend == "cuda"));
  }
  if (!config.placement.expert_cache.warm_start.empty()) {
    MOENAV_ASSIGN_OR_RETURN(RoutingStats stats, load_routing_stats(config.placement.expert_cache.warm_start, c));
    setup.stats = std::make_shared<const RoutingStats>(std::move(stats));
    settings.warm_start = true;
  }
  settings.stats = setup.stats.get();
  return setup;
}

Expected<std::unique_ptr<ExpertStore>> create_expert_store(const Model& model,
                                                           const EngineConfig& config,
                                                           int64_t context, int threads) {
  MOENAV_ASSIGN_OR_RETURN(CacheSetup setup, resolve_cache_setup(model, config, context, threads));
  if (!setup.plan.cached) {
    auto store = std::make_unique<ResidentExpertStore>(model.weights);
    store->set_memory_plan(setup.plan);
    return std::unique_ptr<ExpertStore>(std::move(store));
  }
  CachedStoreParts parts;
  MOENAV_ASSIGN_OR_RETURN(parts.cache, ExpertCache::create(setup.settings));
  MOENAV_ASSIGN_OR_RETURN(parts.reader, ExpertReader::create(model, setup.disk_io));
  if (setup.settings.miss == MissPolicy::LowBit) {
    MOENAV_ASSIGN_OR_RETURN(parts.lowbit, LowBitExperts::create(model, setup.lowbit_type));
  }
  if (setup.prefetch != PrefetchPolicy::None) {
    parts.prefetcher = std::make_unique<Prefetcher>(setup.prefetch, setup.prefetch_depth, model.config,
                                                    setup.stats.get());
  }
  parts.io_threads = setup.io_threads;
  parts.max_bytes_in_flight = setup.max_bytes_in_flight;
  MOENAV_ASSIGN_OR_RETURN(auto store, CachedExpertStore::create(model, std::move(parts)));
  store->set_memory_plan(setup.plan);
  return std::unique_ptr<ExpertStore>(std::move(store));
}

}  // namespace moenav
