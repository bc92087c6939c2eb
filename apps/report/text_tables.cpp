#include "report/text_tables.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "tune/metrics.h"

namespace moenav::report {
namespace {

using nlohmann::json;
using tune::Metric;

double number(const json& object, const char* key) {
  return object.is_object() && object.contains(key) && object[key].is_number() ? object[key].get<double>() : NAN;
}

// Columns padded to their widest cell.
std::string render(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) line += fmt::format("{:<{}}  ", row[c], widths[c]);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string pareto_table(const json& summary) {
  const std::string memory_name = summary["scope"].value("memory_metric", "host_mem");
  std::vector<std::vector<std::string>> rows = {
      {"", "config", "TTFT", "TPOT", "latency", memory_name, "ppl", "feasible"}};
  std::vector<json> shown;
  for (const json& point : summary["points"]) {
    if (point.value("pareto", false) || point.value("recommended", false) || point.value("baseline", false)) {
      shown.push_back(point);
    }
  }
  std::sort(shown.begin(), shown.end(), [](const json& a, const json& b) {
    const double la = number(a["full"], "ttft_s") + number(a["full"], "gen_tokens") * number(a["full"], "tpot_s");
    const double lb = number(b["full"], "ttft_s") + number(b["full"], "gen_tokens") * number(b["full"], "tpot_s");
    return la < lb;
  });
  for (const json& point : shown) {
    const json& m = point["full"];
    const double ttft = number(m, "ttft_s"), tpot = number(m, "tpot_s");
    const double latency = ttft + number(m, "gen_tokens") * tpot;
    const double memory = memory_name == "gpu_mem" ? number(m, "gpu_peak_bytes") : number(m, "peak_rss_bytes");
    std::string label = point.value("label", "");
    if (!point.value("pareto", false)) label += " (not on the front)";
    rows.push_back({point.value("recommended", false) ? "*" : "", label, tune::format_value(Metric::Ttft, ttft),
                    tune::format_value(Metric::Tpot, tpot), tune::format_value(Metric::Latency, latency),
                    tune::format_value(Metric::HostMemory, memory), tune::format_value(Metric::Perplexity, number(point, "ppl")),
                    point.value("feasible", false) ? "yes" : "no"});
  }
  return render(rows);
}

std::string paper_table(const std::vector<tune::PaperRow>& rows, bool has_gpu, const std::string& caption) {
  std::vector<std::vector<std::string>> cells = {
      {"| Method", "| TTFT (s)", "| TPOT (s)", "| Perplexity", has_gpu ? "| GPU Memory (MiB) |" : "| Peak RSS (MiB) |"}};
  cells.push_back({"|---", "|---", "|---", "|---", "|---|"});
  for (const tune::PaperRow& row : rows) {
    const tune::Measurement& m = row.measurement;
    if (row.status != "ok") {
      const std::string why = row.status == "unavailable" ? "unavailable in this build" : row.status;
      cells.push_back({"| " + row.method, "| -", "| -", "| -", fmt::format("| - ({}) |", why)});
      continue;
    }
    const double memory = has_gpu ? static_cast<double>(m.gpu_peak_bytes) : static_cast<double>(m.peak_rss_bytes);
    cells.push_back({"| " + row.method, fmt::format("| {:.4f}", m.ttft_s), fmt::format("| {:.5f}", m.tpot_s),
                     std::isnan(m.ppl) ? "| -" : fmt::format("| {:.3f}", m.ppl), fmt::format("| {:.1f} |", memory / 1048576.0)});
  }
  return render(cells) + caption + "\n";
}

}  // namespace moenav::report
