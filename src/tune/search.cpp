// The search: --exhaustive measures every point; the default mode is successive halving guided
// by the cost model. Rung 1 measures the best-ranked candidates at low fidelity (a quarter of
// the prompt and of the generated tokens, one repetition), re-ranking after every point as the
// cost model learns; rung 2 measures the best third of them at full fidelity, then keeps going
// down the ranking while a candidate is still expected to beat the best feasible point by more
// than the noise. At most measure_fraction of the space is measured.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "tune/navigator_run.h"

namespace moenav::tune {
namespace {

// How far a metric of this unit may be off: `prediction` is the relative slack given to a
// predicted (not measured) value before a point is ruled out; `noise` is the relative difference
// between two measurements that the noise alone can make. Timings on a shared machine swing by a
// few percent; peak memory and perplexity repeat almost exactly, so a point predicted 2 % leaner
// than the best is still worth measuring.
struct Tolerance {
  double prediction;
  double noise;
};

Tolerance tolerance(Metric metric) {
  switch (metric_info(metric).unit) {
    case Unit::Seconds:
    case Unit::TokensPerSecond: return {0.15, 0.03};
    case Unit::Bytes: return {0.05, 0.005};
    case Unit::None: return {0.02, 0.002};
  }
  return {0.15, 0.03};
}

}  // namespace

Measurement NavigatorRun::expected(size_t index) const {
  const TunedPoint& tuned = result_.points[index];
  const double known_ppl = !std::isnan(tuned.ppl) ? tuned.ppl : tuned.ppl_low * ppl_ratio_;
  if (tuned.full) {
    Measurement m = *tuned.full;
    m.ppl = known_ppl;
    return m;
  }
  const Prediction& p = tuned.predicted;
  Measurement m;
  m.ttft_s = p.ttft_s;
  m.tpot_s = p.tpot_s;
  m.gen_tokens = full_.bench.gen_tokens;
  double memory = p.memory_bytes;
  if (tuned.low) {
    // The point's own low-fidelity residual is the most direct correction there is.
    const Prediction at_low = cost_.predict(tuned.point, low_.bench);
    if (at_low.ttft_s > 0) m.ttft_s *= tuned.low->ttft_s / at_low.ttft_s;
    if (at_low.tpot_s > 0) m.tpot_s *= tuned.low->tpot_s / at_low.tpot_s;
    const double low_memory = tuned.low->value(effective_metric(Metric::GpuMemory, result_.scope));
    if (at_low.memory_bytes > 0 && !std::isnan(low_memory)) memory *= low_memory / at_low.memory_bytes;
  }
  m.peak_rss_bytes = static_cast<int64_t>(memory);
  m.gpu_peak_bytes = result_.scope.has_gpu ? static_cast<int64_t>(memory) : -1;
  m.ppl = known_ppl;
  return m;
}

bool NavigatorRun::plausible(size_t index) const {
  const Measurement m = expected(index);
  const bool measured = result_.points[index].full.has_value();
  for (const Constraint& c : result_.goal.constraints) {
    const double value = judge_.value(m, c.metric);
    const double bound = c.bound(judge_.base_value(c.metric));
    if (std::isnan(value) || std::isnan(bound)) continue;  // unknown yet: keep
    const bool ppl_measured = c.metric == Metric::Perplexity && !std::isnan(result_.points[index].ppl);
    const double margin = measured || ppl_measured ? 0.0 : tolerance(c.metric).prediction;
    const bool ok = c.upper_bound() ? value <= bound * (1.0 + margin) : value >= bound * (1.0 - margin);
    if (!ok) return false;
  }
  return true;
}

std::vector<size_t> NavigatorRun::ranked(const std::vector<size_t>& indices) const {
  struct Key { bool implausible; double score; size_t index; };
  std::vector<Key> keys;
  for (size_t index : indices) {
    const Measurement m = expected(index);
    const bool implausible = !plausible(index);
    double score = judge_.score(m);
    if (implausible) {  // closest to feasible first
      score = 0.0;
      for (const Constraint& c : result_.goal.constraints) {
        const double violation = c.violation(judge_.value(m, c.metric), judge_.base_value(c.metric));
        if (violation > 0) score += violation;
      }
    }
    keys.push_back({implausible, std::isnan(score) ? std::numeric_limits<double>::infinity() : score, index});
  }
  std::stable_sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return a.implausible != b.implausible ? !a.implausible : a.score < b.score;
  });
  std::vector<size_t> order;
  for (const Key& key : keys) order.push_back(key.index);
  return order;
}

void NavigatorRun::repredict() {
  for (TunedPoint& tuned : result_.points) tuned.predicted = cost_.predict(tuned.point, full_.bench);
}

void NavigatorRun::ensure_ranking_quality(size_t index) {
  const TunedPoint& tuned = result_.points[index];
  if (result_.goal.needs_quality() && std::isnan(tuned.ppl) && std::isnan(tuned.ppl_low)) quality(index, Fidelity::Low);
}

