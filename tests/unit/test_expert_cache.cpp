// The expert cache's bookkeeping and replacement policies on small synthetic key spaces: what is
// a hit, what gets evicted, pinning, deferred misses, static placement, placement rules,
// prefetch accounting and the miss policies.
#include <gtest/gtest.h>

#include "experts/cache_policy.h"
#include "experts/expert_cache.h"
#include "experts/routing_stats.h"
#include "model/model_config.h"

namespace moenav {
namespace {

CacheKeySpace keys(int64_t layers = 2, int64_t experts = 4) {
  CacheKeySpace space;
  space.n_layers = layers;
  space.n_experts = experts;
  for (int64_t l = 0; l < layers; ++l) space.moe_ordinal.push_back(static_cast<int32_t>(l));
  space.n_moe_layers = layers;
  space.uses_per_token = 1;
  return space;
}

CacheSettings settings(const std::string& policy, int64_t slots, MissPolicy miss = MissPolicy::Fetch) {
  CacheSettings s;
  s.keys = keys();
  s.policy = policy;
  s.slots_per_partition = slots;
  s.miss = miss;
  s.key_bytes.assign(static_cast<size_t>(s.keys.keys()), 100);
  return s;
}

// One layer step with every expert acquired and released in order; returns which were hits.
std::vector<bool> step(ExpertCache& cache, int64_t layer, std::vector<int32_t> experts,
                       std::vector<uint8_t> essential = {}) {
  std::vector<SlotLoad> loads;
  if (essential.empty()) essential.assign(experts.size(), 0);
  cache.begin_layer(layer, experts, essential, loads);
  std::vector<bool> hits;
  std::optional<SlotLoad> load;
  for (int32_t expert : experts) {
    hits.push_back(cache.acquire(layer, expert, load).hit);
    cache.release(layer, expert);
  }
  cache.end_layer(layer);
  return hits;
}

std::unique_ptr<ExpertCache> make(CacheSettings s) {
  auto cache = ExpertCache::create(std::move(s));
  EXPECT_TRUE(cache.ok()) << cache.error();
  return std::move(cache).value();
}

TEST(CachePolicies, LruEvictsTheLeastRecentlyUsed) {
  auto policy = make_cache_policy("lru", keys(), nullptr);
  ASSERT_TRUE(policy.ok());
  (*policy)->on_use(0, 1);
  (*policy)->on_use(1, 2);
  (*policy)->on_use(0, 3);
  const int32_t both[] = {0, 1};
  EXPECT_EQ((*policy)->victim(both), 1);
}

TEST(CachePolicies, LfuEvictsTheLeastFrequentlyUsedTiesByAge) {
  auto policy = make_cache_policy("lfu", keys(), nullptr);
  ASSERT_TRUE(policy.ok());
  for (int64_t tick : {1, 2, 3}) (*policy)->on_use(0, tick);
  (*policy)->on_use(1, 4);
  (*policy)->on_use(2, 5);
  const int32_t candidates[] = {0, 1, 2};
  EXPECT_EQ((*policy)->victim(candidates), 1);
}

TEST(CachePolicies, LfruForgetsOldFrequency) {
  // Half-life 4 ticks (uses_per_token = 1).
  for (int64_t late : {5, 30}) {
    auto policy = make_cache_policy("lfru", keys(), nullptr);
    ASSERT_TRUE(policy.ok());
    for (int64_t tick : {0, 1, 2}) (*policy)->on_use(0, tick);
    (*policy)->on_use(1, late);
    const int32_t candidates[] = {0, 1};
    EXPECT_EQ((*policy)->victim(candidates), late == 5 ? 1 : 0) << "second use at tick " << late;
  }
}

TEST(CachePolicies, PriorityFavoursFrequentExpertsAndEarlyLayers) {
  auto policy = make_cache_policy("priority", keys(), nullptr);
  ASSERT_TRUE(policy.ok());
  (*policy)->on_layer_visit(0);
  (*policy)->on_layer_visit(1);
  (*policy)->on_use(0, 1);  // layer 0 expert 0
  (*policy)->on_use(4, 2);  // layer 1 expert 0
  const int32_t across_layers[] = {0, 4};
  EXPECT_EQ((*policy)->victim(across_layers), 4);
  (*policy)->on_use(5, 3);
  (*policy)->on_use(5, 4);
  (*policy)->on_use(5, 5);
  const int32_t in_layer[] = {4, 5};
  EXPECT_EQ((*policy)->victim(in_layer), 4);
}

TEST(CachePolicies, UnknownPolicyIsAnError) {
  auto policy = make_cache_policy("fifo", keys(), nullptr);
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.error().find("'fifo'"), std::string::npos);
}

TEST(ExpertCache, LruPartitionPerLayer) {
  auto cache = make(settings("lru", 2));
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{false});
  EXPECT_EQ(step(*cache, 1, {0}), std::vector<bool>{false});  // another partition
  EXPECT_EQ(step(*cache, 0, {1}), std::vector<bool>{false});
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{true});
  EXPECT_EQ(step(*cache, 0, {2}), std::vector<bool>{false});  // evicts 1
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{true});
  EXPECT_EQ(step(*cache, 0, {1}), std::vector<bool>{false});  // evicts 2
  const ExpertCounters& c = cache->counters();
  EXPECT_EQ(c.tier(Tier::Host).hits, 2);
  EXPECT_EQ(c.tier(Tier::Host).misses, 5);
  EXPECT_EQ(c.evictions, 2);
  EXPECT_EQ(c.demand_loads, 5);
  EXPECT_EQ(c.payload_bytes, 500);
}

