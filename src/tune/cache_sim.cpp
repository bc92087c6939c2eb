#include "tune/cache_sim.h"

#include <algorithm>
#include <numeric>

namespace moenav::tune {
namespace {

// Calls visit(token, layer, experts kept) for every step of the trace under `rule`.
template <typename Visit>
void for_each_selection(const RoutingTrace& trace, const SelectionRule& rule, Visit&& visit) {
  const int64_t k = std::clamp<int64_t>(rule.top_k, 1, trace.k);
  std::vector<int32_t> kept;
  for (int64_t t = 0; t < trace.n_tokens(); ++t) {
    for (int64_t layer = 0; layer < trace.n_layers; ++layer) {
      const size_t base = static_cast<size_t>((t * trace.n_layers + layer) * trace.k);
      double sum = 0.0;
      for (int64_t slot = 0; slot < k; ++slot) sum += trace.weights[base + static_cast<size_t>(slot)];
      kept.clear();
      for (int64_t slot = 0; slot < k; ++slot) {
        const int32_t expert = trace.experts[base + static_cast<size_t>(slot)];
        if (expert < 0) continue;
        double weight = trace.weights[base + static_cast<size_t>(slot)];
        if (rule.renormalize && sum > 0.0) weight /= sum;
        if (slot > 0 && rule.skip_threshold > 0.0 && weight < rule.skip_threshold) continue;
        kept.push_back(expert);
      }
      visit(t, layer, kept);
    }
  }
}

// One layer's cache: resident experts with the policy's bookkeeping.
class LayerCache {
 public:
  LayerCache(int64_t slots, int64_t n_experts, std::string_view policy)
      : slots_(slots), policy_(policy), last_use_(static_cast<size_t>(n_experts), -1),
        uses_(static_cast<size_t>(n_experts), 0), resident_(static_cast<size_t>(n_experts), false) {}

  void pin(const std::vector<int32_t>& experts) {
    for (int32_t e : experts) resident_[static_cast<size_t>(e)] = true;
  }

  bool access(int32_t expert, int64_t time) {
    const size_t e = static_cast<size_t>(expert);
    ++uses_[e];
    const bool hit = resident_[e];
    if (!hit && policy_ != "static") insert(expert, time);
    last_use_[e] = time;
    return hit;
  }

 private:
  void insert(int32_t expert, int64_t time) {
    if (count_ >= slots_) evict(time);
    resident_[static_cast<size_t>(expert)] = true;
    ++count_;
  }
  void evict(int64_t time) {
    int32_t victim = -1;
    double worst = 0.0;
    for (size_t e = 0; e < resident_.size(); ++e) {
      if (!resident_[e]) continue;
      const double age = static_cast<double>(time - last_use_[e]);
      // lru: oldest use; lfu: fewest uses (oldest on ties); lfru: uses discounted by age.
      double badness = age;
      if (policy_ == "lfu") badness = -static_cast<double>(uses_[e]) + age * 1e-9;
      if (policy_ == "lfru") badness = age / (1.0 + static_cast<double>(uses_[e]));
      if (victim < 0 || badness > worst) {
        victim = static_cast<int32_t>(e);
        worst = badness;
      }
    }
    resident_[static_cast<size_t>(victim)] = false;
    --count_;
  }

  int64_t slots_;
  std::string policy_;
  std::vector<int64_t> last_use_, uses_;
  std::vector<bool> resident_;
  int64_t count_ = 0;
};

}  // namespace

double experts_per_token(const RoutingTrace& trace, const SelectionRule& rule) {
  int64_t selected = 0, steps = 0;
  for_each_selection(trace, rule, [&](int64_t, int64_t, const std::vector<int32_t>& kept) {
    selected += static_cast<int64_t>(kept.size());
    ++steps;
  });
  return steps ? static_cast<double>(selected) / static_cast<double>(steps) : static_cast<double>(rule.top_k);
}

double simulate_hit_rate(const RoutingTrace& trace, const SelectionRule& rule, int64_t slots,
                         std::string_view policy) {
  if (slots >= trace.n_experts) return 1.0;
  if (slots <= 0) return 0.0;
  std::vector<LayerCache> caches;
  for (int64_t layer = 0; layer < trace.n_layers; ++layer) caches.emplace_back(slots, trace.n_experts, policy);
  if (policy == "static") {
    // The `slots` most used experts of each layer over the whole trace stay resident.
    std::vector<std::vector<int64_t>> counts(static_cast<size_t>(trace.n_layers),
                                             std::vector<int64_t>(static_cast<size_t>(trace.n_experts), 0));
    for_each_selection(trace, rule, [&](int64_t, int64_t layer, const std::vector<int32_t>& kept) {
      for (int32_t e : kept) ++counts[static_cast<size_t>(layer)][static_cast<size_t>(e)];
    });
    for (int64_t layer = 0; layer < trace.n_layers; ++layer) {
      const auto& count = counts[static_cast<size_t>(layer)];
      std::vector<int32_t> order(count.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return count[static_cast<size_t>(a)] > count[static_cast<size_t>(b)];
      });
      order.resize(static_cast<size_t>(slots));
      caches[static_cast<size_t>(layer)].pin(order);
    }
  }
  int64_t hits = 0, accesses = 0;
  for_each_selection(trace, rule, [&](int64_t token, int64_t layer, const std::vector<int32_t>& kept) {
    for (int32_t e : kept) {
      hits += caches[static_cast<size_t>(layer)].access(e, token) ? 1 : 0;
      ++accesses;
    }
  });
  return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 1.0;
}

std::vector<CacheCurve> cache_curves(const RoutingTrace& trace, const SelectionRule& rule,
                                     const std::vector<std::string>& policies) {
  std::vector<CacheCurve> curves;
  for (const std::string& policy : policies) {
    CacheCurve curve;
    curve.policy = policy;
    for (int64_t slots = 0; slots <= trace.n_experts; ++slots) {
      curve.slots.push_back(slots);
      curve.hit_rate.push_back(simulate_hit_rate(trace, rule, slots, policy));
    }
    curves.push_back(std::move(curve));
  }
  return curves;
}

}  // namespace moenav::tune
