// The quantities the navigator measures, predicts and optimizes, in one table: their names as
// users type them ("tpot", "gpu_mem"), units, and which direction is better. A Measurement is one
// configuration's figures under one workload (shared/DESIGN.md §5); perplexity arrives separately
// because it depends only on the (weights, routing) pair and is measured once per pair.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace moenav::tune {

enum class Metric { Ttft, Tpot, Latency, Throughput, GpuMemory, HostMemory, Perplexity, Count };

enum class Unit { Seconds, Bytes, TokensPerSecond, None };

struct MetricInfo {
  Metric metric;
  std::string_view name;   // as typed in objectives and constraints
  std::string_view title;  // for tables and plots
  Unit unit;
  bool lower_is_better;
};

inline constexpr std::array<MetricInfo, static_cast<size_t>(Metric::Count)> kMetrics{{
    {Metric::Ttft, "ttft", "TTFT", Unit::Seconds, true},
    {Metric::Tpot, "tpot", "TPOT", Unit::Seconds, true},
    {Metric::Latency, "latency", "latency", Unit::Seconds, true},
    {Metric::Throughput, "throughput", "throughput", Unit::TokensPerSecond, false},
    {Metric::GpuMemory, "gpu_mem", "GPU memory", Unit::Bytes, true},
    {Metric::HostMemory, "host_mem", "host memory (peak RSS)", Unit::Bytes, true},
    {Metric::Perplexity, "ppl", "perplexity", Unit::None, true},
}};
static_assert(kMetrics.size() == static_cast<size_t>(Metric::Count));

inline const MetricInfo& metric_info(Metric metric) { return kMetrics[static_cast<size_t>(metric)]; }
std::optional<Metric> metric_from_name(std::string_view name);

// "12.3 ms", "1.50 GiB", "45.1 tok/s", "6.42".
std::string format_value(Metric metric, double value);

// What the measuring process has: on a CPU-only build there is no GPU memory to measure, and
// gpu_mem objectives and constraints apply to the host memory that holds the expert cache.
struct MeasurementScope {
  bool has_gpu = false;
};
// The metric actually used for `metric` (gpu_mem -> host_mem without a GPU).
Metric effective_metric(Metric metric, const MeasurementScope& scope);

// One configuration under one workload. Times are medians over the repetitions.
struct Measurement {
  double ttft_s = NAN, tpot_s = NAN;
  double ttft_min_s = NAN, ttft_max_s = NAN, tpot_min_s = NAN, tpot_max_s = NAN;
  int64_t gen_tokens = 0;        // n in latency = TTFT + n * TPOT
  int64_t peak_rss_bytes = 0;    // high-water mark while this point ran (reset before it)
  int64_t gpu_peak_bytes = -1;   // -1: no GPU in this process
  int64_t weight_bytes = 0;      // bytes of all weights as loaded
  int64_t resident_expert_bytes = 0;  // expert bytes held in the fastest tier
  double ppl = NAN;              // filled from the (weights, routing) quality table
  double experts_per_token = NAN;  // mean routed experts computed per token per MoE layer
  double seconds = 0.0;          // wall time the measurement took

  double latency_s() const { return ttft_s + static_cast<double>(gen_tokens) * tpot_s; }
  double throughput() const { return static_cast<double>(gen_tokens) / latency_s(); }
  // NaN when not known (perplexity not measured, no GPU).
  double value(Metric metric) const;
  nlohmann::json to_json() const;
  static Measurement from_json(const nlohmann::json& json);
};

}  // namespace moenav::tune