TEST(ExpertCache, ExpertsInUseArePinnedAndLateMissesAreDeferred) {
  auto cache = make(settings("lru", 1));
  std::vector<SlotLoad> loads;
  const int32_t experts[] = {0, 1};
  const uint8_t essential[] = {0, 0};
  cache->begin_layer(0, experts, essential, loads);
  ASSERT_EQ(loads.size(), 1u);  // expert 1 must wait for expert 0's slot
  std::optional<SlotLoad> load;
  EXPECT_EQ(cache->acquire(0, 0, load).source, ExpertSource::Slot);
  EXPECT_FALSE(load);
  cache->release(0, 0);
  const ExpertDecision second = cache->acquire(0, 1, load);
  EXPECT_EQ(second.source, ExpertSource::Slot);
  ASSERT_TRUE(load);
  EXPECT_EQ(load->key, 1);
  EXPECT_EQ(second.slot, loads[0].slot);
  cache->release(0, 1);
  EXPECT_EQ(cache->counters().evictions, 1);
  EXPECT_EQ(cache->counters().miss_fetched, 2);
}

TEST(ExpertCache, StaticPlacementKeepsTheMostFrequentAndStagesTheRest) {
  RoutingStats stats;
  stats.tokens = 10;
  stats.counts = {{1, 9, 3, 7}, {5, 0, 0, 2}};
  CacheSettings s = settings("static", 2);
  s.stats = &stats;
  auto cache = make(s);
  const std::vector<SlotLoad> initial = cache->take_initial_loads();
  ASSERT_EQ(initial.size(), 4u);
  EXPECT_EQ(step(*cache, 0, {1, 3, 0}), (std::vector<bool>{true, true, false}));
  EXPECT_EQ(step(*cache, 1, {0, 3, 1}), (std::vector<bool>{true, true, false}));
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{false});  // never admitted
  EXPECT_EQ(cache->counters().evictions, 0);
  EXPECT_EQ(cache->counters().miss_staged, 3);
  EXPECT_EQ(cache->counters().warm_loads, 4);
}

TEST(ExpertCache, WarmStartFillsDynamicCaches) {
  RoutingStats stats;
  stats.tokens = 10;
  stats.counts = {{1, 9, 3, 7}, {5, 0, 0, 2}};
  CacheSettings s = settings("lru", 1);
  s.stats = &stats;
  s.warm_start = true;
  auto cache = make(s);
  EXPECT_EQ(cache->take_initial_loads().size(), 2u);
  EXPECT_EQ(step(*cache, 0, {1}), std::vector<bool>{true});
  EXPECT_EQ(step(*cache, 1, {0}), std::vector<bool>{true});
  EXPECT_EQ(step(*cache, 0, {2}), std::vector<bool>{false});  // dynamic: admitted, evicts 1
  EXPECT_EQ(step(*cache, 0, {2}), std::vector<bool>{true});
}

TEST(ExpertCache, PlacementRulesPinAndExclude) {
  CacheSettings s = settings("lru", 2);
  s.placement.n_experts = 4;
  s.placement.tiers.assign(8, std::nullopt);
  s.placement.tiers[0] = Tier::Host;  // layer 0 expert 0: pinned
  s.placement.tiers[3] = Tier::Disk;  // layer 0 expert 3: never cached
  auto cache = make(s);
  EXPECT_EQ(cache->take_initial_loads().size(), 1u);
  for (int32_t expert : {1, 2, 1, 2}) step(*cache, 0, {expert});
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{true});  // survived the churn
  EXPECT_EQ(step(*cache, 0, {3}), std::vector<bool>{false});
  EXPECT_EQ(step(*cache, 0, {3}), std::vector<bool>{false});
  EXPECT_EQ(cache->counters().miss_staged, 2);
}

