// The cost model (shared/DESIGN.md §6, "Model, then measure"): predicts TTFT, TPOT and memory of
// every point of the space so that only the candidates that can win are measured.
//
//   structure   per-token time = Σ layers [dense projections + router + E·expert FFN]
//               + LM head + misses·expert bytes/link bandwidth + non-matmul time;
//               prefill the same per ubatch chunk with rows spread over the active experts;
//               memory = weights resident + KV cache + process overhead.
//   calibration kernel micro-benchmarks on this machine (cpu::matmul on the model's real tensors
//               for each weight type and thread count, at several row counts), memory-copy
//               bandwidth, the baseline point's measurement for the non-matmul remainder, and a
//               routing trace for experts per token and cache hit rates (cache_sim.h).
//   refinement  each measured point adds to a correction learned per dimension choice
//               (log-residual ridge fit), so systematic errors of one setting stop misranking.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moenav/engine.h"
#include "tune/cache_sim.h"
#include "tune/config_space.h"
#include "tune/profiler.h"

namespace moenav::tune {

// Matmul times of one speed class (weight types x thread count), seconds per call.
struct KernelTimes {
  std::vector<double> rows;    // row counts sampled
  std::vector<double> expert;  // one routed expert (gate + up + down) at rows[i]
  std::vector<double> dense;   // one layer's attention projections + router (+ dense FFN) at rows[i]
  double head = 0.0;           // LM head, one row
  int64_t expert_bytes = 0;    // one expert's weight bytes
  int64_t weight_bytes = 0;    // every weight as loaded
  // Log-log interpolation (linear extrapolation beyond the last sample).
  static double at(const std::vector<double>& rows, const std::vector<double>& series, double n);
  nlohmann::json to_json() const;
  static KernelTimes from_json(const nlohmann::json& stored);  // throws on a malformed document
};

struct StageSplit {  // one decode step, seconds
  double dense = 0.0, experts = 0.0, head = 0.0, misses = 0.0, other = 0.0;
  nlohmann::json to_json() const;
};

struct Prediction {
  double ttft_s = NAN, tpot_s = NAN, memory_bytes = NAN, ppl = NAN;
  double experts_per_token = NAN, hit_rate = 1.0;
  StageSplit stages;
  double value(Metric metric, int64_t gen_tokens) const;
  nlohmann::json to_json(int64_t gen_tokens) const;
};

class CostModel {
 public:
  // Speed class of a config: the settings that change which kernels run how wide.
  static std::string speed_key(const EngineConfig& config);

  // Micro-benchmarks of one speed class on `engine` (created with that class's settings).
  static KernelTimes benchmark_kernels(Engine& engine, int repetitions = 5);
  void add_kernels(const std::string& speed_key, KernelTimes times) { kernels_[speed_key] = std::move(times); }
  bool has_kernels(const std::string& speed_key) const { return kernels_.count(speed_key) > 0; }

  void set_model(const ModelConfig& model);
  void set_trace(RoutingTrace trace) {
    trace_ = std::move(trace);
    memo_.clear();
  }
  const RoutingTrace& trace() const { return trace_; }
  void set_copy_bandwidth(double bytes_per_second) { copy_bandwidth_ = bytes_per_second; }
  // What memory predictions are calibrated against: gpu_mem (the device allocator's high-water
  // mark) on a GPU, host_mem (peak RSS) otherwise.
  void set_memory_metric(Metric metric) { memory_metric_ = metric; }
  // Measured perplexity / experts per token of a quality key.
  void set_quality(const std::string& quality_key, double ppl, double experts_per_token);

  // The uncorrected structural prediction; needs kernels for the point's speed class (falls back
  // to the nearest class with the same thread count, then any).
  Prediction raw_predict(const Point& point, const BenchOptions& workload) const;
  // Structural prediction times the learned corrections.
  Prediction predict(const Point& point, const BenchOptions& workload) const;

  // The baseline anchors the non-matmul remainder; every measured point refines corrections.
  void set_anchor(const Point& base, const Measurement& measured, const BenchOptions& workload);
  void add_observation(const Point& point, const Measurement& measured, const BenchOptions& workload);
  // Choice labels of every point, by dimension (for the per-choice corrections).
  void set_space(const ConfigSpace& space);

  nlohmann::json calibration_json() const;
  // The choice index of each space dimension a point has (-1 where none matches).
  std::vector<int> choices_of(const Point& point) const;

 private:
  Metric memory_metric_ = Metric::HostMemory;
  struct Observation {
    std::vector<int> choices;  // choice index per dimension (-1: not in the space)
    double log_residual[3];    // ttft, tpot, memory
  };
  double correction(const std::vector<int>& choices, int metric) const;
  void refit();
  const KernelTimes* kernels_for(const EngineConfig& config) const;

  // Trace statistics memoized by (top-k, threshold[, slots, policy]): predict() runs for every
  // point after every measurement.
  double memo_experts_per_token(const SelectionRule& rule) const;
  double memo_hit_rate(const SelectionRule& rule, int64_t slots, const std::string& policy) const;

  std::map<std::string, KernelTimes> kernels_;
  RoutingTrace trace_;
  mutable std::map<std::string, double> memo_;
  mutable std::map<std::string, std::vector<int>> choices_memo_;  // point key -> choices_of
  int64_t n_layers_ = 0, n_moe_layers_ = 0, n_experts_ = 0, default_k_ = 0, context_ = 0;
  int64_t kv_cache_width_ = 0;  // KV elements per position and layer
  bool renormalize_ = true;
  double copy_bandwidth_ = 1e10;
  std::map<std::string, std::pair<double, double>> quality_;  // key -> (ppl, experts per token)
  // Non-matmul remainder measured on the baseline, per row of prefill and per decode step.
  double other_decode_s_ = 0.0, other_prefill_per_row_s_ = 0.0, memory_offset_ = 0.0;
  double anchor_dense_ = 1.0;  // baseline's dense kernel time (scales the remainder)
  std::vector<std::vector<std::string>> space_choices_;  // [dimension] -> setting keys per choice
  std::vector<Observation> observations_;
  std::vector<std::vector<double>> factors_[3];  // [metric][dimension][choice] log corrections
  double global_[3] = {0.0, 0.0, 0.0};
};

}  // namespace moenav::tune
