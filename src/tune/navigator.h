// `moenav tune`: the navigator (shared/DESIGN.md §6). Given a model, a goal and a space, it
//   1. measures the baseline (the anchor for relative constraints and for the cost model),
//   2. calibrates the cost model (kernel micro-benchmarks, copy bandwidth, a routing trace),
//   3. predicts every point, then measures by successive halving: the best-ranked candidates at
//      a low-fidelity workload, the survivors at the full DESIGN §5 workload, refitting the
//      cost model after each point (--exhaustive measures every point instead, for validation),
//   4. measures perplexity once per (weights, routing) pair that matters (short WikiText-2
//      workload, low fidelity first when it is only needed for ranking),
//   5. recommends the best measured point that meets every constraint — never a predicted one —
//      or explains which constraint binds when none does.
// Everything measured goes to the results store as it happens.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/benchmark.h"
#include "moenav/engine_config.h"
#include "tune/config_space.h"
#include "tune/cost_model.h"
#include "tune/default_space.h"
#include "tune/feasibility.h"
#include "tune/goal.h"

namespace moenav::tune {

struct TuneOptions {
  std::string model_path;
  EngineConfig base;  // the unoptimized baseline (and the starting point of every choice)
  bool backend_given = false;  // device.backend was chosen: a gpu_mem goal leaves it as it is
  std::string objective = "min latency";
  std::vector<std::string> constraints;
  bool exhaustive = false;
  double budget_minutes = 0.0;  // 0: no limit
  std::string db_path = "moenav-results.db";
  SpacePreset preset = SpacePreset::Default;
  std::vector<std::string> dimensions;  // --dim PATH=V1,V2 added to (or replacing) the preset's
  BenchOptions bench;                   // the full-fidelity workload
  std::string text_path;                // workload text; default WikiText-2 test
  int64_t quality_tokens = 16384;
  int64_t quality_seq = 512;
  double measure_fraction = 0.15;  // default mode measures at most this share of the points,
  size_t min_points = 6;           // but at least this many (small spaces)
  size_t max_points = 40;          // and at most this many (large spaces lean on the cost model)
  int64_t trace_tokens = 256;      // routing trace for the cache simulation and experts per token
  int kernel_repetitions = 5;      // timings per kernel micro-benchmark (best of)
  bool progress = true;
};

struct TunedPoint {
  Point point;
  Prediction predicted;              // corrected prediction at the full workload
  std::optional<Measurement> low;    // low-fidelity measurement
  std::optional<Measurement> full;   // full-fidelity measurement (ppl filled when known)
  nlohmann::json prior_low, prior_full;  // the cost model's prediction just before each measurement
  std::string status = "pending";    // "ok", "unavailable", "error", "pending"
  std::string error;
  double ppl = NAN, ppl_low = NAN;   // the point's (weights, routing) pair
  bool reused = false;               // taken from the results store
  bool feasible = false;             // full measurement meets every constraint
  bool pareto = false;
};

struct TuneResult {
  Goal goal;
  MeasurementScope scope;
  std::vector<TunedPoint> points;  // the space (plus the baseline if it is outside it)
  size_t baseline = 0;             // index of the baseline in points
  std::optional<size_t> recommended;
  InfeasibleReport infeasible;
  std::vector<std::string> notes;
  size_t measured_points = 0;      // distinct points measured at any fidelity (store reuse included)
  size_t measured_full = 0;
  size_t measured_new = 0;         // of those, measured by this run (not taken from the store)
  size_t quality_pairs = 0;        // (weights, routing) pairs whose perplexity was measured
  double seconds = 0.0;
  nlohmann::json summary;          // what the report draws (also stored with the run)
};

Expected<TuneResult> run_tune(const TuneOptions& options);

}  // namespace moenav::tune
