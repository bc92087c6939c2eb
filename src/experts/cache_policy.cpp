#include "experts/cache_policy.h"

#include <algorithm>
#include <cmath>

#include "experts/routing_stats.h"

namespace moenav {
namespace {

// Picks the candidate with the smallest (score, last use, key).
template <typename Score>
int32_t smallest(std::span<const int32_t> candidates, const std::vector<int64_t>& last_use, Score score) {
  int32_t best = candidates[0];
  for (int32_t key : candidates.subspan(1)) {
    const auto a = score(key), b = score(best);
    const size_t k = static_cast<size_t>(key), bk = static_cast<size_t>(best);
    if (a < b || (a == b && (last_use[k] < last_use[bk] || (last_use[k] == last_use[bk] && key < best)))) {
      best = key;
    }
  }
  return best;
}

class LruPolicy final : public CachePolicy {
 public:
  explicit LruPolicy(const CacheKeySpace& keys) : last_use_(static_cast<size_t>(keys.keys()), -1) {}
  void on_use(int32_t key, int64_t tick) override { last_use_[static_cast<size_t>(key)] = tick; }
  void on_insert(int32_t key, int64_t tick) override { last_use_[static_cast<size_t>(key)] = tick; }
  int32_t victim(std::span<const int32_t> candidates) const override {
    return smallest(candidates, last_use_, [](int32_t) { return 0; });
  }

 private:
  std::vector<int64_t> last_use_;
};

class LfuPolicy final : public CachePolicy {
 public:
  explicit LfuPolicy(const CacheKeySpace& keys)
      : uses_(static_cast<size_t>(keys.keys()), 0), last_use_(static_cast<size_t>(keys.keys()), -1) {}
  void on_use(int32_t key, int64_t tick) override {
    ++uses_[static_cast<size_t>(key)];
    last_use_[static_cast<size_t>(key)] = tick;
  }
  void on_insert(int32_t key, int64_t tick) override { last_use_[static_cast<size_t>(key)] = tick; }
  int32_t victim(std::span<const int32_t> candidates) const override {
    return smallest(candidates, last_use_, [&](int32_t key) { return uses_[static_cast<size_t>(key)]; });
  }

 private:
  std::vector<int64_t> uses_;
  std::vector<int64_t> last_use_;
};

class LfruPolicy final : public CachePolicy {
 public:
  explicit LfruPolicy(const CacheKeySpace& keys)
      : half_life_(4.0 * static_cast<double>(std::max<int64_t>(keys.uses_per_token, 1))),
        crf_(static_cast<size_t>(keys.keys()), 0.0),
        last_use_(static_cast<size_t>(keys.keys()), -1) {}
  void on_use(int32_t key, int64_t tick) override {
    now_ = tick;
    crf_[static_cast<size_t>(key)] = value(key) + 1.0;
    last_use_[static_cast<size_t>(key)] = tick;
  }
  void on_insert(int32_t key, int64_t tick) override {
    now_ = tick;
    crf_[static_cast<size_t>(key)] = value(key);
    last_use_[static_cast<size_t>(key)] = tick;
  }
  int32_t victim(std::span<const int32_t> candidates) const override {
    return smallest(candidates, last_use_, [&](int32_t key) { return value(key); });
  }

 private:
  // The CRF decayed to now.
  double value(int32_t key) const {
    const int64_t last = last_use_[static_cast<size_t>(key)];
    if (last < 0) return 0.0;
    return crf_[static_cast<size_t>(key)] * std::exp2(-static_cast<double>(now_ - last) / half_life_);
  }
  double half_life_;
  int64_t now_ = 0;
  std::vector<double> crf_;
  std::vector<int64_t> last_use_;
};

class PriorityPolicy final : public CachePolicy {
 public:
  // Warm-start statistics count as this many layer visits.
  static constexpr double kPriorVisits = 64.0;

  PriorityPolicy(const CacheKeySpace& keys, const RoutingStats* stats)
      : keys_(keys), uses_(static_cast<size_t>(keys.keys()), 0.0),
        visits_(static_cast<size_t>(keys.n_layers), 0.0), last_use_(static_cast<size_t>(keys.keys()), -1) {
    if (stats == nullptr || stats->tokens <= 0) return;
    for (int64_t l = 0; l < keys.n_layers; ++l) {
      if (keys.moe_ordinal[static_cast<size_t>(l)] < 0) continue;
      visits_[static_cast<size_t>(l)] = kPriorVisits;
      for (int64_t e = 0; e < keys.n_experts; ++e) {
        const double ratio = stats->counts[static_cast<size_t>(l)][static_cast<size_t>(e)] /
                             static_cast<double>(stats->tokens);
        uses_[static_cast<size_t>(l * keys.n_experts + e)] = kPriorVisits * std::min(ratio, 1.0);
      }
    }
  }
  void on_use(int32_t key, int64_t tick) override {
    uses_[static_cast<size_t>(key)] += 1.0;
    last_use_[static_cast<size_t>(key)] = tick;
  }
  void on_insert(int32_t key, int64_t tick) override { last_use_[static_cast<size_t>(key)] = tick; }
  void on_layer_visit(int64_t layer) override { visits_[static_cast<size_t>(layer)] += 1.0; }
  int32_t victim(std::span<const int32_t> candidates) const override {
    return smallest(candidates, last_use_, [&](int32_t key) { return priority(key); });
  }

 private:
  double priority(int32_t key) const {
    const int64_t layer = keys_.layer_of(key);
    const double ratio = (uses_[static_cast<size_t>(key)] + 1.0) /
                         (visits_[static_cast<size_t>(layer)] + static_cast<double>(keys_.n_experts));
    const double depth = static_cast<double>(keys_.moe_ordinal[static_cast<size_t>(layer)]);
    const double layers = static_cast<double>(std::max<int64_t>(keys_.n_moe_layers, 1));
    return ratio * (1.0 + (layers - 1.0 - depth) / layers);
  }
  CacheKeySpace keys_;
  std::vector<double> uses_;
  std::vector<double> visits_;
  std::vector<int64_t> last_use_;
};

class StaticPolicy final : public CachePolicy {
 public:
  void on_use(int32_t, int64_t) override {}
  void on_insert(int32_t, int64_t) override {}
  int32_t victim(std::span<const int32_t> candidates) const override { return candidates[0]; }
  bool admits_misses() const override { return false; }
};

}  // namespace

Expected<std::unique_ptr<CachePolicy>> make_cache_policy(std::string_view name,
                                                         const CacheKeySpace& keys,
                                                         const RoutingStats* stats) {
  if (name == "lru") return std::unique_ptr<CachePolicy>(new LruPolicy(keys));
  if (name == "lfu") return std::unique_ptr<CachePolicy>(new LfuPolicy(keys));
  if (name == "lfru") return std::unique_ptr<CachePolicy>(new LfruPolicy(keys));
  if (name == "priority") return std::unique_ptr<CachePolicy>(new PriorityPolicy(keys, stats));
  if (name == "static") return std::unique_ptr<CachePolicy>(new StaticPolicy());
  return Status::errorf("placement.expert_cache.policy '{}' is unknown (choose one of: lru, lfu, lfru, "
                        "static, priority)", name);
}

}  // namespace moenav
