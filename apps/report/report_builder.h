// Gathers what a report needs from the results store — a run's summary, the runs list, and the
// paper's Table 2 rows for the run's model on this machine (measured on request) — and writes
// the HTML file. Shared by `moenav tune` (report at the end of a run) and `moenav report`.
#pragma once

#include <optional>
#include <string>

#include "report/html_report.h"
#include "tune/results_store.h"

namespace moenav::report {

struct ReportRequest {
  std::optional<int64_t> run_id;  // default: the newest finished run
  std::string model_path;         // default: the run's model
  bool table = false;             // fill Table 2 from the store
  bool measure_table = false;     // ... measuring the rows that are missing
  bool progress = true;
  std::string db_path;
};

Expected<ReportInput> load_report_input(tune::ResultsStore& store, const ReportRequest& request);
Status write_file(const std::string& path, const std::string& contents);

}  // namespace moenav::report
