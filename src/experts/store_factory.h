// From an EngineConfig to an expert store: parses the placement, prefetch and miss options, loads
// routing statistics, asks the memory planner for the cache geometry, and builds either the
// all-resident store or the tiered cached store. The cache simulator resolves the same
// CacheSetup, so a simulated configuration is exactly the one a run would build.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "experts/expert_cache.h"
#include "experts/expert_io.h"
#include "experts/expert_store.h"
#include "experts/memory_planner.h"
#include "experts/prefetcher.h"
#include "experts/routing_stats.h"
#include "moenav/engine_config.h"

namespace moenav {

struct Model;
struct ModelConfig;

struct CacheSetup {
  MemoryPlan plan;
  CacheSettings settings;                    // meaningful when plan.cached
  std::shared_ptr<const RoutingStats> stats; // warm start (may be null); settings.stats points here
  PrefetchPolicy prefetch = PrefetchPolicy::None;
  int prefetch_depth = 1;
  DiskIo disk_io = DiskIo::Direct;
  int io_threads = 2;
  int64_t max_bytes_in_flight = 0;           // 0 = unbounded
  DType lowbit_type = DType::Q4_0;
};

// The cache keys of a model (layer * n_experts + expert) and each key's payload: gate + up + down
// bytes (0 for dense layers). Shared with the CUDA decoder's device expert cache.
CacheKeySpace expert_key_space(const ModelConfig& c, const EngineConfig& config);
std::vector<int64_t> expert_key_bytes(const Model& model);

// context: KV positions per sequence; threads: compute threads (workspace size).
Expected<CacheSetup> resolve_cache_setup(const Model& model, const EngineConfig& config,
                                         int64_t context, int threads);

Expected<std::unique_ptr<ExpertStore>> create_expert_store(const Model& model,
                                                           const EngineConfig& config,
                                                           int64_t context, int threads);

}  // namespace moenav
