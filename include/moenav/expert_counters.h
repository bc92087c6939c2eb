// What the expert store did during a run: hits and misses per tier, what each miss did, bytes
// moved per link, time the compute thread stalled waiting for copies, and how well prefetching
// predicted. `moenav bench` prints these and puts them in its JSON; the cache simulator
// (src/experts/cache_simulator.h) predicts the deterministic part of them from a routing trace.
#pragma once

#include <array>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace moenav {

// Where an expert's weights can live. The fastest tier holding an expert is where it runs
// (device: on the GPU; host: on the CPU).
enum class Tier : uint8_t { Device, Host, Disk, Count };
constexpr std::array<const char*, static_cast<size_t>(Tier::Count)> kTierNames = {"device", "host",
                                                                                  "disk"};
inline const char* tier_name(Tier tier) { return kTierNames[static_cast<size_t>(tier)]; }

struct TierCounters {
  int64_t hits = 0;    // expert needed and present in this tier
  int64_t misses = 0;  // expert needed and not present: served from a slower tier
};

struct ExpertCounters {
  std::array<TierCounters, static_cast<size_t>(Tier::Count)> tiers{};
  // What each fast-tier miss did (miss.policy).
  int64_t miss_fetched = 0;   // loaded into a cache slot, then computed there
  int64_t miss_staged = 0;    // loaded into a transient buffer, not cached (static placement)
  int64_t miss_cpu = 0;       // computed on the CPU from the host copy (Fiddler)
  int64_t miss_split = 0;     // of miss_cpu: gate and up on the CPU, down fetched to the GPU
  int64_t miss_lowbit = 0;    // computed from the low-precision copy (HOBBIT)
  int64_t miss_skipped = 0;   // dropped (changes quality)
  int64_t evictions = 0;
  // Loads from the slow tier, by cause, and their payload (the expert's own bytes).
  int64_t demand_loads = 0;
  int64_t prefetch_loads = 0;
  int64_t warm_loads = 0;     // at start-up (warm start, static placement)
  int64_t payload_bytes = 0;  // expert bytes moved by demand + prefetch + staged loads
  // Bytes per link as actually transferred (disk reads include O_DIRECT alignment).
  int64_t disk_to_host_bytes = 0;
  int64_t host_to_device_bytes = 0;
  // Prefetch quality: issued loads, those used before eviction (accuracy = used / issued), those
  // evicted unused, and those still in flight when needed (late).
  int64_t prefetch_issued = 0;
  int64_t prefetch_used = 0;
  int64_t prefetch_wasted = 0;
  int64_t prefetch_late = 0;
  // Time.
  double stall_seconds = 0.0;  // compute thread waiting for an expert's bytes
  double io_seconds = 0.0;     // summed over I/O workers: time spent reading
  int64_t max_bytes_in_flight = 0;

  const TierCounters& tier(Tier t) const { return tiers[static_cast<size_t>(t)]; }
  TierCounters& tier(Tier t) { return tiers[static_cast<size_t>(t)]; }
  int64_t fast_hits() const;    // hits in the fastest tier with a cache (host on a CPU build)
  int64_t fast_misses() const;
  double hit_rate() const;
  double prefetch_accuracy() const;
  nlohmann::json to_json() const;
};

}  // namespace moenav
