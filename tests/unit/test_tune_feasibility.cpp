// Judging measured points: constraints (gpu_mem read as host memory without a GPU), the Pareto
// front, and naming the binding constraint when nothing is feasible.
#include <gtest/gtest.h>

#include "tune/feasibility.h"

namespace moenav::tune {
namespace {

Measurement point(double ttft, double tpot, int64_t rss, double ppl) {
  Measurement m;
  m.ttft_s = ttft;
  m.tpot_s = tpot;
  m.gen_tokens = 10;
  m.peak_rss_bytes = rss;
  m.ppl = ppl;
  return m;
}

Judge judge_for(const std::string& objective, const std::vector<std::string>& constraints) {
  Judge judge;
  auto goal = parse_goal(objective, constraints);
  EXPECT_TRUE(goal.ok()) << goal.error();
  judge.goal = *goal;
  judge.scope.has_gpu = false;
  judge.base = point(0.1, 0.010, 100 << 20, 6.0);
  return judge;
}

TEST(TuneFeasibility, ConstraintsAndScore) {
  const Judge judge = judge_for("min latency", {"gpu_mem <= 80MiB", "ppl <= 1.05*base"});
  const Measurement fast_small = point(0.05, 0.005, 60 << 20, 6.2);
  const Measurement fast_big = point(0.05, 0.004, 90 << 20, 6.2);
  const Measurement fast_bad = point(0.05, 0.003, 60 << 20, 7.0);
  EXPECT_TRUE(judge.feasible(fast_small));
  EXPECT_FALSE(judge.feasible(fast_big));  // host RSS stands in for gpu_mem on a CPU-only build
  EXPECT_FALSE(judge.feasible(fast_bad));  // 7.0 > 1.05 * 6.0
  ASSERT_EQ(judge.violations(fast_bad).size(), 1u);
  EXPECT_NE(judge.violations(fast_bad)[0].find("ppl"), std::string::npos);
  EXPECT_LT(judge.score(fast_bad), judge.score(fast_small));
  Measurement unknown = fast_small;
  unknown.ppl = NAN;
  EXPECT_FALSE(judge.known(unknown));
  EXPECT_FALSE(judge.feasible(unknown));
}

TEST(TuneFeasibility, ParetoFront) {
  const std::vector<std::vector<double>> values = {
      {1.0, 5.0}, {2.0, 4.0}, {2.0, 6.0}, {3.0, 1.0}, {1.0, 5.0}, {NAN, 0.0}, {4.0, 1.0}};
  EXPECT_EQ(pareto_front(values), (std::vector<size_t>{0, 1, 3}));
  EXPECT_TRUE(pareto_front({}).empty());
}

TEST(TuneFeasibility, InfeasibleNamesTheBindingConstraint) {
  const Judge judge = judge_for("min latency", {"tpot <= 1ms", "gpu_mem <= 1GiB"});
  const std::vector<Measurement> measured = {point(0.05, 0.004, 60 << 20, 6.0), point(0.06, 0.003, 70 << 20, 6.0)};
  const InfeasibleReport report = explain_infeasible(judge, measured, {"a", "b"}, 10, 0);
  ASSERT_EQ(report.binding.size(), 1u);
  EXPECT_EQ(report.binding[0], "tpot <= 1.00 ms");
  EXPECT_NE(report.text.find("tpot <= 1.00 ms"), std::string::npos);
  EXPECT_NE(report.text.find("binds"), std::string::npos);
  EXPECT_NE(report.text.find("3.00 ms (b)"), std::string::npos) << report.text;  // the best any point reached
  EXPECT_NE(report.text.find("read as host_mem"), std::string::npos) << report.text;
  EXPECT_NE(report.text.find("none of the 10 unmeasured"), std::string::npos) << report.text;
}

TEST(TuneFeasibility, JointlyInfeasible) {
  const Judge judge = judge_for("min latency", {"tpot <= 3.5ms", "gpu_mem <= 65MiB"});
  // One point is fast but big, the other small but slow: each constraint alone is met.
  const std::vector<Measurement> measured = {point(0.05, 0.003, 70 << 20, 6.0), point(0.06, 0.004, 60 << 20, 6.0)};
  const InfeasibleReport report = explain_infeasible(judge, measured, {"fast", "small"}, 0, 0);
  EXPECT_EQ(report.binding.size(), 2u);
  EXPECT_NE(report.text.find("binds"), std::string::npos) << report.text;
}

}  // namespace
}  // namespace moenav::tune
