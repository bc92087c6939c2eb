// The report's charts, each built from a tune run's summary JSON (src/tune/summary.cpp):
// the latency-memory-quality trade-off (the paper's Figures 1 and 2 for this model and machine),
// perplexity against latency, cache hit rate against cache size, per-stage decode time, and the
// cost model's predictions against the measurements.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace moenav::report {

std::string tradeoff_chart(const nlohmann::json& summary);       // latency x memory, colour = ppl
std::string quality_chart(const nlohmann::json& summary);        // latency x perplexity
std::string cache_chart(const nlohmann::json& summary);          // hit rate x slots per layer
std::string stage_chart(const nlohmann::json& summary);          // decode time split by stage
std::string prediction_chart(const nlohmann::json& summary, const std::string& metric);  // "tpot_s" | "ttft_s"
// Median absolute percentage error of the predictions made before each measurement.
double prediction_error(const nlohmann::json& summary, const std::string& metric, const std::string& fidelity);

}  // namespace moenav::report
