#include "tune/navigator.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "backend/cuda.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tune/navigator_run.h"

namespace moenav::tune {
namespace {

using Clock = std::chrono::steady_clock;

// Single-thread copy bandwidth: what moving an expert between host tiers costs per byte.
double measure_copy_bandwidth() {
  constexpr size_t kBytes = size_t{32} << 20;
  std::vector<char> source(kBytes, 1), destination(kBytes, 0);
  double best = 0.0;
  for (int repetition = 0; repetition < 3; ++repetition) {
    const auto start = Clock::now();
    std::memcpy(destination.data(), source.data(), kBytes);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, static_cast<double>(kBytes) / std::max(seconds, 1e-9));
  }
  return best;
}

// The config a quality pair is measured with: the point's numerics in whole-window forward passes
// (its thread count as measured: on a shared machine more threads can be slower).
EngineConfig quality_config(EngineConfig config, int64_t seq) {
  config.batch.ubatch = std::max<int>(config.batch.ubatch, static_cast<int>(seq));
  return config;
}

}  // namespace

NavigatorRun::NavigatorRun(const TuneOptions& options)
    : options_(options), profiler_(options.model_path), progress_(options.progress) {}

Status NavigatorRun::setup() {
  start_ = Clock::now();
  MOENAV_ASSIGN_OR_RETURN(result_.goal, parse_goal(options_.objective, options_.constraints));
  judge_.goal = result_.goal;
  const bool gpu = result_.goal.speaks_of_gpu() && cuda::available().ok();
  for (std::string& note : fit_base_to_goal(options_.base, result_.goal, options_.backend_given, gpu)) {
    result_.notes.push_back(std::move(note));
  }
  result_.scope.has_gpu = options_.base.device.backend == "cuda";
  judge_.scope = result_.scope;
  MOENAV_ASSIGN_OR_RETURN(store_, ResultsStore::open(options_.db_path));
  MOENAV_ASSIGN_OR_RETURN(TextSource text, load_text_source(options_.text_path));
  text_name_ = text.name;
  text_path_ = text.path;
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<Engine> base_engine, Engine::create(options_.model_path, options_.base));
  MOENAV_RETURN_IF_ERROR(base_engine->require_tokenizer());
  model_ = model_fingerprint(*base_engine);
  hardware_ = hardware_fingerprint();
  MOENAV_RETURN_IF_ERROR(store_->put_description("model", model_.key, model_.description));
  MOENAV_RETURN_IF_ERROR(store_->put_description("hardware", hardware_.key, hardware_.description));
  const std::vector<int32_t> tokens = base_engine->tokenizer().encode(text.text, false);
  full_.bench = options_.bench;
  full_.source_name = text.name;
  full_.prompt_source = tokens;
  low_ = full_;
  low_.bench.prompt_tokens = std::max<int64_t>(16, options_.bench.prompt_tokens / 4);
  low_.bench.gen_tokens = std::max<int64_t>(8, options_.bench.gen_tokens / 4);
  low_.bench.repetitions = 1;
  low_.bench.warmup = 1;
  quality_full_.seq = options_.quality_seq;
  quality_full_.max_tokens = options_.quality_tokens;
  quality_full_.source_name = text.name;
  quality_full_.tokens = tokens;
  if (static_cast<int64_t>(tokens.size()) < options_.quality_tokens) {
    result_.notes.push_back(fmt::format("perplexity workload: the text has only {} tokens (asked for {})",
                                        tokens.size(), options_.quality_tokens));
  }
  quality_low_ = quality_full_;
  quality_low_.max_tokens = std::min<int64_t>(options_.quality_tokens, 4 * options_.quality_seq);
  const ModelConfig& model = base_engine->model_config();
  cost_.set_model(model);
  cost_.set_memory_metric(effective_metric(Metric::GpuMemory, result_.scope));
  return build_space(*base_engine);
}

