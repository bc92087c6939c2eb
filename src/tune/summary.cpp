// The end of a run: feasibility of every fully measured point, the recommendation (the best
// measured point that meets every constraint), the explanation when there is none, the Pareto
// front over latency, memory and perplexity, and the JSON document the report is drawn from.
#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "tune/navigator_run.h"

namespace moenav::tune {
namespace {

using nlohmann::json;

json optional_measurement(const std::optional<Measurement>& m) { return m ? m->to_json() : json(nullptr); }
json number_or_null(double v) { return std::isnan(v) ? json(nullptr) : json(v); }

}  // namespace

void NavigatorRun::finalize() {
  std::vector<size_t> full_points;
  for (size_t i = 0; i < result_.points.size(); ++i) {
    TunedPoint& tuned = result_.points[i];
    if (!tuned.full) continue;
    full_points.push_back(i);
    tuned.full->ppl = tuned.ppl;
    tuned.feasible = judge_.known(*tuned.full) && judge_.feasible(*tuned.full);
  }
  double best = std::numeric_limits<double>::infinity();
  for (size_t i : full_points) {
    const TunedPoint& tuned = result_.points[i];
    if (tuned.feasible && judge_.score(*tuned.full) < best) {
      best = judge_.score(*tuned.full);
      result_.recommended = i;
    }
  }
  // Show the perplexity of the recommendation and the baseline even when the goal did not need it.
  for (std::optional<size_t> index : {result_.recommended, std::optional<size_t>(result_.baseline)}) {
    if (index && std::isnan(result_.points[*index].ppl)) quality(*index, Fidelity::Full);
  }
  if (!result_.recommended) {
    std::vector<Measurement> measured;
    std::vector<std::string> labels;
    size_t unmeasured = 0, predicted_feasible = 0;
    for (size_t i = 0; i < result_.points.size(); ++i) {
      const TunedPoint& tuned = result_.points[i];
      if (tuned.full || tuned.low) {
        Measurement m = expected(i);
        measured.push_back(m);
        labels.push_back(tuned.point.label + (tuned.full ? "" : ", low fidelity"));
      } else if (tuned.status == "pending") {
        ++unmeasured;
        predicted_feasible += plausible(i) ? 1 : 0;
      }
    }
    result_.infeasible = explain_infeasible(judge_, measured, labels, unmeasured, predicted_feasible);
  }
  // Pareto front: latency, memory and (when every point has it) perplexity, all lower-better.
  const bool with_ppl = std::all_of(full_points.begin(), full_points.end(),
                                    [&](size_t i) { return !std::isnan(result_.points[i].ppl); });
  std::vector<std::vector<double>> values;
  for (size_t i : full_points) {
    const Measurement& m = *result_.points[i].full;
    std::vector<double> row = {m.latency_s(), judge_.value(m, Metric::GpuMemory)};
    if (with_ppl) row.push_back(result_.points[i].ppl);
    values.push_back(row);
  }
  for (size_t front : pareto_front(values)) result_.points[full_points[front]].pareto = true;
  result_.measured_points = measured_keys_.size();
  result_.measured_new = new_keys_.size();
  result_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  result_.summary = summary_json();
}

json NavigatorRun::point_json(size_t index) const {
  const TunedPoint& tuned = result_.points[index];
  return {{"index", index},
          {"label", tuned.point.label},
          {"key", tuned.point.key},
          {"config", tuned.point.delta},
          {"quality_key", tuned.point.quality_key},
          {"status", tuned.status},
          {"error", tuned.error},
          {"reused", tuned.reused},
          {"predicted", tuned.predicted.to_json(full_.bench.gen_tokens)},
          {"low", optional_measurement(tuned.low)},
          {"prior_low", tuned.prior_low},
          {"prior_full", tuned.prior_full},
          {"full", optional_measurement(tuned.full)},
          {"ppl", number_or_null(tuned.ppl)},
          {"ppl_low", number_or_null(tuned.ppl_low)},
          {"feasible", tuned.feasible},
          {"pareto", tuned.pareto},
          {"recommended", result_.recommended == index},
          {"baseline", result_.baseline == index}};
}

json NavigatorRun::summary_json() const {
  json constraints = json::array();
  for (const Constraint& c : result_.goal.constraints) {
    constraints.push_back({{"text", c.text}, {"metric", metric_info(c.metric).name},
                           {"bound", number_or_null(c.bound(judge_.base_value(c.metric)))}});
  }
  json points = json::array();
  for (size_t i = 0; i < result_.points.size(); ++i) points.push_back(point_json(i));
  json curves = json::array();
  for (const CacheCurve& curve : cache_curves_) {
    curves.push_back({{"policy", curve.policy}, {"slots", curve.slots}, {"hit_rate", curve.hit_rate}});
  }
  const Metric memory = effective_metric(Metric::GpuMemory, result_.scope);
  return {
      {"version", 1},
      {"model", {{"key", model_.key}, {"description", model_.description}}},
      {"hardware", {{"key", hardware_.key}, {"description", hardware_.description}}},
      {"goal", {{"text", result_.goal.describe()}, {"objective", result_.goal.objective.text},
                {"objective_metric", metric_info(result_.goal.objective.metric).name},
                {"constraints", constraints}}},
      {"scope", {{"has_gpu", result_.scope.has_gpu}, {"memory_metric", metric_info(memory).name},
                 {"memory_note", result_.scope.has_gpu
                                     ? "GPU memory: the device's peak during the point"
                                     : "no GPU in this build: memory is the process's peak RSS while the point ran "
                                       "(weights resident in host memory including the expert cache, KV cache, "
                                       "workspaces); gpu_mem goals are read as host_mem"}}},
      {"mode", options_.exhaustive ? "exhaustive" : "default"},
      {"workload", full_.to_json()},
      {"low_workload", low_.to_json()},
      {"quality_workload", quality_full_.to_json()},
      {"quality_low_workload", quality_low_.to_json()},
      {"text_source", text_name_},
      {"text_path", text_path_},
      {"space", {{"dimensions", space_.to_json()}, {"size", result_.points.size()}, {"notes", result_.notes}}},
      {"points", points},
      {"baseline", result_.baseline},
      {"recommended", result_.recommended ? json(*result_.recommended) : json(nullptr)},
      {"infeasible", {{"binding", result_.infeasible.binding}, {"text", result_.infeasible.text}}},
      {"cache_curves", curves},
      {"calibration", cost_.calibration_json()},
      {"counts", {{"space", result_.points.size()}, {"measured", result_.measured_points},
                  {"measured_full", result_.measured_full}, {"measured_new", result_.measured_new},
                  {"quality_pairs", result_.quality_pairs}, {"measure_fraction", options_.measure_fraction}}},
      {"seconds", result_.seconds},
  };
}

}  // namespace moenav::tune
