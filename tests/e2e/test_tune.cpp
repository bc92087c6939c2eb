// The navigator on the embedded model with tiny workloads: it never recommends a configuration
// whose measurement violates a constraint, it names the binding constraint when nothing is
// feasible, it resumes from the results store, and --exhaustive measures the whole space.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "test_paths.h"
#include "tune/default_space.h"
#include "tune/navigator.h"

namespace moenav::tune {
namespace {

std::string temp_db(const std::string& name) {
  const std::string path = (std::filesystem::temp_directory_path() / ("moenav_e2e_" + name + ".db")).string();
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  return path;
}

TuneOptions tiny_options(const std::string& db) {
  TuneOptions options;
  options.model_path = moenav::testing::source_path("models/tiny-mixtral");
  options.db_path = db;
  options.preset = SpacePreset::Small;
  options.bench.prompt_tokens = 64;
  options.bench.gen_tokens = 8;
  options.bench.repetitions = 1;
  options.bench.warmup = 1;
  options.quality_tokens = 1024;
  options.quality_seq = 256;
  options.text_path = moenav::testing::source_path("data/wikitext-2-test-head.txt");
  options.trace_tokens = 64;
  options.kernel_repetitions = 2;
  options.progress = false;
  return options;
}

// The recommendation, re-judged independently of the navigator: measured, and within bounds.
void expect_sound(const TuneResult& result) {
  Judge judge;
  judge.goal = result.goal;
  judge.scope = result.scope;
  const TunedPoint& base = result.points[result.baseline];
  ASSERT_TRUE(base.full.has_value());
  judge.base = *base.full;
  judge.base.ppl = base.ppl;
  ASSERT_TRUE(result.recommended.has_value()) << result.infeasible.text;
  const TunedPoint& rec = result.points[*result.recommended];
  ASSERT_TRUE(rec.full.has_value()) << "the recommendation must be a measured point";
  Measurement m = *rec.full;
  m.ppl = rec.ppl;
  EXPECT_TRUE(judge.known(m));
  EXPECT_TRUE(judge.feasible(m)) << rec.point.label << ": " << ::testing::PrintToString(judge.violations(m));
  // No feasible measured point beats it.
  for (const TunedPoint& other : result.points) {
    if (!other.full) continue;
    Measurement o = *other.full;
    o.ppl = other.ppl;
    if (judge.known(o) && judge.feasible(o)) {
      EXPECT_LE(judge.score(m), judge.score(o)) << other.point.label;
    }
  }
}

// Weight types of no fewer bits per weight than the model's experts are left out of the space
// (without loading them): over experts converted to Q4_0 at load, q8_0, q4_k and q4_0 all go.
TEST(TuneSpace, WeightTypesNoSmallerThanTheModelsAreLeftOut) {
  const std::string path = moenav::testing::source_path("models/tiny-mixtral");
  for (const char* stored : {"", "q4_0"}) {
    SCOPED_TRACE(std::string("weights '") + stored + "'");
    EngineConfig base;
    base.weights.type = stored;
    auto engine = Engine::create(path, base);
    ASSERT_TRUE(engine.ok()) << engine.error();
    auto space = default_space(path, **engine, base, SpacePreset::Default, {});
    ASSERT_TRUE(space.ok()) << space.error();
    const auto weights = std::find_if(space->dimensions.begin(), space->dimensions.end(),
                                      [](const Dimension& d) { return d.name == "weights"; });
    const auto left_out = std::count_if(space->notes.begin(), space->notes.end(),
                                        [](const std::string& note) { return note.find("left out") != std::string::npos; });
    if (std::string(stored).empty()) {  // bf16: every type is smaller
      ASSERT_NE(weights, space->dimensions.end());
      EXPECT_EQ(weights->choices.size(), 4u);
      EXPECT_EQ(left_out, 0);
    } else {
      EXPECT_EQ(weights, space->dimensions.end());
      EXPECT_EQ(left_out, 3);
    }
  }
}

TEST(TuneNavigator, NeverRecommendsAViolatingConfig) {
  const std::string db = temp_db("sound");
  struct Case { std::string objective; std::vector<std::string> constraints; };
  const std::vector<Case> cases = {
      {"min latency", {"ppl <= 1.02*base"}},
      {"max throughput", {"host_mem <= 64GiB", "ttft <= 1.5*base"}},
      {"maximize quality within 2s/token", {}},
      {"min tpot", {"tpot <= 0.95*base"}},  // may be infeasible on a noisy machine: then say so
  };
  for (const Case& c : cases) {
    TuneOptions options = tiny_options(db);
    options.objective = c.objective;
    options.constraints = c.constraints;
    auto result = run_tune(options);
    ASSERT_TRUE(result.ok()) << result.error();
    SCOPED_TRACE(result->goal.describe());
    if (!result->recommended) {
      EXPECT_FALSE(result->infeasible.binding.empty());
      continue;
    }
    expect_sound(*result);
    EXPECT_LE(result->measured_points, result->points.size());
  }
}

TEST(TuneNavigator, InfeasibleNamesTheBindingConstraint) {
  TuneOptions options = tiny_options(temp_db("infeasible"));
  options.objective = "min latency";
  options.constraints = {"tpot <= 1us", "host_mem <= 64GiB"};
  auto result = run_tune(options);
  ASSERT_TRUE(result.ok()) << result.error();
  EXPECT_FALSE(result->recommended.has_value());
  ASSERT_EQ(result->infeasible.binding.size(), 1u) << result->infeasible.text;
  EXPECT_EQ(result->infeasible.binding[0], "tpot <= 1.0 us");
  EXPECT_NE(result->infeasible.text.find("No configuration satisfies"), std::string::npos);
  EXPECT_NE(result->infeasible.text.find("binds"), std::string::npos) << result->infeasible.text;
  EXPECT_TRUE(result->summary["recommended"].is_null());
}

TEST(TuneNavigator, ResumesFromTheStore) {
  const std::string db = temp_db("resume");
  TuneOptions options = tiny_options(db);
  options.objective = "min tpot";
  auto first = run_tune(options);
  ASSERT_TRUE(first.ok()) << first.error();
  EXPECT_GT(first->measured_new, 0u);
  auto second = run_tune(options);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(second->measured_new, 0u) << "every point should come from the store";
  ASSERT_TRUE(first->recommended && second->recommended);
  EXPECT_EQ(first->points[*first->recommended].point.key, second->points[*second->recommended].point.key);
}

TEST(TuneNavigator, ExhaustiveMeasuresEveryAvailablePoint) {
  TuneOptions options = tiny_options(temp_db("exhaustive"));
  options.exhaustive = true;
  options.objective = "min ttft";
  auto result = run_tune(options);
  ASSERT_TRUE(result.ok()) << result.error();
  size_t available = 0;
  for (const TunedPoint& point : result->points) available += point.status == "unavailable" ? 0 : 1;
  EXPECT_EQ(result->measured_full, available);
  EXPECT_GE(available, 4u);
  EXPECT_GE(result->quality_pairs, 2u);  // the (weights, routing) pairs, not one per point
  EXPECT_LT(result->quality_pairs, available);
  expect_sound(*result);
  EXPECT_TRUE(result->summary.contains("cache_curves"));
  EXPECT_FALSE(result->summary["cache_curves"].empty());
}

}  // namespace
}  // namespace moenav::tune
