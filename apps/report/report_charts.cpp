#include "report/report_charts.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "report/svg_plot.h"

namespace moenav::report {
namespace {

using nlohmann::json;

double number(const json& object, const char* key) {
  return object.is_object() && object.contains(key) && object[key].is_number() ? object[key].get<double>() : NAN;
}

bool is_gpu(const json& summary) { return summary["scope"].value("memory_metric", "host_mem") == "gpu_mem"; }

double memory_mib(const json& summary, const json& measurement) {
  return number(measurement, is_gpu(summary) ? "gpu_peak_bytes" : "peak_rss_bytes") / 1048576.0;
}

double latency_s(const json& m) { return number(m, "ttft_s") + number(m, "gen_tokens") * number(m, "tpot_s"); }

std::string memory_label(const json& summary) {
  return is_gpu(summary) ? "GPU memory, peak (MiB)" : "host memory: peak RSS (MiB)";
}

std::string point_tooltip(const json& point, const json& summary) {
  const json& m = point["full"];
  return fmt::format("{}\nlatency {:.3f} s  TTFT {:.2f} ms  TPOT {:.3f} ms\nmemory {:.1f} MiB  ppl {}", point.value("label", ""),
                     latency_s(m), number(m, "ttft_s") * 1e3, number(m, "tpot_s") * 1e3, memory_mib(summary, m),
                     point["ppl"].is_number() ? fmt::format("{:.3f}", point["ppl"].get<double>()) : "not measured");
}

// Constraint bounds as guide lines on the axis they belong to.
void add_guides(Chart& chart, const json& summary, const std::string& x_metric, const std::string& y_metric, double y_scale) {
  for (const json& c : summary["goal"]["constraints"]) {
    const std::string metric = c.value("metric", "");
    const double bound = number(c, "bound");
    if (std::isnan(bound)) continue;
    const bool memory = metric == "gpu_mem" || metric == "host_mem";
    const std::string axis_metric = memory ? "memory" : metric;
    if (axis_metric == x_metric) chart.x_guides.push_back({bound, c.value("text", "")});
    if (axis_metric == y_metric) chart.y_guides.push_back({bound * y_scale, c.value("text", "")});
  }
}

}  // namespace

std::string tradeoff_chart(const json& summary) {
  Chart chart;
  chart.title = "Latency, memory and quality of every configuration";
  chart.width = 760;
  chart.height = 440;
  chart.x.label = fmt::format("latency = TTFT + {} x TPOT (s)", number(summary["workload"], "gen_tokens"));
  chart.y.label = memory_label(summary);
  double ppl_min = INFINITY, ppl_max = -INFINITY;
  for (const json& point : summary["points"]) {
    if (point["full"].is_object() && point["ppl"].is_number()) {
      ppl_min = std::min(ppl_min, point["ppl"].get<double>());
      ppl_max = std::max(ppl_max, point["ppl"].get<double>());
    }
  }
  std::vector<double> xs, ys;
  std::vector<std::pair<double, double>> measured;
  for (const json& point : summary["points"]) {
    const bool full = point["full"].is_object();
    const json& source = full ? point["full"] : point["predicted"];
    const double x = full ? latency_s(source) : number(source, "latency_s");
    const double y = (full ? memory_mib(summary, source) : number(source, "memory_bytes") / 1048576.0);
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    if (point.value("status", "") == "unavailable") continue;
    xs.push_back(x);
    ys.push_back(y);
    Marker marker{x, y};
    if (!full) {
      marker.shape = "dot";
      marker.color = "#888";
      marker.size = 5;
      marker.tooltip = point.value("label", "") + " (predicted, not measured)";
    } else {
      measured.push_back({x, y});
      const double ppl = point["ppl"].is_number() ? point["ppl"].get<double>() : NAN;
      marker.color = std::isnan(ppl) ? "#bbbbbb" : sequential_color(ppl_max > ppl_min ? (ppl - ppl_min) / (ppl_max - ppl_min) : 0.0);
      marker.shape = point.value("recommended", false) ? "star" : point.value("baseline", false) ? "square" : "circle";
      marker.size = point.value("recommended", false) ? 7 : 5.5;
      marker.tooltip = point_tooltip(point, summary);
    }
    chart.markers.push_back(marker);
  }
  // Measured points drawn over the predicted ones; the recommendation last.
  std::stable_sort(chart.markers.begin(), chart.markers.end(), [](const Marker& a, const Marker& b) {
    auto rank = [](const Marker& m) { return m.shape == "dot" ? 0 : m.shape == "star" ? 2 : 1; };
    return rank(a) < rank(b);
  });
  chart.x.log = !xs.empty() && *std::max_element(xs.begin(), xs.end()) > 20 * *std::min_element(xs.begin(), xs.end());
  chart.x.fit(xs);
  chart.y.fit(ys);
  // The 2-D front of the measured points (latency, memory).
  std::sort(measured.begin(), measured.end());
  Line front;
  front.color = "#2c3e50";
  double best_y = INFINITY;
  for (const auto& [x, y] : measured) {
    if (y < best_y) {
      if (!front.x.empty()) {
        front.x.push_back(x);
        front.y.push_back(front.y.back());
      }
      front.x.push_back(x);
      front.y.push_back(y);
      best_y = y;
    }
  }
  chart.lines.push_back(front);
  add_guides(chart, summary, "latency", "memory", 1.0 / 1048576.0);
  chart.legend = {{"recommended", "#ffd700", "star"}, {"baseline", "#888", "square"}, {"measured", "#1a9850", "circle"},
                  {"predicted only", "#888", "dot"}, {"latency-memory front", "#2c3e50", "line"}};
  if (std::isfinite(ppl_min)) {
    chart.legend.push_back({fmt::format("ppl {:.2f} (best)", ppl_min), sequential_color(0.0), "circle"});
    chart.legend.push_back({fmt::format("ppl {:.2f} (worst)", ppl_max), sequential_color(1.0), "circle"});
  }
  chart.note = "Colour: perplexity of the point's (weights, routing) pair; grey: not measured. Hover a point for its figures.";
  return chart.svg();
}

std::string quality_chart(const json& summary) {
  Chart chart;
  chart.title = "Perplexity against latency (measured points)";
  chart.width = 760;
  chart.x.label = "latency (s)";
  chart.y.label = "perplexity (WikiText-2, short workload)";
  std::vector<double> xs, ys;
  for (const json& point : summary["points"]) {
    if (!point["full"].is_object() || !point["ppl"].is_number()) continue;
    Marker marker{latency_s(point["full"]), point["ppl"].get<double>()};
    marker.shape = point.value("recommended", false) ? "star" : point.value("baseline", false) ? "square" : "circle";
    marker.color = point.value("recommended", false) ? "#ffd700" : point.value("pareto", false) ? "#1f77b4" : "#9ecae1";
    marker.size = point.value("recommended", false) ? 7 : 5;
    marker.tooltip = point_tooltip(point, summary);
    xs.push_back(marker.x);
    ys.push_back(marker.y);
    chart.markers.push_back(marker);
  }
  chart.x.fit(xs);
  chart.y.fit(ys);
  add_guides(chart, summary, "latency", "ppl", 1.0);
  chart.legend = {{"recommended", "#ffd700", "star"}, {"baseline", "#9ecae1", "square"},
                  {"on the Pareto front", "#1f77b4", "circle"}, {"dominated", "#9ecae1", "circle"}};
  if (xs.empty()) chart.note = "No perplexity measured at the full workload in this run.";
  return chart.svg();
}

std::string cache_chart(const json& summary) {
  Chart chart;
  chart.title = "Expert cache hit rate against cache size (trace-driven simulation)";
  chart.width = 760;
  chart.x.label = "cache slots per MoE layer";
  chart.y.label = "hit rate";
  chart.y.min = 0.0;
  chart.y.max = 1.02;
  chart.y.fixed = true;
  std::vector<double> xs;
  size_t index = 0;
  for (const json& curve : summary["cache_curves"]) {
    Line line;
    line.color = category_color(index++);
    for (size_t i = 0; i < curve["slots"].size(); ++i) {
      line.x.push_back(curve["slots"][i].get<double>());
      line.y.push_back(curve["hit_rate"][i].get<double>());
      xs.push_back(line.x.back());
      chart.markers.push_back({line.x.back(), line.y.back(), line.color, "circle", 3.0,
                               fmt::format("{}: {} slots, hit rate {:.3f}", curve.value("policy", ""), line.x.back(), line.y.back())});
    }
    chart.legend.push_back({curve.value("policy", ""), line.color, "line"});
    chart.lines.push_back(line);
  }
  chart.x.fit(xs);
  chart.note = fmt::format("Routing trace of {} decoded tokens with the model's own top-k; measured hit rates appear once "
                           "expert caching is in the build.", number(summary["calibration"], "trace_tokens"));
  return chart.svg();
}

std::string stage_chart(const json& summary) {
  struct Stage { const char* key; const char* label; const char* color; };
  static constexpr Stage kStages[] = {{"dense", "attention + router matmuls", "#1f77b4"},
                                      {"experts", "routed experts", "#ff7f0e"},
                                      {"head", "LM head", "#2ca02c"},
                                      {"misses", "expert misses", "#d62728"},
                                      {"other", "other (softmax(qk)v, norms, overhead)", "#9467bd"}};
  std::vector<Bar> bars;
  for (const json& point : summary["points"]) {
    if (!point["full"].is_object()) continue;
    if (!point.value("pareto", false) && !point.value("baseline", false) && !point.value("recommended", false)) continue;
    const json& stages = point["predicted"]["stages"];
    double predicted = 0.0;
    for (const Stage& s : kStages) predicted += number(stages, s.key);
    const double scale = predicted > 0 ? number(point["full"], "tpot_s") / predicted : 1.0;
    Bar bar;
    bar.label = (point.value("recommended", false) ? "* " : "") + point.value("label", "");
    if (bar.label.size() > 34) bar.label = bar.label.substr(0, 32) + "..";
    for (const Stage& s : kStages) bar.segments.push_back({number(stages, s.key) * scale, s.color, s.label});
    bars.push_back(bar);
    if (bars.size() >= 10) break;
  }
  return stacked_bars_svg("Decode step split by stage (cost-model shares, scaled to the measured TPOT)", bars, "ms", 1e3, 760);
}

std::string prediction_chart(const json& summary, const std::string& metric) {
  Chart chart;
  chart.title = fmt::format("{}: predicted before measuring vs measured", metric == "tpot_s" ? "TPOT" : "TTFT");
  chart.width = 520;
  chart.height = 400;
  chart.x.label = "predicted (ms)";
  chart.y.label = "measured (ms)";
  chart.x.log = chart.y.log = true;
  std::vector<double> values;
  for (const json& point : summary["points"]) {
    for (const auto& [fidelity, prior] : {std::pair<std::string, std::string>{"full", "prior_full"}, {"low", "prior_low"}}) {
      if (!point[fidelity].is_object() || !point[prior].is_object()) continue;
      const double predicted = number(point[prior], metric.c_str()) * 1e3;
      const double measured = number(point[fidelity], metric.c_str()) * 1e3;
      if (!(predicted > 0) || !(measured > 0)) continue;
      values.push_back(predicted);
      values.push_back(measured);
      chart.markers.push_back({predicted, measured, fidelity == "full" ? "#1f77b4" : "#ff7f0e", fidelity == "full" ? "circle" : "ring", 4.5,
                               fmt::format("{} ({}): predicted {:.3f} ms, measured {:.3f} ms", point.value("label", ""), fidelity,
                                           predicted, measured)});
    }
  }
  chart.x.fit(values);
  chart.y = chart.x;
  chart.y.label = "measured (ms)";
  Line diagonal{{chart.x.min, chart.x.max}, {chart.x.min, chart.x.max}, "#555", true, 1.0, "y = x"};
  chart.lines.push_back(diagonal);
  chart.legend = {{"full workload", "#1f77b4", "circle"}, {"low fidelity", "#ff7f0e", "ring"}, {"y = x", "#555", "line"}};
  return chart.svg();
}

double prediction_error(const json& summary, const std::string& metric, const std::string& fidelity) {
  const std::string prior = fidelity == "full" ? "prior_full" : "prior_low";
  std::vector<double> errors;
  for (const json& point : summary["points"]) {
    if (!point[fidelity].is_object() || !point[prior].is_object()) continue;
    const double predicted = number(point[prior], metric.c_str()), measured = number(point[fidelity], metric.c_str());
    if (predicted > 0 && measured > 0) errors.push_back(std::abs(predicted / measured - 1.0));
  }
  if (errors.empty()) return NAN;
  std::sort(errors.begin(), errors.end());
  return errors[errors.size() / 2];
}

}  // namespace moenav::report