Status NavigatorRun::build_space(const Engine& base_engine) {
  MOENAV_ASSIGN_OR_RETURN(space_, default_space(options_.model_path, base_engine, options_.base, options_.preset,
                                                options_.dimensions));
  MOENAV_ASSIGN_OR_RETURN(std::vector<Point> points, space_.enumerate());
  Point base = make_point(options_.base, "baseline");
  auto it = std::find_if(points.begin(), points.end(), [&](const Point& p) { return p.key == base.key; });
  if (it == points.end()) {
    base.index = points.size();
    points.push_back(base);
    it = points.end() - 1;
  }
  it->label = "baseline";
  result_.baseline = static_cast<size_t>(it - points.begin());
  for (Point& point : points) {
    TunedPoint tuned;
    tuned.point = std::move(point);
    result_.points.push_back(std::move(tuned));
  }
  cost_.set_space(space_);
  for (const std::string& note : space_.notes) result_.notes.push_back(note);
  return ok_status();
}

// Calibration is remembered per (model, hardware) like the measurements, so a second run on the
// same machine predicts exactly as the first did and reuses its measured points instead of
// chasing the noise of a fresh micro-benchmark.
std::string NavigatorRun::calibration_key(const std::string& what) const {
  return model_.key + "|" + hardware_.key + "|" + what;
}

KernelTimes NavigatorRun::calibrated_kernels(const std::string& speed_key, Engine& engine) {
  const std::string key = calibration_key("kernels " + speed_key);
  if (auto stored = store_->description("calibration", key)) {
    try {
      return KernelTimes::from_json(*stored);
    } catch (const std::exception&) {  // an older or damaged record: measure again
    }
  }
  KernelTimes times = CostModel::benchmark_kernels(engine, options_.kernel_repetitions);
  if (Status status = store_->put_description("calibration", key, times.to_json()); !status.ok()) {
    result_.notes.push_back("calibration not stored: " + status.message());
  }
  return times;
}

double NavigatorRun::calibrated_copy_bandwidth() {
  const std::string key = calibration_key("copy bandwidth");
  if (auto stored = store_->description("calibration", key); stored && stored->is_number()) {
    return stored->get<double>();
  }
  const double bandwidth = measure_copy_bandwidth();
  if (Status status = store_->put_description("calibration", key, bandwidth); !status.ok()) {
    result_.notes.push_back("calibration not stored: " + status.message());
  }
  return bandwidth;
}

Status NavigatorRun::calibrate() {
  progress_.start("calibrating the cost model");
  const ModelConfig* model_config = nullptr;
  std::unique_ptr<Engine> keep_alive;
  // Kernel micro-benchmarks per speed class (weight types x threads), on the model's tensors.
  std::map<std::string, bool> classes;
  for (TunedPoint& tuned : result_.points) {
    const std::string key = CostModel::speed_key(tuned.point.config);
    if (auto found = classes.find(key); found != classes.end()) {
      if (!found->second) tuned.status = "unavailable";
      continue;
    }
    EngineConfig config = options_.base;
    config.weights = tuned.point.config.weights;
    config.device = tuned.point.config.device;
    auto engine = Engine::create(options_.model_path, config);
    Status status = engine.ok() ? Profiler::check_effective(**engine, config) : engine.status();
    classes[key] = status.ok();
    if (!status.ok()) {
      tuned.status = "unavailable";
      tuned.error = status.message();
      result_.notes.push_back(fmt::format("{}: unavailable ({})", key, status.message()));
      continue;
    }
    cost_.add_kernels(key, calibrated_kernels(key, **engine));
    if (!keep_alive) {
      keep_alive = std::move(engine).value();
      model_config = &keep_alive->model_config();
    }
  }
  for (TunedPoint& tuned : result_.points) {
    if (!classes[CostModel::speed_key(tuned.point.config)] && tuned.status == "pending") tuned.status = "unavailable";
  }
  cost_.set_copy_bandwidth(calibrated_copy_bandwidth());
  // A routing trace with every expert's weight: any top-k / threshold / cache is simulated from it.
  if (model_config != nullptr && model_config->n_experts > 1) {
    EngineConfig config = options_.base;
    config.routing = RoutingConfig{};
    config.routing.top_k = static_cast<int>(model_config->n_experts);
    const size_t count = std::min<size_t>(static_cast<size_t>(std::max<int64_t>(options_.trace_tokens, 1)), full_.prompt_source.size());
    std::vector<int32_t> tokens(full_.prompt_source.begin(), full_.prompt_source.begin() + static_cast<long>(count));
    auto trace = profiler_.trace_routing(config, tokens);
    if (trace.ok()) {
      SelectionRule rule;
      rule.top_k = options_.base.routing.top_k > 0 ? options_.base.routing.top_k : model_config->n_experts_used;
      rule.renormalize = model_config->norm_topk_prob;
      cache_curves_ = cache_curves(*trace, rule, {"lru", "lfu", "lfru", "static"});
      cost_.set_trace(std::move(trace).value());
    } else {
      result_.notes.push_back("routing trace: " + trace.error());
    }
  }
  return ok_status();
}

