// `moenav report [--db results.db] -o report.html`: rebuild the HTML report of a tune run from the
// results database; `--table` prints the paper's Table 2 for the run's model (from the store,
// measuring the missing rows with --measure).
#include <filesystem>

#include <fmt/format.h>

#include "cli/options.h"
#include "report/report_builder.h"
#include "report/text_tables.h"

namespace moenav::cli {
namespace {

struct ReportArgs {
  std::string db = "moenav-results.db";
  std::string output;
  int64_t run = 0;
  bool table = false;
  bool measure = false;
  std::string model;
};

int run_report(const ReportArgs& args) {
  if (!std::filesystem::exists(args.db)) {
    return fail(Status::errorf("{}: no results database here (run `moenav tune MODEL --db {}` first)", args.db, args.db));
  }
  auto store = tune::ResultsStore::open(args.db);
  if (!store.ok()) return fail(store.status());
  report::ReportRequest request;
  request.db_path = args.db;
  if (args.run > 0) request.run_id = args.run;
  request.model_path = args.model;
  request.table = true;  // the HTML shows whatever Table 2 rows the store has
  request.measure_table = args.measure;
  auto input = report::load_report_input(**store, request);
  if (!input.ok() && !args.table) {  // no model to build Table 2 for: report without it
    request.table = false;
    input = report::load_report_input(**store, request);
  }
  if (!input.ok()) return fail(input.status());
  if (args.table) {
    const bool has_gpu = input->summary.is_object() && input->summary["scope"].value("has_gpu", false);
    const std::string caption = fmt::format(
        "Table 2 (shaped like shared/seeds/000's) for {}: TTFT/TPOT medians of the run's workload, perplexity on its short "
        "WikiText-2 workload, memory = {}.", request.model_path.empty() && input->summary.is_object()
                                                   ? input->summary["model"]["description"].value("path", "")
                                                   : request.model_path,
        has_gpu ? "GPU peak" : "peak RSS of the process (no GPU in this build)");
    fmt::print("{}", report::paper_table(input->paper_rows, has_gpu, caption));
  }
  if (args.table && args.output.empty()) return 0;
  if (input->summary.is_null()) {
    return fail(Status::errorf("{}: no finished tune run to report on (run `moenav tune MODEL --db {}`)", args.db, args.db));
  }
  const std::string output = args.output.empty() ? "moenav-report.html" : args.output;
  if (Status status = report::write_file(output, report::html_report(*input)); !status.ok()) return fail(status);
  fmt::print("Report written to {} (run {}, {} points)\n", output, input->run_id, input->summary["points"].size());
  return 0;
}

}  // namespace

void register_report(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* command = app.add_subcommand("report", "Rebuild the HTML report of a tune run; --table prints Table 2");
  command->add_option("--db", args->db, "Results database")->capture_default_str();
  command->add_option("-o,--output", args->output, "HTML file to write (default moenav-report.html)");
  command->add_option("--run", args->run, "Run id (default: the newest finished run)");
  command->add_flag("--table", args->table, "Print the paper's Table 2 for the model");
  command->add_flag("--measure", args->measure, "With --table: measure the rows the database lacks");
  command->add_option("--model", args->model, "Model for --table (default: the run's)");
  command->callback([args, &exit_code] { exit_code = run_report(*args); });
}

}  // namespace moenav::cli
