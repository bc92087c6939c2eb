// Routing policies: threshold and adaptive skipping, pruning masks (frequency by hard or soft
// counts, random, structured) and the data-free per-layer k allocation, plus their errors.
#include <numeric>

#include <gtest/gtest.h>

#include "core/thread_pool.h"
#include "experts/routing_stats.h"
#include "layers/moe/expert_pruning.h"
#include "layers/moe/layer_k_allocation.h"
#include "layers/moe/routing_policy.h"
#include "model/model.h"
#include "moenav/engine.h"
#include "test_paths.h"

namespace moenav {
namespace {

using testing::source_path;

ModelConfig config_of(int64_t layers, int64_t experts, int64_t k) {
  ModelConfig config;
  config.n_layers = layers;
  config.n_experts = experts;
  config.n_experts_used = k;
  config.layer_is_moe.assign(static_cast<size_t>(layers), true);
  return config;
}

Routing routing_of(std::vector<int32_t> experts, std::vector<float> weights, int64_t k) {
  Routing routing;
  routing.k = k;
  routing.n_tokens = static_cast<int64_t>(experts.size()) / k;
  routing.experts = std::move(experts);
  routing.weights = std::move(weights);
  return routing;
}

TEST(RoutingPolicy, ThresholdSkipKeepsTopOne) {
  RoutingConfig config;
  config.skip_policy = "threshold";
  config.skip_threshold = 0.3;
  auto policy = RoutingPolicy::create(config, config_of(2, 8, 3));
  ASSERT_TRUE(policy.ok()) << policy.error();
  Routing routing = routing_of({1, 2, 3, 4, 5, 6}, {0.5f, 0.3f, 0.2f, 0.2f, 0.2f, 0.2f}, 3);
  policy->apply(routing);
  EXPECT_EQ(routing.experts, (std::vector<int32_t>{1, 2, -1, 4, -1, -1}));
}

TEST(RoutingPolicy, AdaptiveGatingKeepsTheMassAndCanRenormalize) {
  RoutingConfig config;
  config.skip_policy = "adaptive";
  config.skip_threshold = 0.8;
  auto policy = RoutingPolicy::create(config, config_of(2, 8, 3));
  ASSERT_TRUE(policy.ok()) << policy.error();
  Routing routing = routing_of({1, 2, 3, 4, 5, 6}, {0.85f, 0.1f, 0.05f, 0.5f, 0.4f, 0.1f}, 3);
  policy->apply(routing);
  EXPECT_EQ(routing.experts, (std::vector<int32_t>{1, -1, -1, 4, 5, -1}));
  EXPECT_FLOAT_EQ(routing.weights[0], 0.85f);
  config.skip_renormalize = true;
  policy = RoutingPolicy::create(config, config_of(2, 8, 3));
  ASSERT_TRUE(policy.ok());
  routing = routing_of({1, 2, 3, 4, 5, 6}, {0.85f, 0.1f, 0.05f, 0.5f, 0.4f, 0.1f}, 3);
  policy->apply(routing);
  EXPECT_FLOAT_EQ(routing.weights[0], 1.0f);
  EXPECT_FLOAT_EQ(routing.weights[3] + routing.weights[4], 1.0f);
  config.skip_threshold = 0.0;
  EXPECT_FALSE(RoutingPolicy::create(config, config_of(2, 8, 3)).ok());
}

TEST(RoutingPolicy, PerLayerScheduleAndErrors) {
  RoutingConfig config;
  config.per_layer_top_k = {3, 1};
  auto policy = RoutingPolicy::create(config, config_of(2, 8, 2));
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(policy->k_for_layer(0), 3);
  EXPECT_EQ(policy->k_for_layer(1), 1);
  config.per_layer_top_k = {3};
  EXPECT_FALSE(RoutingPolicy::create(config, config_of(2, 8, 2)).ok());
  RoutingConfig too_many;
  too_many.top_k = 9;
  auto error = RoutingPolicy::create(too_many, config_of(2, 8, 2));
  ASSERT_FALSE(error.ok());
  EXPECT_NE(error.error().find("routing.top_k = 9"), std::string::npos);
  RoutingConfig unknown;
  unknown.skip_policy = "sometimes";
  EXPECT_FALSE(RoutingPolicy::create(unknown, config_of(2, 8, 2)).ok());
}

std::vector<int> pruned_of(const std::vector<bool>& mask) {
  std::vector<int> pruned;
  for (size_t e = 0; e < mask.size(); ++e) if (!mask[e]) pruned.push_back(static_cast<int>(e));
  return pruned;
}

TEST(ExpertPruning, StructuredPatterns) {
  const ModelConfig model = config_of(2, 8, 2);
  const std::vector<int64_t> k = {2, 2};
  RoutingConfig config;
  config.prune_policy = "structured";
  config.prune_pattern = "odd";
  auto masks = pruning_masks(config, model, k);
  ASSERT_TRUE(masks.ok()) << masks.error();
  EXPECT_EQ(pruned_of((*masks)[1]), (std::vector<int>{1, 3, 5, 7}));
  config.prune_pattern = "even";
  EXPECT_EQ(pruned_of((*pruning_masks(config, model, k))[0]), (std::vector<int>{0, 2, 4, 6}));
  config.prune_pattern = "tail";
  config.prune_fraction = 0.25;
  EXPECT_EQ(pruned_of((*pruning_masks(config, model, k))[0]), (std::vector<int>{6, 7}));
}

TEST(ExpertPruning, RandomIsSeededAndSized) {
  const ModelConfig model = config_of(3, 16, 2);
  RoutingConfig config;
  config.prune_policy = "random";
  config.prune_fraction = 0.5;
  config.prune_seed = 7;
  auto a = pruning_masks(config, model, {2, 2, 2});
  auto b = pruning_masks(config, model, {2, 2, 2});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(pruned_of((*a)[0]).size(), 8u);
  EXPECT_NE((*a)[0], (*a)[1]);
  config.prune_seed = 8;
  EXPECT_NE(*pruning_masks(config, model, {2, 2, 2}), *a);
}

TEST(ExpertPruning, FrequencyFromCalibrationCounts) {
  auto model = load_model(source_path("models/tiny-mixtral"));
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = (*model)->config;
  RoutingConfig config;
  config.prune_policy = "frequency";
  config.prune_fraction = 0.25;
  config.prune_calibration = source_path("models/tiny-mixtral/reference.json");
  auto masks = pruning_masks(config, c, std::vector<int64_t>(6, 2));
  ASSERT_TRUE(masks.ok()) << masks.error();
  // reference.json layer 0 counts: 34, 5786, 18270, 13383, 27876, 16614, 26855, 22254.
  EXPECT_EQ(pruned_of((*masks)[0]), (std::vector<int>{0, 1}));
  config.prune_score = "soft";
  auto soft = pruning_masks(config, c, std::vector<int64_t>(6, 2));
  ASSERT_FALSE(soft.ok());
  EXPECT_NE(soft.error().find("weight sums"), std::string::npos) << soft.error();
  config.prune_score = "hard";
  config.prune_fraction = 0.9;
  auto too_much = pruning_masks(config, c, std::vector<int64_t>(6, 2));
  ASSERT_FALSE(too_much.ok());
  EXPECT_NE(too_much.error().find("fewer than its top-k"), std::string::npos) << too_much.error();
  config.prune_fraction = 0.25;
  config.prune_calibration.clear();
  auto missing = pruning_masks(config, c, std::vector<int64_t>(6, 2));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("routing.prune.calibration"), std::string::npos);
}

TEST(ExpertPruning, PrunedExpertsAreNeverRouted) {
  EngineConfig config;
  config.device.threads = 2;
  config.routing.prune_policy = "structured";
  config.routing.prune_pattern = "odd";
  auto engine = Engine::create(source_path("models/tiny-mixtral"), config);
  ASSERT_TRUE(engine.ok()) << engine.error();
  int64_t selections = 0;
  (*engine)->set_routing_observer([&](int64_t, const Routing& routing) {
    for (int32_t expert : routing.experts) {
      if (expert < 0) continue;
      EXPECT_EQ(expert % 2, 0);
      ++selections;
    }
  });
  auto session = (*engine)->new_session();
  std::vector<int32_t> tokens(12);
  std::iota(tokens.begin(), tokens.end(), 100);
  ASSERT_TRUE((*engine)->evaluate(*session, tokens).ok());
  EXPECT_EQ(selections, 12 * 6 * 2);
}

TEST(LayerKAllocation, SpendsTheBudgetWithinBounds) {
  auto model = load_model(source_path("models/tiny-mixtral"));
  ASSERT_TRUE(model.ok());
  ThreadPool pool(2);
  for (double average : {1.0, 1.5, 2.0, 3.0}) {
    auto k = allocate_layer_k((*model)->config, (*model)->weights, average, pool);
    ASSERT_TRUE(k.ok()) << k.error();
    EXPECT_EQ(std::accumulate(k->begin(), k->end(), int64_t{0}), static_cast<int64_t>(average * 6 + 0.5));
    for (int64_t layer_k : *k) {
      EXPECT_GE(layer_k, 1);
      EXPECT_LE(layer_k, 4);
    }
  }
  EXPECT_FALSE(allocate_layer_k((*model)->config, (*model)->weights, 0.5, pool).ok());
  RoutingConfig config;
  config.allocation_policy = "lexi";
  config.allocation_average_k = 1.5;
  auto policy = RoutingPolicy::create(config, (*model)->config, &(*model)->weights, &pool);
  ASSERT_TRUE(policy.ok()) << policy.error();
  int64_t total = 0;
  for (int64_t l = 0; l < 6; ++l) total += policy->k_for_layer(l);
  EXPECT_EQ(total, 9);
  EXPECT_FALSE(RoutingPolicy::create(config, (*model)->config).ok());  // needs the weights
}

}  // namespace
}  // namespace moenav
