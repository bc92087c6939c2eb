// Objectives and constraints as users type them, the paper's sentences included.
#include <gtest/gtest.h>

#include "tune/goal.h"

namespace moenav::tune {
namespace {

TEST(TuneGoal, PaperSentences) {
  auto goal = parse_goal("minimize latency under 16GB", {});
  ASSERT_TRUE(goal.ok()) << goal.error();
  EXPECT_EQ(goal->objective.metric, Metric::Latency);
  EXPECT_TRUE(goal->objective.minimize);
  ASSERT_EQ(goal->constraints.size(), 1u);
  EXPECT_EQ(goal->constraints[0].metric, Metric::GpuMemory);
  EXPECT_EQ(goal->constraints[0].comparison, Comparison::LessEqual);
  EXPECT_DOUBLE_EQ(goal->constraints[0].value, 16e9);

  goal = parse_goal("maximize quality within 2s/token", {});
  ASSERT_TRUE(goal.ok()) << goal.error();
  EXPECT_EQ(goal->objective.metric, Metric::Perplexity);
  EXPECT_TRUE(goal->objective.minimize);  // quality up = perplexity down
  ASSERT_EQ(goal->constraints.size(), 1u);
  EXPECT_EQ(goal->constraints[0].metric, Metric::Tpot);
  EXPECT_DOUBLE_EQ(goal->constraints[0].value, 2.0);
  EXPECT_TRUE(goal->needs_quality());
}

TEST(TuneGoal, SentenceWithSeveralClauses) {
  auto goal = parse_goal("Minimize TPOT under 8 GiB and ppl <= 1.05*base", {"ttft <= 500ms"});
  ASSERT_TRUE(goal.ok()) << goal.error();
  EXPECT_EQ(goal->objective.metric, Metric::Tpot);
  ASSERT_EQ(goal->constraints.size(), 3u);
  EXPECT_DOUBLE_EQ(goal->constraints[0].value, 8.0 * 1073741824.0);
  EXPECT_TRUE(goal->constraints[1].relative_to_base);
  EXPECT_DOUBLE_EQ(goal->constraints[1].value, 1.05);
  EXPECT_DOUBLE_EQ(goal->constraints[2].value, 0.5);
  EXPECT_EQ(goal->describe(), "min tpot subject to gpu_mem <= 8.00 GiB, ppl <= 1.05*base, ttft <= 500.00 ms");
}

TEST(TuneGoal, Objectives) {
  for (const auto& [text, metric, minimize] :
       std::vector<std::tuple<std::string, Metric, bool>>{{"min latency", Metric::Latency, true},
                                                          {"min ttft", Metric::Ttft, true},
                                                          {"min gpu_mem", Metric::GpuMemory, true},
                                                          {"minimize gpu memory", Metric::GpuMemory, true},
                                                          {"min host_mem", Metric::HostMemory, true},
                                                          {"min ppl", Metric::Perplexity, true},
                                                          {"max throughput", Metric::Throughput, false}}) {
    auto objective = parse_objective(text);
    ASSERT_TRUE(objective.ok()) << text << ": " << objective.error();
    EXPECT_EQ(objective->metric, metric) << text;
    EXPECT_EQ(objective->minimize, minimize) << text;
  }
  EXPECT_LT(parse_objective("max throughput")->score(20.0), parse_objective("max throughput")->score(10.0));
}

TEST(TuneGoal, RejectsNonsenseWithAHint) {
  auto wrong_direction = parse_objective("max latency");
  ASSERT_FALSE(wrong_direction.ok());
  EXPECT_NE(wrong_direction.error().find("min latency"), std::string::npos) << wrong_direction.error();
  EXPECT_FALSE(parse_objective("min").ok());
  EXPECT_FALSE(parse_objective("min banana").ok());
  EXPECT_FALSE(parse_objective("fast please").ok());
  EXPECT_FALSE(parse_constraint("tpot 5ms").ok());
  EXPECT_FALSE(parse_constraint("gpu_mem <= 16").ok());  // memory needs a unit
  EXPECT_FALSE(parse_constraint("tpot <= 5 parsecs").ok());
  EXPECT_FALSE(parse_constraint("banana <= 3").ok());
  EXPECT_FALSE(parse_constraint("ppl <= -1").ok());
  EXPECT_FALSE(parse_constraint("ppl <= 1.05*basis").ok());
  EXPECT_FALSE(parse_goal("min latency under lots", {}).ok());
}

TEST(TuneGoal, ConstraintsAndUnits) {
  auto c = parse_constraint("tpot < 50 ms");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->comparison, Comparison::Less);
  EXPECT_DOUBLE_EQ(c->value, 0.05);
  c = parse_constraint("throughput >= 20 tok/s");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_FALSE(c->upper_bound());
  EXPECT_TRUE(c->satisfied(25.0, NAN));
  EXPECT_FALSE(c->satisfied(19.0, NAN));
  c = parse_constraint("host_mem <= 512MiB");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_DOUBLE_EQ(c->value, 512.0 * 1048576.0);
  c = parse_constraint("ppl <= base*1.1");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_TRUE(c->relative_to_base);
  EXPECT_NEAR(c->bound(6.0), 6.6, 1e-12);
  EXPECT_TRUE(c->satisfied(6.5, 6.0));
  EXPECT_FALSE(c->satisfied(6.7, 6.0));
  EXPECT_FALSE(c->satisfied(6.0, NAN));  // relative bound without a baseline is never met
  EXPECT_NEAR(c->violation(7.26, 6.0), 0.1, 1e-9);
  c = parse_constraint("latency <= 1.5s");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_DOUBLE_EQ(c->value, 1.5);
  EXPECT_FALSE(c->satisfied(NAN, NAN));
}

TEST(TuneGoal, MetricScopeOnCpuBuilds) {
  MeasurementScope cpu{false}, gpu{true};
  EXPECT_EQ(effective_metric(Metric::GpuMemory, cpu), Metric::HostMemory);
  EXPECT_EQ(effective_metric(Metric::GpuMemory, gpu), Metric::GpuMemory);
  Measurement m;
  m.ttft_s = 0.5;
  m.tpot_s = 0.01;
  m.gen_tokens = 100;
  m.peak_rss_bytes = 1000;
  EXPECT_DOUBLE_EQ(m.value(Metric::Latency), 1.5);
  EXPECT_DOUBLE_EQ(m.value(Metric::Throughput), 100 / 1.5);
  EXPECT_TRUE(std::isnan(m.value(Metric::GpuMemory)));
  const Measurement back = Measurement::from_json(m.to_json());
  EXPECT_DOUBLE_EQ(back.value(Metric::Latency), 1.5);
  EXPECT_TRUE(std::isnan(back.ppl));
}

// "min tpot under gpu_mem <= 16GiB" on a machine with a GPU: the baseline moves to it, the bound
// becomes its budget and the experts a device cache under it. What the user chose stays.
TEST(TuneGoal, AGpuMemoryGoalRunsOnTheGpuUnderItsBound) {
  auto goal = parse_goal("min tpot", {"gpu_mem <= 16GiB", "gpu_mem <= 20GiB", "ppl <= 1.05*base"});
  ASSERT_TRUE(goal.ok()) << goal.error();
  EngineConfig base;
  const std::vector<std::string> notes = fit_base_to_goal(base, *goal, false, true);
  EXPECT_EQ(notes.size(), 2u);
  EXPECT_EQ(base.device.backend, "cuda");
  EXPECT_EQ(base.device.gpu_memory, std::to_string(int64_t{16} << 30));  // the tightest bound
  EXPECT_EQ(base.placement.expert_cache.size, "auto");

  EngineConfig chosen;  // --backend cpu given: the CPU it is (gpu_mem then reads host memory)
  EXPECT_TRUE(fit_base_to_goal(chosen, *goal, true, true).empty());
  EXPECT_EQ(chosen.device.backend, "cpu");
  EngineConfig no_gpu;
  EXPECT_TRUE(fit_base_to_goal(no_gpu, *goal, false, false).empty());
  EXPECT_EQ(no_gpu.device.backend, "cpu");
  EngineConfig budgeted;  // --backend cuda --gpu-memory 8GiB --cache-size 3
  budgeted.device.backend = "cuda";
  budgeted.device.gpu_memory = "8GiB";
  budgeted.placement.expert_cache.size = "3";
  EXPECT_TRUE(fit_base_to_goal(budgeted, *goal, true, true).empty());
  EXPECT_EQ(budgeted.device.gpu_memory, "8GiB");
  EXPECT_EQ(budgeted.placement.expert_cache.size, "3");

  auto latency = parse_goal("min latency", {"ppl <= 1.05*base"});  // nothing about the GPU
  ASSERT_TRUE(latency.ok());
  EngineConfig untouched;
  EXPECT_TRUE(fit_base_to_goal(untouched, *latency, false, true).empty());
  EXPECT_EQ(untouched.device.backend, "cpu");
}

}  // namespace
}  // namespace moenav::tune
