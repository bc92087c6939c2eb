// The trace-driven cache simulator and the experts-per-token estimate the cost model uses.
#include <gtest/gtest.h>

#include "tune/cache_sim.h"

namespace moenav::tune {
namespace {

// One MoE layer, 4 experts, k = 2 slots per token; slot 0 always carries most of the weight.
RoutingTrace trace_of(const std::vector<std::pair<int32_t, int32_t>>& steps, float second_weight = 0.3f) {
  RoutingTrace trace;
  trace.n_layers = 1;
  trace.n_experts = 4;
  trace.k = 2;
  for (const auto& [first, second] : steps) {
    trace.experts.push_back(first);
    trace.experts.push_back(second);
    trace.weights.push_back(1.0f - second_weight);
    trace.weights.push_back(second_weight);
  }
  return trace;
}

TEST(TuneCacheSim, LruHitRate) {
  // Accesses 0,1 | 0,2 | 0,1 | 3,1 with 2 slots under LRU:
  // 0 miss, 1 miss, 0 hit, 2 miss (evicts 1), 0 hit, 1 miss (evicts 2), 3 miss (evicts 0), 1 hit.
  const RoutingTrace trace = trace_of({{0, 1}, {0, 2}, {0, 1}, {3, 1}});
  SelectionRule rule;
  rule.top_k = 2;
  EXPECT_NEAR(simulate_hit_rate(trace, rule, 2, "lru"), 3.0 / 8.0, 1e-12);
  EXPECT_DOUBLE_EQ(simulate_hit_rate(trace, rule, 4, "lru"), 1.0);
  EXPECT_DOUBLE_EQ(simulate_hit_rate(trace, rule, 0, "lru"), 0.0);
  // Static: the two most used experts (0: 3 uses, 1: 3 uses) stay resident.
  EXPECT_NEAR(simulate_hit_rate(trace, rule, 2, "static"), 6.0 / 8.0, 1e-12);
  // Top-1 only touches 0,0,0,3.
  rule.top_k = 1;
  EXPECT_NEAR(simulate_hit_rate(trace, rule, 1, "lru"), 2.0 / 4.0, 1e-12);
}

TEST(TuneCacheSim, HitRateGrowsWithSize) {
  const RoutingTrace trace = trace_of({{0, 1}, {2, 3}, {1, 0}, {3, 2}, {0, 2}, {1, 3}, {0, 1}, {2, 0}});
  SelectionRule rule;
  const std::vector<CacheCurve> curves = cache_curves(trace, rule, {"lru", "lfu", "lfru", "static"});
  ASSERT_EQ(curves.size(), 4u);
  for (const CacheCurve& curve : curves) {
    ASSERT_EQ(curve.slots.size(), 5u);
    EXPECT_DOUBLE_EQ(curve.hit_rate.front(), 0.0);
    EXPECT_DOUBLE_EQ(curve.hit_rate.back(), 1.0);
    if (curve.policy != "lru" && curve.policy != "static") continue;  // stack policies: never worse when bigger
    for (size_t i = 1; i < curve.hit_rate.size(); ++i) EXPECT_LE(curve.hit_rate[i - 1], curve.hit_rate[i] + 1e-12) << curve.policy;
  }
}

TEST(TuneCacheSim, ExpertsPerToken) {
  const RoutingTrace trace = trace_of({{0, 1}, {2, 3}}, 0.15f);
  SelectionRule rule;
  rule.top_k = 2;
  EXPECT_DOUBLE_EQ(experts_per_token(trace, rule), 2.0);
  rule.skip_threshold = 0.2;  // the second slot weighs 0.15 after renormalization: dropped
  EXPECT_DOUBLE_EQ(experts_per_token(trace, rule), 1.0);
  rule.top_k = 1;
  rule.skip_threshold = 0.0;
  EXPECT_DOUBLE_EQ(experts_per_token(trace, rule), 1.0);
  EXPECT_DOUBLE_EQ(experts_per_token(RoutingTrace{}, rule), 1.0);  // no trace: k
}

}  // namespace
}  // namespace moenav::tune
