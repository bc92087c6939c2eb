// The design space: dimensions in option-table paths, the cartesian product, point identity
// (only settings that differ from the defaults) and the quality factorization.
#include <gtest/gtest.h>

#include "tune/config_space.h"

namespace moenav::tune {
namespace {

ConfigSpace sample_space() {
  ConfigSpace space;
  EXPECT_TRUE(space.add_dimension_text("routing.top_k=0,1").ok());
  EXPECT_TRUE(space.add_dimension_text("device.threads=0,1").ok());
  EXPECT_TRUE(space.add_dimension_text("routing.skip.policy+routing.skip.threshold=none+0,threshold+0.2").ok());
  EXPECT_TRUE(space.add_dimension_text("batch.ubatch=64,512").ok());
  return space;
}

TEST(TuneSpace, ProductAndLabels) {
  const ConfigSpace space = sample_space();
  EXPECT_EQ(space.size(), 16u);
  auto points = space.enumerate();
  ASSERT_TRUE(points.ok()) << points.error();
  ASSERT_EQ(points->size(), 16u);
  // The last dimension varies fastest; the all-defaults point is the baseline.
  EXPECT_EQ((*points)[1].label, "baseline");
  EXPECT_EQ((*points)[1].delta, nlohmann::json::object());
  EXPECT_EQ((*points)[0].config.batch.ubatch, 64);
  EXPECT_EQ((*points)[0].label, "ubatch=64");
  EXPECT_EQ((*points)[15].config.routing.top_k, 1);
  EXPECT_EQ((*points)[15].config.device.threads, 1);
  EXPECT_DOUBLE_EQ((*points)[15].config.routing.skip_threshold, 0.2);
  std::set<std::string> keys;
  for (const Point& point : *points) keys.insert(point.key);
  EXPECT_EQ(keys.size(), 16u);
}

TEST(TuneSpace, QualityDependsOnlyOnWeightsAndRouting) {
  auto points = sample_space().enumerate();
  ASSERT_TRUE(points.ok());
  std::set<std::string> quality_keys;
  for (const Point& point : *points) quality_keys.insert(point.quality_key);
  EXPECT_EQ(quality_keys.size(), 4u);  // top_k x skip; threads and ubatch do not change the numbers
  EngineConfig config;
  config.placement.expert_cache.size = "2";
  EXPECT_EQ(quality_key(config), "{}");
  config.miss.policy = "skip";  // skipping missed experts makes placement part of the numbers
  EXPECT_NE(quality_key(config).find("placement.expert_cache.size"), std::string::npos);
  config = EngineConfig{};
  config.weights.type = "q4_k";
  EXPECT_EQ(quality_key(config), R"({"weights.type":"q4_k"})");
  EXPECT_TRUE(affects_quality("routing.top_k", 1));
  EXPECT_FALSE(affects_quality("device.threads", 1));
  EXPECT_TRUE(affects_quality("miss.policy", "lowbit"));
  EXPECT_FALSE(affects_quality("miss.policy", "fetch"));
}

TEST(TuneSpace, PointIdentityIsTheDeltaFromDefaults) {
  EngineConfig config;
  config.routing.top_k = 1;
  const Point point = make_point(config, "k=1");
  EXPECT_EQ(point.key, R"({"routing.top_k":1})");
  // A config read back from its JSON has the same identity.
  auto back = config_from_json(config_to_json(config));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(make_point(*back, "").key, point.key);
}

TEST(TuneSpace, DimensionTextErrors) {
  ConfigSpace space;
  EXPECT_FALSE(space.add_dimension_text("routing.top_k").ok());
  EXPECT_FALSE(space.add_dimension_text("no.such.option=1,2").ok());
  EXPECT_FALSE(space.add_dimension_text("routing.top_k=-1").ok());
  EXPECT_FALSE(space.add_dimension_text("prefetch.policy=telepathy").ok());
  EXPECT_FALSE(space.add_dimension_text("routing.skip.policy+routing.skip.threshold=threshold").ok());
  EXPECT_TRUE(space.add_dimension_text("routing.per_layer_top_k=[1,2],[2,1]").ok());
  ASSERT_EQ(space.dimensions.size(), 1u);
  EXPECT_EQ(space.dimensions[0].choices.size(), 2u);
  // Replacing a dimension on the same path.
  EXPECT_TRUE(space.add_dimension_text("routing.per_layer_top_k=[1,1]").ok());
  EXPECT_EQ(space.dimensions.size(), 1u);
  EXPECT_EQ(space.size(), 1u);
}

TEST(TuneSpace, ValidateDropsRejectedChoices) {
  ConfigSpace space;
  space.dimensions.push_back({"k", {{"k=1", {{"routing.top_k", 1}}}, {"bad", {{"routing.top_k", "many"}}}}});
  space.dimensions.push_back({"nothing", {{"bad", {{"no.such", 1}}}}});
  const std::vector<std::string> messages = space.validate();
  EXPECT_EQ(messages.size(), 2u);
  ASSERT_EQ(space.dimensions.size(), 1u);
  EXPECT_EQ(space.dimensions[0].choices.size(), 1u);
}

}  // namespace
}  // namespace moenav::tune