TEST(ExpertCache, PrefetchAccounting) {
  auto cache = make(settings("lru", 2));
  std::vector<SlotLoad> loads;
  const int32_t candidates[] = {3, 2, 1};
  cache->prefetch(1, candidates, loads);
  ASSERT_EQ(loads.size(), 2u);  // two slots
  EXPECT_TRUE(loads[0].prefetch);
  EXPECT_EQ(loads[0].key, 4 + 3);
  EXPECT_EQ(step(*cache, 1, {3}), std::vector<bool>{true});
  EXPECT_EQ(step(*cache, 1, {0}), std::vector<bool>{false});  // evicts the unused prefetch of 2
  const ExpertCounters& c = cache->counters();
  EXPECT_EQ(c.prefetch_issued, 2);
  EXPECT_EQ(c.prefetch_used, 1);
  EXPECT_EQ(c.prefetch_wasted, 1);
  EXPECT_DOUBLE_EQ(c.prefetch_accuracy(), 0.5);
  loads.clear();
  const int32_t resident[] = {3, 0};
  cache->prefetch(1, resident, loads);
  EXPECT_TRUE(loads.empty());
}

TEST(ExpertCache, MissPolicies) {
  auto skip = make(settings("lru", 1, MissPolicy::Skip));
  std::vector<SlotLoad> loads;
  const int32_t experts[] = {0, 1};
  const uint8_t essential[] = {1, 0};
  skip->begin_layer(0, experts, essential, loads);
  std::optional<SlotLoad> load;
  EXPECT_EQ(skip->acquire(0, 0, load).source, ExpertSource::Slot);  // a top-1 choice: fetched
  EXPECT_EQ(skip->acquire(0, 1, load).source, ExpertSource::Skip);
  EXPECT_EQ(skip->counters().miss_skipped, 1);

  for (MissPolicy miss : {MissPolicy::Cpu, MissPolicy::LowBit}) {
    auto cache = make(settings("lru", 1, miss));
    EXPECT_EQ(step(*cache, 0, {2}), std::vector<bool>{false});
    EXPECT_EQ(step(*cache, 0, {2}), std::vector<bool>{false});  // never cached
    EXPECT_EQ(miss == MissPolicy::Cpu ? cache->counters().miss_cpu : cache->counters().miss_lowbit, 2);
  }
  EXPECT_FALSE(parse_miss_policy("pray").ok());
  EXPECT_EQ(*parse_miss_policy("auto"), MissPolicy::Fetch);
}

// Per-expert miss policies for one step (the GPU tier's auto split) and the residency query.
TEST(ExpertCache, PerExpertMissPoliciesOverrideTheSetting) {
  CacheSettings device = settings("lru", 2);
  device.fast_tier = Tier::Device;  // CPU misses read the host copy: no load
  auto cache = make(device);
  EXPECT_EQ(step(*cache, 0, {0}), std::vector<bool>{false});  // expert 0 now in a slot
  EXPECT_TRUE(cache->resident(0, 0));
  EXPECT_FALSE(cache->resident(0, 1));
  std::vector<SlotLoad> loads;
  const int32_t experts[] = {0, 1, 2};
  const uint8_t essential[] = {0, 0, 0};
  const MissPolicy misses[] = {MissPolicy::Cpu, MissPolicy::Cpu, MissPolicy::Fetch};
  cache->begin_layer(0, experts, essential, loads, misses);
  std::optional<SlotLoad> load;
  EXPECT_EQ(cache->acquire(0, 0, load).source, ExpertSource::Slot);  // a hit stays a hit
  EXPECT_EQ(cache->acquire(0, 1, load).source, ExpertSource::Cpu);
  EXPECT_EQ(cache->acquire(0, 2, load).source, ExpertSource::Slot);  // fetched
  for (int32_t expert : experts) cache->release(0, expert);
  cache->end_layer(0);
  EXPECT_EQ(cache->counters().miss_cpu, 1);
  EXPECT_EQ(cache->counters().demand_loads, 2);  // expert 0 in the first step, expert 2 here
  EXPECT_FALSE(cache->resident(0, 1));
  EXPECT_TRUE(cache->resident(0, 2));
}

TEST(ExpertCache, GlobalScopeSharesOnePool) {
  CacheSettings s = settings("lru", 3);
  s.global_scope = true;
  auto cache = make(s);
  EXPECT_EQ(cache->slot_count(), 3);
  step(*cache, 0, {0, 1});
  step(*cache, 1, {2});
  EXPECT_EQ(step(*cache, 0, {0, 1}), (std::vector<bool>{true, true}));
  EXPECT_EQ(step(*cache, 1, {3}), std::vector<bool>{false});  // evicts layer 1's expert 2
  EXPECT_EQ(step(*cache, 1, {2}), std::vector<bool>{false});
}

TEST(ExpertCache, PinnedRulesBeyondCapacityAreAnError) {
  CacheSettings s = settings("lru", 1);
  s.placement.n_experts = 4;
  s.placement.tiers.assign(8, std::nullopt);
  s.placement.tiers[0] = s.placement.tiers[1] = Tier::Host;
  auto cache = ExpertCache::create(s);
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.error().find("pin 2 experts"), std::string::npos) << cache.error();
}

}  // namespace
}  // namespace moenav
