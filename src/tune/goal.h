// What the user asks the navigator for: one objective and any number of constraints, parsed from
// the text they type. The paper's sentences are accepted as they are written:
//   "minimize latency under 16GB"        -> min latency, gpu_mem <= 16 GB
//   "maximize quality within 2s/token"   -> min ppl,     tpot <= 2 s
// and constraints may be absolute ("tpot <= 50ms", "gpu_mem <= 16GiB", "throughput >= 20 tok/s")
// or relative to the unoptimized baseline ("ppl <= 1.05*base").
#pragma once

#include <string>
#include <vector>

#include "moenav/engine_config.h"
#include "moenav/status.h"
#include "tune/metrics.h"

namespace moenav::tune {

struct Objective {
  Metric metric = Metric::Latency;
  bool minimize = true;
  std::string text;  // canonical: "min latency"
  // Score where lower is better.
  double score(double value) const { return minimize ? value : -value; }
};

enum class Comparison { LessEqual, Less, GreaterEqual, Greater };

struct Constraint {
  Metric metric = Metric::Tpot;
  Comparison comparison = Comparison::LessEqual;
  double value = 0.0;             // absolute bound, in the metric's base unit
  bool relative_to_base = false;  // bound = value * baseline's figure
  std::string text;               // canonical: "tpot <= 50.00 ms", "ppl <= 1.05*base"

  // The bound in absolute terms; NaN if relative and the baseline figure is unknown.
  double bound(double base_value) const;
  bool satisfied(double value, double base_value) const;
  // How far a value is from the bound, as a fraction of it (<= 0 when satisfied).
  double violation(double value, double base_value) const;
  bool upper_bound() const {
    return comparison == Comparison::LessEqual || comparison == Comparison::Less;
  }
};

struct Goal {
  Objective objective;
  std::vector<Constraint> constraints;
  std::string describe() const;  // "min latency subject to gpu_mem <= 16.00 GiB, ppl <= 1.05*base"
  bool needs_quality() const;    // the objective or a constraint is perplexity
  bool speaks_of_gpu() const;    // the objective or a constraint is gpu_mem
};

Expected<Objective> parse_objective(const std::string& text);
Expected<Constraint> parse_constraint(const std::string& text);
// An objective sentence possibly carrying constraints ("... under 16GB"), plus --constraint texts.
Expected<Goal> parse_goal(const std::string& objective, const std::vector<std::string>& constraints);

// The baseline a goal about GPU memory implies. Where a CUDA device is usable (gpu_available) and
// no backend was chosen (backend_given), the baseline and so every point run on it. On CUDA
// without a GPU budget of its own, the tightest absolute gpu_mem bound becomes the budget, and an
// all-resident expert placement becomes "auto": the experts that do not fit stay in host memory
// behind a device cache (where all fit, "auto" keeps them all on the device). Returns a note per
// change.
std::vector<std::string> fit_base_to_goal(EngineConfig& base, const Goal& goal, bool backend_given,
                                          bool gpu_available);

}  // namespace moenav::tune