void NavigatorRun::search_exhaustive() {
  for (size_t i = 0; i < result_.points.size(); ++i) {
    if (result_.points[i].status == "pending") progress_.plan(estimate_seconds(i, Fidelity::Full));
  }
  for (size_t i = 0; i < result_.points.size() && !over_budget(); ++i) {
    if (measure(i, Fidelity::Full)) quality(i, Fidelity::Full);
    double remaining = 0.0;  // the estimates improve as the cost model learns
    for (size_t j = i + 1; j < result_.points.size(); ++j) {
      if (result_.points[j].status == "pending") remaining += estimate_seconds(j, Fidelity::Full);
    }
    progress_.replan(remaining);
  }
  repredict();
}

void NavigatorRun::search_halving() {
  repredict();
  const size_t total = result_.points.size();
  // A share of the space, at least a handful of points (small spaces), at most a cap (large ones).
  const size_t share = static_cast<size_t>(options_.measure_fraction * static_cast<double>(total));
  const size_t budget = std::min(total, std::clamp(share, options_.min_points, std::max(options_.min_points, options_.max_points)));
  std::vector<size_t> remaining;
  for (size_t i = 0; i < total; ++i) {
    if (result_.points[i].status == "pending" && !result_.points[i].full) remaining.push_back(i);
  }
  // A perplexity objective ranks by quality: every pair's short perplexity first.
  if (result_.goal.objective.metric == Metric::Perplexity) {
    for (size_t i : remaining) ensure_ranking_quality(i);
    repredict();
  }
  const size_t rung1 = budget > measured_keys_.size() ? budget - measured_keys_.size() : 0;
  const size_t rung2 = std::max<size_t>(2, (rung1 + 2) / 3);
  for (size_t step = 0; step < std::min(rung1, remaining.size()); ++step) progress_.plan(estimate_seconds(remaining[step], Fidelity::Low));
  for (size_t step = 0; step < rung2 && step < remaining.size(); ++step) progress_.plan(estimate_seconds(remaining[step], Fidelity::Full));
  rung_low(remaining, rung1);
  rung_full(rung2);
  repredict();
}

bool NavigatorRun::novel(size_t index) const {
  const std::vector<int> choices = cost_.choices_of(result_.points[index].point);
  for (size_t d = 0; d < choices.size(); ++d) {
    // Two observations per choice: one may be an outlier (a busy moment on a shared machine).
    auto it = observed_choices_.find({d, choices[d]});
    if (choices[d] >= 0 && (it == observed_choices_.end() || it->second < 2)) return true;
  }
  return false;
}

void NavigatorRun::observe_choices(size_t index) {
  const std::vector<int> choices = cost_.choices_of(result_.points[index].point);
  for (size_t d = 0; d < choices.size(); ++d) ++observed_choices_[{d, choices[d]}];
}

// The first candidate in `order` that stays plausible once its quality is known (exploring: the
// first with a choice not measured yet, falling back to exploiting).
size_t NavigatorRun::pick(const std::vector<size_t>& order, bool explore) {
  for (int pass = explore ? 0 : 1; pass < 2; ++pass) {
    for (size_t candidate : order) {
      if (pass == 0 && !novel(candidate)) continue;
      ensure_ranking_quality(candidate);
      if (plausible(candidate)) return candidate;
    }
  }
  return order.front();  // nothing plausible: the closest to feasible
}

// Rung 1: low fidelity, re-ranked after each point. Every third pick explores: the best-ranked
// point with a dimension choice fewer than two measured points have, so each choice's correction
// gets data (a setting the model underrates would otherwise never be tried).
void NavigatorRun::rung_low(std::vector<size_t>& remaining, size_t count) {
  for (size_t i = 0; i < result_.points.size(); ++i) {
    if (result_.points[i].full || result_.points[i].low) observe_choices(i);
  }
  size_t measured = 0;
  while (measured < count && !remaining.empty() && !over_budget()) {
    const size_t chosen = pick(ranked(remaining), measured % 3 == 2);
    observe_choices(chosen);
    std::erase(remaining, chosen);
    if (measure(chosen, Fidelity::Low)) ++measured;
    repredict();
  }
}

double NavigatorRun::best_feasible_score() const {
  double best = std::numeric_limits<double>::infinity();
  for (const TunedPoint& tuned : result_.points) {
    if (!tuned.full) continue;
    Measurement m = *tuned.full;
    m.ppl = tuned.ppl;
    if (judge_.known(m) && judge_.feasible(m)) best = std::min(best, judge_.score(m));
  }
  return best;
}

// Rung 2: full fidelity for the `count` best of rung 1, then down the ranking while a candidate is
// still expected to beat the best feasible point by more than the noise (or none is feasible yet).
void NavigatorRun::rung_full(size_t count) {
  std::vector<size_t> rung1_points;
  for (size_t i = 0; i < result_.points.size(); ++i) {
    if (i != result_.baseline && result_.points[i].low && !result_.points[i].full) rung1_points.push_back(i);
  }
  const std::vector<size_t> order = ranked(rung1_points);
  const double noise = tolerance(result_.goal.objective.metric).noise;
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const size_t index = order[rank];
    const double best = best_feasible_score();
    if (rank >= count && std::isfinite(best)) {
      const double next = judge_.score(expected(index));
      if (!(next < best - noise * std::abs(best)) || !plausible(index)) break;
    }
    if (over_budget() && std::isfinite(best)) break;
    if (rank >= count) progress_.plan(estimate_seconds(index, Fidelity::Full));
    if (measure(index, Fidelity::Full) && result_.goal.needs_quality()) quality(index, Fidelity::Full);
  }
}

}  // namespace moenav::tune