Status NavigatorRun::measure_baseline() {
  const size_t base = result_.baseline;
  result_.points[base].status = "pending";  // the baseline is measured whatever the class probe said
  if (!measure(base, Fidelity::Full)) {
    return Status::errorf("the baseline configuration could not be measured: {}", result_.points[base].error);
  }
  const Measurement& measured = *result_.points[base].full;
  cost_.set_anchor(result_.points[base].point, measured, full_.bench);
  cost_.add_observation(result_.points[base].point, measured, full_.bench);
  judge_.base = measured;
  if (result_.goal.needs_quality()) {
    judge_.base.ppl = quality(base, Fidelity::Full);
    const double low = quality(base, Fidelity::Low);
    if (low > 0 && judge_.base.ppl > 0) ppl_ratio_ = judge_.base.ppl / low;
  }
  return ok_status();
}

bool NavigatorRun::over_budget() const {
  if (options_.budget_minutes <= 0) return false;
  return std::chrono::duration<double>(Clock::now() - start_).count() > options_.budget_minutes * 60.0;
}

double NavigatorRun::estimate_seconds(size_t index, Fidelity fidelity) const {
  const BenchOptions& bench = workload(fidelity).bench;
  const Prediction p = cost_.predict(result_.points[index].point, bench);
  const double latency = p.value(Metric::Latency, bench.gen_tokens);
  return std::isfinite(latency) ? 0.05 + static_cast<double>(bench.warmup + bench.repetitions) * latency : 1.0;
}

double NavigatorRun::estimate_quality_seconds(Fidelity fidelity) const {
  const QualityWorkload& q = fidelity == Fidelity::Full ? quality_full_ : quality_low_;
  const TunedPoint& base = result_.points[result_.baseline];
  const double per_token = base.full ? base.full->ttft_s / static_cast<double>(full_.bench.prompt_tokens) : 1e-3;
  return 0.1 + 1.2 * per_token * static_cast<double>(std::min<int64_t>(q.max_tokens, static_cast<int64_t>(q.tokens.size())));
}

bool NavigatorRun::measure(size_t index, Fidelity fidelity) {
  TunedPoint& tuned = result_.points[index];
  std::optional<Measurement>& slot = fidelity == Fidelity::Full ? tuned.full : tuned.low;
  if (slot) return true;
  if (tuned.status == "unavailable" || tuned.status == "error") return false;
  const Workload& w = workload(fidelity);
  const double estimate = estimate_seconds(index, fidelity);
  progress_.start(fmt::format("{} ({})", tuned.point.label, fidelity == Fidelity::Full ? "full" : "low fidelity"));
  StoredPoint stored;
  auto found = store_->find_point(model_.key, hardware_.key, w.key(), tuned.point.key);
  const bool reused = found && found->status == "ok";
  if (reused) {
    stored = *found;
  } else {
    const ProfileOutcome outcome = profiler_.measure(tuned.point.config, w);
    stored = {model_.key, hardware_.key, w.key(), tuned.point.key, config_to_json(tuned.point.config),
              tuned.point.label, outcome.status, outcome.error, outcome.measurement,
              cost_.predict(tuned.point, w.bench).to_json(w.bench.gen_tokens), unix_seconds()};
    if (Status status = store_->put_point(stored); !status.ok()) progress_.note("moenav: warning: " + status.message());
    if (outcome.status == "ok") new_keys_.insert(tuned.point.key);
  }
  if (stored.status != "ok") {
    tuned.status = stored.status;
    tuned.error = stored.error;
    progress_.done(estimate, static_cast<int>(measured_keys_.size()), static_cast<int>(result_.points.size()));
    return false;
  }
  tuned.status = "ok";
  tuned.reused = tuned.reused || reused;
  slot = stored.measurement;
  (fidelity == Fidelity::Full ? tuned.prior_full : tuned.prior_low) = stored.predicted;
  measured_keys_.insert(tuned.point.key);
  if (fidelity == Fidelity::Full) ++result_.measured_full;
  if (index != result_.baseline || fidelity == Fidelity::Low) cost_.add_observation(tuned.point, *slot, w.bench);
  progress_.done(estimate, static_cast<int>(measured_keys_.size()), static_cast<int>(result_.points.size()));
  return true;
}

