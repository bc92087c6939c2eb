// Judging points against a Goal: the value of each metric (gpu_mem read as host memory on a
// CPU-only build), whether every constraint holds, the objective's score, the Pareto front, and —
// when nothing is feasible — which constraint binds: the one whose removal would let measured
// points through, with the best value any point reached on it.
#pragma once

#include <string>
#include <vector>

#include "tune/goal.h"
#include "tune/metrics.h"

namespace moenav::tune {

struct Judge {
  Goal goal;
  MeasurementScope scope;
  Measurement base;  // the unoptimized baseline, for relative bounds

  double value(const Measurement& m, Metric metric) const;
  double base_value(Metric metric) const { return value(base, metric); }
  // NaN-free scores only when every metric the goal names is known.
  bool known(const Measurement& m) const;
  bool satisfies(const Measurement& m, const Constraint& constraint) const;
  bool feasible(const Measurement& m) const;
  std::vector<std::string> violations(const Measurement& m) const;  // "tpot 3.1 ms > 2.0 ms"
  double score(const Measurement& m) const;  // objective, lower is better; +inf when unknown
  // The bound of a constraint in absolute terms, formatted ("1.05*base = 6.74").
  std::string bound_text(const Constraint& constraint) const;
};

// Indices of the points not dominated on `values` (every column lower-is-better). Rows with a
// NaN are left out.
std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& values);

struct InfeasibleReport {
  std::vector<std::string> binding;  // constraint texts that bind
  std::string text;                  // multi-line explanation
};
InfeasibleReport explain_infeasible(const Judge& judge, const std::vector<Measurement>& measured,
                                    const std::vector<std::string>& labels, size_t unmeasured_points,
                                    size_t unmeasured_predicted_feasible);

}  // namespace moenav::tune
