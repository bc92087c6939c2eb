// The tune report: one self-contained HTML file (inline CSS and SVG, no scripts, no external
// resources) built from a run's summary in the results store — goal and recommendation, the
// trade-off plots, Pareto front, cache hit curves, per-stage time, predicted vs measured, the
// paper's Table 2 for this model, and every measured point.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tune/paper_table.h"

namespace moenav::report {

struct ReportInput {
  nlohmann::json summary;  // one run's summary (src/tune/summary.cpp)
  int64_t run_id = 0;
  std::vector<tune::PaperRow> paper_rows;  // may be empty
  nlohmann::json runs = nlohmann::json::array();  // [{id, goal, mode, model, started}]
  std::string db_path;
};

std::string html_report(const ReportInput& input);

}  // namespace moenav::report
