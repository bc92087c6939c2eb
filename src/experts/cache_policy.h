// Expert cache replacement policies. A policy only ranks: the cache (expert_cache.h) tells it about
// uses and insertions and asks it for a victim among the slots that may be evicted. Keys are
// layer * n_experts + expert. Every policy is deterministic (ties go to the older use, then the
// lower key), so the trace-driven simulator predicts a real run's hits and misses exactly.
//
//   lru       least recently used (Mixtral-Offloading's per-layer LRU)
//   lfu       least frequently used; uses are counted over the whole run, ties by recency
//   lfru      LRFU (Lee et al., 2001): combined recency-frequency value
//             crf = sum over past uses of 2^(-(now - t_use) / half_life); the half-life is four
//             tokens' worth of expert uses, so it sits between LFU (long) and LRU (short)
//   priority  activation-aware (MoE-Infinity): an expert's activation ratio in its layer
//             (uses / layer visits, Laplace-smoothed, seeded from warm-start statistics) times a
//             bonus for early layers, whose misses prefetching hides least: 1 + (L-1-i)/L for the
//             i-th of L MoE layers
//   static    nothing is ever evicted; the placement chosen at start (rules, then routing
//             statistics) is all the cache holds (llama.cpp -ot / --n-cpu-moe, KTransformers)
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moenav/status.h"

namespace moenav {

struct RoutingStats;

struct CacheKeySpace {
  int64_t n_layers = 0;
  int64_t n_experts = 0;
  std::vector<int32_t> moe_ordinal;  // [n_layers]: index among MoE layers, -1 for dense layers
  int64_t n_moe_layers = 0;
  int64_t uses_per_token = 1;        // expert uses a token makes over all MoE layers (LRFU half-life)
  int64_t keys() const { return n_layers * n_experts; }
  int64_t layer_of(int32_t key) const { return key / n_experts; }
};

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  // A demand use of `key` at time `tick` (hit or miss). Ticks increase by one per event.
  virtual void on_use(int32_t key, int64_t tick) = 0;
  // `key` was loaded into a slot (a miss or a prefetch) at `tick`.
  virtual void on_insert(int32_t key, int64_t tick) = 0;
  // A layer step began (activation ratios count visits).
  virtual void on_layer_visit(int64_t /*layer*/) {}
  // The key to evict among `candidates` (non-empty, all resident and evictable).
  virtual int32_t victim(std::span<const int32_t> candidates) const = 0;
  // Whether a missed key may be cached at all (static placement admits none).
  virtual bool admits_misses() const { return true; }
};

// Names: lru, lfu, lfru, priority, static. stats may be null (priority's prior).
Expected<std::unique_ptr<CachePolicy>> make_cache_policy(std::string_view name,
                                                         const CacheKeySpace& keys,
                                                         const RoutingStats* stats);

}  // namespace moenav
