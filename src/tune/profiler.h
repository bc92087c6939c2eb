// The profiler: runs the measurement protocol of shared/DESIGN.md §5 on one configuration —
// TTFT, TPOT and latency medians over repetitions after a warm-up, the peak RSS of this point
// alone (the high-water mark is reset before it), weight bytes — and perplexity on a short
// WikiText-2 workload once per (weights, routing) pair. It also records routing traces for the
// cost model's cache simulation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/benchmark.h"
#include "moenav/engine.h"
#include "tune/metrics.h"

namespace moenav::tune {

// Text the workloads take their tokens from: WikiText-2 test from ../shared when present, else
// the 16 KiB excerpt shipped in data/ (which is named in the report).
struct TextSource {
  std::string path;
  std::string name;  // "WikiText-2 test" or "WikiText-2 test, first 16 KiB (data/...)"
  std::string text;
};
Expected<TextSource> load_text_source(const std::string& explicit_path = "");

struct Workload {
  BenchOptions bench;
  std::string source_name;
  std::vector<int32_t> prompt_source;  // tokens the prompt is cut from
  nlohmann::json to_json() const;
  std::string key() const { return to_json().dump(); }
};

struct QualityWorkload {
  int64_t seq = 512;
  int64_t max_tokens = 16384;  // first tokens of the text scored
  std::string source_name;
  std::vector<int32_t> tokens;
  nlohmann::json to_json() const;
  std::string key() const { return to_json().dump(); }
};

// Per token and MoE layer, the experts a configuration chose, with weights: the input of the
// cache simulator and of the cost model's experts-per-token estimate.
struct RoutingTrace {
  int64_t n_layers = 0;    // MoE layers, in order
  int64_t n_experts = 0;
  int64_t k = 0;           // slots per token (the trace is taken with k = n_experts)
  // [token][layer][slot] -> expert (-1 dropped), weight; tokens in generation order
  std::vector<int32_t> experts;
  std::vector<float> weights;
  int64_t n_tokens() const { return n_layers * k == 0 ? 0 : static_cast<int64_t>(experts.size()) / (n_layers * k); }
};

// The outcome of trying a configuration: measured, unavailable in this build (Engine::create
// refused it, or the engine ignored the setting), or failed while running.
struct ProfileOutcome {
  std::string status;  // "ok", "unavailable", "error"
  std::string error;
  Measurement measurement;
};

class Profiler {
 public:
  explicit Profiler(std::string model_path) : model_path_(std::move(model_path)) {}

  ProfileOutcome measure(const EngineConfig& config, const Workload& workload);
  // Perplexity and mean experts per token of the config's (weights, routing) pair.
  ProfileOutcome measure_quality(const EngineConfig& config, const QualityWorkload& workload);
  // Routing of `tokens` with every expert's weight (top_k = n_experts).
  Expected<RoutingTrace> trace_routing(const EngineConfig& config, const std::vector<int32_t>& tokens);

  // Whether the engine honoured the settings that change what is loaded (a build without
  // weight conversion accepts weights.type in the option table but keeps the file's types).
  static Status check_effective(const Engine& engine, const EngineConfig& config);

 private:
  Expected<std::unique_ptr<Engine>> open(const EngineConfig& config);
  std::string model_path_;
};

// Resets the process's peak RSS (Linux clear_refs), so the next peak belongs to one point.
bool reset_peak_rss();

}  // namespace moenav::tune
