#include "tune/metrics.h"

#include <fmt/format.h>

namespace moenav::tune {

std::optional<Metric> metric_from_name(std::string_view name) {
  for (const MetricInfo& info : kMetrics) {
    if (info.name == name) return info.metric;
  }
  // Synonyms users write.
  struct Alias { std::string_view word; Metric metric; };
  static constexpr Alias kAliases[] = {
      {"perplexity", Metric::Perplexity}, {"quality", Metric::Perplexity},
      {"memory", Metric::GpuMemory},      {"mem", Metric::GpuMemory},
      {"gpu_memory", Metric::GpuMemory},  {"vram", Metric::GpuMemory},
      {"host_memory", Metric::HostMemory}, {"rss", Metric::HostMemory},
      {"ram", Metric::HostMemory},        {"time_per_token", Metric::Tpot},
      {"time_to_first_token", Metric::Ttft}, {"tokens_per_second", Metric::Throughput},
      {"speed", Metric::Throughput},
  };
  for (const Alias& alias : kAliases) {
    if (alias.word == name) return alias.metric;
  }
  return std::nullopt;
}

std::string format_value(Metric metric, double value) {
  if (std::isnan(value)) return "-";
  switch (metric_info(metric).unit) {
    case Unit::Seconds:
      if (value >= 1.0) return fmt::format("{:.2f} s", value);
      if (value >= 1e-3) return fmt::format("{:.2f} ms", value * 1e3);
      return fmt::format("{:.1f} us", value * 1e6);
    case Unit::Bytes:
      if (value >= 1073741824.0) return fmt::format("{:.2f} GiB", value / 1073741824.0);
      if (value >= 1048576.0) return fmt::format("{:.1f} MiB", value / 1048576.0);
      if (value >= 1024.0) return fmt::format("{:.1f} KiB", value / 1024.0);
      return fmt::format("{:.0f} B", value);
    case Unit::TokensPerSecond: return fmt::format("{:.1f} tok/s", value);
    case Unit::None: break;
  }
  return fmt::format("{:.3f}", value);
}

Metric effective_metric(Metric metric, const MeasurementScope& scope) {
  if (metric == Metric::GpuMemory && !scope.has_gpu) return Metric::HostMemory;
  return metric;
}

double Measurement::value(Metric metric) const {
  switch (metric) {
    case Metric::Ttft: return ttft_s;
    case Metric::Tpot: return tpot_s;
    case Metric::Latency: return latency_s();
    case Metric::Throughput: return throughput();
    case Metric::GpuMemory: return gpu_peak_bytes >= 0 ? static_cast<double>(gpu_peak_bytes) : NAN;
    case Metric::HostMemory: return static_cast<double>(peak_rss_bytes);
    case Metric::Perplexity: return ppl;
    case Metric::Count: break;
  }
  return NAN;
}

namespace {

// JSON has no NaN: unknown values are stored as null.
nlohmann::json number_or_null(double value) {
  return std::isnan(value) ? nlohmann::json(nullptr) : nlohmann::json(value);
}
double number_from(const nlohmann::json& json, const char* key) {
  return json.contains(key) && json[key].is_number() ? json[key].get<double>() : NAN;
}
int64_t integer_from(const nlohmann::json& json, const char* key, int64_t fallback) {
  return json.contains(key) && json[key].is_number() ? json[key].get<int64_t>() : fallback;
}

}  // namespace

nlohmann::json Measurement::to_json() const {
  return {{"ttft_s", number_or_null(ttft_s)},         {"tpot_s", number_or_null(tpot_s)},
          {"ttft_min_s", number_or_null(ttft_min_s)}, {"ttft_max_s", number_or_null(ttft_max_s)},
          {"tpot_min_s", number_or_null(tpot_min_s)}, {"tpot_max_s", number_or_null(tpot_max_s)},
          {"gen_tokens", gen_tokens},                 {"peak_rss_bytes", peak_rss_bytes},
          {"gpu_peak_bytes", gpu_peak_bytes},         {"weight_bytes", weight_bytes},
          {"resident_expert_bytes", resident_expert_bytes},
          {"ppl", number_or_null(ppl)},
          {"experts_per_token", number_or_null(experts_per_token)},
          {"seconds", seconds}};
}

Measurement Measurement::from_json(const nlohmann::json& json) {
  Measurement m;
  m.ttft_s = number_from(json, "ttft_s");
  m.tpot_s = number_from(json, "tpot_s");
  m.ttft_min_s = number_from(json, "ttft_min_s");
  m.ttft_max_s = number_from(json, "ttft_max_s");
  m.tpot_min_s = number_from(json, "tpot_min_s");
  m.tpot_max_s = number_from(json, "tpot_max_s");
  m.gen_tokens = integer_from(json, "gen_tokens", 0);
  m.peak_rss_bytes = integer_from(json, "peak_rss_bytes", 0);
  m.gpu_peak_bytes = integer_from(json, "gpu_peak_bytes", -1);
  m.weight_bytes = integer_from(json, "weight_bytes", 0);
  m.resident_expert_bytes = integer_from(json, "resident_expert_bytes", 0);
  m.ppl = number_from(json, "ppl");
  m.experts_per_token = number_from(json, "experts_per_token");
  const double seconds = number_from(json, "seconds");
  m.seconds = std::isnan(seconds) ? 0.0 : seconds;
  return m;
}

}  // namespace moenav::tune
