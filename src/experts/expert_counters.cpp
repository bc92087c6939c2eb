#include "moenav/expert_counters.h"

namespace moenav {
namespace {

// The fastest tier that saw any use: the device on a GPU run, the host cache on a CPU run.
Tier fast_tier(const ExpertCounters& counters) {
  for (Tier tier : {Tier::Device, Tier::Host}) {
    const TierCounters& t = counters.tier(tier);
    if (t.hits + t.misses > 0) return tier;
  }
  return Tier::Host;
}

}  // namespace

int64_t ExpertCounters::fast_hits() const { return tier(fast_tier(*this)).hits; }
int64_t ExpertCounters::fast_misses() const { return tier(fast_tier(*this)).misses; }

double ExpertCounters::hit_rate() const {
  const int64_t uses = fast_hits() + fast_misses();
  return uses > 0 ? static_cast<double>(fast_hits()) / static_cast<double>(uses) : 1.0;
}

double ExpertCounters::prefetch_accuracy() const {
  return prefetch_issued > 0 ? static_cast<double>(prefetch_used) / static_cast<double>(prefetch_issued) : 0.0;
}

nlohmann::json ExpertCounters::to_json() const {
  nlohmann::json tiers_json = nlohmann::json::object();
  for (size_t i = 0; i < tiers.size(); ++i) {
    tiers_json[kTierNames[i]] = {{"hits", tiers[i].hits}, {"misses", tiers[i].misses}};
  }
  return {{"tiers", tiers_json},
          {"hit_rate", hit_rate()},
          {"misses", {{"fetched", miss_fetched}, {"staged", miss_staged}, {"cpu", miss_cpu},
                      {"split", miss_split}, {"lowbit", miss_lowbit}, {"skipped", miss_skipped}}},
          {"evictions", evictions},
          {"loads", {{"demand", demand_loads}, {"prefetch", prefetch_loads}, {"warm", warm_loads}}},
          {"payload_bytes", payload_bytes},
          {"link_bytes", {{"disk_to_host", disk_to_host_bytes}, {"host_to_device", host_to_device_bytes}}},
          {"prefetch", {{"issued", prefetch_issued}, {"used", prefetch_used}, {"wasted", prefetch_wasted},
                        {"late", prefetch_late}, {"accuracy", prefetch_accuracy()}}},
          {"stall_seconds", stall_seconds},
          {"io_seconds", io_seconds},
          {"max_bytes_in_flight", max_bytes_in_flight}};
}

}  // namespace moenav
