#include "experts/expert_cache.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/check.h"
#include "experts/routing_stats.h"

namespace moenav {

Expected<MissPolicy> parse_miss_policy(std::string_view name) {
  if (name == "fetch" || name == "auto") return MissPolicy::Fetch;
  if (name == "cpu" || name == "split") return MissPolicy::Cpu;
  if (name == "lowbit") return MissPolicy::LowBit;
  if (name == "skip") return MissPolicy::Skip;
  return Status::errorf("miss.policy '{}' is unknown (choose one of: fetch, cpu, lowbit, skip, auto, split)", name);
}

ExpertCache::ExpertCache(CacheSettings settings) : settings_(std::move(settings)) {}

Expected<std::unique_ptr<ExpertCache>> ExpertCache::create(CacheSettings settings) {
  // No slots at all is a cache that always misses: every use goes the miss policy's way (the GPU
  // tier's experts kept off the device).
  if (settings.slots_per_partition < 0) {
    return Status::errorf("expert cache: {} slots per partition; must be >= 0",
                          settings.slots_per_partition);
  }
  std::unique_ptr<ExpertCache> cache(new ExpertCache(std::move(settings)));
  const CacheSettings& s = cache->settings_;  // `settings` is moved from: read the cache's copy
  const CacheKeySpace& keys = s.keys;
  MOENAV_ASSIGN_OR_RETURN(cache->policy_, make_cache_policy(s.policy, keys, s.stats));
  const int64_t partitions = s.global_scope ? 1 : keys.n_moe_layers;
  cache->partitions_.resize(static_cast<size_t>(partitions));
  for (int64_t p = 0; p < partitions; ++p) {
    for (int64_t i = 0; i < s.slots_per_partition; ++i) {
      cache->partitions_[static_cast<size_t>(p)].push_back(static_cast<int32_t>(cache->slots_.size()));
      cache->slots_.push_back(Slot{-1, 0, static_cast<int32_t>(p), false, false});
    }
  }
  cache->key_slot_.assign(static_cast<size_t>(keys.keys()), -1);
  cache->decisions_.assign(static_cast<size_t>(keys.n_experts), {});
  MOENAV_RETURN_IF_ERROR(cache->place_initial());
  cache->settings_.stats = nullptr;  // used only while placing; not owned
  return cache;
}

int32_t ExpertCache::partition_of(int64_t layer) const {
  return settings_.global_scope ? 0 : settings_.keys.moe_ordinal[static_cast<size_t>(layer)];
}

bool ExpertCache::cacheable(int32_t key) const {
  if (!settings_.placement.tiers.empty() && settings_.placement.tiers[static_cast<size_t>(key)] == Tier::Disk) {
    return false;
  }
  return policy_->admits_misses();
}

// Rule-pinned experts first, then static placement, a warm start by routing frequency, or a start
// full for misses that never load.
Status ExpertCache::place_initial() {
  const CacheKeySpace& keys = settings_.keys;
  std::vector<std::vector<int32_t>> pinned(partitions_.size()), ranked(partitions_.size());
  for (int64_t l = 0; l < keys.n_layers; ++l) {
    if (keys.moe_ordinal[static_cast<size_t>(l)] < 0) continue;
    for (int64_t e = 0; e < keys.n_experts; ++e) {
      const auto key = static_cast<int32_t>(l * keys.n_experts + e);
      const auto rule = settings_.placement.tiers.empty() ? std::nullopt
                                                           : settings_.placement.tiers[static_cast<size_t>(key)];
      auto& list = rule ? pinned : ranked;
      if (!rule || *rule != Tier::Disk) list[static_cast<size_t>(partition_of(l))].push_back(key);
    }
  }
  // A cache whose misses never fill it (computed on the CPU or from low-bit copies, or skipped)
  // would stay empty: it starts full too, by routing frequency when known, else in expert order.
  const bool fill = settings_.policy == "static" || (settings_.warm_start && settings_.stats != nullptr) ||
                    settings_.miss != MissPolicy::Fetch;
  auto frequency = [&](int32_t key) {
    if (settings_.stats == nullptr) return 0.0;
    return settings_.stats->counts[static_cast<size_t>(keys.layer_of(key))]
                                  [static_cast<size_t>(key % keys.n_experts)];
  };
  for (size_t p = 0; p < partitions_.size(); ++p) {
    const auto& slots = partitions_[p];
    if (pinned[p].size() > slots.size()) {
      return Status::errorf("placement rules pin {} experts to the fast tier in {}, which has {} slots; "
                            "raise placement.expert_cache.size or narrow the rules", pinned[p].size(),
                            settings_.global_scope ? "the cache" : fmt::format("MoE layer {}", p), slots.size());
    }
    std::vector<int32_t> order = pinned[p];
    const size_t permanent = order.size();
    if (fill) {
      auto& candidates = ranked[p];
      // Most frequent first (stable: ties keep the lower key).
      std::stable_sort(candidates.begin(), candidates.end(),
                       [&](int32_t a, int32_t b) { return frequency(a) > frequency(b); });
      const size_t room = slots.size() - order.size();
      const size_t take = std::min(room, candidates.size());
      // Least frequent loaded first, so recency-based policies see the most frequent as newest.
      for (size_t i = take; i-- > 0;) order.push_back(candidates[i]);
    }
    for (size_t i = 0; i < order.size(); ++i) {
      const int32_t slot = slots[i];
      assign(slot, order[i], false);
      slots_[static_cast<size_t>(slot)].permanent = i < permanent || settings_.policy == "static";
      initial_loads_.push_back({order[i], slot, false});
      ++counters_.warm_loads;
    }
  }
  return ok_status();
}

void ExpertCache::assign(int32_t slot, int32_t key, bool prefetch) {
  Slot& target = slots_[static_cast<size_t>(slot)];
  target.key = key;
  target.prefetched = prefetch;
  key_slot_[static_cast<size_t>(key)] = slot;
  policy_->on_insert(key, tick_++);
}

int32_t ExpertCache::allocate(int32_t partition) {
  std::vector<int32_t> candidates;
  for (int32_t slot : partitions_[static_cast<size_t>(partition)]) {
    const Slot& s = slots_[static_cast<size_t>(slot)];
    if (s.key < 0) return slot;  // an empty slot first
    if (s.pins == 0 && !s.permanent) candidates.push_back(s.key);
  }
  if (candidates.empty()) return -1;
  const int32_t victim = policy_->victim(candidates);
  const int32_t slot = key_slot_[static_cast<size_t>(victim)];
  MOENAV_CHECK(slot >= 0);
  Slot& s = slots_[static_cast<size_t>(slot)];
  if (s.prefetched) ++counters_.prefetch_wasted;
  s.key = -1;
  s.prefetched = false;
  key_slot_[static_cast<size_t>(victim)] = -1;
  ++counters_.evictions;
  return slot;
}

void ExpertCache::count_load(int32_t key, bool prefetch) {
  ++(prefetch ? counters_.prefetch_loads : counters_.demand_loads);
  counters_.payload_bytes += settings_.key_bytes[static_cast<size_t>(key)];
  ++counters_.tier(Tier::Disk).hits;
}

void ExpertCache::begin_layer(int64_t layer, std::span<const int32_t> experts,
                              std::span<const uint8_t> essential, std::vector<SlotLoad>& loads,
                              std::span<const MissPolicy> misses) {
  MOENAV_CHECK(misses.empty() || misses.size() == experts.size());
  end_layer(current_layer_);
  current_layer_ = layer;
  policy_->on_layer_visit(layer);
  const int32_t partition = partition_of(layer);
  TierCounters& fast = counters_.tier(settings_.fast_tier);
  for (size_t i = 0; i < experts.size(); ++i) {
    const int32_t expert = experts[i];
    const auto key = static_cast<int32_t>(layer * settings_.keys.n_experts + expert);
    ExpertDecision& decision = decisions_[static_cast<size_t>(expert)];
    decision = ExpertDecision{};
    decision.released = false;
    policy_->on_use(key, tick_++);
    const int32_t resident = key_slot_[static_cast<size_t>(key)];
    if (resident >= 0) {
      Slot& slot = slots_[static_cast<size_t>(resident)];
      ++fast.hits;
      if (slot.prefetched) {
        ++counters_.prefetch_used;
        slot.prefetched = false;
      }
      ++slot.pins;
      decision.slot = resident;
      decision.hit = true;
      continue;
    }
    ++fast.misses;
    MissPolicy miss = misses.empty() ? settings_.miss : misses[i];
    if (miss == MissPolicy::Skip && !essential.empty() && essential[i]) miss = MissPolicy::Fetch;
    switch (miss) {
      case MissPolicy::Skip:
        decision.source = ExpertSource::Skip;
        ++counters_.miss_skipped;
        continue;
      case MissPolicy::LowBit:
        decision.source = ExpertSource::LowBit;
        ++counters_.miss_lowbit;
        continue;
      case MissPolicy::Cpu:
        decision.source = ExpertSource::Cpu;
        ++counters_.miss_cpu;
        // On a host-memory fast tier the host copy is on disk: it is read like a staged load.
        if (settings_.fast_tier == Tier::Host) count_load(key, false);
        continue;
      default:
        break;
    }
    if (!cacheable(key)) {
      decision.source = ExpertSource::Staging;
      ++counters_.miss_staged;
      count_load(key, false);
      continue;
    }
    const int32_t slot = allocate(partition);
    if (slot < 0) {
      decision.deferred = true;
      continue;
    }
    assign(slot, key, false);
    ++slots_[static_cast<size_t>(slot)].pins;
    decision.slot = slot;
    ++counters_.miss_fetched;
    count_load(key, false);
    loads.push_back({key, slot, false});
  }
}

ExpertDecision ExpertCache::acquire(int64_t layer, int32_t expert, std::optional<SlotLoad>& load) {
  MOENAV_CHECK(layer == current_layer_);
  ExpertDecision& decision = decisions_[static_cast<size_t>(expert)];
  load.reset();
  if (decision.deferred) {
    decision.deferred = false;
    const auto key = static_cast<int32_t>(layer * settings_.keys.n_experts + expert);
    const int32_t slot = allocate(partition_of(layer));
    if (slot >= 0) {
      assign(slot, key, false);
      ++slots_[static_cast<size_t>(slot)].pins;
      decision.slot = slot;
      ++counters_.miss_fetched;
      load = SlotLoad{key, slot, false};
    } else {
      decision.source = ExpertSource::Staging;
      ++counters_.miss_staged;
    }
    count_load(key, false);
  }
  return decision;
}

void ExpertCache::release(int64_t layer, int32_t expert) {
  if (layer != current_layer_) return;
  ExpertDecision& decision = decisions_[static_cast<size_t>(expert)];
  if (decision.released) return;
  decision.released = true;
  if (decision.source == ExpertSource::Slot && decision.slot >= 0 && !decision.deferred) {
    --slots_[static_cast<size_t>(decision.slot)].pins;
  }
}

void ExpertCache::end_layer(int64_t layer) {
  if (layer < 0 || layer != current_layer_) return;
  for (int32_t e = 0; e < static_cast<int32_t>(decisions_.size()); ++e) release(layer, e);
}

void ExpertCache::prefetch(int64_t layer, std::span<const int32_t> candidates,
                           std::vector<SlotLoad>& loads) {
  if (!policy_->admits_misses() || layer < 0) return;
  const int32_t partition = partition_of(layer);
  std::vector<int32_t> issued;
  for (int32_t expert : candidates) {
    const auto key = static_cast<int32_t>(layer * settings_.keys.n_experts + expert);
    if (key_slot_[static_cast<size_t>(key)] >= 0 || !cacheable(key)) continue;
    const int32_t slot = allocate(partition);
    if (slot < 0) break;
    assign(slot, key, true);
    ++slots_[static_cast<size_t>(slot)].pins;  // not evicted by the rest of this call
    issued.push_back(slot);
    ++counters_.prefetch_issued;
    count_load(key, true);
    loads.push_back({key, slot, true});
  }
  for (int32_t slot : issued) --slots_[static_cast<size_t>(slot)].pins;
}

}  // namespace moenav
