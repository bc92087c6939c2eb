#include "tune/feasibility.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

namespace moenav::tune {

double Judge::value(const Measurement& m, Metric metric) const {
  return m.value(effective_metric(metric, scope));
}

bool Judge::known(const Measurement& m) const {
  if (std::isnan(value(m, goal.objective.metric))) return false;
  for (const Constraint& c : goal.constraints) {
    if (std::isnan(value(m, c.metric))) return false;
  }
  return true;
}

bool Judge::satisfies(const Measurement& m, const Constraint& constraint) const {
  return constraint.satisfied(value(m, constraint.metric), base_value(constraint.metric));
}

bool Judge::feasible(const Measurement& m) const {
  return std::all_of(goal.constraints.begin(), goal.constraints.end(),
                     [&](const Constraint& c) { return satisfies(m, c); });
}

std::string Judge::bound_text(const Constraint& constraint) const {
  const double bound = constraint.bound(base_value(constraint.metric));
  if (!constraint.relative_to_base) return format_value(constraint.metric, bound);
  return fmt::format("{:g}*base = {}", constraint.value, format_value(constraint.metric, bound));
}

std::vector<std::string> Judge::violations(const Measurement& m) const {
  std::vector<std::string> out;
  for (const Constraint& c : goal.constraints) {
    if (satisfies(m, c)) continue;
    out.push_back(fmt::format("{} {} violates {} {}", metric_info(c.metric).name,
                              format_value(c.metric, value(m, c.metric)), c.upper_bound() ? "<=" : ">=",
                              bound_text(c)));
  }
  return out;
}

double Judge::score(const Measurement& m) const {
  const double v = value(m, goal.objective.metric);
  return std::isnan(v) ? std::numeric_limits<double>::infinity() : goal.objective.score(v);
}

std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& values) {
  std::vector<size_t> front;
  auto has_nan = [](const std::vector<double>& row) {
    return std::any_of(row.begin(), row.end(), [](double v) { return std::isnan(v); });
  };
  for (size_t i = 0; i < values.size(); ++i) {
    if (has_nan(values[i])) continue;
    bool dominated = false;
    for (size_t j = 0; j < values.size() && !dominated; ++j) {
      if (j == i || has_nan(values[j])) continue;
      bool no_worse = true, better = false;
      for (size_t d = 0; d < values[i].size(); ++d) {
        no_worse = no_worse && values[j][d] <= values[i][d];
        better = better || values[j][d] < values[i][d];
      }
      // Among exact duplicates keep the first.
      dominated = no_worse && (better || j < i);
    }
    if (!dominated) front.push_back(i);
  }
  return front;
}

InfeasibleReport explain_infeasible(const Judge& judge, const std::vector<Measurement>& measured,
                                    const std::vector<std::string>& labels, size_t unmeasured_points,
                                    size_t unmeasured_predicted_feasible) {
  InfeasibleReport report;
  const Goal& goal = judge.goal;
  std::string& text = report.text;
  text = fmt::format("No configuration satisfies every constraint ({} measured point{}).\n", measured.size(),
                     measured.size() == 1 ? "" : "s");
  for (size_t c = 0; c < goal.constraints.size(); ++c) {
    const Constraint& constraint = goal.constraints[c];
    size_t alone = 0, without = 0;
    double best = NAN;
    std::string best_label;
    for (size_t i = 0; i < measured.size(); ++i) {
      const double v = judge.value(measured[i], constraint.metric);
      if (judge.satisfies(measured[i], constraint)) ++alone;
      bool others = true;
      for (size_t o = 0; o < goal.constraints.size(); ++o) {
        if (o != c) others = others && judge.satisfies(measured[i], goal.constraints[o]);
      }
      if (others) ++without;
      const bool better = constraint.upper_bound() ? v < best : v > best;
      if (!std::isnan(v) && (std::isnan(best) || better)) {
        best = v;
        best_label = i < labels.size() ? labels[i] : "";
      }
    }
    const bool binds = alone < measured.size() && without > 0;
    if (binds) report.binding.push_back(constraint.text);
    const Metric shown = effective_metric(constraint.metric, judge.scope);
    text += fmt::format("  {}{}: bound {}, met by {} of {}; best measured {} ({}){}\n", constraint.text,
                        shown != constraint.metric ? fmt::format(" (read as {} on this CPU-only build)",
                                                                 metric_info(shown).name) : "",
                        judge.bound_text(constraint), alone, measured.size(), format_value(constraint.metric, best),
                        best_label,
                        binds ? fmt::format(" <- binds: without it {} point{} would be feasible", without,
                                            without == 1 ? "" : "s")
                              : "");
  }
  if (report.binding.empty()) {
    for (const Constraint& constraint : goal.constraints) {
      size_t alone = 0;
      for (const Measurement& m : measured) alone += judge.satisfies(m, constraint) ? 1 : 0;
      if (alone == 0) report.binding.push_back(constraint.text);
    }
    text += report.binding.empty()
                ? "  The constraints conflict jointly: each is met by some point, but no point meets them all.\n"
                : "  No measured point meets the constraint(s) marked above on their own.\n";
    if (report.binding.empty()) {
      for (const Constraint& constraint : goal.constraints) report.binding.push_back(constraint.text);
    }
  }
  if (unmeasured_points > 0) {
    text += unmeasured_predicted_feasible == 0
                ? fmt::format("  The cost model predicts none of the {} unmeasured points meets them either.\n",
                              unmeasured_points)
                : fmt::format("  The cost model predicts {} of the {} unmeasured points might; rerun with "
                              "--exhaustive or a larger --budget-minutes to measure them.\n",
                              unmeasured_predicted_feasible, unmeasured_points);
  }
  return report;
}

}  // namespace moenav::tune