double NavigatorRun::quality(size_t index, Fidelity fidelity) {
  const std::string& key = result_.points[index].point.quality_key;
  auto& known = ppl_[fidelity == Fidelity::Full ? 1 : 0];
  if (auto it = known.find(key); it != known.end()) return it->second;
  const QualityWorkload& workload = fidelity == Fidelity::Full ? quality_full_ : quality_low_;
  const double estimate = estimate_quality_seconds(fidelity);
  progress_.plan(estimate);
  progress_.start(fmt::format("perplexity of {} ({})", result_.points[index].point.label,
                              fidelity == Fidelity::Full ? "full" : "short"));
  StoredQuality stored;
  auto found = store_->find_quality(model_.key, workload.key(), key);
  if (found && found->status == "ok") {
    stored = *found;
  } else {
    const ProfileOutcome outcome =
        profiler_.measure_quality(quality_config(result_.points[index].point.config, workload.seq), workload);
    stored = {model_.key, workload.key(), key, config_to_json(result_.points[index].point.config), outcome.status,
              outcome.error, outcome.measurement.ppl, outcome.measurement.gen_tokens, outcome.measurement.seconds,
              outcome.measurement.experts_per_token};
    if (Status status = store_->put_quality(stored); !status.ok()) progress_.note("moenav: warning: " + status.message());
  }
  if (fidelity == Fidelity::Full && stored.status == "ok") ++result_.quality_pairs;
  const double ppl = stored.status == "ok" ? stored.ppl : NAN;
  known[key] = ppl;
  for (TunedPoint& tuned : result_.points) {
    if (tuned.point.quality_key != key) continue;
    (fidelity == Fidelity::Full ? tuned.ppl : tuned.ppl_low) = ppl;
    if (fidelity == Fidelity::Full && tuned.full) tuned.full->ppl = ppl;
  }
  // The cost model ranks with the best perplexity known for the pair.
  const double full_ppl = ppl_[1].count(key) ? ppl_[1][key] : NAN;
  const double low_ppl = ppl_[0].count(key) ? ppl_[0][key] * ppl_ratio_ : NAN;
  cost_.set_quality(key, std::isnan(full_ppl) ? low_ppl : full_ppl, stored.experts_per_token);
  progress_.done(estimate, static_cast<int>(measured_keys_.size()), static_cast<int>(result_.points.size()));
  return ppl;
}

Expected<TuneResult> NavigatorRun::run() {
  MOENAV_RETURN_IF_ERROR(setup());
  StoredRun record{0, model_.key, options_.model_path, hardware_.key, full_.key(), result_.goal.describe(),
                   options_.exhaustive ? "exhaustive" : "default", nlohmann::json::object(), 0.0, 0.0};
  MOENAV_ASSIGN_OR_RETURN(run_id_, store_->begin_run(record));
  progress_.plan(3.0);
  MOENAV_RETURN_IF_ERROR(calibrate());
  progress_.done(1.0, 0, static_cast<int>(result_.points.size()));
  progress_.plan(estimate_seconds(result_.baseline, Fidelity::Full));
  MOENAV_RETURN_IF_ERROR(measure_baseline());
  if (options_.exhaustive) search_exhaustive();
  else search_halving();
  finalize();
  progress_.finish();
  MOENAV_RETURN_IF_ERROR(store_->finish_run(run_id_, result_.summary));
  return std::move(result_);
}

Expected<TuneResult> run_tune(const TuneOptions& options) {
  NavigatorRun run(options);
  return run.run();
}

}  // namespace moenav::tune
