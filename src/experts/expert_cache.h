// The expert cache's bookkeeping, without bytes or threads: which expert sits in which slot, what
// each use is (hit, or a miss and what the miss policy makes of it), which slot a load goes to,
// what gets evicted, and the counters. The tiered store (cached_expert_store.h) moves bytes by
// these decisions and the cache simulator (cache_simulator.h) replays traces through the very
// same code, which is why predicted and real hits and misses agree exactly.
//
// Events, in the order the MoE layer makes them:
//   begin_layer(layer, experts in first-use order) -> a decision per expert, loads to issue
//   prefetch(later layer, candidates)                -> loads to issue
//   acquire(layer, expert) ... release(layer, expert), for each expert in order
// An expert in use (between begin_layer and release) or being prefetched in the same call is
// pinned: never evicted. When every slot of a partition is pinned, a miss waits for its slot
// until acquire (deferred) and, if there is still none, is read into a transient buffer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "experts/cache_policy.h"
#include "experts/placement_rules.h"
#include "moenav/expert_counters.h"
#include "moenav/status.h"

namespace moenav {

struct RoutingStats;

// What a miss in the fast tier does (miss.policy).
enum class MissPolicy : uint8_t { Fetch, Cpu, LowBit, Skip, Count };
// "auto" is "fetch" until a GPU tier measures rates to choose by; "split" is "cpu" but on the GPU
// tier, where a miss's down projection is fetched and run on the GPU.
Expected<MissPolicy> parse_miss_policy(std::string_view name);

// How an expert is served this step.
enum class ExpertSource : uint8_t {
  Slot,     // a cache slot: a hit, or filled by a load issued for this use
  Staging,  // read into a transient buffer and not cached (static placement, "disk" rules)
  Cpu,      // computed on the CPU from the host copy (Fiddler)
  LowBit,   // computed from the low-precision copy (HOBBIT)
  Skip,     // dropped
};

struct ExpertDecision {
  ExpertSource source = ExpertSource::Slot;
  int32_t slot = -1;
  bool hit = false;
  bool deferred = false;  // its slot is assigned at acquire
  bool released = true;
};

// Bytes to bring into a slot.
struct SlotLoad {
  int32_t key = -1;
  int32_t slot = -1;
  bool prefetch = false;
};

struct CacheSettings {
  CacheKeySpace keys;
  std::string policy = "lru";
  bool global_scope = false;         // one pool instead of a partition per MoE layer
  int64_t slots_per_partition = 0;
  MissPolicy miss = MissPolicy::Fetch;
  Tier fast_tier = Tier::Host;
  std::vector<int64_t> key_bytes;    // payload of each key (0 for dense layers)
  ExpertPlacement placement;         // rules; empty tiers = none
  const RoutingStats* stats = nullptr;  // static placement, warm start, priority prior
  bool warm_start = false;           // fill the cache from stats before the first step
};

class ExpertCache {
 public:
  static Expected<std::unique_ptr<ExpertCache>> create(CacheSettings settings);

  // Loads before the first step: rule-pinned experts, static placement, warm start.
  std::vector<SlotLoad> take_initial_loads() { return std::move(initial_loads_); }

  // essential[i] = 1 when experts[i] is some token's top-1 choice (the skip policy keeps those).
  // misses[i], when given, replaces the miss policy for experts[i] (the GPU tier's auto policy
  // splits a step's misses between PCIe fetch and CPU compute).
  void begin_layer(int64_t layer, std::span<const int32_t> experts,
                   std::span<const uint8_t> essential, std::vector<SlotLoad>& loads,
                   std::span<const MissPolicy> misses = {});
  // Whether the expert is in a slot now (a use of it would hit).
  bool resident(int64_t layer, int32_t expert) const {
    return key_slot_[static_cast<size_t>(layer * settings_.keys.n_experts + expert)] >= 0;
  }
  // The decision for `expert` of the current layer; a deferred one gets its slot (and `load`).
  ExpertDecision acquire(int64_t layer, int32_t expert, std::optional<SlotLoad>& load);
  void release(int64_t layer, int32_t expert);
  // Releases whatever the layer did not (a layer that stopped early).
  void end_layer(int64_t layer);
  // Candidates for a later `layer`, best first; loads as many as evictable slots allow.
  void prefetch(int64_t layer, std::span<const int32_t> candidates, std::vector<SlotLoad>& loads);

  const ExpertCounters& counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  int64_t slot_count() const { return static_cast<int64_t>(slots_.size()); }
  int32_t slot_key(int32_t slot) const { return slots_[static_cast<size_t>(slot)].key; }
  bool slot_prefetched(int32_t slot) const { return slots_[static_cast<size_t>(slot)].prefetched; }
  const CacheSettings& settings() const { return settings_; }

 private:
  struct Slot {
    int32_t key = -1;
    int32_t pins = 0;
    int32_t partition = 0;
    bool permanent = false;   // placement rule or static placement
    bool prefetched = false;  // loaded by a prefetch and not used yet
  };
  explicit ExpertCache(CacheSettings settings);
  Status place_initial();
  int32_t partition_of(int64_t layer) const;
  int32_t allocate(int32_t partition);
  void assign(int32_t slot, int32_t key, bool prefetch);
  bool cacheable(int32_t key) const;
  void count_load(int32_t key, bool prefetch);

  CacheSettings settings_;
  std::unique_ptr<CachePolicy> policy_;
  std::vector<Slot> slots_;
  std::vector<std::vector<int32_t>> partitions_;  // slot ids
  std::vector<int32_t> key_slot_;                 // [keys] -> slot or -1
  std::vector<ExpertDecision> decisions_;         // [n_experts] of the current layer
  int64_t current_layer_ = -1;
  int64_t tick_ = 0;
  std::vector<SlotLoad> initial_loads_;
  ExpertCounters counters_;
};

}  // namespace moenav
