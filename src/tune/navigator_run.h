// The state of one `tune` run, shared by its three parts: navigator.cpp (set-up, calibration,
// measuring one point or one quality pair through the results store), search.cpp (exhaustive
// and successive-halving search) and summary.cpp (recommendation, Pareto front, the report's
// JSON). Private to src/tune.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "tune/fingerprint.h"
#include "tune/navigator.h"
#include "tune/profiler.h"
#include "tune/progress.h"
#include "tune/results_store.h"

namespace moenav::tune {

enum class Fidelity { Low, Full };

class NavigatorRun {
 public:
  explicit NavigatorRun(const TuneOptions& options);
  Expected<TuneResult> run();

 private:
  // navigator.cpp
  Status setup();
  Status build_space(const Engine& base_engine);
  Status calibrate();
  std::string calibration_key(const std::string& what) const;
  KernelTimes calibrated_kernels(const std::string& speed_key, Engine& engine);
  double calibrated_copy_bandwidth();
  Status measure_baseline();
  // Measures (or takes from the store) one point; false when it cannot be measured.
  bool measure(size_t index, Fidelity fidelity);
  // Perplexity of the point's (weights, routing) pair at a fidelity; NaN when unavailable.
  double quality(size_t index, Fidelity fidelity);
  bool over_budget() const;
  const Workload& workload(Fidelity fidelity) const { return fidelity == Fidelity::Full ? full_ : low_; }
  double estimate_seconds(size_t index, Fidelity fidelity) const;
  double estimate_quality_seconds(Fidelity fidelity) const;

  // search.cpp
  void search_exhaustive();
  void search_halving();
  // What is known or predicted about a point at the full workload, as a Measurement for Judge.
  Measurement expected(size_t index) const;
  bool plausible(size_t index) const;  // predicted (or measured) near enough to feasible
  std::vector<size_t> ranked(const std::vector<size_t>& indices) const;
  void repredict();
  void ensure_ranking_quality(size_t index);
  void rung_low(std::vector<size_t>& remaining, size_t count);
  void rung_full(size_t count);
  size_t pick(const std::vector<size_t>& order, bool explore);
  bool novel(size_t index) const;  // has a dimension choice fewer than two measured points have
  void observe_choices(size_t index);
  double best_feasible_score() const;

  // summary.cpp
  void finalize();
  nlohmann::json point_json(size_t index) const;
  nlohmann::json summary_json() const;

  TuneOptions options_;  // a copy: a gpu_mem goal may fit its base to the GPU (fit_base_to_goal)
  TuneResult result_;
  std::unique_ptr<ResultsStore> store_;
  Profiler profiler_;
  CostModel cost_;
  ConfigSpace space_;
  Fingerprint model_, hardware_;
  Workload full_, low_;
  QualityWorkload quality_full_, quality_low_;
  std::string text_name_, text_path_;
  Judge judge_;
  Progress progress_;
  std::chrono::steady_clock::time_point start_;
  std::set<std::string> measured_keys_;     // distinct points measured at any fidelity
  std::set<std::string> new_keys_;          // of those, measured by this run (not from the store)
  std::map<std::string, double> ppl_[2];    // [fidelity] quality key -> perplexity (NaN: unavailable)
  std::vector<CacheCurve> cache_curves_;
  std::map<std::pair<size_t, int>, int> observed_choices_;  // (dimension, choice) -> points measured with it
  int64_t run_id_ = 0;
  double ppl_ratio_ = 1.0;                  // baseline's full / low perplexity
};

}  // namespace moenav::tune
