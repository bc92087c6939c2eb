#include "report/html_report.h"

#include <chrono>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "report/report_charts.h"
#include "report/svg_plot.h"
#include "tune/metrics.h"

namespace moenav::report {
namespace {

using nlohmann::json;
using tune::Metric;

constexpr const char* kStyle = R"css(
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1080px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.muted { color: #666; font-size: 13px; } .box { border: 1px solid #ccc; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.ok { border-color: #1a9850; background: #f3fbf5; } .bad { border-color: #d73027; background: #fdf3f2; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
tr.rec td { background: #fff6cc; font-weight: bold; } tr.base td { background: #eef3fb; }
pre { background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; } figure { margin: 12px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
)css";

double number(const json& object, const char* key) {
  return object.is_object() && object.contains(key) && object[key].is_number() ? object[key].get<double>() : NAN;
}

std::string text_of(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

bool gpu_scope(const json& summary) { return summary["scope"].value("memory_metric", "host_mem") == "gpu_mem"; }

std::string memory_text(const json& summary, const json& m) {
  return tune::format_value(Metric::HostMemory, number(m, gpu_scope(summary) ? "gpu_peak_bytes" : "peak_rss_bytes"));
}

std::string metrics_cells(const json& summary, const json& point) {
  const json& m = point["full"];
  const double latency = number(m, "ttft_s") + number(m, "gen_tokens") * number(m, "tpot_s");
  return fmt::format("<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", tune::format_value(Metric::Ttft, number(m, "ttft_s")),
                     tune::format_value(Metric::Tpot, number(m, "tpot_s")), tune::format_value(Metric::Latency, latency),
                     memory_text(summary, m), tune::format_value(Metric::Perplexity, number(point, "ppl")));
}

std::string recommendation_section(const json& summary) {
  const json& points = summary["points"];
  const json& base = points[summary["baseline"].get<size_t>()];
  std::string out;
  if (summary["recommended"].is_null()) {
    out += fmt::format("<div class=\"box bad\"><b>No configuration meets every constraint.</b> Binding: {}<pre>{}</pre></div>",
                       escape_html(text_of(summary["infeasible"]["binding"])), escape_html(summary["infeasible"].value("text", "")));
    return out;
  }
  const json& rec = points[summary["recommended"].get<size_t>()];
  const json& m = rec["full"];
  const json& b = base["full"];
  const std::string objective = summary["goal"].value("objective_metric", "latency");
  auto ratio = [&](const char* key) { return number(b, key) / number(m, key); };
  const double latency_ratio = (number(b, "ttft_s") + number(b, "gen_tokens") * number(b, "tpot_s")) /
                               (number(m, "ttft_s") + number(m, "gen_tokens") * number(m, "tpot_s"));
  out += fmt::format("<div class=\"box ok\"><b>Recommended: {}</b> (measured at the full workload; meets every constraint)<br>"
                     "latency {:.2f}x, TTFT {:.2f}x, TPOT {:.2f}x the baseline's speed; objective: {}<pre>{}</pre>"
                     "<span class=\"muted\">Settings that differ from the defaults; <code>moenav tune -o tuned.json</code> writes the "
                     "whole EngineConfig, which generate, bench, perplexity and serve load with <code>--config</code>.</span></div>",
                     escape_html(rec.value("label", "")), latency_ratio, ratio("ttft_s"), ratio("tpot_s"), escape_html(objective),
                     escape_html(rec["config"].dump(2)));
  out += "<table><tr><th>configuration</th><th>TTFT</th><th>TPOT</th><th>latency</th><th>memory</th><th>perplexity</th></tr>";
  out += fmt::format("<tr class=\"rec\"><td>{}</td>{}</tr>", escape_html(rec.value("label", "")), metrics_cells(summary, rec));
  out += fmt::format("<tr class=\"base\"><td>baseline</td>{}</tr></table>", metrics_cells(summary, base));
  return out;
}

std::string describe_model(const json& d) {
  return fmt::format("{} ({}, {}): {} layers, hidden {}, {} experts, top-{}, {:.1f} MB of weights", text_of(d.value("path", json(""))),
                     text_of(d.value("arch", json(""))), text_of(d.value("format", json(""))), text_of(d.value("layers", json(0))),
                     text_of(d.value("hidden", json(0))), text_of(d.value("experts", json(0))),
                     text_of(d.value("experts_per_token", json(0))), d.value("bytes", 0.0) / 1e6);
}

std::string describe_hardware(const json& d) {
  std::string gpus;
  for (const json& gpu : d.value("gpus", json::array())) gpus += (gpus.empty() ? "" : ", ") + text_of(gpu);
  return fmt::format("{}, {} cores, {} GiB memory, GPU: {}", text_of(d.value("cpu", json(""))), text_of(d.value("cores", json(0))),
                     text_of(d.value("memory_gib", json(0))), gpus.empty() ? "none" : gpus);
}

std::string context_section(const json& summary, const ReportInput& input) {
  const json& counts = summary["counts"];
  const double space = number(counts, "space"), measured = number(counts, "measured");
  std::string notes;
  for (const json& note : summary["space"]["notes"]) notes += "<li>" + escape_html(text_of(note)) + "</li>";
  std::string dimensions;
  for (const json& dimension : summary["space"]["dimensions"]) {
    std::string choices;
    for (const json& choice : dimension["choices"]) choices += (choices.empty() ? "" : ", ") + choice.value("label", "");
    dimensions += fmt::format("<li><b>{}</b>: {}</li>", escape_html(dimension.value("name", "")), escape_html(choices));
  }
  const json& workload = summary["workload"];
  const json& quality = summary["quality_workload"];
  return fmt::format(
      "<div class=\"box\"><b>Goal:</b> {}<br><b>Mode:</b> {} &mdash; {:.0f} of {:.0f} points measured ({:.1f} %), {:.0f} at the full "
      "workload, {:.0f} new; {:.0f} perplexity pairs; {:.0f} s.<br><b>Model:</b> {}<br><b>Hardware:</b> {}<br>"
      "<b>Workload:</b> {} prompt tokens, {} generated (greedy), {} warm-up, median of {} repetitions; prompt from {}.<br>"
      "<b>Low fidelity</b> (successive halving's first rung): {} prompt + {} generated tokens, 1 repetition.<br>"
      "<b>Perplexity workload:</b> the first {} tokens of {} in windows of {} ({} windows), every prediction scored; "
      "the paper uses 262,144 tokens, this short workload ranks configurations, it is not the paper's figure.<br>"
      "<b>Memory:</b> {}<br><b>Database:</b> {} (run {})</div><h2>Design space</h2><ul>{}</ul>{}",
      escape_html(summary["goal"].value("text", "")), escape_html(summary.value("mode", "")), measured, space,
      space > 0 ? 100.0 * measured / space : 0.0, number(counts, "measured_full"), number(counts, "measured_new"),
      number(counts, "quality_pairs"), number(summary, "seconds"), escape_html(describe_model(summary["model"]["description"])),
      escape_html(describe_hardware(summary["hardware"]["description"])), text_of(workload["prompt_tokens"]), text_of(workload["gen_tokens"]),
      text_of(workload["warmup"]), text_of(workload["repetitions"]), escape_html(summary.value("text_source", "")),
      text_of(summary["low_workload"]["prompt_tokens"]), text_of(summary["low_workload"]["gen_tokens"]),
      text_of(quality["max_tokens"]), escape_html(summary.value("text_source", "")), text_of(quality["seq"]),
      text_of(quality["scored_windows"]), escape_html(summary["scope"].value("memory_note", "")), escape_html(input.db_path),
      input.run_id, dimensions, notes.empty() ? "" : "<p class=\"muted\">Left out of the space:</p><ul>" + notes + "</ul>");
}

std::string points_table(const json& summary) {
  std::string out = "<table><tr><th>configuration</th><th>TTFT</th><th>TPOT</th><th>latency</th><th>memory</th><th>perplexity</th>"
                    "<th>feasible</th><th>Pareto</th><th>predicted TPOT</th><th>source</th></tr>";
  size_t shown = 0, predicted_only = 0, unavailable = 0;
  for (const json& point : summary["points"]) {
    const std::string status = point.value("status", "");
    if (status == "unavailable") ++unavailable;
    if (!point["full"].is_object()) {
      predicted_only += status == "unavailable" ? 0 : 1;
      continue;
    }
    ++shown;
    const char* row_class = point.value("recommended", false) ? " class=\"rec\"" : point.value("baseline", false) ? " class=\"base\"" : "";
    out += fmt::format("<tr{}><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", row_class,
                       escape_html(point.value("label", "")), metrics_cells(summary, point), point.value("feasible", false) ? "yes" : "no",
                       point.value("pareto", false) ? "yes" : "", tune::format_value(Metric::Tpot, number(point["prior_full"], "tpot_s")),
                       point.value("reused", false) ? "store" : "measured");
  }
  out += "</table>";
  out += fmt::format("<p class=\"muted\">{} points measured at the full workload; {} predicted only (or measured at low fidelity); "
                     "{} unavailable in this build.</p>", shown, predicted_only, unavailable);
  return out;
}

std::string paper_section(const ReportInput& input) {
  if (input.paper_rows.empty()) {
    return "<p class=\"muted\">Not built for this report; <code>moenav report --table --model MODEL</code> measures and prints it.</p>";
  }
  const bool gpu = gpu_scope(input.summary);
  std::string out = fmt::format("<table><tr><th>Method</th><th>TTFT (s)</th><th>TPOT (s)</th><th>Perplexity</th><th>{}</th></tr>",
                                gpu ? "GPU Memory (MiB)" : "Peak RSS (MiB)");
  for (const tune::PaperRow& row : input.paper_rows) {
    if (row.status != "ok") {
      out += fmt::format("<tr><td>{}</td><td colspan=\"4\">{}</td></tr>", escape_html(row.method),
                         escape_html(row.status == "unavailable" ? "unavailable in this build: " + row.error : row.status + " " + row.error));
      continue;
    }
    const tune::Measurement& m = row.measurement;
    out += fmt::format("<tr><td>{}</td><td>{:.4f}</td><td>{:.5f}</td><td>{}</td><td>{:.1f}</td></tr>", escape_html(row.method), m.ttft_s,
                       m.tpot_s, std::isnan(m.ppl) ? "-" : fmt::format("{:.3f}", m.ppl),
                       static_cast<double>(gpu ? m.gpu_peak_bytes : m.peak_rss_bytes) / 1048576.0);
  }
  return out + "</table>";
}

std::string runs_section(const ReportInput& input) {
  std::string out = "<table><tr><th>run</th><th>mode</th><th>goal</th><th>model</th></tr>";
  for (const json& run : input.runs) {
    out += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", text_of(run["id"]), escape_html(text_of(run["mode"])),
                       escape_html(text_of(run["goal"])), escape_html(text_of(run["model"])));
  }
  return out + "</table>";
}

}  // namespace

std::string html_report(const ReportInput& input) {
  const json& summary = input.summary;
  const std::time_t now = std::time(nullptr);
  char generated[64];
  std::strftime(generated, sizeof(generated), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  std::string html = fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>moenav tune report</title>"
                                 "<style>{}</style></head><body>\n", kStyle);
  html += fmt::format("<h1>moenav tune report: {}</h1><div class=\"muted\">generated {} by <code>moenav report</code></div>",
                      escape_html(text_of(summary["model"]["description"].value("path", json("")))), generated);
  html += recommendation_section(summary);
  html += context_section(summary, input);
  html += "<h2>Latency, memory and quality trade-off</h2><p class=\"muted\">The paper's Figure 1 (latency by configuration) and "
          "Figure 2 (the memory-latency-perplexity trade-off) for this model on this machine.</p>";
  html += "<figure>" + tradeoff_chart(summary) + "</figure><figure>" + quality_chart(summary) + "</figure>";
  html += "<h2>Pareto front</h2><p class=\"muted\">Measured at the full workload; not dominated on latency, memory and perplexity.</p>";
  html += points_table(summary);
  html += "<h2>Expert cache hit rate vs size</h2><figure>" + cache_chart(summary) + "</figure>";
  html += "<h2>Per-stage time</h2><figure>" + stage_chart(summary) + "</figure>";
  html += fmt::format("<h2>Predicted vs measured</h2><p class=\"muted\">Median absolute error of the prediction made just before "
                      "each measurement: TPOT {:.1f} % (full), {:.1f} % (low fidelity); TTFT {:.1f} % (full), {:.1f} % (low fidelity).</p>",
                      100 * prediction_error(summary, "tpot_s", "full"), 100 * prediction_error(summary, "tpot_s", "low"),
                      100 * prediction_error(summary, "ttft_s", "full"), 100 * prediction_error(summary, "ttft_s", "low"));
  html += "<div class=\"grid\"><figure>" + prediction_chart(summary, "tpot_s") + "</figure><figure>" +
          prediction_chart(summary, "ttft_s") + "</figure></div>";
  html += "<h2>Table 2 for this model</h2><p class=\"muted\">Shaped like the paper's Table 2 (Mixtral 8x7B on an A6000); "
          "each method expressed as an EngineConfig and measured with the workload above.</p>";
  html += paper_section(input);
  html += "<h2>Runs in this database</h2>" + runs_section(input);
  html += "</body></html>\n";
  return html;
}

}  // namespace moenav::report
